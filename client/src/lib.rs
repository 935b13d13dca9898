//! rmledger client library: a typed async [`Client`] of a node's HTTP API, and what the
//! `rmledger` CLI is made of.
//!
//! Map: [`client`] (one method per route, bounded answers) and [`error`]; [`config`] (flags,
//! environment, `config.toml` and the pinned trust anchor); [`resolve`] (naming certificates and
//! bundle sources); [`certfile`] (certificate files in TOML or JSON); [`verify`] (offline bundle
//! verification and the lifecycle fold); [`view`] (a certificate's state for display);
//! [`time`], [`keys`] and [`qr`] (labels); [`audit`] (the regulator's audit of a whole ledger,
//! over the API or from a data directory, and its reports).
//!
//! **Architecture invariant:** the client opens a node's data directory only for `audit
//! --data`, read-only through `rmledger_node::storage::read_log` (no lock, no writes), and trusts
//! nothing a node says about validity: `verify` decides from a bundle checked against the pinned
//! federation id alone, and the audit judges every entry against the pinned genesis.

pub mod audit;
pub mod certfile;
pub mod client;
pub mod config;
pub mod error;
pub use rmledger_node::keys;
pub mod qr;
pub mod render;
pub mod resolve;
pub mod time;
pub mod verify;
pub mod view;

pub use client::Client;
pub use error::Error;
