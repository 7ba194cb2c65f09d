//! DTLS-SRTP handshakes off the hot path (RFC 5764): one slow-path thread runs
//! `webrtc-dtls` over in-memory connections, fed datagrams by workers (or peers) through
//! a bounded queue, and hands back records to send and the exported SRTP keys. It never
//! touches a socket; whoever owns the socket moves the bytes. As the server it picks
//! the SRTP profile by its own preference (`client_hello`).

pub mod client_hello;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use crossbeam::channel::{Sender, TrySendError};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};
use util011::KeyingMaterialExporter;
use webrtc_dtls::config::{ClientAuthType, Config, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;
use webrtc_dtls::crypto::Certificate;
use webrtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;

use crate::srtp::{Profile, SessionKeys};

/// Datagrams waiting for the DTLS thread, across all sessions. Handshakes are a few
/// records each; a full queue means the thread is far behind, and dropping is right
/// (DTLS retransmits).
pub const INPUT_QUEUE: usize = 4096;

/// Records waiting in one session's inbox before the handshake task reads them.
const SESSION_INBOX: usize = 64;

/// Datagrams a server reads to find the whole first ClientHello before it gives up
/// choosing the SRTP profile itself.
const MAX_HELLO_DATAGRAMS: usize = 8;

/// A handshake that has not finished after this long fails.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Identifies a session to its owner (a worker's endpoint serial, a peer's id).
pub type SessionId = u64;

/// Which side of the handshake we play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The bridge: waits for the ClientHello (SDP `setup:passive`).
    Server,
    /// A peer: sends the ClientHello (SDP `setup:active`).
    Client,
}

/// Errors of the DTLS module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// Certificate generation or loading failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The DTLS thread's queue is full.
    #[error("DTLS queue full")]
    QueueFull,
    /// The DTLS thread is gone.
    #[error("DTLS thread stopped")]
    Stopped,
}

/// Our certificate and its SHA-256 fingerprint.
#[derive(Clone)]
pub struct Identity {
    certificate: Certificate,
    fingerprint: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh self-signed ECDSA P-256 certificate.
    pub fn generate() -> Result<Self, DtlsError> {
        let certificate = Certificate::generate_self_signed_with_alg(
            vec!["viaduct".to_owned()],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        Ok(Self::from_certificate(certificate))
    }

    /// A certificate and private key from PEM text (both blocks in one file).
    pub fn from_pem(pem: &str) -> Result<Self, DtlsError> {
        let certificate =
            Certificate::from_pem(pem).map_err(|e| DtlsError::Certificate(e.to_string()))?;
        Ok(Self::from_certificate(certificate))
    }

    fn from_certificate(certificate: Certificate) -> Self {
        let der = certificate
            .certificate
            .first()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default();
        let fingerprint = sha256_fingerprint(&der);
        Self {
            certificate,
            fingerprint,
        }
    }

    /// `sha-256` fingerprint, colon-separated upper-case hex (RFC 8122 5).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// SHA-256 fingerprint of a DER certificate as RFC 8122 writes it.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut s = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// What the DTLS thread hands back to a session's owner.
#[derive(Debug)]
pub enum Output {
    /// A record (or flight) to send to the session's remote address.
    Transmit {
        /// The session.
        id: SessionId,
        /// The datagram.
        data: Vec<u8>,
    },
    /// The handshake is done and SRTP keys are exported.
    Connected {
        /// The session.
        id: SessionId,
        /// Both directions' master keys.
        keys: Box<SessionKeys>,
        /// Time from start to finish.
        took: Duration,
    },
    /// The handshake failed (wrong certificate, timeout, no common SRTP profile…).
    Failed {
        /// The session.
        id: SessionId,
        /// Why.
        reason: String,
    },
}

enum Input {
    Start {
        id: SessionId,
        remote_fingerprint: String,
        out: Sender<Output>,
    },
    Datagram {
        id: SessionId,
        data: Vec<u8>,
    },
    Close {
        id: SessionId,
    },
}

/// A handle on the DTLS thread; cheap to clone, one per worker or peer.
#[derive(Clone, Debug)]
pub struct DtlsHandle {
    tx: mpsc::Sender<Input>,
}

impl DtlsHandle {
    /// Begins a session. `out` receives its records, keys or failure. The remote
    /// certificate must hash (SHA-256) to `remote_fingerprint`.
    pub fn start(
        &self,
        id: SessionId,
        remote_fingerprint: &str,
        out: Sender<Output>,
    ) -> Result<(), DtlsError> {
        self.send(Input::Start {
            id,
            remote_fingerprint: remote_fingerprint.to_owned(),
            out,
        })
    }

    /// A DTLS record that arrived for session `id`.
    pub fn datagram(&self, id: SessionId, data: &[u8]) -> Result<(), DtlsError> {
        self.send(Input::Datagram {
            id,
            data: data.to_vec(),
        })
    }

    /// Ends session `id` (endpoint expired).
    pub fn close(&self, id: SessionId) -> Result<(), DtlsError> {
        self.send(Input::Close { id })
    }

    fn send(&self, input: Input) -> Result<(), DtlsError> {
        self.tx.try_send(input).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DtlsError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => DtlsError::Stopped,
        })
    }
}

/// Starts the DTLS thread for one role and identity; it runs until every handle is
/// dropped.
pub fn spawn(identity: Arc<Identity>, role: Role, name: &str) -> std::io::Result<DtlsHandle> {
    spawn_with_profiles(
        identity,
        role,
        name,
        &[Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80],
    )
}

/// Like [`spawn`], offering only `profiles` (in order of preference); a client that
/// offers one profile forces it.
pub fn spawn_with_profiles(
    identity: Arc<Identity>,
    role: Role,
    name: &str,
    profiles: &[Profile],
) -> std::io::Result<DtlsHandle> {
    let profiles: Arc<[SrtpProtectionProfile]> = profiles
        .iter()
        .map(|p| SrtpProtectionProfile::from(p.dtls_id()))
        .collect();
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || runtime.block_on(run(identity, role, profiles, rx)))?;
    Ok(DtlsHandle { tx })
}

struct Session {
    inbox: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

async fn run(
    identity: Arc<Identity>,
    role: Role,
    profiles: Arc<[SrtpProtectionProfile]>,
    mut rx: mpsc::Receiver<Input>,
) {
    let mut sessions: HashMap<SessionId, Session> = HashMap::new();
    while let Some(input) = rx.recv().await {
        match input {
            Input::Start {
                id,
                remote_fingerprint,
                out,
            } => {
                let (inbox, inbox_rx) = mpsc::channel(SESSION_INBOX);
                let task = tokio::spawn(handshake(
                    identity.clone(),
                    role,
                    profiles.clone(),
                    id,
                    remote_fingerprint,
                    inbox_rx,
                    out,
                ));
                if let Some(old) = sessions.insert(id, Session { inbox, task }) {
                    old.task.abort();
                }
            }
            Input::Datagram { id, data } => {
                if let Some(s) = sessions.get(&id) {
                    // A full inbox drops the record; the peer retransmits.
                    let _ = s.inbox.try_send(data);
                }
            }
            Input::Close { id } => {
                if let Some(s) = sessions.remove(&id) {
                    s.task.abort();
                }
            }
        }
        sessions.retain(|_, s| !s.task.is_finished());
    }
    for (_, s) in sessions {
        s.task.abort();
    }
}

/// webrtc-dtls's certificate check callback (its own alias is crate-private).
type VerifyFn = dyn Fn(&[Vec<u8>], &[rustls::pki_types::CertificateDer<'static>]) -> Result<(), webrtc_dtls::Error>
    + Send
    + Sync;

fn dtls_config(
    identity: &Identity,
    role: Role,
    profiles: &[SrtpProtectionProfile],
    remote_fingerprint: String,
) -> Config {
    let verify: Arc<VerifyFn> = Arc::new(move |certs: &[Vec<u8>], _| {
        let Some(leaf) = certs.first() else {
            return Err(webrtc_dtls::Error::Other("no certificate".into()));
        };
        let got = sha256_fingerprint(leaf);
        if got.eq_ignore_ascii_case(&remote_fingerprint) {
            Ok(())
        } else {
            Err(webrtc_dtls::Error::Other(format!(
                "certificate fingerprint {got} does not match the signalled one"
            )))
        }
    });
    Config {
        certificates: vec![identity.certificate.clone()],
        srtp_protection_profiles: profiles.to_vec(),
        extended_master_secret: ExtendedMasterSecretType::Require,
        client_auth: match role {
            Role::Server => ClientAuthType::RequireAnyClientCert,
            Role::Client => ClientAuthType::NoClientCert,
        },
        insecure_skip_verify: true,
        verify_peer_certificate: Some(verify),
        // Only used for SNI by a client; there is no name to check (fingerprints are).
        server_name: "viaduct".into(),
        ..Default::default()
    }
}

async fn handshake(
    identity: Arc<Identity>,
    role: Role,
    profiles: Arc<[SrtpProtectionProfile]>,
    id: SessionId,
    remote_fingerprint: String,
    mut inbox: mpsc::Receiver<Vec<u8>>,
    out: Sender<Output>,
) {
    let started = Instant::now();
    let mut early = VecDeque::new();
    let chosen = match role {
        Role::Client => profiles.to_vec(),
        Role::Server => {
            // Read the first ClientHello (keeping its datagrams for the handshake) to
            // choose the profile by our preference, not the client's order.
            let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
            let mut reader = client_hello::ClientHelloReader::default();
            let offered = loop {
                if early.len() >= MAX_HELLO_DATAGRAMS {
                    break None;
                }
                match tokio::time::timeout_at(deadline, inbox.recv()).await {
                    Ok(Some(d)) => {
                        let offer = reader.push(&d);
                        early.push_back(d);
                        match offer {
                            client_hello::Offer::Incomplete => {}
                            client_hello::Offer::Profiles(p) => break Some(p),
                            client_hello::Offer::Unreadable => break None,
                        }
                    }
                    Ok(None) => return,
                    Err(_) => return fail(&out, id, "handshake timed out".to_owned()),
                }
            };
            server_profiles(&profiles, offered.as_deref())
        }
    };
    let conn = Arc::new(ChanConn {
        id,
        early: Mutex::new(early),
        inbox: Mutex::new(inbox),
        out: out.clone(),
    });
    let config = dtls_config(&identity, role, &chosen, remote_fingerprint);
    let connect = DTLSConn::new(conn, config, role == Role::Client, None);
    let dtls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return fail(&out, id, format!("handshake failed: {e}")),
        Err(_) => return fail(&out, id, "handshake timed out".to_owned()),
    };
    let Some(profile) = Profile::from_dtls_id(dtls.selected_srtpprotection_profile() as u16) else {
        return fail(&out, id, "no common SRTP profile".to_owned());
    };
    let len = 2 * (profile.master_key_len() + profile.master_salt_len());
    let state = dtls.connection_state().await;
    let material = match state
        .export_keying_material("EXTRACTOR-dtls_srtp", &[], len)
        .await
    {
        Ok(m) => m,
        Err(e) => return fail(&out, id, format!("key export failed: {e}")),
    };
    let keys = match SessionKeys::from_dtls(profile, &material, role == Role::Client) {
        Ok(k) => k,
        Err(e) => return fail(&out, id, format!("bad keying material: {e}")),
    };
    let _ = out.send(Output::Connected {
        id,
        keys: Box::new(keys),
        took: started.elapsed(),
    });
    // Keep the connection: a peer whose last flight got lost retransmits, and only a
    // live DTLSConn answers. Application data (no data channels yet) is read and
    // dropped until the session is closed.
    let mut buf = vec![0u8; 2048];
    while dtls.read(&mut buf, None).await.is_ok() {}
}

/// The server's profile list for a client that offers `offered`: the first of ours
/// (our preference order) that the client offers, alone, so the client's order cannot
/// override it; everything of ours when the offer is unknown or shares nothing (the
/// handshake then fails or proceeds as webrtc-dtls decides).
fn server_profiles(
    ours: &[SrtpProtectionProfile],
    offered: Option<&[u16]>,
) -> Vec<SrtpProtectionProfile> {
    let Some(offered) = offered else {
        return ours.to_vec();
    };
    match ours.iter().find(|p| offered.contains(&(**p as u16))) {
        Some(best) => vec![*best],
        None => ours.to_vec(),
    }
}

fn fail(out: &Sender<Output>, id: SessionId, reason: String) {
    tracing::debug!(id, %reason, "DTLS session failed");
    let _ = out.send(Output::Failed { id, reason });
}

/// An in-memory datagram connection: records in from the owner's inbox, out to its
/// output channel.
struct ChanConn {
    id: SessionId,
    /// Datagrams read before the handshake began (the ClientHello), delivered first.
    early: Mutex<VecDeque<Vec<u8>>>,
    inbox: Mutex<mpsc::Receiver<Vec<u8>>>,
    out: Sender<Output>,
}

/// A placeholder address for the in-memory connection (webrtc-dtls asks for one).
const NOWHERE: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

#[async_trait]
impl util011::Conn for ChanConn {
    async fn connect(&self, _addr: SocketAddr) -> util011::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> util011::Result<usize> {
        if let Some(data) = self.early.lock().await.pop_front() {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            return Ok(n);
        }
        let mut inbox = self.inbox.lock().await;
        match inbox.recv().await {
            Some(data) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok(n)
            }
            None => Err(util011::Error::ErrClosedListener),
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> util011::Result<(usize, SocketAddr)> {
        Ok((self.recv(buf).await?, NOWHERE))
    }

    async fn send(&self, buf: &[u8]) -> util011::Result<usize> {
        let msg = Output::Transmit {
            id: self.id,
            data: buf.to_vec(),
        };
        match self.out.try_send(msg) {
            // Full: dropped like a lost datagram; DTLS retransmits.
            Ok(()) | Err(TrySendError::Full(_)) => Ok(buf.len()),
            Err(TrySendError::Disconnected(_)) => Err(util011::Error::ErrClosedListener),
        }
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> util011::Result<usize> {
        self.send(buf).await
    }

    fn local_addr(&self) -> util011::Result<SocketAddr> {
        Ok(NOWHERE)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> util011::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam::channel::{bounded, Receiver};

    /// Moves records between a client and a server session until both report.
    fn pump(
        client: &DtlsHandle,
        server: &DtlsHandle,
        crx: &Receiver<Output>,
        srx: &Receiver<Output>,
    ) -> (Output, Output) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut c_done, mut s_done) = (None, None);
        while (c_done.is_none() || s_done.is_none()) && Instant::now() < deadline {
            crossbeam::select! {
                recv(crx) -> m => match m {
                    Ok(Output::Transmit { data, .. }) => { let _ = server.datagram(2, &data); }
                    Ok(other) => c_done = Some(other),
                    // The session ended after its outcome (or without one).
                    Err(_) => { c_done.get_or_insert(Output::Failed { id: 1, reason: "closed".into() }); }
                },
                recv(srx) -> m => match m {
                    Ok(Output::Transmit { data, .. }) => { let _ = client.datagram(1, &data); }
                    Ok(other) => s_done = Some(other),
                    Err(_) => { s_done.get_or_insert(Output::Failed { id: 2, reason: "closed".into() }); }
                },
                default(Duration::from_millis(100)) => {}
            }
        }
        (
            c_done.expect("client outcome"),
            s_done.expect("server outcome"),
        )
    }

    #[test]
    fn handshake_exports_matching_keys() {
        let (ci, si) = (
            Arc::new(Identity::generate().unwrap()),
            Arc::new(Identity::generate().unwrap()),
        );
        let client = spawn(ci.clone(), Role::Client, "dtls-c").unwrap();
        let server = spawn(si.clone(), Role::Server, "dtls-s").unwrap();
        let (ctx, crx) = bounded(64);
        let (stx, srx) = bounded(64);
        server.start(2, ci.fingerprint(), stx).unwrap();
        client.start(1, si.fingerprint(), ctx).unwrap();
        match pump(&client, &server, &crx, &srx) {
            (Output::Connected { keys: ck, .. }, Output::Connected { keys: sk, .. }) => {
                assert_eq!(ck.profile, Profile::AeadAes128Gcm);
                assert_eq!(ck.local_key, sk.remote_key);
                assert_eq!(ck.remote_key, sk.local_key);
                assert_eq!(ck.local_salt, sk.remote_salt);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn the_server_prefers_gcm_whatever_the_client_order() {
        let (ci, si) = (
            Arc::new(Identity::generate().unwrap()),
            Arc::new(Identity::generate().unwrap()),
        );
        // A client that lists CM-SHA1-80 first, as Chromium does.
        let client = spawn_with_profiles(
            ci.clone(),
            Role::Client,
            "dtls-c",
            &[Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm],
        )
        .unwrap();
        let server = spawn(si.clone(), Role::Server, "dtls-s").unwrap();
        let (ctx, crx) = bounded(64);
        let (stx, srx) = bounded(64);
        server.start(2, ci.fingerprint(), stx).unwrap();
        client.start(1, si.fingerprint(), ctx).unwrap();
        match pump(&client, &server, &crx, &srx) {
            (Output::Connected { keys: ck, .. }, Output::Connected { keys: sk, .. }) => {
                assert_eq!(ck.profile, Profile::AeadAes128Gcm);
                assert_eq!(sk.profile, Profile::AeadAes128Gcm);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        // A client that offers only CM-SHA1-80 gets it.
        let client = spawn_with_profiles(
            ci.clone(),
            Role::Client,
            "dtls-c2",
            &[Profile::Aes128CmHmacSha1_80],
        )
        .unwrap();
        let (ctx, crx) = bounded(64);
        let (stx, srx) = bounded(64);
        server.start(2, ci.fingerprint(), stx).unwrap();
        client.start(1, si.fingerprint(), ctx).unwrap();
        match pump(&client, &server, &crx, &srx) {
            (Output::Connected { keys, .. }, Output::Connected { .. }) => {
                assert_eq!(keys.profile, Profile::Aes128CmHmacSha1_80);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn server_profile_choice() {
        let ours = [
            SrtpProtectionProfile::from(Profile::AeadAes128Gcm.dtls_id()),
            SrtpProtectionProfile::from(Profile::Aes128CmHmacSha1_80.dtls_id()),
        ];
        assert_eq!(server_profiles(&ours, Some(&[1, 7, 8])), vec![ours[0]]);
        assert_eq!(server_profiles(&ours, Some(&[1])), vec![ours[1]]);
        assert_eq!(server_profiles(&ours, Some(&[2])), ours.to_vec());
        assert_eq!(server_profiles(&ours, None), ours.to_vec());
    }

    #[test]
    fn wrong_certificate_fails() {
        let (ci, si, other) = (
            Arc::new(Identity::generate().unwrap()),
            Arc::new(Identity::generate().unwrap()),
            Identity::generate().unwrap(),
        );
        let client = spawn(ci, Role::Client, "dtls-c").unwrap();
        let server = spawn(si.clone(), Role::Server, "dtls-s").unwrap();
        let (ctx, crx) = bounded(64);
        let (stx, srx) = bounded(64);
        // The server expects some other certificate than the client's.
        server.start(2, other.fingerprint(), stx).unwrap();
        client.start(1, si.fingerprint(), ctx).unwrap();
        let (_, s) = pump(&client, &server, &crx, &srx);
        assert!(matches!(s, Output::Failed { .. }), "{s:?}");
    }

    #[test]
    fn fingerprint_format() {
        let f = sha256_fingerprint(b"abc");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert!(f.starts_with("BA:78:16:BF"));
    }
}
