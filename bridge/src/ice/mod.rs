//! ICE-lite: STUN message handling (`stun`); the responder logic lives with the endpoint.
pub mod stun;
