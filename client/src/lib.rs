//! rmledger client library.
