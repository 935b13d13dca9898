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

/// The cores this process may use, read once: `std::thread::available_parallelism` opens and
/// reads the cgroup files under /proc and /sys on every call (27 µs alone here, and in the
/// catch-up profile ~1 % of the mirror's time when it was called per page).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
