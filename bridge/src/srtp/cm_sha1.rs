//! AES_CM_128_HMAC_SHA1_80 transform for SRTP and SRTCP (RFC 3711 §4.1.1 AES counter
//! mode, §4.2.1 HMAC-SHA1 truncated to 80 bits), in place. Only per-packet crypto lives
//! here; header parsing, index estimation and replay checks are in [`super::Context`].

use aes::cipher::{generic_array::GenericArray, InnerIvInit, KeyInit, StreamCipher};
use aes::Aes128Enc;
use ctr::cipher::StreamCipherCoreWrapper;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::keys::{
    Kdf, LABEL_RTCP_AUTH, LABEL_RTCP_ENCRYPTION, LABEL_RTCP_SALT, LABEL_RTP_AUTH,
    LABEL_RTP_ENCRYPTION, LABEL_RTP_SALT,
};
use super::SrtpError;

/// Authentication tag length, n_tag = 80 bits (RFC 3711 §5.2).
pub(crate) const TAG_LEN: usize = 10;
/// Session salt length, n_s = 112 bits (RFC 3711 §8.2).
const SALT_LEN: usize = 14;
/// Session authentication key length, n_a = 160 bits (RFC 3711 §8.2).
const AUTH_KEY_LEN: usize = 20;
/// The E||SRTCP-index word (RFC 3711 §3.4).
const ESRTCP_LEN: usize = 4;
/// Fixed RTCP header + sender SSRC that stays in the clear (RFC 3711 §3.4).
const RTCP_CLEAR: usize = 8;

type HmacSha1 = Hmac<Sha1>;
type CtrCore = ctr::CtrCore<Aes128Enc, ctr::flavors::Ctr128BE>;

/// Session keys, prepared once: AES key schedules, keyed HMAC states (cloned per
/// packet, never re-keyed) and the session salts.
pub(crate) struct CmSha1 {
    rtp_aes: Aes128Enc,
    rtcp_aes: Aes128Enc,
    rtp_mac: HmacSha1,
    rtcp_mac: HmacSha1,
    rtp_salt: [u8; SALT_LEN],
    rtcp_salt: [u8; SALT_LEN],
}

/// XORs `data` with the AES-CM keystream starting at counter block `iv`
/// (RFC 3711 §4.1.1: block j is IV + j; the low 16 bits of IV are zero).
fn apply_cm(aes: &Aes128Enc, iv: [u8; 16], data: &mut [u8]) {
    let core = CtrCore::inner_iv_init(aes.clone(), &GenericArray::from(iv));
    StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
}

/// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), where i is the
/// 48-bit SRTP packet index or the 31-bit SRTCP index.
fn cm_iv(salt: &[u8; SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..SALT_LEN].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..8]) {
        *d ^= s;
    }
    iv
}

fn hmac(key: &[u8]) -> Result<HmacSha1, SrtpError> {
    <HmacSha1 as KeyInit>::new_from_slice(key).map_err(|_| SrtpError::BadKey)
}

impl CmSha1 {
    /// Derives the six session keys/salts (RFC 3711 §4.3, labels 0..5).
    pub(crate) fn new(kdf: &Kdf) -> Result<CmSha1, SrtpError> {
        let mut k = [0u8; 16];
        kdf.derive(LABEL_RTP_ENCRYPTION, &mut k);
        let rtp_aes = Aes128Enc::new(&GenericArray::from(k));
        kdf.derive(LABEL_RTCP_ENCRYPTION, &mut k);
        let rtcp_aes = Aes128Enc::new(&GenericArray::from(k));
        let mut a = [0u8; AUTH_KEY_LEN];
        kdf.derive(LABEL_RTP_AUTH, &mut a);
        let rtp_mac = hmac(&a)?;
        kdf.derive(LABEL_RTCP_AUTH, &mut a);
        let rtcp_mac = hmac(&a)?;
        let mut rtp_salt = [0u8; SALT_LEN];
        kdf.derive(LABEL_RTP_SALT, &mut rtp_salt);
        let mut rtcp_salt = [0u8; SALT_LEN];
        kdf.derive(LABEL_RTCP_SALT, &mut rtcp_salt);
        Ok(CmSha1 {
            rtp_aes,
            rtcp_aes,
            rtp_mac,
            rtcp_mac,
            rtp_salt,
            rtcp_salt,
        })
    }

    /// RFC 3711 §4.2: tag = HMAC(k_a, authenticated portion || ROC), truncated to 80 bits.
    fn rtp_mac(&self, authenticated: &[u8], roc: u32) -> HmacSha1 {
        let mut mac = self.rtp_mac.clone();
        mac.update(authenticated);
        mac.update(&roc.to_be_bytes());
        mac
    }

    /// Encrypts `buf[hdr_len..len]`, appends the 10-byte tag. Returns the SRTP length.
    pub(crate) fn protect_rtp(
        &self,
        buf: &mut [u8],
        hdr_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let out_len = len + TAG_LEN;
        let pkt = buf.get_mut(..out_len).ok_or(SrtpError::BufferTooSmall)?;
        let payload = pkt.get_mut(hdr_len..len).ok_or(SrtpError::Malformed)?;
        apply_cm(&self.rtp_aes, cm_iv(&self.rtp_salt, ssrc, index), payload);
        let tag = self
            .rtp_mac(&pkt[..len], (index >> 16) as u32)
            .finalize()
            .into_bytes();
        pkt[len..].copy_from_slice(&tag[..TAG_LEN]);
        Ok(out_len)
    }

    /// Verifies the trailing tag, then decrypts `buf[hdr_len..]`. Returns the RTP length.
    /// `buf` is untouched on failure.
    pub(crate) fn unprotect_rtp(
        &self,
        buf: &mut [u8],
        hdr_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let n = buf.len();
        if n < hdr_len + TAG_LEN {
            return Err(SrtpError::Malformed);
        }
        let body = n - TAG_LEN;
        self.rtp_mac(&buf[..body], (index >> 16) as u32)
            .verify_truncated_left(&buf[body..])
            .map_err(|_| SrtpError::AuthFailed)?;
        apply_cm(
            &self.rtp_aes,
            cm_iv(&self.rtp_salt, ssrc, index),
            &mut buf[hdr_len..body],
        );
        Ok(body)
    }

    /// RFC 3711 §3.4: `header(8) | ciphertext | E=1 || index(4) | tag(10)`, the tag
    /// covering everything before it. Returns the SRTCP length.
    pub(crate) fn protect_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<usize, SrtpError> {
        let out_len = len + ESRTCP_LEN + TAG_LEN;
        let pkt = buf.get_mut(..out_len).ok_or(SrtpError::BufferTooSmall)?;
        let body = pkt.get_mut(RTCP_CLEAR..len).ok_or(SrtpError::Malformed)?;
        apply_cm(
            &self.rtcp_aes,
            cm_iv(&self.rtcp_salt, ssrc, u64::from(index & 0x7fff_ffff)),
            body,
        );
        pkt[len..len + ESRTCP_LEN].copy_from_slice(&(index | 0x8000_0000).to_be_bytes());
        let mut mac = self.rtcp_mac.clone();
        mac.update(&pkt[..len + ESRTCP_LEN]);
        let tag = mac.finalize().into_bytes();
        pkt[len + ESRTCP_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        Ok(out_len)
    }

    /// Verifies the tag, then (if `encrypted`, the E flag) decrypts. `index` is the 31-bit
    /// SRTCP index read by the caller. Returns the RTCP length; `buf` untouched on failure.
    pub(crate) fn unprotect_rtcp(
        &self,
        buf: &mut [u8],
        ssrc: u32,
        index: u32,
        encrypted: bool,
    ) -> Result<usize, SrtpError> {
        let n = buf.len();
        if n < RTCP_CLEAR + ESRTCP_LEN + TAG_LEN {
            return Err(SrtpError::Malformed);
        }
        let rtcp_len = n - ESRTCP_LEN - TAG_LEN;
        let mut mac = self.rtcp_mac.clone();
        mac.update(&buf[..n - TAG_LEN]);
        mac.verify_truncated_left(&buf[n - TAG_LEN..])
            .map_err(|_| SrtpError::AuthFailed)?;
        if encrypted {
            apply_cm(
                &self.rtcp_aes,
                cm_iv(&self.rtcp_salt, ssrc, u64::from(index & 0x7fff_ffff)),
                &mut buf[RTCP_CLEAR..rtcp_len],
            );
        }
        Ok(rtcp_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.2: AES-CM keystream for session key 2B7E...4F3C,
    /// salt F0F1...FCFD, SSRC 0, index 0.
    #[test]
    fn aes_cm_rfc3711_b2() {
        let aes = Aes128Enc::new_from_slice(&hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap();
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let iv = cm_iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut ks = vec![0u8; 0x1_0002 * 16];
        apply_cm(&aes, iv, &mut ks);
        let block = |j: usize| ks[j * 16..j * 16 + 16].to_vec();
        assert_eq!(block(0), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(1), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(2), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    #[test]
    fn iv_layout() {
        let salt = [0u8; SALT_LEN];
        let iv = cm_iv(&salt, 0x1122_3344, 0x5566_7788_99aa);
        assert_eq!(iv.to_vec(), hex("00000000112233445566778899aa0000"));
    }

    #[test]
    fn rtp_tamper_leaves_buffer_untouched() {
        let c = CmSha1::new(&Kdf::new(&[1; 16], &[2; 14]).unwrap()).unwrap();
        let mut buf = [0u8; 40];
        buf[0] = 0x80;
        buf[12..20].copy_from_slice(b"payload!");
        let n = c.protect_rtp(&mut buf, 12, 20, 0, 3).unwrap();
        assert_eq!(n, 30);
        buf[15] ^= 0x40;
        let before = buf;
        assert_eq!(
            c.unprotect_rtp(&mut buf[..n], 12, 0, 3),
            Err(SrtpError::AuthFailed)
        );
        assert_eq!(buf, before);
        buf[15] ^= 0x40;
        assert_eq!(c.unprotect_rtp(&mut buf[..n], 12, 0, 3), Ok(20));
        assert_eq!(&buf[12..20], b"payload!");
    }

    #[test]
    fn rtcp_unencrypted_round_trip() {
        // Build an E=0 packet by hand (RFC 3711 §3.4): plaintext, index word, HMAC tag.
        let c = CmSha1::new(&Kdf::new(&[3; 16], &[4; 14]).unwrap()).unwrap();
        let rtcp = [0x80u8, 201, 0, 1, 0, 0, 0, 42];
        let mut pkt = rtcp.to_vec();
        pkt.extend_from_slice(&7u32.to_be_bytes());
        let mut mac = c.rtcp_mac.clone();
        mac.update(&pkt);
        pkt.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        assert_eq!(c.unprotect_rtcp(&mut pkt, 42, 7, false), Ok(8));
        assert_eq!(&pkt[..8], &rtcp);
        pkt[12] ^= 0x80; // set E: now the tag no longer matches
        assert_eq!(
            c.unprotect_rtcp(&mut pkt, 42, 7, true),
            Err(SrtpError::AuthFailed)
        );
    }
}
