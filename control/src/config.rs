//! The control service's configuration: defaults, overridden by a TOML file, overridden
//! by environment variables and flags (clap reads both). Checked once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::auth::{AuthMode, JwtSettings};

/// Command-line flags; each also reads a `VIADUCT_*` environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "viaduct-control",
    version,
    about = "Viaduct's control service: colibri2 focus API, JVB-compatible stats, Prometheus, health, drain"
)]
pub struct Flags {
    /// TOML config file (keys as in the README); flags and environment override it.
    #[arg(long, env = "VIADUCT_CONTROL_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address.
    #[arg(long, env = "VIADUCT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The bridge's command socket.
    #[arg(long, env = "VIADUCT_BRIDGE_SOCKET")]
    pub bridge_socket: Option<PathBuf>,
    /// Bearer secret(s) the focus must present (comma-separated for rotation).
    #[arg(
        long,
        env = "VIADUCT_FOCUS_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub focus_secret: Option<Vec<String>>,
    /// SQLite file for conference records.
    #[arg(long, env = "VIADUCT_DB")]
    pub db: Option<PathBuf>,
    /// Region reported in stats (Jicofo's region-based selection reads it).
    #[arg(long, env = "VIADUCT_REGION")]
    pub region: Option<String>,
    /// Directory for state (the default database lives here).
    #[arg(long, env = "VIADUCT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Packets per second (in + out) one bridge worker carries at stress 1.0.
    #[arg(long, env = "VIADUCT_WORKER_CAPACITY_PPS")]
    pub worker_capacity_pps: Option<f64>,
    /// How often the bridge's counters are sampled, in milliseconds.
    #[arg(long, env = "VIADUCT_STATS_INTERVAL_MS")]
    pub stats_interval_ms: Option<u64>,
    /// Seconds between the last endpoint leaving in graceful shutdown and exiting.
    #[arg(long, env = "VIADUCT_SHUTDOWN_DELAY")]
    pub shutdown_delay: Option<u64>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "VIADUCT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Participant authentication: `jwt` (tokens signed with the configured secret or
    /// keys) or `dev` (the demo page mints tokens itself; loopback only).
    #[arg(long, env = "VIADUCT_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// JWT app id: tokens' `iss` (Jitsi's app_id).
    #[arg(long, env = "VIADUCT_JWT_APP_ID")]
    pub jwt_app_id: Option<String>,
    /// JWT HS256 secret (Jitsi's app_secret).
    #[arg(long, env = "VIADUCT_JWT_APP_SECRET", hide_env_values = true)]
    pub jwt_app_secret: Option<String>,
    /// PEM public key(s) for RS256/ES256 tokens (repeat or comma-separate).
    #[arg(long, env = "VIADUCT_JWT_PUBLIC_KEYS", value_delimiter = ',')]
    pub jwt_public_key: Option<Vec<PathBuf>>,
    /// JWKS file with RS256/ES256 public keys (as a Keycloak realm publishes).
    #[arg(long, env = "VIADUCT_JWT_JWKS")]
    pub jwt_jwks: Option<PathBuf>,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "VIADUCT_LOG", default_value = "info")]
    pub log: String,
    /// Parse and validate the configuration, print it (secrets redacted), and exit.
    #[arg(long)]
    pub check_config: bool,
    /// A subcommand instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Mint a participant token (HS256, from jwt.app-id and jwt.app-secret) and print it.
    Token(TokenArgs),
}

/// `viaduct-control token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The room the token admits to (`*` for any).
    #[arg(long)]
    pub room: String,
    /// The participant's display name.
    #[arg(long)]
    pub name: String,
    /// Grant the moderator role.
    #[arg(long)]
    pub moderator: bool,
    /// Lifetime: seconds, or with a unit (`90s`, `30m`, `2h`, `1d`).
    #[arg(long, default_value = "2h", value_parser = crate::auth::parse_ttl)]
    pub ttl: u64,
}

/// The TOML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`Flags::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`Flags::bridge_socket`].
    pub bridge_socket: Option<PathBuf>,
    /// See [`Flags::focus_secret`].
    pub focus_secrets: Option<Vec<String>>,
    /// See [`Flags::db`].
    pub db: Option<PathBuf>,
    /// See [`Flags::region`].
    pub region: Option<String>,
    /// See [`Flags::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// See [`Flags::worker_capacity_pps`].
    pub worker_capacity_pps: Option<f64>,
    /// JVB's `average_participant_stress`: the stress one more endpoint adds.
    pub average_participant_stress: Option<f64>,
    /// See [`Flags::stats_interval_ms`].
    pub stats_interval_ms: Option<u64>,
    /// See [`Flags::shutdown_delay`].
    pub shutdown_delay: Option<u64>,
    /// See [`Flags::max_body_bytes`].
    pub max_body_bytes: Option<usize>,
    /// See [`Flags::auth`].
    pub auth: Option<AuthMode>,
    /// The `[jwt]` table.
    pub jwt: Option<JwtSettings>,
    /// The `[signalling]` table.
    pub signalling: Option<SignallingFile>,
}

/// The `[signalling]` table: limits of participants' WebSocket connections.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SignallingFile {
    /// Largest message accepted, in bytes (default 131072).
    pub max_message_bytes: Option<usize>,
    /// Mutating messages (join, mute, kick, chat, leave) allowed per window (default 60).
    pub rate_limit_messages: Option<u32>,
    /// The rate limit's window in seconds (default 60).
    pub rate_limit_window_s: Option<u64>,
    /// A connection silent this long (no message, no pong) is closed (default 60).
    pub idle_timeout_s: Option<u64>,
    /// Most participants in one room (default 50).
    pub max_participants: Option<usize>,
    /// Chat messages kept per room and sent to joiners (default 100).
    pub chat_history: Option<usize>,
    /// Longest chat message in characters (default 1000).
    pub max_chat_chars: Option<usize>,
}

/// Limits of participants' WebSocket connections, resolved.
#[derive(Clone, Debug)]
pub struct SignallingConfig {
    /// See [`SignallingFile::max_message_bytes`].
    pub max_message_bytes: usize,
    /// See [`SignallingFile::rate_limit_messages`].
    pub rate_limit_messages: u32,
    /// See [`SignallingFile::rate_limit_window_s`].
    pub rate_limit_window: Duration,
    /// See [`SignallingFile::idle_timeout_s`].
    pub idle_timeout: Duration,
    /// See [`SignallingFile::max_participants`].
    pub max_participants: usize,
    /// See [`SignallingFile::chat_history`].
    pub chat_history: usize,
    /// See [`SignallingFile::max_chat_chars`].
    pub max_chat_chars: usize,
}

impl SignallingConfig {
    fn from_file(f: Option<SignallingFile>) -> Self {
        let f = f.unwrap_or_default();
        Self {
            max_message_bytes: f.max_message_bytes.unwrap_or(128 * 1024),
            rate_limit_messages: f.rate_limit_messages.unwrap_or(60),
            rate_limit_window: Duration::from_secs(f.rate_limit_window_s.unwrap_or(60)),
            idle_timeout: Duration::from_secs(f.idle_timeout_s.unwrap_or(60)),
            max_participants: f.max_participants.unwrap_or(50),
            chat_history: f.chat_history.unwrap_or(100),
            max_chat_chars: f.max_chat_chars.unwrap_or(1000),
        }
    }
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Bridge command socket.
    pub bridge_socket: PathBuf,
    /// Accepted focus bearer secrets.
    pub focus_secrets: Vec<String>,
    /// Records database.
    pub db: PathBuf,
    /// Region, if any.
    pub region: Option<String>,
    /// Worker capacity for stress.
    pub worker_capacity_pps: f64,
    /// Per-participant stress estimate.
    pub average_participant_stress: f64,
    /// Sampling period.
    pub stats_interval: Duration,
    /// Delay before exiting once shut down.
    pub shutdown_delay: Duration,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Participant authentication mode.
    pub auth: AuthMode,
    /// JWT keys and checks.
    pub jwt: JwtSettings,
    /// WebSocket limits.
    pub signalling: SignallingConfig,
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is missing or out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Default worker capacity: about what one worker forwarded on the development VM
/// (README, "One pinned worker"), in + out.
pub const DEFAULT_WORKER_CAPACITY_PPS: f64 = 300_000.0;

/// Reads the TOML file the flags name (or nothing).
fn read_file(flags: &Flags) -> Result<FileConfig, ConfigError> {
    Ok(match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                path: path.clone(),
                source: Box::new(source),
            })?
        }
        None => FileConfig::default(),
    })
}

/// The `[jwt]` settings: the file's, with flags and environment on top.
fn jwt_settings(flags: &Flags, file: Option<JwtSettings>) -> JwtSettings {
    let mut jwt = file.unwrap_or_default();
    if let Some(v) = &flags.jwt_app_id {
        jwt.app_id = Some(v.clone());
    }
    if let Some(v) = &flags.jwt_app_secret {
        jwt.app_secret = Some(v.clone());
    }
    if let Some(v) = &flags.jwt_public_key {
        jwt.public_keys = v.clone();
    }
    if let Some(v) = &flags.jwt_jwks {
        jwt.jwks_file = Some(v.clone());
    }
    jwt
}

impl Config {
    /// The JWT settings alone (for `viaduct-control token`, which needs no focus secret).
    pub fn resolve_jwt(flags: &Flags) -> Result<JwtSettings, ConfigError> {
        Ok(jwt_settings(flags, read_file(flags)?.jwt))
    }

    /// Defaults ← file ← environment/flags.
    pub fn resolve(flags: &Flags) -> Result<Self, ConfigError> {
        let file = read_file(flags)?;
        let state_dir = flags
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/viaduct"));
        let focus_secrets: Vec<String> = flags
            .focus_secret
            .clone()
            .or(file.focus_secrets)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let cfg = Config {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            bridge_socket: flags
                .bridge_socket
                .clone()
                .or(file.bridge_socket)
                .unwrap_or_else(|| PathBuf::from("/run/viaduct/bridge.sock")),
            focus_secrets,
            db: flags
                .db
                .clone()
                .or(file.db)
                .unwrap_or_else(|| state_dir.join("viaduct.sqlite")),
            region: flags.region.clone().or(file.region),
            worker_capacity_pps: flags
                .worker_capacity_pps
                .or(file.worker_capacity_pps)
                .unwrap_or(DEFAULT_WORKER_CAPACITY_PPS),
            average_participant_stress: file.average_participant_stress.unwrap_or(0.01),
            stats_interval: Duration::from_millis(
                flags
                    .stats_interval_ms
                    .or(file.stats_interval_ms)
                    .unwrap_or(1000),
            ),
            shutdown_delay: Duration::from_secs(
                flags.shutdown_delay.or(file.shutdown_delay).unwrap_or(1),
            ),
            max_body_bytes: flags
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(256 * 1024),
            auth: flags.auth.or(file.auth).unwrap_or_default(),
            jwt: jwt_settings(flags, file.jwt),
            signalling: SignallingConfig::from_file(file.signalling),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.focus_secrets.is_empty() {
            return Err(ConfigError::Invalid(
                "no focus secret: set --focus-secret, VIADUCT_FOCUS_SECRET or focus-secrets in the config file".into(),
            ));
        }
        if self.focus_secrets.iter().any(|s| s.len() < 8) {
            return Err(ConfigError::Invalid(
                "focus secrets must be at least 8 characters".into(),
            ));
        }
        if !self.worker_capacity_pps.is_finite() || self.worker_capacity_pps <= 0.0 {
            return Err(ConfigError::Invalid(
                "worker capacity must be positive".into(),
            ));
        }
        if self.stats_interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "stats interval must be at least 100 ms".into(),
            ));
        }
        if self.auth == AuthMode::Dev && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "--auth dev hands out tokens to anyone: it is refused unless the API listens on loopback (not {})",
                self.listen
            )));
        }
        if self.auth == AuthMode::Jwt
            && self.jwt.app_secret.is_none()
            && self.jwt.public_keys.is_empty()
            && self.jwt.jwks_file.is_none()
        {
            tracing::warn!("no jwt.app-secret, jwt.public-keys or jwt.jwks-file: participants cannot join (use --auth dev to try it on one machine)");
        }
        let s = &self.signalling;
        if s.max_message_bytes < 4096
            || s.rate_limit_messages == 0
            || s.rate_limit_window.is_zero()
            || s.idle_timeout < Duration::from_secs(5)
            || s.max_participants < 2
            || s.max_chat_chars == 0
        {
            return Err(ConfigError::Invalid(
                "signalling limits: max-message-bytes >= 4096, rate limits > 0, idle-timeout-s >= 5, max-participants >= 2, max-chat-chars > 0".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "body limit must be at least 1024 bytes".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("viaduct-ccfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nfocus-secrets = [\"file-secret-1\"]\nregion = \"eu\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let cfg =
            Config::resolve(&Flags::parse_from(["c", "--config", p, "--region", "us"])).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cfg.focus_secrets, vec!["file-secret-1".to_owned()]);
        assert_eq!(cfg.region.as_deref(), Some("us"));
        let cfg = Config::resolve(&Flags::parse_from([
            "c",
            "--config",
            p,
            "--focus-secret",
            "aaaaaaaa,bbbbbbbb",
        ]))
        .unwrap();
        assert_eq!(cfg.focus_secrets.len(), 2);
        assert!(Config::resolve(&Flags::parse_from(["c", "--focus-secret", "short"])).is_err());
        std::fs::write(&path, "nonsense = 1\n").unwrap();
        assert!(matches!(
            Config::resolve(&Flags::parse_from(["c", "--config", p])),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
