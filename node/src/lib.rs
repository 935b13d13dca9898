//! `rmledger-node` as a library: the daemon's modules, usable from tests, benches and tools.

pub mod storage;
