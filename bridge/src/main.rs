//! `viaduct-bridge`: reads flags and config, starts the workers and the command socket,
//! and runs until SIGINT/SIGTERM.

use anyhow::Result;
use clap::Parser;
use viaduct_bridge::config::{Config, Flags};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&flags.log))
        .with_writer(std::io::stderr)
        .init();
    let config = Config::resolve(&flags)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers = config.cores.workers(),
        bind = %config.bind,
        port_base = config.port_base,
        io_backend = %config.io_backend,
        "starting viaduct-bridge"
    );
    let running = viaduct_bridge::runtime::start(&config)?;
    let signal = wait_for_signal()?;
    tracing::info!(signal, "stopping");
    let socket = running.server.path().to_owned();
    running.shutdown();
    let _ = std::fs::remove_file(socket);
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
