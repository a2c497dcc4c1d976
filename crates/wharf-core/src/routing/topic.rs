//! `topic` exchanges: a trie over the dot-separated words of binding patterns.
//!
//! Routing walks the trie once with the message's words, so its cost follows the branches
//! that can still match, not the number of bindings. Nodes live in one arena and refer to
//! each other by index: patterns can be as long as a routing key, and an arena keeps drop,
//! clone and every walk free of recursion however deep the trie grows.

use std::collections::{HashMap, HashSet};

use super::Destination;

const ROOT: usize = 0;

#[derive(Clone, Debug)]
pub(super) struct TopicTrie {
    nodes: Vec<Node>,
    /// Arena slots of pruned nodes, reused before the arena grows.
    free: Vec<usize>,
}

#[derive(Clone, Debug, Default)]
struct Node {
    words: HashMap<Box<str>, usize>,
    star: Option<usize>,
    hash: Option<usize>,
    /// Destinations of the patterns ending here, each with how many bindings put it here
    /// (the same destination under different arguments, or patterns equal once normalised).
    destinations: Vec<(Destination, usize)>,
    parent: usize,
    edge: Edge,
}

#[derive(Clone, Debug, Default, PartialEq)]
enum Edge {
    #[default]
    Root,
    Word(Box<str>),
    Star,
    Hash,
}

impl Edge {
    fn of(word: &str) -> Edge {
        match word {
            "*" => Edge::Star,
            "#" => Edge::Hash,
            w => Edge::Word(w.into()),
        }
    }
}

impl Node {
    fn is_unused(&self) -> bool {
        self.destinations.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }

    fn child(&self, edge: &Edge) -> Option<usize> {
        match edge {
            Edge::Root => None,
            Edge::Word(w) => self.words.get(w).copied(),
            Edge::Star => self.star,
            Edge::Hash => self.hash,
        }
    }
}

impl Default for TopicTrie {
    fn default() -> Self {
        TopicTrie { nodes: vec![Node::default()], free: Vec::new() }
    }
}

/// RabbitMQ's split: the empty key has no words at all (so only `#` and the empty pattern
/// match it), while "a." has two, the second one empty.
pub(super) fn split(key: &str) -> impl Iterator<Item = &str> {
    (!key.is_empty()).then(|| key.split('.')).into_iter().flatten()
}

/// The pattern's edges, with runs of `#` collapsed: "#.#" matches exactly what "#" matches,
/// and each extra `#` would multiply the positions a walk has to try.
fn pattern_edges(pattern: &str) -> impl Iterator<Item = Edge> + '_ {
    let mut previous_hash = false;
    split(pattern).filter_map(move |word| {
        let hash = word == "#";
        let keep = !(hash && previous_hash);
        previous_hash = hash;
        keep.then(|| Edge::of(word))
    })
}

impl TopicTrie {
    pub(super) fn insert(&mut self, pattern: &str, destination: &Destination) {
        let mut at = ROOT;
        for edge in pattern_edges(pattern) {
            at = match self.nodes[at].child(&edge) {
                Some(next) => next,
                None => self.add_child(at, edge),
            };
        }
        let slot = &mut self.nodes[at].destinations;
        match slot.iter_mut().find(|(d, _)| d == destination) {
            Some((_, count)) => *count += 1,
            None => slot.push((destination.clone(), 1)),
        }
    }

    pub(super) fn remove(&mut self, pattern: &str, destination: &Destination) {
        let mut at = ROOT;
        for edge in pattern_edges(pattern) {
            match self.nodes[at].child(&edge) {
                Some(next) => at = next,
                None => return,
            }
        }
        let slot = &mut self.nodes[at].destinations;
        let Some(i) = slot.iter().position(|(d, _)| d == destination) else { return };
        slot[i].1 -= 1;
        if slot[i].1 == 0 {
            slot.remove(i);
        }
        // Prune the branch that only led here, so a trie that saw many short-lived bindings
        // (per-consumer queues) does not keep walking dead nodes.
        while at != ROOT && self.nodes[at].is_unused() {
            let node = std::mem::take(&mut self.nodes[at]);
            let parent = &mut self.nodes[node.parent];
            match node.edge {
                Edge::Word(w) => {
                    parent.words.remove(&w);
                }
                Edge::Star => parent.star = None,
                Edge::Hash => parent.hash = None,
                Edge::Root => unreachable!("only the root has no parent edge"),
            }
            self.free.push(at);
            at = node.parent;
        }
    }

    fn add_child(&mut self, parent: usize, edge: Edge) -> usize {
        let node = Node { parent, edge: edge.clone(), ..Node::default() };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id] = node;
                id
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        let p = &mut self.nodes[parent];
        match edge {
            Edge::Word(w) => {
                p.words.insert(w, id);
            }
            Edge::Star => p.star = Some(id),
            Edge::Hash => p.hash = Some(id),
            Edge::Root => unreachable!("a child always has an edge"),
        }
        id
    }

    /// Push the destinations of every pattern matching `key` onto `found`. A destination
    /// reached through several patterns appears once per pattern; the caller deduplicates.
    pub(super) fn collect<'a>(&'a self, key: &str, found: &mut Vec<&'a Destination>) {
        if self.nodes[ROOT].is_unused() {
            return;
        }
        let words: Vec<&str> = split(key).collect();
        let n = words.len();
        // (node, words consumed so far). Only a `#` can reach the same node at the same
        // position along two paths, so only entries into `#` nodes are remembered; that
        // bounds a walk by nodes × positions even for patterns such as "#.a.#.a.#".
        let mut stack = vec![(ROOT, 0)];
        let mut entered_hash: HashSet<(usize, usize)> = HashSet::new();
        while let Some((id, i)) = stack.pop() {
            let node = &self.nodes[id];
            if i == n {
                found.extend(node.destinations.iter().map(|(d, _)| d));
            } else {
                if let Some(&next) = node.words.get(words[i]) {
                    stack.push((next, i + 1));
                }
                if let Some(next) = node.star {
                    stack.push((next, i + 1));
                }
            }
            if let Some(hash) = node.hash {
                let h = &self.nodes[hash];
                // A trailing `#` ("a.#") can only finish the key, so skip to the end instead
                // of trying every split point.
                let trailing = h.words.is_empty() && h.star.is_none() && h.hash.is_none();
                let first = if trailing { n } else { i };
                for j in first..=n {
                    if entered_hash.insert((hash, j)) {
                        stack.push((hash, j));
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}
