//! The bridge's configuration: defaults, overridden by a TOML file, overridden by
//! environment variables and flags (clap reads both). Validation happens here, once,
//! before any thread starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::io::xdp::{XdpConfig, XdpMode};
use crate::io::IoChoice;

/// Which cores the workers run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cores {
    /// This many workers, pinned to the first N cores.
    Count(usize),
    /// One worker per listed core id.
    List(Vec<usize>),
}

impl Cores {
    /// Number of workers.
    pub fn workers(&self) -> usize {
        match self {
            Self::Count(n) => *n,
            Self::List(l) => l.len(),
        }
    }

    /// The core id worker `i` is pinned to.
    pub fn core_of(&self, i: usize) -> usize {
        match self {
            Self::Count(_) => i,
            Self::List(l) => l.get(i).copied().unwrap_or(i),
        }
    }
}

impl FromStr for Cores {
    type Err = String;

    /// `"2"` is a count; `"0,2,3"` or `"1-3"` (or a mix) is a list of core ids.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if !s.contains(',') && !s.contains('-') {
            let n: usize = s.parse().map_err(|_| format!("bad core count {s:?}"))?;
            if n == 0 {
                return Err("at least one core is needed".into());
            }
            return Ok(Self::Count(n));
        }
        let mut list = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((a, b)) = part.split_once('-') {
                let (a, b): (usize, usize) = (
                    a.trim()
                        .parse()
                        .map_err(|_| format!("bad core range {part:?}"))?,
                    b.trim()
                        .parse()
                        .map_err(|_| format!("bad core range {part:?}"))?,
                );
                if a > b {
                    return Err(format!("bad core range {part:?}"));
                }
                list.extend(a..=b);
            } else {
                list.push(part.parse().map_err(|_| format!("bad core id {part:?}"))?);
            }
        }
        if list.is_empty() {
            return Err("empty core list".into());
        }
        Ok(Self::List(list))
    }
}

impl<'de> Deserialize<'de> for Cores {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(usize),
            S(String),
            L(Vec<usize>),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Cores::from_str(&n.to_string()).map_err(serde::de::Error::custom),
            Raw::S(s) => Cores::from_str(&s).map_err(serde::de::Error::custom),
            Raw::L(l) if !l.is_empty() => Ok(Cores::List(l)),
            Raw::L(_) => Err(serde::de::Error::custom("empty core list")),
        }
    }
}

/// Command-line flags; each also reads a `VIADUCT_*` environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "viaduct-bridge",
    version,
    about = "Viaduct's data plane: a thread-per-core WebRTC SFU relay"
)]
pub struct Flags {
    /// TOML config file (keys as in the README); flags and environment override it.
    #[arg(long, env = "VIADUCT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data-plane workers: a count (`2`, pinned to cores 0..1) or core ids (`0,2-3`).
    #[arg(long, env = "VIADUCT_CORES")]
    pub cores: Option<Cores>,
    /// Address the workers' UDP sockets bind (`0.0.0.0`, `::` for dual stack, or one address).
    #[arg(long, env = "VIADUCT_BIND")]
    pub bind: Option<IpAddr>,
    /// Address announced in ICE candidates (public/NAT address); repeat or comma-separate for several.
    #[arg(long, env = "VIADUCT_ADVERTISE", value_delimiter = ',')]
    pub advertise: Option<Vec<IpAddr>>,
    /// UDP port of worker 0; worker i uses port-base + i.
    #[arg(long, env = "VIADUCT_PORT_BASE")]
    pub port_base: Option<u16>,
    /// I/O backend: auto (AF_XDP when --xdp-iface is set, else mmsg), uring, mmsg, or xdp.
    #[arg(long, env = "VIADUCT_IO_BACKEND")]
    pub io_backend: Option<IoChoice>,
    /// AF_XDP: the interface that carries the bind address (xdp needs it; auto tries AF_XDP only when it is set).
    #[arg(long, env = "VIADUCT_XDP_IFACE")]
    pub xdp_iface: Option<String>,
    /// AF_XDP: NIC queue of worker 0; worker i uses queue + i (steer port-base + i to it, e.g. ethtool ntuple).
    #[arg(long, env = "VIADUCT_XDP_QUEUE")]
    pub xdp_queue: Option<u32>,
    /// AF_XDP: UMEM frames of 2 KiB per worker, a power of two (4096 = 8 MiB, locked memory).
    #[arg(long, env = "VIADUCT_XDP_FRAMES")]
    pub xdp_frames: Option<u32>,
    /// AF_XDP: attach the XDP program in auto (native, else generic), native or generic mode.
    #[arg(long, env = "VIADUCT_XDP_MODE")]
    pub xdp_mode: Option<XdpMode>,
    /// Path of the command socket (the bridge link).
    #[arg(long, env = "VIADUCT_SOCKET")]
    pub socket: Option<PathBuf>,
    /// PEM file with the DTLS certificate and its private key (generated at start if absent).
    #[arg(long, env = "VIADUCT_CERTIFICATE")]
    pub certificate: Option<PathBuf>,
    /// Seconds without a valid ICE check before an endpoint expires (RFC 7675 says 30).
    #[arg(long, env = "VIADUCT_CONSENT_TIMEOUT")]
    pub consent_timeout: Option<u64>,
    /// Do not pin workers to cores.
    #[arg(long, env = "VIADUCT_NO_PIN")]
    pub no_pin: bool,
    /// SO_RCVBUF/SO_SNDBUF of each worker socket, bytes.
    #[arg(long, env = "VIADUCT_SOCKET_BUFFER")]
    pub socket_buffer: Option<usize>,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `viaduct_bridge=debug`.
    #[arg(long, env = "VIADUCT_LOG", default_value = "info")]
    pub log: String,
    /// Parse and validate the configuration, print it, and exit (0 when it is usable).
    #[arg(long)]
    pub check_config: bool,
}

/// The `[bridge]`-less TOML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`Flags::cores`].
    pub cores: Option<Cores>,
    /// See [`Flags::bind`].
    pub bind: Option<IpAddr>,
    /// See [`Flags::advertise`].
    pub advertise: Option<Vec<IpAddr>>,
    /// See [`Flags::port_base`].
    pub port_base: Option<u16>,
    /// See [`Flags::io_backend`].
    pub io_backend: Option<IoChoice>,
    /// See [`Flags::xdp_iface`].
    pub xdp_iface: Option<String>,
    /// See [`Flags::xdp_queue`].
    pub xdp_queue: Option<u32>,
    /// See [`Flags::xdp_frames`].
    pub xdp_frames: Option<u32>,
    /// See [`Flags::xdp_mode`].
    pub xdp_mode: Option<XdpMode>,
    /// See [`Flags::socket`].
    pub socket: Option<PathBuf>,
    /// See [`Flags::certificate`].
    pub certificate: Option<PathBuf>,
    /// See [`Flags::consent_timeout`].
    pub consent_timeout: Option<u64>,
    /// Pin workers to cores (default true).
    pub pin: Option<bool>,
    /// See [`Flags::socket_buffer`].
    pub socket_buffer: Option<usize>,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Workers and their cores.
    pub cores: Cores,
    /// Bind address.
    pub bind: IpAddr,
    /// Candidate addresses.
    pub advertise: Vec<IpAddr>,
    /// Worker 0's port.
    pub port_base: u16,
    /// I/O backend choice.
    pub io_backend: IoChoice,
    /// AF_XDP settings.
    pub xdp: XdpConfig,
    /// Command socket path.
    pub socket: PathBuf,
    /// DTLS certificate PEM, if configured.
    pub certificate: Option<PathBuf>,
    /// Consent timeout.
    pub consent_timeout: Duration,
    /// Pin workers.
    pub pin: bool,
    /// Socket buffer size.
    pub socket_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cores: Cores::Count(1),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise: Vec::new(),
            port_base: 10000,
            io_backend: IoChoice::Auto,
            xdp: XdpConfig::default(),
            socket: PathBuf::from("/run/viaduct/bridge.sock"),
            certificate: None,
            consent_timeout: Duration::from_secs(30),
            pin: true,
            socket_buffer: 16 << 20,
        }
    }
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
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Defaults ← file ← environment/flags.
    pub fn resolve(flags: &Flags) -> Result<Self, ConfigError> {
        let file = match &flags.config {
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
        };
        let d = Config::default();
        let cfg = Config {
            cores: flags.cores.clone().or(file.cores).unwrap_or(d.cores),
            bind: flags.bind.or(file.bind).unwrap_or(d.bind),
            advertise: flags
                .advertise
                .clone()
                .or(file.advertise)
                .unwrap_or_default(),
            port_base: flags.port_base.or(file.port_base).unwrap_or(d.port_base),
            io_backend: flags.io_backend.or(file.io_backend).unwrap_or(d.io_backend),
            xdp: XdpConfig {
                iface: flags.xdp_iface.clone().or(file.xdp_iface),
                queue: flags.xdp_queue.or(file.xdp_queue).unwrap_or(d.xdp.queue),
                frames: flags.xdp_frames.or(file.xdp_frames).unwrap_or(d.xdp.frames),
                mode: flags.xdp_mode.or(file.xdp_mode).unwrap_or(d.xdp.mode),
            },
            socket: flags.socket.clone().or(file.socket).unwrap_or(d.socket),
            certificate: flags.certificate.clone().or(file.certificate),
            consent_timeout: flags
                .consent_timeout
                .or(file.consent_timeout)
                .map(Duration::from_secs)
                .unwrap_or(d.consent_timeout),
            pin: !flags.no_pin && file.pin.unwrap_or(true),
            socket_buffer: flags
                .socket_buffer
                .or(file.socket_buffer)
                .unwrap_or(d.socket_buffer),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let workers = self.cores.workers();
        if workers == 0 || workers > 256 {
            return Err(ConfigError::Invalid(format!(
                "{workers} workers: use 1-256"
            )));
        }
        if usize::from(self.port_base) + workers > 65536 || (self.port_base == 0 && workers > 1) {
            return Err(ConfigError::Invalid(format!(
                "port base {} leaves no room for {workers} workers",
                self.port_base
            )));
        }
        self.xdp.validate().map_err(ConfigError::Invalid)?;
        if self.consent_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "consent timeout must be at least 1 s".into(),
            ));
        }
        Ok(())
    }

    /// The addresses candidates carry: the advertised ones, else the bind address,
    /// else (bound to a wildcard with nothing advertised) loopback.
    pub fn candidate_addresses(&self) -> Vec<IpAddr> {
        if !self.advertise.is_empty() {
            return self.advertise.clone();
        }
        if !self.bind.is_unspecified() {
            return vec![self.bind];
        }
        tracing::warn!("bound to a wildcard address with nothing advertised: candidates name 127.0.0.1; set --advertise");
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    }

    /// Worker `i`'s socket address.
    pub fn worker_addr(&self, i: usize) -> SocketAddr {
        let port = if self.port_base == 0 {
            0
        } else {
            self.port_base + i as u16
        };
        SocketAddr::new(self.bind, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_parse() {
        assert_eq!("2".parse::<Cores>(), Ok(Cores::Count(2)));
        assert_eq!("0,2-3".parse::<Cores>(), Ok(Cores::List(vec![0, 2, 3])));
        assert!("0".parse::<Cores>().is_err());
        assert!("3-1".parse::<Cores>().is_err());
        assert!("x".parse::<Cores>().is_err());
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = std::env::temp_dir().join(format!("viaduct-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bridge.toml");
        std::fs::write(
            &path,
            "cores = [1]\nport-base = 20000\nio-backend = \"mmsg\"\n",
        )
        .unwrap();
        let flags = Flags::parse_from([
            "viaduct-bridge",
            "--config",
            path.to_str().unwrap(),
            "--port-base",
            "30000",
        ]);
        let cfg = Config::resolve(&flags).unwrap();
        assert_eq!(cfg.cores, Cores::List(vec![1]));
        assert_eq!(cfg.port_base, 30000);
        assert_eq!(cfg.io_backend, IoChoice::Mmsg);
        assert_eq!(cfg.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        std::fs::write(&path, "bogus-key = 1\n").unwrap();
        let flags = Flags::parse_from(["viaduct-bridge", "--config", path.to_str().unwrap()]);
        assert!(matches!(
            Config::resolve(&flags),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
