//! Shared pieces of Viaduct's benchmarks and load tools: a bridge-link client. The load
//! generator `viaduct-loadgen` will live in this crate (see the load-generator issue).

pub mod link;
