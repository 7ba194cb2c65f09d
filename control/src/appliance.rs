//! The control service as a systemd unit: readiness and watchdog notifications
//! (through [`viaduct_bridge::service`]) and `--check-config`'s printout with secrets
//! redacted.

use std::time::Duration;

use viaduct_bridge::service;

use crate::app::AppState;
use crate::config::Config;

/// The resolved configuration as `--check-config` prints it, with every secret
/// redacted: the focus secrets, and any string under a field whose name says it holds
/// a secret (`secret`, `password`, `private`, `token` in its name), so settings added
/// later are covered without changing this function.
pub fn describe(config: &Config) -> String {
    redact(&format!("{config:#?}"), &config.focus_secrets)
}

/// Field names whose values are secret.
const SECRET_WORDS: [&str; 4] = ["secret", "password", "private", "token"];

/// Redacts pretty-printed `Debug` output: the string literals of a secret field (on its
/// line and on the more indented lines below it), and any of `secrets` anywhere.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hiding: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if hiding.is_some_and(|depth| indent <= depth) {
            hiding = None;
        }
        let field = line.trim_start().split_once(':').map(|(f, _)| f);
        if hiding.is_none()
            && field.is_some_and(|f| {
                !f.contains(' ')
                    && SECRET_WORDS
                        .iter()
                        .any(|w| f.to_ascii_lowercase().contains(w))
            })
        {
            hiding = Some(indent);
        }
        let mut line = if hiding.is_some() {
            hide_strings(line)
        } else {
            line.to_owned()
        };
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            line = line.replace(s.as_str(), "<redacted>");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Replaces each `"…"` literal (Debug-escaped) in `line` with `"<redacted>"`.
fn hide_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        let mut escaped = false;
        for d in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if d == '\\' {
                escaped = true;
            } else if d == '"' {
                break;
            }
        }
        out.push_str("\"<redacted>\"");
    }
    out
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

/// `STOPPING=1` from inside the async runtime: sent from a blocking-pool thread, so a
/// service manager slow to read its socket never stalls a runtime worker.
pub fn notify_stopping(status: &'static str) {
    tokio::task::spawn_blocking(move || service::notify_stopping(status));
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
                // Off the runtime's workers: a full notify socket blocks the send.
                let _ = tokio::task::spawn_blocking(service::notify_watchdog).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Jwt {
        app_id: Option<String>,
        app_secret: Option<String>,
        public_keys: Vec<String>,
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Cfg {
        listen: String,
        focus_secrets: Vec<String>,
        jwt: Jwt,
        other: Vec<String>,
    }

    #[test]
    fn secrets_are_redacted_whatever_the_field() {
        let cfg = Cfg {
            listen: "127.0.0.1:8080".into(),
            focus_secrets: vec!["focus-one-secret".into(), "focus \"two\"".into()],
            jwt: Jwt {
                app_id: Some("my-app".into()),
                app_secret: Some("jwt-app-secret-value".into()),
                public_keys: vec!["not-secret-pem".into()],
            },
            other: vec!["mentions focus-one-secret".into()],
        };
        let shown = redact(&format!("{cfg:#?}"), &cfg.focus_secrets);
        for s in ["focus-one-secret", "two", "jwt-app-secret-value"] {
            assert!(!shown.contains(s), "{s} shown:\n{shown}");
        }
        for s in [
            "127.0.0.1:8080",
            "my-app",
            "not-secret-pem",
            "app_secret",
            "<redacted>",
        ] {
            assert!(shown.contains(s), "{s} missing:\n{shown}");
        }
    }
}
