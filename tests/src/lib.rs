//! End-to-end tests that run `viaduct-bridge` and `viaduct-control` together live here
//! (the control-service issue); the bridge's own process tests are in `bridge/tests/`.
