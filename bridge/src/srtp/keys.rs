//! Key material: the RFC 3711 §4.3 AES-CM key derivation function (key_derivation_rate 0)
//! that turns master key+salt into session keys, and [`SessionKeys`], the DTLS-SRTP
//! (RFC 5764 §4.2) split of exported keying material into our and the peer's master keys.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;

use super::{Context, Profile, SrtpError};

/// KDF labels, RFC 3711 §4.3.1 (SRTP: 0x00..0x02) and §4.3.2 (SRTCP: 0x03..0x05).
pub(crate) const LABEL_RTP_ENCRYPTION: u8 = 0x00;
pub(crate) const LABEL_RTP_AUTH: u8 = 0x01;
pub(crate) const LABEL_RTP_SALT: u8 = 0x02;
pub(crate) const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
pub(crate) const LABEL_RTCP_AUTH: u8 = 0x04;
pub(crate) const LABEL_RTCP_SALT: u8 = 0x05;

/// Master key length of both supported profiles.
pub(crate) const MASTER_KEY_LEN: usize = 16;
/// Longest master salt (AES-CM; GCM uses 12 bytes).
pub(crate) const MAX_SALT_LEN: usize = 14;

/// Prepared AES-CM PRF keyed with a master key (RFC 3711 §4.3.1, §4.3.3).
pub(crate) struct Kdf {
    aes: Aes128,
    /// Master salt, left-aligned in 14 bytes: a 96-bit GCM salt is multiplied by 2^16
    /// (zero-padded at the end) before use in the AES_CM PRF (RFC 7714 §11, erratum 4938).
    salt: [u8; MAX_SALT_LEN],
}

impl Kdf {
    pub(crate) fn new(master_key: &[u8], master_salt: &[u8]) -> Result<Kdf, SrtpError> {
        if master_key.len() != MASTER_KEY_LEN || master_salt.len() > MAX_SALT_LEN {
            return Err(SrtpError::BadKey);
        }
        let mut salt = [0u8; MAX_SALT_LEN];
        salt[..master_salt.len()].copy_from_slice(master_salt);
        Ok(Kdf {
            aes: Aes128::new(GenericArray::from_slice(master_key)),
            salt,
        })
    }

    /// Fills `out` with the session key for `label`: with r = index DIV kdr = 0,
    /// x = (label << 48) XOR master_salt and out = AES-CM keystream with IV = x * 2^16
    /// (RFC 3711 §4.3.1 and §4.3.3).
    pub(crate) fn derive(&self, label: u8, out: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..MAX_SALT_LEN].copy_from_slice(&self.salt);
        // key_id = label || r (r = 48 zero bits), right-aligned against the 112-bit salt.
        iv[7] ^= label;
        for (i, chunk) in out.chunks_mut(16).enumerate() {
            // The low 16 bits of the IV are the block counter.
            iv[14..16].copy_from_slice(&(i as u16).to_be_bytes());
            let mut block = GenericArray::from(iv);
            self.aes.encrypt_block(&mut block);
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

/// The two directions' master keys of a DTLS-SRTP session (RFC 5764 §4.2:
/// `client_write_SRTP_master_key | server_write_SRTP_master_key |
/// client_write_SRTP_master_salt | server_write_SRTP_master_salt`).
/// The salt arrays hold `profile.master_salt_len()` valid bytes (the rest is zero).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub profile: Profile,
    pub local_key: [u8; 16],
    pub local_salt: [u8; 14],
    pub remote_key: [u8; 16],
    pub remote_salt: [u8; 14],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SessionKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Splits DTLS-exported keying material (`2 * (key_len + salt_len)` bytes, label
    /// "EXTRACTOR-dtls_srtp") into local/remote keys. The DTLS client writes with the
    /// client key, so `we_are_client` picks which half is ours.
    pub fn from_dtls(
        profile: Profile,
        material: &[u8],
        we_are_client: bool,
    ) -> Result<SessionKeys, SrtpError> {
        let kl = profile.master_key_len();
        let sl = profile.master_salt_len();
        if material.len() != 2 * (kl + sl) {
            return Err(SrtpError::BadKey);
        }
        let (keys, salts) = material.split_at(2 * kl);
        let (client_key, server_key) = keys.split_at(kl);
        let (client_salt, server_salt) = salts.split_at(sl);
        let (lk, ls, rk, rs) = if we_are_client {
            (client_key, client_salt, server_key, server_salt)
        } else {
            (server_key, server_salt, client_key, client_salt)
        };
        let mut out = SessionKeys {
            profile,
            local_key: [0; 16],
            local_salt: [0; 14],
            remote_key: [0; 16],
            remote_salt: [0; 14],
        };
        out.local_key.copy_from_slice(lk);
        out.local_salt[..sl].copy_from_slice(ls);
        out.remote_key.copy_from_slice(rk);
        out.remote_salt[..sl].copy_from_slice(rs);
        Ok(out)
    }

    /// Context that protects what we send (local keys).
    pub fn outbound(&self) -> Result<Context, SrtpError> {
        let sl = self.profile.master_salt_len();
        Context::new(self.profile, &self.local_key, &self.local_salt[..sl])
    }

    /// Context that unprotects what the peer sends (remote keys).
    pub fn inbound(&self) -> Result<Context, SrtpError> {
        let sl = self.profile.master_salt_len();
        Context::new(self.profile, &self.remote_key, &self.remote_salt[..sl])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.3.
    #[test]
    fn kdf_rfc3711_b3() {
        let kdf = Kdf::new(
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let mut key = [0u8; 16];
        kdf.derive(LABEL_RTP_ENCRYPTION, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        kdf.derive(LABEL_RTP_SALT, &mut salt);
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 20];
        kdf.derive(LABEL_RTP_AUTH, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn kdf_rejects_bad_lengths() {
        assert!(Kdf::new(&[0; 15], &[0; 14]).is_err());
        assert!(Kdf::new(&[0; 16], &[0; 15]).is_err());
    }

    #[test]
    fn from_dtls_splits_client_and_server() {
        for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
            let kl = profile.master_key_len();
            let sl = profile.master_salt_len();
            let material: Vec<u8> = (0..2 * (kl + sl)).map(|i| i as u8).collect();
            let client = SessionKeys::from_dtls(profile, &material, true).unwrap();
            let server = SessionKeys::from_dtls(profile, &material, false).unwrap();
            assert_eq!(&client.local_key[..], &material[..kl]);
            assert_eq!(&client.remote_key[..], &material[kl..2 * kl]);
            assert_eq!(&client.local_salt[..sl], &material[2 * kl..2 * kl + sl]);
            assert_eq!(&client.remote_salt[..sl], &material[2 * kl + sl..]);
            assert_eq!(client.local_key, server.remote_key);
            assert_eq!(client.local_salt, server.remote_salt);
            assert_eq!(client.remote_key, server.local_key);
            assert!(SessionKeys::from_dtls(profile, &material[1..], true).is_err());

            // The client's outbound must be readable by the server's inbound and vice versa,
            // and not by the wrong direction.
            let rtp = [
                0x80, 96, 0x12, 0x34, 0, 0, 0, 1, 0xca, 0xfe, 0xba, 0xbe, 1, 2, 3, 4, 5, 6,
            ];
            for (tx, rx, wrong) in [(&client, &server, &client), (&server, &client, &server)] {
                let mut buf = [0u8; 64];
                buf[..rtp.len()].copy_from_slice(&rtp);
                let n = tx
                    .outbound()
                    .unwrap()
                    .protect_rtp(&mut buf, rtp.len())
                    .unwrap();
                let mut copy = buf;
                assert_eq!(
                    wrong.inbound().unwrap().unprotect_rtp(&mut copy[..n]),
                    Err(SrtpError::AuthFailed)
                );
                let m = rx.inbound().unwrap().unprotect_rtp(&mut buf[..n]).unwrap();
                assert_eq!(&buf[..m], &rtp[..]);
            }
            assert!(!format!("{client:?}").contains("local_key"));
        }
    }
}
