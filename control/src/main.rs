//! `viaduct-control`: reads flags and config, serves the HTTP API, follows the bridge,
//! and exits after a graceful shutdown (API or SIGTERM) or a second signal.

use anyhow::{Context, Result};
use clap::Parser;
use viaduct_control::config::{Command, Config, Flags, TokenArgs};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let flags = Flags::parse();
    viaduct_bridge::service::init_logging(&flags.log);
    if let Some(Command::Token(args)) = &flags.command {
        return token(&flags, args);
    }
    let config = Config::resolve(&flags)?;
    if flags.check_config {
        println!("{}", viaduct_control::appliance::describe(&config));
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(config))
}

/// `viaduct-control token`: prints a participant token signed with the configured
/// HS256 secret.
fn token(flags: &Flags, args: &TokenArgs) -> Result<()> {
    let jwt = Config::resolve_jwt(flags)?;
    let (Some(app_id), Some(secret)) = (jwt.app_id.as_deref(), jwt.app_secret.as_deref()) else {
        anyhow::bail!("minting needs jwt.app-id and jwt.app-secret (config file, --jwt-app-id/--jwt-app-secret or VIADUCT_JWT_APP_ID/VIADUCT_JWT_APP_SECRET)");
    };
    let room = if args.room == "*" {
        "*".to_owned()
    } else {
        viaduct_control::auth::normalize_room(&args.room)?
    };
    let token = viaduct_control::auth::mint(
        secret,
        &viaduct_control::auth::Mint {
            app_id,
            room: &room,
            name: &args.name,
            moderator: args.moderator,
            ttl_s: args.ttl,
        },
    )?;
    println!("{token}");
    Ok(())
}

async fn serve(config: Config) -> Result<()> {
    let listen = config.listen;
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "the control API listens beyond loopback: protect it (stats and metrics need no token)");
    }
    let (state, mut exit) = viaduct_control::start(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(listen = %bound, version = env!("CARGO_PKG_VERSION"), "viaduct-control serving");
    // One line on stdout with the bound address (useful with `--listen 127.0.0.1:0`).
    println!("viaduct-control listening on {bound}");
    viaduct_control::appliance::notify_ready(&state, bound);
    tokio::spawn(viaduct_control::appliance::watchdog(state.clone()));
    let app = viaduct_control::app::router(state.clone());
    let signals = state.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            count += 1;
            if count == 1 {
                tracing::info!("signal: graceful shutdown (signal again to exit now)");
                viaduct_bridge::service::notify_stopping(
                    "draining: exiting when the last endpoint leaves",
                );
                viaduct_control::ops::begin_graceful_shutdown(&signals, "signal");
            } else {
                let _ = signals.exit.send(true);
            }
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = exit.wait_for(|&e| e).await;
        })
        .await?;
    viaduct_bridge::service::notify_stopping("stopping");
    state.records.flush();
    tracing::info!("viaduct-control stopped");
    Ok(())
}
