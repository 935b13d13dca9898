#!/usr/bin/env bash
# The project's test command (the README's second command): every unit, property, vector and
# whole-system test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
