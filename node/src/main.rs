//! `rmledger-node`: the daemon an organisation runs.
fn main() {}
