//! ICE-lite (RFC 8445 2.5): STUN messages (`stun`) and the responder's checks and
//! consent freshness (`lite`). The worker answers; these decide.
pub mod lite;
pub mod stun;
