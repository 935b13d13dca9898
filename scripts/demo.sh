#!/usr/bin/env bash
# The main job: the local demo. Until the node and CLI land, it walks through the protocol core
# in memory (federation, members, a certificate, shipments, chain checks and a receipt).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p rmledger-schema --example walkthrough "$@"
