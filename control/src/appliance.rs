//! The control service as a systemd unit: readiness and watchdog notifications
//! (through [`viaduct_bridge::service`]) and `--check-config`'s printout with secrets
//! redacted.

use std::time::Duration;

use viaduct_bridge::service;

use crate::app::AppState;
use crate::config::Config;

/// The resolved configuration as `--check-config` prints it: focus secrets are
/// replaced by their lengths.
pub fn describe(config: &Config) -> String {
    let mut shown = config.clone();
    shown.focus_secrets = shown
        .focus_secrets
        .iter()
        .map(|s| format!("<redacted, {} characters>", s.len()))
        .collect();
    format!("{shown:#?}")
}

/// `READY=1`: the HTTP listener is bound and the bridge link runs (connected, or
/// retrying in the background).
pub fn notify_ready(state: &AppState, listen: std::net::SocketAddr) {
    let link = if state.link.is_up() {
        "up"
    } else {
        "connecting"
    };
    service::notify_ready(&format!(
        "serving on {listen}; bridge link {link} ({})",
        state.config.bridge_socket.display()
    ));
}

/// Pings systemd's watchdog every half `WATCHDOG_USEC` while the runtime is
/// responsive: each round spawns a probe task that takes the shared state's lock, and
/// pings only if the probe finishes within the period. A blocked runtime or a held
/// lock stops the pings, and systemd restarts the service. Returns at once when no
/// watchdog is set.
pub async fn watchdog(state: AppState) {
    let Some(period) = service::watchdog_period() else {
        return;
    };
    let period = period.max(Duration::from_millis(100));
    tracing::info!(?period, "systemd watchdog enabled");
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tick.tick().await;
        let probe_state = state.clone();
        let probe = tokio::spawn(async move {
            drop(probe_state.inner());
        });
        match tokio::time::timeout(period, probe).await {
            Ok(Ok(())) => {
                if !healthy {
                    tracing::info!("runtime responsive again; watchdog pings resume");
                }
                healthy = true;
                service::notify_watchdog();
            }
            _ => {
                if healthy {
                    tracing::error!("runtime unresponsive: no watchdog ping");
                }
                healthy = false;
            }
        }
    }
}
