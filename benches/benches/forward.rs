//! Criterion benchmark of the per-packet forwarding path (filled in with the bridge).
fn main() {}
