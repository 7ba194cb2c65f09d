//! Reads the SRTP protection profiles a DTLS client offers (RFC 5764 `use_srtp`) from
//! its first ClientHello, reassembled from handshake fragments across records and
//! datagrams (Chromium's DTLS 1.3-capable ClientHello spans two). The server uses it to
//! choose by its own preference — AEAD_AES_128_GCM when offered — instead of the
//! client's order (Chromium lists AES_CM_128_HMAC_SHA1_80 first). Sans-IO, bounded.

/// Largest ClientHello reassembled; a larger one is not read (the handshake goes on
/// with the default profile list).
const MAX_HELLO: usize = 16 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;
const CLIENT_HELLO: u8 = 1;
const EXT_USE_SRTP: u16 = 14;

/// What reading the ClientHello found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Offer {
    /// More datagrams are needed.
    Incomplete,
    /// The complete ClientHello offers these profiles (DTLS-SRTP ids, client order).
    Profiles(Vec<u16>),
    /// Not a ClientHello this reader can use (garbage, too large, no `use_srtp`).
    Unreadable,
}

/// Reassembles the first ClientHello of a handshake.
#[derive(Debug, Default)]
pub struct ClientHelloReader {
    /// The message being reassembled, once its length is known.
    body: Vec<u8>,
    /// Which bytes of `body` have arrived.
    have: Vec<bool>,
    /// The handshake `message_seq` of the first ClientHello fragment seen.
    seq: Option<u16>,
}

impl ClientHelloReader {
    /// Feeds one datagram (one or more DTLS records).
    pub fn push(&mut self, datagram: &[u8]) -> Offer {
        let mut rest = datagram;
        while rest.len() >= RECORD_HEADER {
            let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
            let Some(record) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
                return Offer::Unreadable;
            };
            if rest[0] == CONTENT_HANDSHAKE {
                if let Err(()) = self.fragments(record) {
                    return Offer::Unreadable;
                }
            }
            rest = &rest[RECORD_HEADER + len..];
        }
        if self.seq.is_none() || self.have.iter().any(|h| !h) {
            return Offer::Incomplete;
        }
        match srtp_profiles(&self.body) {
            Some(p) => Offer::Profiles(p),
            None => Offer::Unreadable,
        }
    }

    /// Takes the ClientHello fragments of one handshake record.
    fn fragments(&mut self, mut record: &[u8]) -> Result<(), ()> {
        while record.len() >= HANDSHAKE_HEADER {
            let h = &record[..HANDSHAKE_HEADER];
            let total = u24(&h[1..4]);
            let seq = u16::from_be_bytes([h[4], h[5]]);
            let offset = u24(&h[6..9]);
            let frag_len = u24(&h[9..12]);
            let frag = record
                .get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + frag_len)
                .ok_or(())?;
            record = &record[HANDSHAKE_HEADER + frag_len..];
            if h[0] != CLIENT_HELLO {
                continue;
            }
            if total > MAX_HELLO || offset + frag_len > total {
                return Err(());
            }
            match self.seq {
                None => {
                    self.seq = Some(seq);
                    self.body = vec![0; total];
                    self.have = vec![false; total];
                }
                Some(s) if s != seq => continue,
                Some(_) if self.body.len() != total => return Err(()),
                Some(_) => {}
            }
            self.body[offset..offset + frag_len].copy_from_slice(frag);
            self.have[offset..offset + frag_len].fill(true);
        }
        Ok(())
    }
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// The `use_srtp` profiles of a ClientHello body (RFC 6347 4.2.1, RFC 5764 4.1.1).
fn srtp_profiles(body: &[u8]) -> Option<Vec<u16>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // client_version, random
    let n = usize::from(r.u8()?);
    r.take(n)?; // session_id
    let n = usize::from(r.u8()?);
    r.take(n)?; // cookie
    let n = usize::from(r.u16()?);
    r.take(n)?; // cipher_suites
    let n = usize::from(r.u8()?);
    r.take(n)?; // compression_methods
    let n = usize::from(r.u16()?);
    let mut ext = Reader(r.take(n)?);
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let len = usize::from(ext.u16()?);
        let data = ext.take(len)?;
        if kind == EXT_USE_SRTP {
            let mut d = Reader(data);
            let n = usize::from(d.u16()?);
            let mut list = Reader(d.take(n)?);
            let mut out = Vec::with_capacity(n / 2);
            while !list.0.is_empty() {
                out.push(list.u16()?);
            }
            return Some(out);
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello body like Chromium's: a big key share, then `use_srtp` offering
    /// AES_CM_128_HMAC_SHA1_80 first, then the two GCM profiles.
    fn hello() -> Vec<u8> {
        let mut b = vec![0xfe, 0xfd];
        b.extend([7u8; 32]); // random
        b.push(0); // session id
        b.push(0); // cookie
        b.extend([0, 4, 0xc0, 0x2b, 0xc0, 0x2f]); // two cipher suites
        b.extend([1, 0]); // null compression
        let mut ext = Vec::new();
        // supported_versions (DTLS 1.3 and 1.2) and a 1216-byte key share first.
        ext.extend([0, 43, 0, 5, 4, 0xfe, 0xfc, 0xfe, 0xfd]);
        ext.extend([0, 51]);
        ext.extend(1220u16.to_be_bytes());
        ext.extend(1218u16.to_be_bytes());
        ext.extend([0x11, 0xec]);
        ext.extend(1214u16.to_be_bytes());
        ext.extend(vec![9u8; 1214]);
        // use_srtp: CM-SHA1-80, AEAD-128-GCM, AEAD-256-GCM; no MKI.
        ext.extend([0, 14, 0, 9, 0, 6, 0, 1, 0, 7, 0, 8, 0]);
        b.extend((ext.len() as u16).to_be_bytes());
        b.extend(ext);
        b
    }

    /// `body` as DTLS records of handshake fragments of at most `chunk` bytes, one
    /// record per datagram.
    fn datagrams(body: &[u8], seq: u16, chunk: usize) -> Vec<Vec<u8>> {
        body.chunks(chunk)
            .enumerate()
            .map(|(i, frag)| {
                let mut hs = vec![CLIENT_HELLO];
                hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
                hs.extend(seq.to_be_bytes());
                hs.extend(&((i * chunk) as u32).to_be_bytes()[1..]);
                hs.extend(&(frag.len() as u32).to_be_bytes()[1..]);
                hs.extend(frag);
                let mut rec = vec![CONTENT_HANDSHAKE, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, i as u8];
                rec.extend((hs.len() as u16).to_be_bytes());
                rec.extend(hs);
                rec
            })
            .collect()
    }

    #[test]
    fn reads_the_profiles_of_a_hello_split_over_two_datagrams() {
        let body = hello();
        let d = datagrams(&body, 0, 1000);
        assert_eq!(d.len(), 2);
        let mut r = ClientHelloReader::default();
        assert_eq!(r.push(&d[0]), Offer::Incomplete);
        assert_eq!(r.push(&d[1]), Offer::Profiles(vec![1, 7, 8]));
        // Out of order works too.
        let mut r = ClientHelloReader::default();
        assert_eq!(r.push(&d[1]), Offer::Incomplete);
        assert_eq!(r.push(&d[0]), Offer::Profiles(vec![1, 7, 8]));
        // Both records in one datagram.
        let mut r = ClientHelloReader::default();
        assert_eq!(
            r.push(&[d[0].clone(), d[1].clone()].concat()),
            Offer::Profiles(vec![1, 7, 8])
        );
    }

    #[test]
    fn garbage_and_truncation_are_unreadable_not_panics() {
        let body = hello();
        let d = datagrams(&body, 0, 4000);
        for cut in [0, 5, 13, 20, 40, d[0].len() - 1] {
            let mut r = ClientHelloReader::default();
            let got = r.push(&d[0][..cut]);
            assert_ne!(got, Offer::Profiles(vec![1, 7, 8]), "cut {cut}");
        }
        let mut r = ClientHelloReader::default();
        assert_eq!(
            r.push(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Offer::Unreadable
        );
        // A hello without use_srtp.
        let mut plain = body[..body.len() - 13].to_vec();
        let ext_len_at = 2 + 32 + 1 + 1 + 2 + 4 + 2;
        let ext_len = u16::from_be_bytes([plain[ext_len_at], plain[ext_len_at + 1]]) - 13;
        plain[ext_len_at..ext_len_at + 2].copy_from_slice(&ext_len.to_be_bytes());
        let mut r = ClientHelloReader::default();
        assert_eq!(r.push(&datagrams(&plain, 0, 4000)[0]), Offer::Unreadable);
        // Fuzz-ish: every byte flipped in turn never panics.
        for i in 0..d[0].len() {
            let mut bad = d[0].clone();
            bad[i] ^= 0xff;
            let _ = ClientHelloReader::default().push(&bad);
        }
    }
}
