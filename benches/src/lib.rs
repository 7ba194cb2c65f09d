//! Shared helpers for Viaduct's benchmarks. The load generator `viaduct-loadgen` will live
//! in this crate (see the load-generator issue).
