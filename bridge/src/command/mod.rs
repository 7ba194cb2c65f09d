//! The bridge link: the command protocol (`protocol`, one JSON object a line on a Unix
//! socket, shared with the control service), its server (`server`) and a blocking
//! client (`client`) for tests and tools.
pub mod client;
pub mod protocol;
pub mod server;
