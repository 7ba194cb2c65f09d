//! Message types of the bridge link.
/// Version of the bridge link protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
