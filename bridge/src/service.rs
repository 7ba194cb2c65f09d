//! Running as a service: logging that suits journald, and systemd's readiness and
//! watchdog protocol (`sd_notify`). Shared by both binaries (`viaduct-control` calls
//! [`init_logging`] and the notify helpers too). Outside systemd (no `NOTIFY_SOCKET`)
//! every notification is a no-op.

use std::io::IsTerminal as _;
use std::os::unix::fs::MetadataExt as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing_subscriber::EnvFilter;

/// Sets up `tracing` to stderr. The filter is `RUST_LOG` when that is set, else
/// `fallback` (the `--log` flag or `VIADUCT_LOG`). Colours only when stderr is a
/// terminal; no timestamps when stderr is the journal (`JOURNAL_STREAM` names it),
/// because journald stamps each line itself.
pub fn init_logging(fallback: &str) {
    // webrtc-dtls warns about every TLS 1.3 extension in a modern browser's ClientHello
    // (Chromium: 9 lines a handshake); its errors still show.
    let quiet;
    let fallback = if fallback.contains("webrtc_dtls") {
        fallback
    } else {
        quiet = format!("{fallback},webrtc_dtls=error");
        &quiet
    };
    let (filter, bad_rust_log) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(fallback), Some(e.to_string())),
        },
        _ => (EnvFilter::new(fallback), None),
    };
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if stderr_is_journal() {
        builder.without_time().init();
    } else {
        builder.init();
    }
    if let Some(e) = bad_rust_log {
        tracing::warn!(error = %e, "RUST_LOG does not parse; using the configured filter");
    }
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is `DEV:INODE` of it.
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2")
        .map(|m| m.dev() == dev && m.ino() == ino)
        .unwrap_or(false)
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// `READY=1` with a status line: the service is serving.
pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1` with a status line: the service is shutting down.
pub fn notify_stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `STATUS=…`: a line `systemctl status` shows.
pub fn notify_status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// `WATCHDOG=1`: the service is alive.
pub fn notify_watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// How often to check health and ping the watchdog: half of `WATCHDOG_USEC` (as
/// sd_watchdog_enabled(3) advises), or `None` when systemd set no watchdog for us.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Tells live workers from stuck ones: each worker publishes its loop-turn count on
/// every timer tick; a worker whose count has not moved since the last look is stuck.
#[derive(Debug)]
pub struct Liveness {
    beats: Vec<Arc<AtomicU64>>,
    last: Vec<u64>,
}

impl Liveness {
    /// Watches these heartbeats (one per worker).
    pub fn new(beats: Vec<Arc<AtomicU64>>) -> Self {
        let last = beats.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        Self { beats, last }
    }

    /// The workers whose heartbeat has not moved since the previous call (empty when
    /// all are alive). Call it less often than the workers' tick (250 ms).
    pub fn stuck(&mut self) -> Vec<usize> {
        let mut stuck = Vec::new();
        for (i, (beat, last)) in self.beats.iter().zip(self.last.iter_mut()).enumerate() {
            let now = beat.load(Ordering::Relaxed);
            if now == *last {
                stuck.push(i);
            }
            *last = now;
        }
        stuck
    }
}

/// The workers' heartbeats advance at least every this often (their timer tick is
/// 250 ms), so the watchdog never looks more often than this.
const MIN_CHECK: Duration = Duration::from_millis(600);

/// A thread that pings systemd's watchdog every `period` while every worker is alive,
/// and stops pinging (so systemd restarts the bridge) while one is stuck.
#[derive(Debug)]
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread when systemd asked for a watchdog (`WATCHDOG_USEC`); `None`
    /// otherwise.
    pub fn spawn(beats: Vec<Arc<AtomicU64>>) -> std::io::Result<Option<Self>> {
        let Some(period) = watchdog_period() else {
            return Ok(None);
        };
        let period = period.max(MIN_CHECK);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut live = Liveness::new(beats);
                let mut was_stuck = false;
                // Sleep in short steps so a stop is seen quickly.
                let step = Duration::from_millis(50);
                let mut waited = Duration::ZERO;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited < period {
                        continue;
                    }
                    waited = Duration::ZERO;
                    let stuck = live.stuck();
                    if stuck.is_empty() {
                        if was_stuck {
                            tracing::info!("all workers alive again; watchdog pings resume");
                        }
                        was_stuck = false;
                        notify_watchdog();
                    } else if !was_stuck {
                        was_stuck = true;
                        tracing::error!(workers = ?stuck, "worker stuck: no watchdog ping (systemd will restart the bridge if it stays stuck)");
                    }
                }
            })?;
        tracing::info!(?period, "systemd watchdog enabled");
        Ok(Some(Self {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops pinging and joins the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_reports_workers_whose_heartbeat_stands_still() {
        let beats: Vec<_> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let mut live = Liveness::new(beats.clone());
        beats[0].store(5, Ordering::Relaxed);
        beats[2].store(7, Ordering::Relaxed);
        assert_eq!(live.stuck(), vec![1]);
        beats[0].store(6, Ordering::Relaxed);
        beats[1].store(1, Ordering::Relaxed);
        beats[2].store(8, Ordering::Relaxed);
        assert!(live.stuck().is_empty());
        assert_eq!(live.stuck(), vec![0, 1, 2]);
    }
}
