//! `viaduct-control`: the control service. Its HTTP API (colibri2, stats, signalling) is
//! the control-service issue; for now it only reports the bridge protocol version it speaks.

fn main() {
    println!(
        "viaduct-control {} (bridge protocol v{}): not implemented yet",
        env!("CARGO_PKG_VERSION"),
        viaduct_bridge::command::protocol::PROTOCOL_VERSION
    );
}
