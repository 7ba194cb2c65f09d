//! Viaduct's control service as a library: the HTTP API a Jicofo-like focus, operators
//! and Prometheus use (`app` and the handlers in `focus`, `stats`, `ops`), the
//! colibri2 wire format (`colibri2`), the bridge link client (`link`), and what the
//! service keeps (`records`, `metrics`); for participants, JWT auth (`auth`), WebSocket
//! signalling (`signalling`, `room`), SDP (`sdp`) and the demo page (`web`). The binary
//! `viaduct-control` wires them up.
#![forbid(unsafe_code)]
#![recursion_limit = "256"]

pub mod app;
pub mod appliance;
pub mod auth;
pub mod colibri2;
pub mod config;
pub mod focus;
pub mod link;
pub mod metrics;
pub mod ops;
pub mod records;
pub mod room;
pub mod sdp;
pub mod signalling;
pub mod stats;
pub mod web;

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Builds the service's state: opens the records database, starts the bridge link,
/// and spawns the link follower and the stats sampler on the current runtime.
pub fn start(config: config::Config) -> anyhow::Result<(app::AppState, watch::Receiver<bool>)> {
    use anyhow::Context as _;
    let records = records::Records::open(&config.db)
        .with_context(|| format!("opening the records database {}", config.db.display()))?;
    let writer = records.writer();
    let auth = auth::AuthState::new(config.auth, &config.jwt).context("loading the JWT keys")?;
    if config.auth == auth::AuthMode::Dev {
        tracing::warn!("DEV AUTH: anyone who can reach this service gets a participant token from /dev/token; never use it beyond one machine");
    }
    let link = link::Link::spawn(config.bridge_socket.clone());
    let (exit, exit_rx) = watch::channel(false);
    let state = app::AppState {
        config: Arc::new(config),
        link,
        records: Arc::new(records),
        writer,
        metrics: Arc::new(metrics::Metrics::new(env!("CARGO_PKG_VERSION"))),
        inner: Arc::new(Mutex::new(app::Inner::default())),
        feedback: (rand::random::<u32>() | 1, rand::random::<u32>() | 1),
        exit,
        auth: Arc::new(auth),
        rooms: Arc::new(room::Rooms::default()),
    };
    tokio::spawn(app::follow_link(state.clone()));
    tokio::spawn(stats::run_sampler(state.clone()));
    tokio::spawn(signalling::follow_bridge(state.clone()));
    Ok((state, exit_rx))
}
