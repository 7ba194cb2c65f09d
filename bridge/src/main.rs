//! `viaduct-bridge`: reads flags and config, starts the workers and the command socket,
//! tells systemd it is ready (and pings its watchdog while the workers live), and runs
//! until SIGINT/SIGTERM, then stops cleanly and exits 0.

use anyhow::Result;
use clap::Parser;
use viaduct_bridge::config::{Config, Flags};
use viaduct_bridge::service;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let flags = Flags::parse();
    service::init_logging(&flags.log);
    let config = Config::resolve(&flags)?;
    if flags.check_config {
        println!("{config:#?}");
        return Ok(());
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers = config.cores.workers(),
        bind = %config.bind,
        port_base = config.port_base,
        io_backend = %config.io_backend,
        "starting viaduct-bridge"
    );
    let running = viaduct_bridge::runtime::start(&config)?;
    // Workers bound and the command socket listening: now we serve.
    service::notify_ready(&format!(
        "serving: {} worker(s) on {} (UDP {:?}), socket {}",
        running.ports.len(),
        running.io_backend,
        running.ports,
        running.server.path().display()
    ));
    let watchdog = service::Watchdog::spawn(running.heartbeats.clone()).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not start the watchdog thread");
        None
    });
    let signal = wait_for_signal()?;
    tracing::info!(signal, "stopping");
    service::notify_stopping("stopping: expiring endpoints");
    if let Some(w) = watchdog {
        w.stop();
    }
    let socket = running.server.path().to_owned();
    let report = running.stop();
    let _ = std::fs::remove_file(&socket);
    let t = &report.totals;
    tracing::info!(
        conferences_expired = report.conferences,
        endpoints_expired = report.endpoints,
        unresponsive_workers = report.unresponsive,
        packets_in = t.packets_in,
        bytes_in = t.bytes_in,
        packets_out = t.packets_out,
        bytes_out = t.bytes_out,
        rtp_in = t.rtp_in,
        rtcp_in = t.rtcp_in,
        drops = ?t.drops,
        "viaduct-bridge stopped"
    );
    Ok(())
}

/// Blocks until SIGINT or SIGTERM; returns its name.
fn wait_for_signal() -> Result<&'static str> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    })
}
