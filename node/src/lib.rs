//! rmledger-node: the daemon a member organisation runs. It keeps the chains durably, signs
//! its own organisation's entries and serves the ledger.
//!
//! Modules: `config` (node.toml), `keys` (the organisation's key file), `init` (creating a
//! node's directory), `storage` (the only module that knows about files and sled), `ledger`
//! (membership and certificate state derived from the store), `certmaps` (each chain's
//! certificate map, whose root checkpoints sign), `append` (validation, signing,
//! group commit), `audit` (the incremental audit of the node's own replica), `metrics`
//! (Prometheus counters), `replicate` (pulling peers' chains, anchors,
//! fork evidence), `api` (the HTTP API) and `web` (the HTML pages for people).

pub mod api;
pub mod append;
pub mod audit;
pub mod certmaps;
pub mod config;
pub mod fsck;
pub mod init;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod replicate;
pub mod storage;
pub mod web;
