//! Sans-IO STUN (RFC 5389 / RFC 8489) for ICE (RFC 8445) with short-term credentials:
//! a zero-copy, bounds-checked parser with MESSAGE-INTEGRITY / FINGERPRINT checks, and
//! allocation-free writers for Binding requests, success and error responses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The fixed magic cookie in bytes 4..8 of every RFC 5389 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the fixed STUN header.
pub const HEADER_LEN: usize = 20;
/// The Binding method.
pub const METHOD_BINDING: u16 = 0x001;

/// XOR constant for FINGERPRINT (RFC 5389 15.5): ASCII "STUN".
const FINGERPRINT_XOR: u32 = 0x5354_554E;

// Attribute types (RFC 5389 18.2, RFC 8445 16.1).
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_ICE_CONTROLLED: u16 = 0x8029;
const ATTR_ICE_CONTROLLING: u16 = 0x802A;

/// Size of an HMAC-SHA1 MESSAGE-INTEGRITY value.
const INTEGRITY_LEN: usize = 20;
/// Maximum USERNAME length (RFC 5389 15.3).
const MAX_USERNAME: usize = 513;
/// Maximum ERROR-CODE reason phrase length in bytes (RFC 5389 15.6).
const MAX_REASON: usize = 763;

/// Everything that can go wrong parsing or writing a STUN message.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunError {
    /// Fewer than 20 bytes.
    #[error("STUN message shorter than its 20-byte header")]
    TooShort,
    /// First two bits not zero or wrong magic cookie.
    #[error("not a STUN message")]
    NotStun,
    /// Header length not a multiple of 4 or not matching the datagram.
    #[error("STUN length field does not match the message")]
    BadLength,
    /// An attribute overruns the message, has a bad size/value, or is misplaced.
    #[error("malformed or misplaced STUN attribute")]
    BadAttribute,
    /// FINGERPRINT present but wrong.
    #[error("STUN FINGERPRINT mismatch")]
    BadFingerprint,
    /// Output buffer too small for the message being written.
    #[error("output buffer too small for STUN message")]
    BufferTooSmall,
    /// A value given to a writer is out of range (username too long, bad error code...).
    #[error("invalid argument for STUN writer")]
    InvalidArgument,
}

/// STUN message class (RFC 5389 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Request (0b00).
    Request,
    /// Indication (0b01).
    Indication,
    /// Success response (0b10).
    Success,
    /// Error response (0b11).
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// RFC 7983 demultiplexing: a first byte in 0..=3 means STUN.
pub fn is_stun(first_byte: u8) -> bool {
    first_byte <= 3
}

/// Zero-copy view of a parsed STUN message.
#[derive(Clone, Copy, Debug)]
pub struct StunMessage<'a> {
    buf: &'a [u8],
    msg_type: u16,
    username: Option<&'a [u8]>,
    priority: Option<u32>,
    use_candidate: bool,
    ice_controlling: Option<u64>,
    ice_controlled: Option<u64>,
    xor_mapped: Option<SocketAddr>,
    error_code: Option<u16>,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    integrity_at: Option<usize>,
    has_fingerprint: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s: &[u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(*s))
}

fn exact<const N: usize>(v: &[u8]) -> Result<&[u8; N], StunError> {
    v.try_into().map_err(|_| StunError::BadAttribute)
}

/// Decodes an XOR-MAPPED-ADDRESS value (RFC 5389 15.2).
fn decode_xor_address(v: &[u8], tid: &[u8; 12]) -> Result<SocketAddr, StunError> {
    let (head, addr) = v.split_first_chunk::<4>().ok_or(StunError::BadAttribute)?;
    let port = u16::from_be_bytes([head[2], head[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (head[1], addr.len()) {
        (0x01, 4) => {
            let x = u32::from_be_bytes(*exact::<4>(addr)?) ^ MAGIC_COOKIE;
            IpAddr::V4(Ipv4Addr::from(x))
        }
        (0x02, 16) => {
            let mut x = *exact::<16>(addr)?;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(tid);
            for (b, m) in x.iter_mut().zip(mask) {
                *b ^= m;
            }
            IpAddr::V6(Ipv6Addr::from(x))
        }
        _ => return Err(StunError::BadAttribute),
    };
    Ok(SocketAddr::new(ip, port))
}

impl<'a> StunMessage<'a> {
    /// Parses and validates a STUN message (RFC 5389 6 header, 15 attributes).
    ///
    /// Checks the header (first two bits 0, magic cookie, length a multiple of 4 and equal
    /// to `buf.len() - 20`), walks every attribute with bounds checks (RFC 5389 15), and
    /// records the ICE-relevant ones. FINGERPRINT (RFC 5389 15.5) is verified here and must
    /// be last; MESSAGE-INTEGRITY (15.4) may only be followed by FINGERPRINT. Unknown
    /// attributes are skipped; only the first of a repeated attribute counts.
    pub fn parse(buf: &'a [u8]) -> Result<Self, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::TooShort);
        }
        let msg_type = be16(buf, 0).ok_or(StunError::TooShort)?;
        if msg_type & 0xC000 != 0 || be32(buf, 4) != Some(MAGIC_COOKIE) {
            return Err(StunError::NotStun);
        }
        let length = usize::from(be16(buf, 2).ok_or(StunError::TooShort)?);
        if length % 4 != 0 || length != buf.len() - HEADER_LEN {
            return Err(StunError::BadLength);
        }
        let tid: &[u8; 12] = buf
            .get(8..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(StunError::TooShort)?;

        let mut msg = StunMessage {
            buf,
            msg_type,
            username: None,
            priority: None,
            use_candidate: false,
            ice_controlling: None,
            ice_controlled: None,
            xor_mapped: None,
            error_code: None,
            integrity_at: None,
            has_fingerprint: false,
        };

        let mut pos = HEADER_LEN;
        while pos < buf.len() {
            if msg.has_fingerprint {
                // Nothing may follow FINGERPRINT.
                return Err(StunError::BadAttribute);
            }
            let at = be16(buf, pos).ok_or(StunError::BadAttribute)?;
            let alen = usize::from(be16(buf, pos + 2).ok_or(StunError::BadAttribute)?);
            let vstart = pos + 4;
            let value = buf
                .get(vstart..vstart + alen)
                .ok_or(StunError::BadAttribute)?;
            let next = vstart + ((alen + 3) & !3);
            if next > buf.len() {
                return Err(StunError::BadAttribute);
            }
            if msg.integrity_at.is_some() && at != ATTR_FINGERPRINT {
                return Err(StunError::BadAttribute);
            }
            match at {
                ATTR_USERNAME => {
                    if alen > MAX_USERNAME {
                        return Err(StunError::BadAttribute);
                    }
                    msg.username.get_or_insert(value);
                }
                ATTR_PRIORITY => {
                    let p = u32::from_be_bytes(*exact::<4>(value)?);
                    msg.priority.get_or_insert(p);
                }
                ATTR_USE_CANDIDATE => {
                    if alen != 0 {
                        return Err(StunError::BadAttribute);
                    }
                    msg.use_candidate = true;
                }
                ATTR_ICE_CONTROLLING => {
                    let t = u64::from_be_bytes(*exact::<8>(value)?);
                    msg.ice_controlling.get_or_insert(t);
                }
                ATTR_ICE_CONTROLLED => {
                    let t = u64::from_be_bytes(*exact::<8>(value)?);
                    msg.ice_controlled.get_or_insert(t);
                }
                ATTR_XOR_MAPPED_ADDRESS => {
                    let a = decode_xor_address(value, tid)?;
                    msg.xor_mapped.get_or_insert(a);
                }
                ATTR_ERROR_CODE => {
                    // RFC 5389 15.6: 21 reserved bits, 3-bit class (3..=6), number 0..=99.
                    let (head, _reason) = value
                        .split_first_chunk::<4>()
                        .ok_or(StunError::BadAttribute)?;
                    let class = u16::from(head[2] & 0x07);
                    let number = u16::from(head[3]);
                    if !(3..=6).contains(&class) || number > 99 {
                        return Err(StunError::BadAttribute);
                    }
                    msg.error_code.get_or_insert(class * 100 + number);
                }
                ATTR_MESSAGE_INTEGRITY => {
                    if alen != INTEGRITY_LEN {
                        return Err(StunError::BadAttribute);
                    }
                    msg.integrity_at = Some(pos);
                }
                ATTR_FINGERPRINT => {
                    let want = u32::from_be_bytes(*exact::<4>(value)?);
                    let covered = buf.get(..pos).ok_or(StunError::BadAttribute)?;
                    if crc32fast::hash(covered) ^ FINGERPRINT_XOR != want {
                        return Err(StunError::BadFingerprint);
                    }
                    msg.has_fingerprint = true;
                }
                _ => {}
            }
            pos = next;
        }
        Ok(msg)
    }

    /// The message class (RFC 5389 6: bits C1 = 0x0100, C0 = 0x0010 of the type).
    pub fn class(&self) -> Class {
        match ((self.msg_type >> 7) & 0b10) | ((self.msg_type >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }

    /// The 12-bit method (0x001 = Binding).
    pub fn method(&self) -> u16 {
        let t = self.msg_type;
        (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80)
    }

    /// A Binding request (the ICE connectivity check).
    pub fn is_binding_request(&self) -> bool {
        self.method() == METHOD_BINDING && self.class() == Class::Request
    }

    /// The 96-bit transaction ID.
    pub fn transaction_id(&self) -> &'a [u8; 12] {
        const ZERO: [u8; 12] = [0; 12];
        self.buf
            .get(8..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .unwrap_or(&ZERO)
    }

    /// The whole message bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// USERNAME value (for ICE: `remote-ufrag:local-ufrag` as seen by the receiver).
    pub fn username(&self) -> Option<&'a [u8]> {
        self.username
    }

    /// ICE PRIORITY.
    pub fn priority(&self) -> Option<u32> {
        self.priority
    }

    /// ICE USE-CANDIDATE flag (nomination).
    pub fn use_candidate(&self) -> bool {
        self.use_candidate
    }

    /// ICE-CONTROLLING tiebreaker.
    pub fn ice_controlling(&self) -> Option<u64> {
        self.ice_controlling
    }

    /// ICE-CONTROLLED tiebreaker.
    pub fn ice_controlled(&self) -> Option<u64> {
        self.ice_controlled
    }

    /// Decoded XOR-MAPPED-ADDRESS (IPv4 or IPv6).
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.xor_mapped
    }

    /// ERROR-CODE as `class * 100 + number` (e.g. 401, 487).
    pub fn error_code(&self) -> Option<u16> {
        self.error_code
    }

    /// MESSAGE-INTEGRITY present.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// FINGERPRINT present (and, since parsing succeeded, correct).
    pub fn has_fingerprint(&self) -> bool {
        self.has_fingerprint
    }

    /// Checks MESSAGE-INTEGRITY (RFC 5389 15.4): HMAC-SHA1 keyed with the ICE password
    /// over the message up to the attribute, with the header length field set as if
    /// MESSAGE-INTEGRITY were the last attribute. Constant-time compare; `false` if absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let (Some(header), Some(rest), Some(tag)) = (
            self.buf.get(..HEADER_LEN),
            self.buf.get(HEADER_LEN..at),
            self.buf.get(at + 4..at + 4 + INTEGRITY_LEN),
        ) else {
            return false;
        };
        let Ok(adjusted) = u16::try_from(at + 4 + INTEGRITY_LEN - HEADER_LEN) else {
            return false;
        };
        let mut patched = [0u8; HEADER_LEN];
        patched.copy_from_slice(header);
        patched[2..4].copy_from_slice(&adjusted.to_be_bytes());
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
            return false;
        };
        mac.update(&patched);
        mac.update(rest);
        mac.verify_slice(tag).is_ok()
    }
}

/// Bounds-checked STUN message writer over a caller buffer.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    fn new(
        buf: &'b mut [u8],
        method: u16,
        class: Class,
        tid: &[u8; 12],
    ) -> Result<Self, StunError> {
        let m = method & 0x0FFF;
        let c = class.bits();
        let t = (m & 0x000F)
            | ((c & 0b01) << 4)
            | ((m & 0x0070) << 1)
            | ((c & 0b10) << 7)
            | ((m & 0x0F80) << 2);
        let mut w = Writer { buf, pos: 0 };
        w.put(&t.to_be_bytes())?;
        w.put(&[0, 0])?;
        w.put(&MAGIC_COOKIE.to_be_bytes())?;
        w.put(tid)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StunError> {
        let end = self.pos + bytes.len();
        self.buf
            .get_mut(self.pos..end)
            .ok_or(StunError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Writes an attribute header + value + zero padding.
    fn attr(&mut self, typ: u16, parts: &[&[u8]]) -> Result<(), StunError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len16 = u16::try_from(len).map_err(|_| StunError::InvalidArgument)?;
        self.put(&typ.to_be_bytes())?;
        self.put(&len16.to_be_bytes())?;
        for p in parts {
            self.put(p)?;
        }
        let pad = (4 - len % 4) % 4;
        self.put(&[0u8; 3][..pad])
    }

    /// Sets the header length field to `body_len`.
    fn set_length(&mut self, body_len: usize) -> Result<(), StunError> {
        let l = u16::try_from(body_len).map_err(|_| StunError::InvalidArgument)?;
        self.buf
            .get_mut(2..4)
            .ok_or(StunError::BufferTooSmall)?
            .copy_from_slice(&l.to_be_bytes());
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY (RFC 5389 15.4).
    fn integrity(&mut self, key: &[u8]) -> Result<(), StunError> {
        let start = self.pos;
        if self.buf.len() < start + 4 + INTEGRITY_LEN {
            return Err(StunError::BufferTooSmall);
        }
        self.set_length(start + 4 + INTEGRITY_LEN - HEADER_LEN)?;
        let mut mac = Hmac::<Sha1>::new_from_slice(key).map_err(|_| StunError::InvalidArgument)?;
        mac.update(self.buf.get(..start).ok_or(StunError::BufferTooSmall)?);
        let tag = mac.finalize().into_bytes();
        self.attr(ATTR_MESSAGE_INTEGRITY, &[&tag])
    }

    /// Appends FINGERPRINT (RFC 5389 15.5) and returns the total length.
    fn finish_with_fingerprint(mut self) -> Result<usize, StunError> {
        let start = self.pos;
        if self.buf.len() < start + 8 {
            return Err(StunError::BufferTooSmall);
        }
        self.set_length(start + 8 - HEADER_LEN)?;
        let crc = crc32fast::hash(self.buf.get(..start).ok_or(StunError::BufferTooSmall)?)
            ^ FINGERPRINT_XOR;
        self.attr(ATTR_FINGERPRINT, &[&crc.to_be_bytes()])?;
        Ok(self.pos)
    }
}

/// Success response to a Binding request (RFC 8445 7.3.1.4 / RFC 5389 7.3.1):
/// XOR-MAPPED-ADDRESS(`mapped`), MESSAGE-INTEGRITY(`key`), FINGERPRINT. Returns bytes written.
pub fn write_binding_success(
    buf: &mut [u8],
    transaction_id: &[u8; 12],
    mapped: SocketAddr,
    key: &[u8],
) -> Result<usize, StunError> {
    let mut w = Writer::new(buf, METHOD_BINDING, Class::Success, transaction_id)?;
    let xport = (mapped.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes();
    match mapped.ip() {
        IpAddr::V4(ip) => {
            let x = (u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes();
            w.attr(ATTR_XOR_MAPPED_ADDRESS, &[&[0, 0x01], &xport, &x])?;
        }
        IpAddr::V6(ip) => {
            let mut x = ip.octets();
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(transaction_id);
            for (b, m) in x.iter_mut().zip(mask) {
                *b ^= m;
            }
            w.attr(ATTR_XOR_MAPPED_ADDRESS, &[&[0, 0x02], &xport, &x])?;
        }
    }
    w.integrity(key)?;
    w.finish_with_fingerprint()
}

/// ICE connectivity check from the controlling agent (RFC 8445 7.2.2): USERNAME,
/// PRIORITY, ICE-CONTROLLING(`tiebreaker`), USE-CANDIDATE if `nominate`,
/// MESSAGE-INTEGRITY(`key`), FINGERPRINT. Returns bytes written.
pub fn write_binding_request(
    buf: &mut [u8],
    transaction_id: &[u8; 12],
    username: &[u8],
    key: &[u8],
    priority: u32,
    tiebreaker: u64,
    nominate: bool,
) -> Result<usize, StunError> {
    if username.len() > MAX_USERNAME {
        return Err(StunError::InvalidArgument);
    }
    let mut w = Writer::new(buf, METHOD_BINDING, Class::Request, transaction_id)?;
    w.attr(ATTR_USERNAME, &[username])?;
    w.attr(ATTR_PRIORITY, &[&priority.to_be_bytes()])?;
    w.attr(ATTR_ICE_CONTROLLING, &[&tiebreaker.to_be_bytes()])?;
    if nominate {
        w.attr(ATTR_USE_CANDIDATE, &[])?;
    }
    w.integrity(key)?;
    w.finish_with_fingerprint()
}

/// Binding error response (RFC 5389 7.3.1.1, 15.6) with ERROR-CODE(`code`, `reason`) and
/// FINGERPRINT, no integrity (e.g. 400 Bad Request, 401 Unauthorized, 487 Role Conflict).
/// `code` must be in 300..=699 and `reason` at most 763 bytes.
pub fn write_binding_error(
    buf: &mut [u8],
    transaction_id: &[u8; 12],
    code: u16,
    reason: &str,
) -> Result<usize, StunError> {
    if !(300..=699).contains(&code) || reason.len() > MAX_REASON {
        return Err(StunError::InvalidArgument);
    }
    // Both fit in a byte: class is 3..=6, number 0..=99.
    let class = (code / 100) as u8;
    let number = (code % 100) as u8;
    let mut w = Writer::new(buf, METHOD_BINDING, Class::Error, transaction_id)?;
    w.attr(
        ATTR_ERROR_CODE,
        &[&[0, 0, class, number], reason.as_bytes()],
    )?;
    w.finish_with_fingerprint()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    // RFC 5769 2.1
    const SAMPLE_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    // RFC 5769 2.2
    const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    // RFC 5769 2.3
    const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];

    const TID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    #[test]
    fn rfc5769_sample_request() {
        let m = StunMessage::parse(&SAMPLE_REQUEST).unwrap();
        assert_eq!(m.class(), Class::Request);
        assert_eq!(m.method(), METHOD_BINDING);
        assert!(m.is_binding_request());
        assert_eq!(m.transaction_id(), &TID);
        assert_eq!(m.username(), Some(&b"evtj:h6vY"[..]));
        assert_eq!(m.priority(), Some(0x6e00_01ff));
        assert_eq!(m.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
        assert_eq!(m.ice_controlling(), None);
        assert!(!m.use_candidate());
        assert!(m.has_integrity());
        assert!(m.has_fingerprint());
        assert!(m.verify_integrity(PASSWORD));
        assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
        assert!(!m.verify_integrity(b""));
    }

    #[test]
    fn rfc5769_ipv4_response() {
        let m = StunMessage::parse(&SAMPLE_IPV4_RESPONSE).unwrap();
        assert_eq!(m.class(), Class::Success);
        assert_eq!(m.method(), METHOD_BINDING);
        assert!(!m.is_binding_request());
        assert_eq!(
            m.xor_mapped_address(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert!(m.has_fingerprint());
        assert!(m.verify_integrity(PASSWORD));
    }

    #[test]
    fn rfc5769_ipv6_response() {
        let m = StunMessage::parse(&SAMPLE_IPV6_RESPONSE).unwrap();
        assert_eq!(m.class(), Class::Success);
        assert_eq!(
            m.xor_mapped_address(),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
        assert!(m.has_fingerprint());
        assert!(m.verify_integrity(PASSWORD));
    }

    #[test]
    fn bad_fingerprint_rejected() {
        let mut b = SAMPLE_REQUEST;
        let n = b.len();
        b[n - 1] ^= 1;
        assert_eq!(
            StunMessage::parse(&b).err(),
            Some(StunError::BadFingerprint)
        );
        // Corrupting covered bytes (USERNAME) also breaks the fingerprint.
        let mut b = SAMPLE_REQUEST;
        b[64] ^= 1;
        assert_eq!(
            StunMessage::parse(&b).err(),
            Some(StunError::BadFingerprint)
        );
    }

    #[test]
    fn forged_integrity_fails() {
        // Change the integrity tag and re-fix the fingerprint so parsing succeeds.
        let mut b = SAMPLE_REQUEST;
        b[90] ^= 0x80;
        let n = b.len();
        let crc = crc32fast::hash(&b[..n - 8]) ^ FINGERPRINT_XOR;
        b[n - 4..].copy_from_slice(&crc.to_be_bytes());
        let m = StunMessage::parse(&b).unwrap();
        assert!(m.has_integrity());
        assert!(!m.verify_integrity(PASSWORD));

        // Tamper with PRIORITY (covered by integrity), re-fix fingerprint.
        let mut b = SAMPLE_REQUEST;
        b[47] ^= 1;
        let crc = crc32fast::hash(&b[..n - 8]) ^ FINGERPRINT_XOR;
        b[n - 4..].copy_from_slice(&crc.to_be_bytes());
        let m = StunMessage::parse(&b).unwrap();
        assert!(!m.verify_integrity(PASSWORD));
    }

    #[test]
    fn integrity_without_fingerprint() {
        // Drop FINGERPRINT: integrity still verifies (length adjusted per 15.4).
        let mut b = SAMPLE_REQUEST;
        let n = b.len() - 8;
        b[2..4].copy_from_slice(&((n - HEADER_LEN) as u16).to_be_bytes());
        let m = StunMessage::parse(&b[..n]).unwrap();
        assert!(!m.has_fingerprint());
        assert!(m.verify_integrity(PASSWORD));
    }

    #[test]
    fn round_trip_success_v4_v6() {
        let mut buf = [0u8; 128];
        for addr in ["203.0.113.7:50000", "[2001:db8::1]:443", "0.0.0.0:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let n = write_binding_success(&mut buf, &TID, addr, b"pw").unwrap();
            let m = StunMessage::parse(&buf[..n]).unwrap();
            assert_eq!(m.class(), Class::Success);
            assert_eq!(m.method(), METHOD_BINDING);
            assert_eq!(m.transaction_id(), &TID);
            assert_eq!(m.xor_mapped_address(), Some(addr));
            assert!(m.has_fingerprint());
            assert!(m.verify_integrity(b"pw"));
            assert!(!m.verify_integrity(b"wrong"));
            // Every too-small buffer is refused, never a panic.
            for short in 0..n {
                assert_eq!(
                    write_binding_success(&mut buf[..short], &TID, addr, b"pw"),
                    Err(StunError::BufferTooSmall)
                );
            }
        }
    }

    #[test]
    fn round_trip_request() {
        let mut buf = [0u8; 256];
        for (user, nominate) in [(&b"abcd:efgh"[..], true), (&b"x:y1"[..], false)] {
            let n = write_binding_request(
                &mut buf,
                &TID,
                user,
                b"secret",
                0x7e7f_00ff,
                0x0102_0304_0506_0708,
                nominate,
            )
            .unwrap();
            let m = StunMessage::parse(&buf[..n]).unwrap();
            assert!(m.is_binding_request());
            assert_eq!(m.username(), Some(user));
            assert_eq!(m.priority(), Some(0x7e7f_00ff));
            assert_eq!(m.ice_controlling(), Some(0x0102_0304_0506_0708));
            assert_eq!(m.ice_controlled(), None);
            assert_eq!(m.use_candidate(), nominate);
            assert!(m.verify_integrity(b"secret"));
            assert!(!m.verify_integrity(b"Secret"));
            for short in 0..n {
                assert!(write_binding_request(
                    &mut buf[..short],
                    &TID,
                    user,
                    b"secret",
                    1,
                    2,
                    nominate
                )
                .is_err());
            }
        }
        let long = [b'a'; MAX_USERNAME + 1];
        assert_eq!(
            write_binding_request(&mut buf, &TID, &long, b"k", 1, 2, false),
            Err(StunError::InvalidArgument)
        );
    }

    #[test]
    fn round_trip_error() {
        let mut buf = [0u8; 128];
        for (code, reason) in [
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (487, "Role Conflict"),
        ] {
            let n = write_binding_error(&mut buf, &TID, code, reason).unwrap();
            let m = StunMessage::parse(&buf[..n]).unwrap();
            assert_eq!(m.class(), Class::Error);
            assert_eq!(m.method(), METHOD_BINDING);
            assert_eq!(m.error_code(), Some(code));
            assert!(m.has_fingerprint());
            assert!(!m.has_integrity());
            assert!(!m.verify_integrity(b"anything"));
        }
        assert_eq!(
            write_binding_error(&mut buf, &TID, 299, "x"),
            Err(StunError::InvalidArgument)
        );
        assert_eq!(
            write_binding_error(&mut buf, &TID, 700, "x"),
            Err(StunError::InvalidArgument)
        );
    }

    #[test]
    fn header_errors() {
        assert_eq!(StunMessage::parse(&[]).err(), Some(StunError::TooShort));
        assert_eq!(
            StunMessage::parse(&SAMPLE_REQUEST[..19]).err(),
            Some(StunError::TooShort)
        );
        let mut b = SAMPLE_REQUEST;
        b[0] |= 0x80;
        assert_eq!(StunMessage::parse(&b).err(), Some(StunError::NotStun));
        let mut b = SAMPLE_REQUEST;
        b[5] = 0;
        assert_eq!(StunMessage::parse(&b).err(), Some(StunError::NotStun));
        let mut b = SAMPLE_REQUEST;
        b[3] = 0x59;
        assert_eq!(StunMessage::parse(&b).err(), Some(StunError::BadLength));
        let mut b = SAMPLE_REQUEST;
        b[3] = 0x5c;
        assert_eq!(StunMessage::parse(&b).err(), Some(StunError::BadLength));
    }

    #[test]
    fn attribute_past_end_rejected() {
        // Header + one attribute claiming 8 bytes but carrying 4.
        let mut b = [0u8; 28];
        b[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
        b[2..4].copy_from_slice(&8u16.to_be_bytes());
        b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b[20..22].copy_from_slice(&ATTR_USERNAME.to_be_bytes());
        b[22..24].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(StunMessage::parse(&b).err(), Some(StunError::BadAttribute));
        // Length 5: value fits but its padding does not.
        b[22..24].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(StunMessage::parse(&b).err(), Some(StunError::BadAttribute));
        // Length 4 is fine.
        b[22..24].copy_from_slice(&4u16.to_be_bytes());
        assert!(StunMessage::parse(&b).is_ok());
        // Huge length.
        b[22..24].copy_from_slice(&0xFFFFu16.to_be_bytes());
        assert_eq!(StunMessage::parse(&b).err(), Some(StunError::BadAttribute));
    }

    #[test]
    fn ordering_rules() {
        let mut buf = [0u8; 128];
        let n = write_binding_error(&mut buf, &TID, 400, "Bad").unwrap();
        // Append an attribute after FINGERPRINT -> rejected.
        buf[n..n + 4].copy_from_slice(&[0x80, 0x22, 0, 0]);
        buf[2..4].copy_from_slice(&((n + 4 - HEADER_LEN) as u16).to_be_bytes());
        let crc = crc32fast::hash(&buf[..n - 8]) ^ FINGERPRINT_XOR;
        buf[n - 4..n].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            StunMessage::parse(&buf[..n + 4]).err(),
            Some(StunError::BadAttribute)
        );

        // An attribute other than FINGERPRINT after MESSAGE-INTEGRITY -> rejected.
        let mut b = [0u8; 128];
        let mut w = Writer::new(&mut b, METHOD_BINDING, Class::Request, &TID).unwrap();
        w.integrity(b"k").unwrap();
        w.attr(ATTR_PRIORITY, &[&[0, 0, 0, 1]]).unwrap();
        let n = w.pos;
        w.set_length(n - HEADER_LEN).unwrap();
        assert_eq!(
            StunMessage::parse(&b[..n]).err(),
            Some(StunError::BadAttribute)
        );
    }

    #[test]
    fn bad_attribute_values() {
        let mut b = [0u8; 128];
        for (typ, val) in [
            (ATTR_PRIORITY, &[1u8, 2, 3][..]),
            (ATTR_ICE_CONTROLLING, &[0; 4][..]),
            (ATTR_USE_CANDIDATE, &[0; 4][..]),
            (ATTR_MESSAGE_INTEGRITY, &[0; 16][..]),
            (ATTR_ERROR_CODE, &[0, 0, 2, 0][..]),
            (ATTR_ERROR_CODE, &[0, 0, 4][..]),
            (ATTR_XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4][..]),
            (ATTR_XOR_MAPPED_ADDRESS, &[0, 2, 0, 0, 1, 2, 3, 4][..]),
        ] {
            let mut w = Writer::new(&mut b, METHOD_BINDING, Class::Request, &TID).unwrap();
            w.attr(typ, &[val]).unwrap();
            let n = w.pos;
            w.set_length(n - HEADER_LEN).unwrap();
            assert_eq!(
                StunMessage::parse(&b[..n]).err(),
                Some(StunError::BadAttribute),
                "{typ:#x}"
            );
        }
    }

    #[test]
    fn truncations_never_panic() {
        let mut req = [0u8; 256];
        let n = write_binding_request(&mut req, &TID, b"a:b", b"k", 1, 2, true).unwrap();
        for msg in [
            &SAMPLE_REQUEST[..],
            &SAMPLE_IPV4_RESPONSE[..],
            &SAMPLE_IPV6_RESPONSE[..],
            &req[..n],
        ] {
            for cut in 0..msg.len() {
                let part = &msg[..cut];
                assert!(StunMessage::parse(part).is_err());
                // Also with the length field patched to match the truncation.
                if cut >= HEADER_LEN {
                    let mut p = [0u8; 256];
                    p[..cut].copy_from_slice(part);
                    p[2..4].copy_from_slice(&((cut - HEADER_LEN) as u16).to_be_bytes());
                    if let Ok(m) = StunMessage::parse(&p[..cut]) {
                        let _ = m.verify_integrity(b"k");
                        let _ = m.xor_mapped_address();
                    }
                }
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5354_554E);
        let mut buf = [0u8; 200];
        for i in 0..20_000 {
            let len = rng.gen_range(0..buf.len());
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 && len >= HEADER_LEN {
                // Make the header plausible so attribute walking gets exercised.
                buf[0] &= 0x3F;
                buf[2..4].copy_from_slice(&((len - HEADER_LEN) as u16 & !3).to_be_bytes());
                buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            if let Ok(m) = StunMessage::parse(&buf[..len]) {
                let _ = (m.class(), m.method(), m.username(), m.error_code());
                let _ = m.verify_integrity(b"key");
            }
        }
        // Mutate single bytes of valid messages.
        for _ in 0..20_000 {
            let mut b = SAMPLE_REQUEST;
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
            if let Ok(m) = StunMessage::parse(&b) {
                let _ = m.verify_integrity(PASSWORD);
            }
        }
    }

    #[test]
    fn demux() {
        assert!(is_stun(0) && is_stun(1) && is_stun(3));
        assert!(!is_stun(4) && !is_stun(20) && !is_stun(128));
    }
}
