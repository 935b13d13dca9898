#!/usr/bin/env bash
# The main job: a four-node demo federation on 127.0.0.1, driven through the real CLI.
#
#   jxim    Jiangxi Institute of Metrology: registrar and institute
#   acme-rm a producer of reference materials
#   nclab   a testing lab
#   jxsamr  the market regulator
#
# It builds a release, founds the federation in a temporary directory, enrols the other three
# through `rmledger member enrol`, starts the four nodes replicating each other, and walks a
# certificate's life: registration, the institute's value verification (En), shipment,
# receipt, opening and use at the lab, a recall of a second batch, offline `rmledger verify` at
# the lab, and the regulator's view. Then it prints the pages to open and keeps the nodes
# running until Ctrl-C.
#
#   scripts/demo.sh           # keep the nodes running at the end (Ctrl-C stops them)
#   scripts/demo.sh --once    # stop at the end (CI); exit 0 only if every step did what it should
#
# The user's own rmledger config is never touched: XDG_CONFIG_HOME points into the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

ONCE=0
for arg in "$@"; do
  case "$arg" in
    --once) ONCE=1 ;;
    -h | --help)
      sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "usage: scripts/demo.sh [--once]" >&2
      exit 2
      ;;
  esac
done

ORGS=(jxim acme-rm nclab jxsamr)
# How long to wait for a node to answer /healthz, or for an entry to reach another node.
WAIT_SECONDS=60

# ---------------------------------------------------------------------------------------------
# Output and failure

STEP="starting"
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
  BOLD=$'\e[1m' DIM=$'\e[2m' GREEN=$'\e[32m' RED=$'\e[31m' RESET=$'\e[0m'
else
  BOLD="" DIM="" GREEN="" RED="" RESET=""
fi

step() {
  STEP="$1"
  printf '\n%s== %s%s\n' "$BOLD" "$1" "$RESET"
}

say() { printf '   %s\n' "$*"; }

fail() {
  printf '\n%sdemo failed at step "%s": %s%s\n' "$RED" "$STEP" "$*" "$RESET" >&2
  exit 1
}

# Prints `$ rmledger ARGS…` as one could type it (arguments with spaces or shell characters in
# single quotes).
show_command() {
  local words=() arg
  for arg in "$@"; do
    if [[ $arg =~ [^A-Za-z0-9_./:=@,+-] ]]; then
      words+=("'${arg//\'/\'\\\'\'}'")
    else
      words+=("$arg")
    fi
  done
  printf '   %s$ rmledger %s%s\n' "$DIM" "${words[*]}" "$RESET"
}

# Runs the CLI, showing the command and its output indented. Exit status is the CLI's.
cli() {
  show_command "$@"
  local status=0
  "$RMLEDGER" "$@" > "$WORK/last.out" 2> "$WORK/last.err" || status=$?
  sed 's/^/     /' "$WORK/last.out" "$WORK/last.err"
  return "$status"
}

# Runs the CLI and fails the demo unless it exits 0.
must() {
  cli "$@" || fail "rmledger $1 exited with $? (expected 0)"
}

# `"field": "value"` or `"field":value` out of the CLI's or the node's JSON.
json_field() {
  sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n 1
}

# ---------------------------------------------------------------------------------------------
# Processes

PIDS=()
WORK=""

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2> /dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2> /dev/null || true
  done
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if [[ $status -ne 0 ]]; then
      echo "The federation's files and node logs are kept in $WORK for a look." >&2
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'echo; echo "Stopping the nodes."; exit 0' INT TERM

# Whether something answers on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null
}

# Picks a port from 7300..7399 that nothing listens on and that is not taken yet.
pick_port() {
  local port
  for port in $(seq 7300 7399); do
    if [[ " ${PORTS[*]:-} " == *" $port "* ]]; then
      continue
    fi
    if ! port_in_use "$port"; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# Polls until COMMAND succeeds, or fails the demo after WAIT_SECONDS naming WHAT.
wait_until() {
  local what="$1"
  shift
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@" > /dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      fail "timed out after ${WAIT_SECONDS}s waiting for $what"
    fi
    sleep 0.2
  done
}

healthy() { curl -fs --max-time 2 "$1/healthz" > /dev/null 2>&1; }

has_entry() { curl -fs --max-time 2 -o /dev/null "$1/v1/chains/$2/entries/$3"; }

# Waits until the node of ORG holds entry SEQ of CHAIN (replication is pull-based and quick).
await_entry() {
  local org="$1" chain="$2" seq="$3"
  wait_until "$org's node to replicate $chain/$seq" has_entry "${URL[$org]}" "$chain" "$seq"
}

# Writes through the CLI as ORG (its node and operator token), prints the outcome and sets
# LAST_SEQ to the position of the new entry on ORG's chain.
write_as() {
  local org="$1"
  shift
  show_command "$@"
  local status=0
  "$RMLEDGER" --node "${URL[$org]}" --token "${TOKEN[$org]}" --json "$@" \
    > "$WORK/last.out" 2> "$WORK/last.err" || status=$?
  if [[ $status -ne 0 ]]; then
    sed 's/^/     /' "$WORK/last.out" "$WORK/last.err"
    fail "rmledger $1 as $org exited with $status"
  fi
  LAST_SEQ="$(json_field seq < "$WORK/last.out")"
  say "${GREEN}✓${RESET} written to $org's chain at seq $LAST_SEQ"
}

# ---------------------------------------------------------------------------------------------
# The federation

build() {
  step "Building the node and the CLI (release)"
  command -v curl > /dev/null || fail "curl is needed to poll the nodes' /healthz; install curl"
  cargo build --release --locked -p rmledger-node -p rmledger-client
  NODE_BIN="$REPO/target/release/rmledger-node"
  RMLEDGER="$REPO/target/release/rmledger"
}

declare -A URL TOKEN PUBKEY NAME ROLES
NAME=([jxim]="江西省计量测试研究院 Jiangxi Institute of Metrology"
  [acme-rm]="Acme Reference Materials Co."
  [nclab]="南昌检测实验室 Nanchang Testing Lab"
  [jxsamr]="江西省市场监督管理局 Jiangxi Market Regulator")
ROLES=([jxim]="institute" [acme-rm]="producer" [nclab]="lab" [jxsamr]="regulator")
PORTS=()

init_nodes() {
  step "Founding the federation in a temporary directory"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/rmledger-demo.XXXXXX")"
  export XDG_CONFIG_HOME="$WORK/cli-config"
  unset RMLEDGER_NODE RMLEDGER_TOKEN
  say "files: $WORK (the CLI's config too; yours is not touched)"
  local org port report
  for org in "${ORGS[@]}"; do
    port="$(pick_port)" || fail "no free port in 127.0.0.1:7300-7399 for $org; stop what listens there"
    PORTS+=("$port")
    URL[$org]="http://127.0.0.1:$port"
    if [[ $org == jxim ]]; then
      report="$("$NODE_BIN" init --dir "$WORK/$org" --org "$org" --registrar \
        --federation-name "Jiangxi RM federation (demo)" --org-name "${NAME[$org]}" \
        --roles "${ROLES[$org]}" --listen "127.0.0.1:$port" --json)" ||
        fail "rmledger-node init --registrar failed"
    else
      report="$("$NODE_BIN" init --dir "$WORK/$org" --org "$org" \
        --genesis "$WORK/jxim/genesis.cbor" --listen "127.0.0.1:$port" --json)" ||
        fail "rmledger-node init $org failed"
    fi
    TOKEN[$org]="$(json_field operator_token <<< "$report")"
    PUBKEY[$org]="$(json_field public_key <<< "$report")"
    [[ -n ${TOKEN[$org]} && -n ${PUBKEY[$org]} ]] || fail "rmledger-node init $org printed no token or key"
    say "$org (${ROLES[$org]}): node at ${URL[$org]}"
  done
  configure_peers
}

# Every node replicates from the other three, polls often and anchors every few seconds, so the
# demo moves quickly; `POST /v1/notify` wakes peers at once after each write anyway.
configure_peers() {
  local org peer config
  for org in "${ORGS[@]}"; do
    config="$WORK/$org/node.toml"
    sed -i -e 's/^replication_interval_ms = .*/replication_interval_ms = 250/' \
      -e 's/^replication_max_backoff_ms = .*/replication_max_backoff_ms = 2000/' \
      -e 's/^anchor_interval_seconds = .*/anchor_interval_seconds = 5/' "$config"
    for peer in "${ORGS[@]}"; do
      if [[ $peer != "$org" ]]; then
        printf '\n[[peers]]\nurl = "%s"\n' "${URL[$peer]}" >> "$config"
      fi
    done
  done
}

start_node() {
  local org="$1"
  RUST_LOG="${RUST_LOG:-info,tower_http=warn,sled=warn}" \
    "$NODE_BIN" run --config "$WORK/$org/node.toml" > /dev/null 2> "$WORK/$org/node.log" &
  PIDS+=($!)
  local pid=$!
  local deadline=$((SECONDS + WAIT_SECONDS))
  until healthy "${URL[$org]}"; do
    if ! kill -0 "$pid" 2> /dev/null; then
      tail -n 20 "$WORK/$org/node.log" >&2
      fail "$org's node exited at start (its log is above)"
    fi
    ((SECONDS < deadline)) || fail "$org's node did not answer /healthz within ${WAIT_SECONDS}s"
    sleep 0.1
  done
  say "$org's node is up at ${URL[$org]}"
}

enrol_members() {
  step "The registrar starts its node and enrols the producer, the lab and the regulator"
  start_node jxim
  local org
  for org in acme-rm nclab jxsamr; do
    write_as jxim member enrol --org "$org" --name "${NAME[$org]}" --roles "${ROLES[$org]}" \
      --key "${PUBKEY[$org]}"
  done
  ENROLMENTS_SEQ="$LAST_SEQ"
  cli --node "${URL[jxim]}" member list || fail "rmledger member list exited with $?"
}

start_members() {
  step "The three members start their nodes; each replicates the others' chains"
  local org
  for org in acme-rm nclab jxsamr; do
    start_node "$org"
  done
  for org in acme-rm nclab jxsamr; do
    await_entry "$org" jxim "$ENROLMENTS_SEQ"
  done
  say "every node holds the registrar's chain with the three enrolments"
  must federation trust "$WORK/jxim/genesis.cbor"
}

# ---------------------------------------------------------------------------------------------
# The life of a certificate

SOIL='GBW(E)082345@2025a'
CADMIUM='GBW(E)080119@24B071'

life() {
  step "acme-rm registers two batches from their certificate files"
  write_as acme-rm batch register docs/examples/soil-gbw-e.toml
  SOIL_ID="$(json_field id < "$WORK/last.out")"
  write_as acme-rm batch register docs/examples/cadmium-solution.toml
  CADMIUM_ID="$(json_field id < "$WORK/last.out")"
  say "soil CRM $SOIL is certificate $SOIL_ID"
  say "cadmium solution $CADMIUM is certificate $CADMIUM_ID"
  local registered="$LAST_SEQ"

  step "The institute jxim checks the certified Cd value of the soil CRM (En)"
  await_entry jxim acme-rm "$registered"
  write_as jxim verify-value "$SOIL" --quantity Cd --value 0.215 --unit mg/kg --u 0.015 --k 2 \
    --report JXIM-2026-0457 --method "ICP-MS after microwave digestion" --sample S-0042
  local en verdict
  en="$(json_field en < "$WORK/last.out")"
  verdict="$(json_field verdict < "$WORK/last.out")"
  say "$(LC_NUMERIC=C printf 'En = %.3f: |En| ≤ 1 means the measurement agrees with the certified value; verdict: %s' "$en" "$verdict")"
  [[ $verdict == pass ]] || fail "the institute's verification gave \"$verdict\", expected pass"

  step "acme-rm ships three soil units to the lab nclab"
  write_as acme-rm ship "$SOIL" --to nclab --serials S-0001..S-0003
  local shipped="$LAST_SEQ"

  step "nclab receives them, opens S-0001 and uses it for a calibration"
  await_entry nclab acme-rm "$shipped"
  write_as nclab receive "$SOIL" --from acme-rm --serials S-0001..S-0003
  write_as nclab open "$SOIL" --serial S-0001
  write_as nclab use "$SOIL" --serial S-0001 --purpose calibration --reference NCLAB-2026-1187
  LAB_SEQ="$LAST_SEQ"

  step "acme-rm recalls the cadmium solution batch"
  write_as acme-rm recall "$CADMIUM" --reason "Cd mass fraction drifted in the stability study"
  RECALL_SEQ="$LAST_SEQ"
}

# Whether the lab node's bundle of the cadmium certificate already proves the recall (its
# checkpoint of acme-rm's chain arrives just after the entries).
lab_bundle_shows_recall() {
  local out
  # verify exits 1 for a recalled certificate: that is the answer awaited, not a failure.
  out="$("$RMLEDGER" --node "${URL[nclab]}" --json verify "$CADMIUM" 2> /dev/null || true)"
  [[ $out == *'"status":"recalled"'* ]]
}

offline_verify() {
  step "nclab saves both proof bundles and checks them offline against the pinned federation"
  await_entry nclab acme-rm "$RECALL_SEQ"
  wait_until "the lab's proof bundle to include the recall" lab_bundle_shows_recall
  must --node "${URL[nclab]}" fetch-bundle "$SOIL" -o "$WORK/soil.bundle"
  must --node "${URL[nclab]}" fetch-bundle "$CADMIUM" -o "$WORK/cadmium.bundle"
  say "rmledger verify needs no node: only the bundle and the pinned genesis"
  must verify "$WORK/soil.bundle"
  say "${GREEN}the soil CRM is valid (exit 0)${RESET}"
  local status=0
  cli verify "$WORK/cadmium.bundle" || status=$?
  [[ $status -eq 1 ]] || fail "verify of the recalled batch exited $status, expected 1 (not valid)"
  grep -qi recalled "$WORK/last.out" || fail "verify of the recalled batch did not name the recall"
  say "${GREEN}the recalled cadmium solution is reported NOT VALID (exit 1), as it should be${RESET}"
}

regulator_view() {
  step "The regulator jxsamr reads the soil CRM's timeline from its own node"
  await_entry jxsamr nclab "$LAB_SEQ"
  await_entry jxsamr acme-rm "$RECALL_SEQ"
  must --node "${URL[jxsamr]}" show "$SOIL"
  must --node "${URL[jxsamr]}" status
}

pages() {
  step "A QR label for unit S-0001, pointing at its page on the lab's node"
  must --node "${URL[nclab]}" qr "$SOIL" --unit S-0001 -o "$WORK/label-S-0001.svg"

  step "Pages to open (?lang=zh or ?lang=en picks the language)"
  local org
  for org in nclab jxim; do
    say "$org's node:"
    say "  ${URL[$org]}/                          overview: members, chains, anchors, evidence"
    say "  ${URL[$org]}/c/$SOIL_ID"
    say "  ${URL[$org]}/c/$SOIL_ID/u/S-0001"
    say "  ${URL[$org]}/c/$CADMIUM_ID"
    say "  ${URL[$org]}/findings"
  done
  say "QR label: $WORK/label-S-0001.svg"
  say "node logs: $WORK/<org>/node.log"
}

main() {
  build
  init_nodes
  enrol_members
  start_members
  life
  offline_verify
  regulator_view
  pages
  if ((ONCE)); then
    step "Done (--once): stopping the nodes"
    exit 0
  fi
  step "The federation keeps running; press Ctrl-C to stop the nodes and remove $WORK"
  while true; do
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2> /dev/null || fail "a node stopped unexpectedly (logs in $WORK)"
    done
    sleep 1
  done
}

main
