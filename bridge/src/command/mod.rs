//! The bridge link: the command protocol (`protocol`, one JSON object a line on a Unix
//! socket, shared with the control service) and its server (`server`).
pub mod protocol;
pub mod server;
