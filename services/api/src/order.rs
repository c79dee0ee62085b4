//! Each per-node result carries its node's place in the request (the noderange's expansion, or
//! the list of nodes given), so a client can print results in the request's order while they
//! stream in: the CLI does, as xCAT prints node by node in noderange order. The api itself holds
//! nothing back: work finishes out of order (batches, shards on several conductors, slow BMCs)
//! and an API client gets each result as soon as it is known.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

/// The places of a request's names.
#[derive(Debug)]
pub struct Places {
    /// Each name's first place, until a result has taken it.
    first: HashMap<String, u32>,
    /// The later places of names the request repeats.
    repeats: HashMap<String, VecDeque<u32>>,
    total: u32,
}

impl Places {
    /// For a request naming `names`, in order.
    pub fn new(names: Vec<String>) -> Self {
        let total = u32::try_from(names.len()).unwrap_or(u32::MAX);
        let mut first = HashMap::with_capacity(names.len());
        let mut repeats: HashMap<String, VecDeque<u32>> = HashMap::new();
        for (i, name) in (0..total).zip(names) {
            match first.entry(name) {
                Entry::Occupied(e) => repeats.entry(e.key().clone()).or_default().push_back(i),
                Entry::Vacant(e) => {
                    e.insert(i);
                }
            }
        }
        Places {
            first,
            repeats,
            total,
        }
    }

    /// How many results the request will have.
    pub fn total(&self) -> usize {
        self.total as usize
    }

    /// The place of a result for `name`: its first place, then the next place of a name the
    /// request repeats; [`Places::total`] (past the end) for a name the request did not hold
    /// or one result more than it held.
    pub fn take(&mut self, name: &str) -> u32 {
        self.first
            .remove(name)
            .or_else(|| self.repeats.get_mut(name).and_then(VecDeque::pop_front))
            .unwrap_or(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn each_result_gets_its_place_in_the_request() {
        let mut p = Places::new(names("n1,n2,n3"));
        assert_eq!(p.total(), 3);
        assert_eq!([p.take("n3"), p.take("n1"), p.take("n2")], [2, 0, 1]);
    }

    #[test]
    fn repeated_and_unknown_names_have_places_too() {
        let mut p = Places::new(names("a,b,a"));
        assert_eq!([p.take("a"), p.take("a"), p.take("b")], [0, 2, 1]);
        // A third `a`, or a stranger, go past the end.
        assert_eq!([p.take("a"), p.take("zz")], [3, 3]);
    }
}
