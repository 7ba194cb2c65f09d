//! Viaduct's benchmarks and load tools. The load generator `viaduct-loadgen` will live
//! in this crate (see the load-generator issue); `relay-pps` gives a first figure.
