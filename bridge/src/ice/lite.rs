//! The ICE-lite responder's decisions (RFC 8445 2.5, 7.3): is this binding request for
//! us and correctly signed, and does it nominate; plus consent freshness (RFC 7675).
//! Building the answer is `stun`'s job; owning sockets and clocks is the worker's.

use std::time::{Duration, Instant};

use super::stun::StunMessage;

/// Why a binding request is refused (each is a counted drop).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IceError {
    /// Not a Binding request, or USERNAME is missing or not `local:remote`.
    #[error("not an ICE binding request")]
    NotACheck,
    /// MESSAGE-INTEGRITY is missing or does not verify with our password.
    #[error("MESSAGE-INTEGRITY does not verify")]
    BadIntegrity,
    /// The remote ufrag is not the one the controller signalled.
    #[error("remote ufrag does not match")]
    WrongRemoteUfrag,
    /// The sender claims the controlled role: we are ICE-lite, it must control.
    #[error("peer is not controlling")]
    RoleConflict,
}

/// The local ufrag a connectivity check is addressed to: USERNAME is
/// `local:remote` from the receiver's point of view (RFC 8445 7.2.2).
pub fn local_ufrag<'a>(msg: &StunMessage<'a>) -> Option<&'a [u8]> {
    let username = msg.username()?;
    let colon = username.iter().position(|&b| b == b':')?;
    Some(&username[..colon])
}

/// Checks a binding request addressed to an endpoint whose local password is `pwd` and
/// whose remote ufrag, if signalled, is `remote_ufrag`. Returns whether it nominates
/// (USE-CANDIDATE).
pub fn check_request(
    msg: &StunMessage<'_>,
    pwd: &[u8],
    remote_ufrag: Option<&[u8]>,
) -> Result<bool, IceError> {
    if !msg.is_binding_request() {
        return Err(IceError::NotACheck);
    }
    let username = msg.username().ok_or(IceError::NotACheck)?;
    let colon = username
        .iter()
        .position(|&b| b == b':')
        .ok_or(IceError::NotACheck)?;
    if !msg.verify_integrity(pwd) {
        return Err(IceError::BadIntegrity);
    }
    if let Some(expected) = remote_ufrag {
        if &username[colon + 1..] != expected {
            return Err(IceError::WrongRemoteUfrag);
        }
    }
    if msg.ice_controlled().is_some() && msg.ice_controlling().is_none() {
        return Err(IceError::RoleConflict);
    }
    Ok(msg.use_candidate())
}

/// Consent freshness (RFC 7675): the time of the last valid check from the bound
/// address.
#[derive(Clone, Copy, Debug, Default)]
pub struct Consent {
    last: Option<Instant>,
}

impl Consent {
    /// A valid check arrived.
    pub fn refresh(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// True when consent was once given and no check came for `timeout`.
    pub fn expired(&self, now: Instant, timeout: Duration) -> bool {
        self.last
            .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::super::stun;
    use super::*;

    fn request(username: &[u8], key: &[u8], nominate: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let n = stun::write_binding_request(&mut buf, &[7; 12], username, key, 1, 42, nominate)
            .unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn accepts_signed_check_and_reads_nomination() {
        let pkt = request(b"bridge:peer", b"bridgepassword0123456789", true);
        let msg = StunMessage::parse(&pkt).unwrap();
        assert_eq!(local_ufrag(&msg), Some(&b"bridge"[..]));
        assert_eq!(
            check_request(&msg, b"bridgepassword0123456789", Some(b"peer")),
            Ok(true)
        );
        let pkt = request(b"bridge:peer", b"bridgepassword0123456789", false);
        let msg = StunMessage::parse(&pkt).unwrap();
        assert_eq!(
            check_request(&msg, b"bridgepassword0123456789", None),
            Ok(false)
        );
    }

    #[test]
    fn refuses_bad_checks() {
        type Case<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>, IceError);
        let cases: [Case; 3] = [
            (
                b"bridge:peer",
                b"wrong-password-xxxxxxxxx",
                Some(b"peer"),
                IceError::BadIntegrity,
            ),
            (
                b"bridge:other",
                b"bridgepassword0123456789",
                Some(b"peer"),
                IceError::WrongRemoteUfrag,
            ),
            (
                b"bridgepeer",
                b"bridgepassword0123456789",
                None,
                IceError::NotACheck,
            ),
        ];
        for (user, key, remote, want) in cases {
            let pkt = request(user, key, false);
            let msg = StunMessage::parse(&pkt).unwrap();
            assert_eq!(
                check_request(&msg, b"bridgepassword0123456789", remote),
                Err(want)
            );
        }
    }

    #[test]
    fn consent_expiry() {
        let t0 = Instant::now();
        let mut c = Consent::default();
        assert!(!c.expired(t0 + Duration::from_secs(100), Duration::from_secs(30)));
        c.refresh(t0);
        assert!(!c.expired(t0 + Duration::from_secs(29), Duration::from_secs(30)));
        assert!(c.expired(t0 + Duration::from_secs(30), Duration::from_secs(30)));
    }
}
