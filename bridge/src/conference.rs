//! A conference on one worker: its member endpoints (slots in the worker's endpoint
//! table) and which member sends each SSRC. No I/O, no crypto.

use std::collections::HashMap;

use crate::command::protocol::MediaKind;

/// Members a conference is sized for up front, so joining does not reallocate.
pub const EXPECTED_MEMBERS: usize = 64;

/// SSRCs a conference is sized for up front (audio + 3 simulcast layers + RTX each).
const EXPECTED_SSRCS: usize = 8 * EXPECTED_MEMBERS;

/// One conference.
#[derive(Debug)]
pub struct Conference {
    /// The controller's id.
    pub id: String,
    /// Endpoint slots, in join order.
    pub members: Vec<usize>,
    ssrc_owner: HashMap<u32, (usize, Option<MediaKind>)>,
}

impl Conference {
    /// An empty conference.
    pub fn new(id: String) -> Self {
        Self {
            id,
            members: Vec::with_capacity(EXPECTED_MEMBERS),
            ssrc_owner: HashMap::with_capacity(EXPECTED_SSRCS),
        }
    }

    /// Adds a member.
    pub fn join(&mut self, slot: usize) {
        if !self.members.contains(&slot) {
            self.members.push(slot);
        }
    }

    /// Removes a member and every SSRC it owned.
    pub fn leave(&mut self, slot: usize) {
        self.members.retain(|&m| m != slot);
        self.ssrc_owner.retain(|_, &mut (owner, _)| owner != slot);
    }

    /// Records that `slot` sends `ssrc` (declared by the controller or seen in a packet
    /// that authenticated). Allocates only the first time an SSRC appears.
    pub fn claim_ssrc(&mut self, ssrc: u32, slot: usize) {
        if self.ssrc_owner.get(&ssrc).map(|o| o.0) != Some(slot) {
            self.ssrc_owner.insert(ssrc, (slot, None));
        }
    }

    /// Records that `slot` declared `ssrc` as a source of `kind`.
    pub fn declare_ssrc(&mut self, ssrc: u32, slot: usize, kind: MediaKind) {
        self.ssrc_owner.insert(ssrc, (slot, Some(kind)));
    }

    /// The member sending `ssrc`.
    pub fn owner(&self, ssrc: u32) -> Option<usize> {
        self.ssrc_owner.get(&ssrc).map(|o| o.0)
    }

    /// The declared kind of `ssrc`, if its sender declared it.
    pub fn kind(&self, ssrc: u32) -> Option<MediaKind> {
        self.ssrc_owner.get(&ssrc).and_then(|o| o.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_and_ssrc_ownership() {
        let mut c = Conference::new("c".into());
        c.join(3);
        c.join(4);
        c.join(3);
        assert_eq!(c.members, vec![3, 4]);
        c.claim_ssrc(100, 3);
        c.declare_ssrc(200, 4, MediaKind::Video);
        c.claim_ssrc(200, 4);
        assert_eq!(c.kind(200), Some(MediaKind::Video));
        assert_eq!(c.kind(100), None);
        assert_eq!(c.owner(100), Some(3));
        c.leave(3);
        assert_eq!(c.members, vec![4]);
        assert_eq!(c.owner(100), None);
        assert_eq!(c.owner(200), Some(4));
    }
}
