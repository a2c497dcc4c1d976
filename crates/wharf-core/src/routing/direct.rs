//! `direct` exchanges: the routing key names the bindings, so a hash map answers in one probe.

use std::collections::HashMap;

use super::Destination;

/// Destinations per binding key. A destination bound twice under one key (with different
/// arguments) is kept once with a count, so the lookup result never repeats it.
#[derive(Clone, Debug, Default)]
pub(super) struct DirectIndex {
    by_key: HashMap<String, Vec<(Destination, usize)>>,
}

impl DirectIndex {
    pub(super) fn insert(&mut self, key: &str, destination: &Destination) {
        let slot = self.by_key.entry(key.to_owned()).or_default();
        match slot.iter_mut().find(|(d, _)| d == destination) {
            Some((_, count)) => *count += 1,
            None => slot.push((destination.clone(), 1)),
        }
    }

    pub(super) fn remove(&mut self, key: &str, destination: &Destination) {
        let Some(slot) = self.by_key.get_mut(key) else { return };
        if let Some(at) = slot.iter().position(|(d, _)| d == destination) {
            slot[at].1 -= 1;
            if slot[at].1 == 0 {
                slot.remove(at);
            }
        }
        if slot.is_empty() {
            self.by_key.remove(key);
        }
    }

    pub(super) fn get(&self, key: &str) -> impl Iterator<Item = &Destination> {
        self.by_key.get(key).into_iter().flatten().map(|(d, _)| d)
    }
}
