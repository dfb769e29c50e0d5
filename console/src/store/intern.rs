//! Strings stored once, named by a 4-byte symbol, and freed when the last
//! span using them is evicted.
//!
//! Span names, service names, tag keys and most tag values repeat from span
//! to span; a symbol costs 4 bytes where a `String` costs 24 plus its bytes.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// A string in the [`Interner`]; [`Sym::NONE`] (the default) stands for
/// an absent one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Sym(u32);

impl Sym {
    /// No string.
    pub(crate) const NONE: Sym = Sym(0);

    pub(crate) fn is_none(self) -> bool {
        self == Self::NONE
    }
}

struct Slot {
    text: Box<str>,
    /// 64 bits: no number of spans naming a string can overflow it.
    refs: u64,
}

/// What a stored string costs beyond its bytes: its slot and its index
/// entry, each with the room a growing table keeps free (half again), and
/// its allocation's rounding.
pub(crate) const STRING_OVERHEAD: usize = 3 * std::mem::size_of::<Slot>() / 2 + 8 + 16;

/// Reference-counted strings. Slot 0 is the absent string and is never
/// freed.
pub(crate) struct Interner {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: RandomState,
    /// The bytes of the stored strings, each with [`STRING_OVERHEAD`].
    bytes: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Self {
            slots: vec![Slot {
                text: "".into(),
                refs: u64::MAX,
            }],
            free: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            bytes: 0,
        }
    }
}

impl Interner {
    /// The symbol of `text`, taking one reference on it (empty text is
    /// [`Sym::NONE`] and takes none).
    pub(crate) fn intern(&mut self, text: &str) -> Sym {
        if text.is_empty() {
            return Sym::NONE;
        }
        let hash = self.hasher.hash_one(text);
        let slots = &mut self.slots;
        if let Some(&i) = self.index.find(hash, |&i| *slots[i as usize].text == *text) {
            slots[i as usize].refs += 1;
            return Sym(i);
        }
        self.bytes += text.len() + STRING_OVERHEAD;
        let slot = Slot {
            text: text.into(),
            refs: 1,
        };
        let i = match self.free.pop() {
            Some(i) => {
                slots[i as usize] = slot;
                i
            }
            None => {
                slots.push(slot);
                (slots.len() - 1) as u32
            }
        };
        let hasher = &self.hasher;
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(&*slots[j as usize].text));
        Sym(i)
    }

    /// Gives back one reference on `sym`; the string is freed with its last.
    pub(crate) fn release(&mut self, sym: Sym) {
        if sym.is_none() {
            return;
        }
        let slot = &mut self.slots[sym.0 as usize];
        slot.refs -= 1;
        if slot.refs > 0 {
            return;
        }
        let text = std::mem::take(&mut slot.text);
        self.bytes -= text.len() + STRING_OVERHEAD;
        let hash = self.hasher.hash_one(&*text);
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == sym.0) {
            entry.remove();
        }
        self.free.push(sym.0);
    }

    /// The symbol of `text` if it is stored, without taking a reference
    /// (for queries).
    pub(crate) fn lookup(&self, text: &str) -> Option<Sym> {
        if text.is_empty() {
            return Some(Sym::NONE);
        }
        let hash = self.hasher.hash_one(text);
        self.index
            .find(hash, |&i| *self.slots[i as usize].text == *text)
            .map(|&i| Sym(i))
    }

    /// The text of `sym`.
    pub(crate) fn get(&self, sym: Sym) -> &str {
        &self.slots[sym.0 as usize].text
    }

    /// How many distinct strings are stored.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - 1 - self.free.len()
    }

    /// What the stored strings cost, in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_shared_and_freed_with_their_last_reference() {
        let mut i = Interner::default();
        let a = i.intern("worker");
        let b = i.intern("worker");
        assert_eq!(a, b);
        assert_eq!(i.get(a), "worker");
        assert_eq!(i.len(), 1);
        assert_eq!(i.bytes(), "worker".len() + STRING_OVERHEAD);
        assert_eq!(i.intern(""), Sym::NONE);
        i.release(a);
        assert_eq!(i.lookup("worker"), Some(a), "one reference left");
        i.release(b);
        assert_eq!(i.lookup("worker"), None);
        assert_eq!(i.len(), 0);
        assert_eq!(i.bytes(), 0);
        let c = i.intern("api");
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(i.get(c), "api");
    }
}
