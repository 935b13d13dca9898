//! `rmledger-node`: the daemon an organisation runs.

// The daemon's modules live in the library crate (`rmledger_node`) so tests and tools share them.
use rmledger_node as _;

fn main() {}
