//! rmledger protocol core: what a valid ledger is, as a pure library.
//!
//! Nothing here does I/O or reads a clock: every function takes its inputs and either returns
//! a value or an error that names the field and the rule that failed. Everything signed or
//! hashed is computed over stored bytes, never over a re-encoding.

pub mod merkle;
pub mod decimal;
pub mod units;
pub mod serial;
pub mod date;
pub mod rmcode;
