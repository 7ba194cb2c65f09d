//! Viaduct's benchmarks and load tools: `viaduct-loadgen` (synthetic peers that prove
//! the bridge, in `loadgen`), `relay-pps`, and the HTTP client they share.

pub mod http;
pub mod loadgen;
