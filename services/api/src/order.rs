//! Per-node results in the order of the request (the noderange's expansion, or the list of nodes
//! given), while they still stream: a result is sent as soon as every node before it has one.
//!
//! Work finishes out of order (batches, shards on several conductors, slow BMCs); operators read
//! and diff the output as xCAT prints it, node by node in noderange order.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

/// A per-node result: what [`Reorder`] sorts.
pub trait Named {
    fn name(&self) -> &str;
}

impl Named for xcat3_types::NodeOutcome {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Holds results that arrived before those of the nodes ahead of them.
#[derive(Debug)]
pub struct Reorder<T> {
    /// Where each name's next result goes: its first place until that is taken, then the later
    /// places of a name the request repeats.
    first: HashMap<String, usize>,
    repeats: HashMap<String, VecDeque<usize>>,
    slots: Vec<Option<T>>,
    /// The first place whose result has not been sent.
    next: usize,
}

impl<T: Named> Reorder<T> {
    /// For a request naming `names`, in order.
    pub fn new(names: Vec<String>) -> Self {
        let mut first = HashMap::with_capacity(names.len());
        let mut repeats: HashMap<String, VecDeque<usize>> = HashMap::new();
        let slots = (0..names.len()).map(|_| None).collect();
        for (i, name) in names.into_iter().enumerate() {
            match first.entry(name) {
                Entry::Occupied(e) => repeats.entry(e.key().clone()).or_default().push_back(i),
                Entry::Vacant(e) => {
                    e.insert(i);
                }
            }
        }
        Reorder {
            first,
            repeats,
            slots,
            next: 0,
        }
    }

    /// How many results the request will have.
    pub fn total(&self) -> usize {
        self.slots.len()
    }

    /// Takes a result and adds those now ready to `ready`, in order. A result for a name the
    /// request did not hold, or one more than it held, is ready at once.
    pub fn push(&mut self, item: T, ready: &mut Vec<T>) {
        // A name's first result takes its first place, a second one its next place.
        let name = item.name();
        let place = self
            .first
            .remove(name)
            .or_else(|| self.repeats.get_mut(name).and_then(VecDeque::pop_front));
        match place {
            Some(i) => self.slots[i] = Some(item),
            None => ready.push(item),
        }
        while let Some(slot) = self.slots.get_mut(self.next) {
            match slot.take() {
                Some(item) => {
                    ready.push(item);
                    self.next += 1;
                }
                None => break,
            }
        }
    }

    /// The results still held (some node before them never got one), in order.
    pub fn finish(self) -> impl Iterator<Item = T> {
        self.slots.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    impl Named for String {
        fn name(&self) -> &str {
            self
        }
    }

    fn push_all(r: &mut Reorder<String>, items: &[&str]) -> Vec<String> {
        let mut ready = Vec::new();
        for i in items {
            r.push((*i).to_owned(), &mut ready);
        }
        ready
    }

    #[test]
    fn results_come_out_in_request_order_as_soon_as_they_can() {
        let mut r = Reorder::new(names("n1,n2,n3,n4"));
        assert_eq!(r.total(), 4);
        assert!(push_all(&mut r, &["n3", "n2"]).is_empty());
        assert_eq!(push_all(&mut r, &["n1"]), names("n1,n2,n3"));
        assert_eq!(push_all(&mut r, &["n4"]), names("n4"));
        assert_eq!(r.finish().count(), 0);
    }

    #[test]
    fn repeated_and_unknown_names_do_not_stall_the_stream() {
        let mut r = Reorder::new(names("a,b,a,c"));
        // The second result for `a` fills its second place.
        assert_eq!(push_all(&mut r, &["a", "a"]), names("a"));
        assert_eq!(push_all(&mut r, &["b"]), names("b,a"));
        // A name the request did not hold, or a third `a`, goes out at once.
        assert_eq!(push_all(&mut r, &["zz", "a"]), names("zz,a"));
        assert_eq!(push_all(&mut r, &["c"]), names("c"));
    }

    #[test]
    fn what_is_held_at_the_end_is_returned_in_order() {
        let mut r = Reorder::new(names("x,y,z"));
        assert!(push_all(&mut r, &["z", "y"]).is_empty());
        assert_eq!(r.finish().collect::<Vec<_>>(), names("y,z"));
    }
}
