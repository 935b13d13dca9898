//! rmledger-node: the daemon a member organisation runs. It keeps the chains durably, signs
//! its own organisation's entries and serves the ledger.
//!
//! Modules: `config` (node.toml), `keys` (the organisation's key file), `init` (creating a
//! node's directory), `storage` (the only module that knows about files and sled).

pub mod config;
pub mod init;
pub mod keys;
pub mod storage;
