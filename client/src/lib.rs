//! rmledger client library: a typed async [`Client`] of a node's HTTP API, and what the
//! `rmledger` CLI is made of.
//!
//! Map: [`client`] (one method per route, bounded answers) and [`error`]; [`config`] (flags,
//! environment, `config.toml` and the pinned trust anchor); [`resolve`] (naming certificates and
//! bundle sources); [`certfile`] (certificate files in TOML or JSON); [`verify`] (offline bundle
//! verification and the lifecycle fold); [`view`] (a certificate's state for display);
//! [`time`], [`keys`] and [`qr`] (labels).
//!
//! **Architecture invariant:** the client never opens a node's data directory and trusts
//! nothing a node says about validity: `verify` decides from a bundle checked against the
//! pinned federation id alone.

pub mod certfile;
pub mod client;
pub mod config;
pub mod error;
pub mod keys;
pub mod qr;
pub mod render;
pub mod resolve;
pub mod time;
pub mod verify;
pub mod view;

pub use client::Client;
pub use error::Error;
