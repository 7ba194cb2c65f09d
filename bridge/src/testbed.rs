//! A worker's per-packet path without sockets, for benchmarks, the allocation test and
//! the load generator's self-check: one conference of a sender and N receivers, all
//! "connected" with fresh DTLS-SRTP keys, and the sender's side of the keys to make
//! real SRTP packets with.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crossbeam::channel::bounded;

use crate::command::protocol::{EndpointAllocation, Fingerprint, IceCredentials};
use crate::io::TxBatch;
use crate::rtp;
use crate::srtp::{Context, Profile, SessionKeys, SrtpError};
use crate::worker::{WorkerState, TX_SLOTS};

/// A conference of `1 + receivers` connected endpoints on a bare [`WorkerState`].
pub struct Testbed {
    /// The worker state under test.
    pub state: WorkerState,
    /// Where forwarded packets are queued.
    pub tx: TxBatch,
    sender: Context,
    sender_addr: SocketAddr,
    seq: u16,
    now: Instant,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)), 20000 + i as u16)
}

fn material(profile: Profile, i: usize) -> Vec<u8> {
    let len = 2 * (profile.master_key_len() + profile.master_salt_len());
    (0..len).map(|b| (b * 31 + i * 7 + 1) as u8).collect()
}

impl Testbed {
    /// Builds the conference. Endpoint 0 sends; 1..=receivers receive.
    pub fn new(profile: Profile, receivers: usize) -> Result<Self, SrtpError> {
        let (dtls_tx, _dtls_rx) = bounded(1);
        let mut state = WorkerState::new(0, None, dtls_tx, None, Duration::from_secs(30));
        state
            .create_conference("bench")
            .map_err(|_| SrtpError::BadKey)?;
        let mut sender = None;
        for i in 0..=receivers {
            let allocation = EndpointAllocation {
                conference: "bench".into(),
                endpoint: format!("ep{i}"),
                worker: 0,
                ice: IceCredentials {
                    ufrag: format!("u{i:07}"),
                    pwd: format!("p{i:023}"),
                },
                fingerprint: Fingerprint {
                    hash: "sha-256".into(),
                    value: String::new(),
                    setup: None,
                },
                candidates: Vec::new(),
            };
            let slot = state
                .create_endpoint(allocation)
                .map_err(|_| SrtpError::BadKey)?;
            let m = material(profile, i);
            let bridge_keys = SessionKeys::from_dtls(profile, &m, false)?;
            state.force_connect(slot, addr(i), &bridge_keys)?;
            if i == 0 {
                sender = Some(SessionKeys::from_dtls(profile, &m, true)?.outbound()?);
            }
        }
        Ok(Self {
            state,
            tx: TxBatch::new(TX_SLOTS),
            sender: sender.ok_or(SrtpError::BadKey)?,
            sender_addr: addr(0),
            seq: 1,
            now: Instant::now(),
        })
    }

    /// Writes the sender's next SRTP packet (a 12-byte header and `payload` bytes of
    /// payload) into `buf`; returns its length.
    pub fn next_packet(&mut self, buf: &mut [u8], payload: usize) -> Result<usize, SrtpError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let h = rtp::write_header(buf, 111, false, seq, u32::from(seq) * 960, 0xABCD, None)
            .map_err(|_| SrtpError::BufferTooSmall)?;
        let end = h + payload;
        buf.get_mut(h..end)
            .ok_or(SrtpError::BufferTooSmall)?
            .fill(0x5a);
        self.sender.protect_rtp(buf, end)
    }

    /// Writes the sender's next SRTCP sender report into `buf`; returns its length.
    pub fn next_report(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let n = crate::rtcp::write_sr(buf, 0xABCD, 1, 2, 3, 4)
            .map_err(|_| SrtpError::BufferTooSmall)?;
        self.sender.protect_rtcp(buf, n)
    }

    /// Writes a consent check (STUN binding request) from the sender into `buf`.
    pub fn next_check(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let txid = [self.seq as u8; 12];
        crate::ice::stun::write_binding_request(
            buf,
            &txid,
            b"u0000000:peer",
            format!("p{:023}", 0).as_bytes(),
            1,
            2,
            false,
        )
        .map_err(|_| SrtpError::BufferTooSmall)
    }

    /// Runs one received packet through the worker's path and empties the send queue;
    /// returns how many packets were queued for sending.
    pub fn forward(&mut self, packet: &mut [u8]) -> usize {
        self.forward_from(self.sender_addr, packet)
    }

    /// Like [`Testbed::forward`], as if the packet came from `src`.
    pub fn forward_from(&mut self, src: SocketAddr, packet: &mut [u8]) -> usize {
        self.state.on_datagram(self.now, packet, src, &mut self.tx);
        let n = self.tx.len();
        self.tx.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_to_every_receiver() {
        for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
            let mut bed = Testbed::new(profile, 9).unwrap();
            let mut buf = vec![0u8; 1500];
            for _ in 0..100 {
                let n = bed.next_packet(&mut buf, 1100).unwrap();
                assert_eq!(bed.forward(&mut buf[..n]), 9);
            }
            assert_eq!(bed.state.counters.rtp_in, 100);
        }
    }
}
