//! rmledger protocol core: what a valid ledger is, as a pure library.
//!
//! Nothing here does I/O or reads a clock: every function takes its inputs and either returns
//! a value or an error that names the field and the rule that failed. Everything signed or
//! hashed is computed over stored bytes, never over a re-encoding.
//!
//! Map: [`cbor`] (canonical CBOR gate) → [`cose`] (COSE_Sign1 envelopes) → [`entry`] (signed
//! records on a chain) → [`chain`] (links, gaps, forks) and [`merkle`] (RFC 9162 trees) →
//! [`certmap`] (each chain's sparse Merkle map of the certificates its entries concern) →
//! [`checkpoint`] (signed tree heads, receipts) → [`federation`] (genesis, membership,
//! authorisation). The domain: [`records`] and its value types ([`decimal`], [`units`],
//! [`serial`], [`date`], [`rmcode`]); the fold of a certificate's life and its rules
//! ([`lifecycle`]) and the comparison of a measurement with a certified value ([`verification`]).

pub mod audit;
pub mod bundle;
pub mod cbor;
pub mod certmap;
pub mod chain;
pub mod checkpoint;
pub mod cose;
pub mod date;
pub mod decimal;
pub mod entry;
pub mod federation;
pub mod ids;
pub mod lifecycle;
pub mod merkle;
pub mod records;
pub mod rmcode;
pub mod serial;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod units;
pub mod verification;
