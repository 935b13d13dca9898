#!/usr/bin/env bash
# The project's test command (the README's second command): every unit, property, vector and
# whole-system test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole-system tests run the real binaries. Build them once here and name them, so the test
# processes never run cargo themselves (a build from inside a test resolves features
# differently and would rebuild shared crates).
cargo build --locked -p rmledger-node -p rmledger-client --bins
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
export RMLEDGER_NODE_BIN="$target_dir/debug/rmledger-node"
export RMLEDGER_CLI_BIN="$target_dir/debug/rmledger"
cargo test --workspace --locked "$@"
