//! Viaduct's data plane as a library: the protocol pieces (STUN, DTLS, SRTP, RTP/RTCP),
//! the per-core worker loop and its I/O backends, and the command protocol that the
//! control service speaks. The binary `viaduct-bridge` is a thin shell around it.
//!
//! Loop contract: a worker owns one UDP socket through an [`io::Backend`], reads the
//! clock once per batch, and hands every datagram to sans-IO state (`ice`, `srtp`,
//! `endpoint`, `forward`) that returns what to send; nothing below `worker` touches a
//! socket, a clock or a thread.
#![deny(unsafe_code)]

pub mod command;
pub mod conference;
pub mod config;
pub mod dtls;
pub mod endpoint;
pub mod forward;
pub mod ice;
pub mod io;
pub mod peer;
pub mod rtcp;
pub mod rtp;
pub mod rtt;
pub mod runtime;
pub mod service;
pub mod srtp;
pub mod testbed;
pub mod worker;
