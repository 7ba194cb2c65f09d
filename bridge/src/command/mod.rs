//! The bridge link: the command protocol (one JSON object a line on a Unix socket) and
//! its server. `protocol` is shared with the control service.
pub mod protocol;
