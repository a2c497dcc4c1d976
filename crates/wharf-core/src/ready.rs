//! Which messages of a queue can be delivered next, in order.
//!
//! Standard queues keep one ordered set keyed by (priority, sequence): the first key is the
//! highest-priority, oldest ready message, and a message put back (nack, visibility expiry)
//! lands at its original position because its key never changed.
//!
//! FIFO queues keep one lane per message group holding that group's ready sequence numbers in
//! order, plus a set of lane *heads*: the first ready message of every group that has nothing
//! in flight. A group with a message in flight is locked simply by being absent from `heads`,
//! so a receive never scans past locked groups' messages.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// A FIFO group's slot number plus one; 0 means "no group" (standard queues).
pub(crate) type GroupSlot = u32;

pub(crate) enum ReadyIndex {
    Standard(BTreeSet<u64>),
    Fifo(FifoIndex),
}

#[derive(Default)]
pub(crate) struct FifoIndex {
    by_name: HashMap<Arc<str>, u32>,
    lanes: Vec<Lane>,
    free: Vec<u32>,
    /// (first ready seq, lane) of every unlocked lane with ready messages.
    heads: BTreeSet<(u64, u32)>,
}

struct Lane {
    name: Arc<str>,
    ready: VecDeque<u64>,
    in_flight: u32,
    /// Live messages (any state) that name this lane; the slot is reused when it drops to 0.
    members: u32,
}

/// Sequence numbers stay below 2^56 (they start from the clock in microseconds), which leaves
/// the top byte for the inverted priority.
const SEQ_MASK: u64 = (1 << 56) - 1;

fn key(seq: u64, priority: u8) -> u64 {
    (u64::from(255 - priority) << 56) | (seq & SEQ_MASK)
}

impl ReadyIndex {
    pub(crate) fn new(fifo: bool) -> Self {
        if fifo {
            ReadyIndex::Fifo(FifoIndex::default())
        } else {
            ReadyIndex::Standard(BTreeSet::new())
        }
    }

    /// Intern a group name for a new message; returns its slot (0 on standard queues).
    pub(crate) fn join_group(&mut self, name: &str) -> GroupSlot {
        match self {
            ReadyIndex::Standard(_) => 0,
            ReadyIndex::Fifo(f) => f.join(name),
        }
    }

    /// A message of the group left the queue for good.
    pub(crate) fn leave_group(&mut self, group: GroupSlot) {
        if let ReadyIndex::Fifo(f) = self {
            f.leave(group);
        }
    }

    pub(crate) fn insert(&mut self, seq: u64, priority: u8, group: GroupSlot) {
        match self {
            ReadyIndex::Standard(set) => {
                set.insert(key(seq, priority));
            }
            ReadyIndex::Fifo(f) => f.insert(seq, group),
        }
    }

    pub(crate) fn remove(&mut self, seq: u64, priority: u8, group: GroupSlot) {
        match self {
            ReadyIndex::Standard(set) => {
                set.remove(&key(seq, priority));
            }
            ReadyIndex::Fifo(f) => f.remove(seq, group),
        }
    }

    /// Take the next deliverable message. For FIFO, `prefer` continues the group taken last in
    /// the same receive (SQS returns as many messages of one group as it can); the taken
    /// message's group counts it as in flight at once, which locks the group.
    pub(crate) fn pop_next(&mut self, prefer: Option<GroupSlot>) -> Option<(u64, GroupSlot)> {
        match self {
            ReadyIndex::Standard(set) => set.pop_first().map(|k| (k & SEQ_MASK, 0)),
            ReadyIndex::Fifo(f) => f.pop_next(prefer),
        }
    }

    /// A message of `group` stopped being in flight (settled, returned or dropped).
    pub(crate) fn in_flight_done(&mut self, group: GroupSlot) {
        if let ReadyIndex::Fifo(f) = self {
            f.in_flight_done(group);
        }
    }

    /// Lock accounting for a message that is in flight without having been popped (recovery
    /// never produces one; kept for symmetry with `in_flight_done`).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            ReadyIndex::Standard(s) => s.is_empty(),
            ReadyIndex::Fifo(f) => f.heads.is_empty(),
        }
    }
}

impl FifoIndex {
    fn lane(&mut self, group: GroupSlot) -> Option<(u32, &mut Lane)> {
        let i = group.checked_sub(1)?;
        self.lanes.get_mut(i as usize).map(|l| (i, l))
    }

    fn join(&mut self, name: &str) -> GroupSlot {
        if let Some(&i) = self.by_name.get(name) {
            self.lanes[i as usize].members += 1;
            return i + 1;
        }
        let name: Arc<str> = Arc::from(name);
        let lane = Lane { name: name.clone(), ready: VecDeque::new(), in_flight: 0, members: 1 };
        let i = match self.free.pop() {
            Some(i) => {
                self.lanes[i as usize] = lane;
                i
            }
            None => {
                self.lanes.push(lane);
                (self.lanes.len() - 1) as u32
            }
        };
        self.by_name.insert(name, i);
        i + 1
    }

    fn leave(&mut self, group: GroupSlot) {
        let Some((i, lane)) = self.lane(group) else { return };
        lane.members = lane.members.saturating_sub(1);
        if lane.members == 0 && lane.ready.is_empty() && lane.in_flight == 0 {
            let name = lane.name.clone();
            self.by_name.remove(&name);
            self.free.push(i);
        }
    }

    fn insert(&mut self, seq: u64, group: GroupSlot) {
        let Some((i, lane)) = self.lane(group) else { return };
        let old_front = lane.ready.front().copied();
        let at = lane.ready.partition_point(|&s| s < seq);
        if lane.ready.get(at) == Some(&seq) {
            return;
        }
        lane.ready.insert(at, seq);
        if lane.in_flight == 0 && at == 0 {
            if let Some(old) = old_front {
                self.heads.remove(&(old, i));
            }
            self.heads.insert((seq, i));
        }
    }

    fn remove(&mut self, seq: u64, group: GroupSlot) {
        let Some((i, lane)) = self.lane(group) else { return };
        let at = lane.ready.partition_point(|&s| s < seq);
        if lane.ready.get(at) != Some(&seq) {
            return;
        }
        lane.ready.remove(at);
        let unlocked = lane.in_flight == 0;
        let new_front = lane.ready.front().copied();
        if unlocked && at == 0 {
            self.heads.remove(&(seq, i));
            if let Some(f) = new_front {
                self.heads.insert((f, i));
            }
        }
    }

    fn pop_next(&mut self, prefer: Option<GroupSlot>) -> Option<(u64, GroupSlot)> {
        if let Some(g) = prefer {
            if let Some((i, lane)) = self.lane(g) {
                // The lane this receive already took from. Usually still locked by it, but if
                // what it took was dropped (expired) the lane unlocked and its front is in
                // `heads`: take it out of there too.
                if let Some(seq) = lane.ready.pop_front() {
                    lane.in_flight += 1;
                    self.heads.remove(&(seq, i));
                    return Some((seq, g));
                }
            }
        }
        let (seq, i) = self.heads.pop_first()?;
        let lane = self.lanes.get_mut(i as usize)?;
        // `heads` holds each unlocked lane's front; take exactly that message.
        let at = lane.ready.partition_point(|&s| s < seq);
        if lane.ready.get(at) == Some(&seq) {
            lane.ready.remove(at);
        }
        lane.in_flight += 1;
        Some((seq, i + 1))
    }

    fn in_flight_done(&mut self, group: GroupSlot) {
        let Some((i, lane)) = self.lane(group) else { return };
        lane.in_flight = lane.in_flight.saturating_sub(1);
        if lane.in_flight == 0 {
            if let Some(&f) = lane.ready.front() {
                self.heads.insert((f, i));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_orders_by_priority_then_sequence() {
        let mut r = ReadyIndex::new(false);
        r.insert(3, 0, 0);
        r.insert(1, 0, 0);
        r.insert(2, 5, 0);
        assert_eq!(r.pop_next(None), Some((2, 0)));
        assert_eq!(r.pop_next(None), Some((1, 0)));
        r.insert(1, 0, 0);
        assert_eq!(r.pop_next(None), Some((1, 0)));
        assert_eq!(r.pop_next(None), Some((3, 0)));
        assert_eq!(r.pop_next(None), None);
    }

    #[test]
    fn fifo_locks_groups_while_in_flight() {
        let mut r = ReadyIndex::new(true);
        let a = r.join_group("a");
        let b = r.join_group("b");
        for (seq, g) in [(1, a), (2, b), (3, a), (4, b)] {
            r.insert(seq, 0, g);
        }
        assert_eq!(r.pop_next(None), Some((1, a)));
        // a is locked: the next head is b's.
        assert_eq!(r.pop_next(None), Some((2, b)));
        assert_eq!(r.pop_next(None), None);
        // a's message comes back: a unlocks with 1 at its head again.
        r.in_flight_done(a);
        r.insert(1, 0, a);
        assert_eq!(r.pop_next(None), Some((1, a)));
        assert_eq!(r.pop_next(Some(a)), Some((3, a)));
        assert_eq!(r.pop_next(Some(a)), None);
        assert!(r.is_empty());
    }

    #[test]
    fn continuing_a_lane_that_unlocked_meanwhile_keeps_heads_consistent() {
        let mut r = ReadyIndex::new(true);
        let a = r.join_group("a");
        for seq in [1, 2, 3] {
            r.insert(seq, 0, a);
        }
        assert_eq!(r.pop_next(None), Some((1, a)));
        // 1 was dropped (expired) before delivery: the lane unlocks, 2 becomes a head.
        r.in_flight_done(a);
        assert_eq!(r.pop_next(Some(a)), Some((2, a)));
        assert_eq!(r.pop_next(Some(a)), Some((3, a)));
        assert_eq!(r.pop_next(None), None, "no stale head left behind");
    }
}
