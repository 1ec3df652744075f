//! The bookkeeping of the guest's DMA pool: a bump allocator over offsets, with last-in
//! first-out release.
//!
//! The guest sets its rings and buffers up once per boot and tears them down, if at all, in
//! reverse order, so a bump pointer that rolls back when the most recent allocation is released
//! is all it needs. The arena remembers the last [`HISTORY`] allocations for that; releasing
//! anything else leaves its bytes reserved, and [`Arena::stranded`] counts them so a leak is
//! visible rather than silent.

use core::cell::Cell;

/// How many allocations can be rolled back in reverse order.
pub const HISTORY: usize = 32;

/// One remembered allocation: its offset, its length, and the top before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    offset: usize,
    len: usize,
    previous_top: usize,
}

/// Offsets handed out from a pool of `capacity` bytes.
#[derive(Debug)]
pub struct Arena {
    capacity: usize,
    /// End of the highest live allocation.
    top: Cell<usize>,
    /// The most recent allocations, oldest first; `depth` of them are valid.
    history: Cell<[Entry; HISTORY]>,
    depth: Cell<usize>,
    /// Bytes released out of order.
    stranded: Cell<usize>,
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaError {
    /// Not enough room left.
    Exhausted {
        /// Bytes asked for.
        len: usize,
        /// Bytes left above the top.
        left: usize,
    },
    /// The alignment is zero or not a power of two.
    BadAlignment(usize),
}

impl Arena {
    /// An empty arena of `capacity` bytes.
    #[must_use]
    pub const fn new(capacity: usize) -> Self {
        Self {
            capacity,
            top: Cell::new(0),
            history: Cell::new(
                [Entry {
                    offset: 0,
                    len: 0,
                    previous_top: 0,
                }; HISTORY],
            ),
            depth: Cell::new(0),
            stranded: Cell::new(0),
        }
    }

    /// Reserves `len` bytes at an offset that is a multiple of `align`, relative to a pool base
    /// that is itself aligned to at least `align` (the caller's pool is page-aligned).
    ///
    /// # Errors
    /// [`ArenaError`] if there is no room or `align` is not a power of two.
    pub fn allocate(&self, len: usize, align: usize) -> Result<usize, ArenaError> {
        if !align.is_power_of_two() {
            return Err(ArenaError::BadAlignment(align));
        }
        let top = self.top.get();
        let exhausted = ArenaError::Exhausted {
            len,
            left: self.capacity - top,
        };
        let offset = top.checked_next_multiple_of(align).ok_or(exhausted)?;
        let len = len.max(1);
        let end = offset.checked_add(len).ok_or(exhausted)?;
        if end > self.capacity {
            return Err(exhausted);
        }
        self.top.set(end);
        let mut history = self.history.get();
        let mut depth = self.depth.get();
        if depth == HISTORY {
            // Forget the oldest: releasing it later strands its bytes.
            history.copy_within(1.., 0);
            depth -= 1;
        }
        if let Some(slot) = history.get_mut(depth) {
            *slot = Entry {
                offset,
                len,
                previous_top: top,
            };
            depth += 1;
        }
        self.history.set(history);
        self.depth.set(depth);
        Ok(offset)
    }

    /// Gives back `offset .. offset + len` from [`Arena::allocate`]. If it is the most recent
    /// live allocation the top comes back down to where it was before it.
    pub fn release(&self, offset: usize, len: usize) {
        let len = len.max(1);
        let history = self.history.get();
        let depth = self.depth.get();
        match depth.checked_sub(1).and_then(|last| history.get(last)) {
            Some(entry) if entry.offset == offset && entry.len == len => {
                self.top.set(entry.previous_top);
                self.depth.set(depth - 1);
            }
            _ => self.stranded.set(self.stranded.get().saturating_add(len)),
        }
    }

    /// Bytes in use (including alignment padding and stranded releases).
    #[must_use]
    pub fn used(&self) -> usize {
        self.top.get()
    }

    /// Bytes released out of order, which stay reserved.
    #[must_use]
    pub fn stranded(&self) -> usize {
        self.stranded.get()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn allocations_are_aligned_disjoint_and_bounded() {
        let arena = Arena::new(0x3000);
        assert_eq!(arena.allocate(10, 8), Ok(0));
        assert_eq!(arena.allocate(100, 4096), Ok(4096));
        assert_eq!(arena.allocate(16, 16), Ok(4096 + 112));
        assert_eq!(arena.used(), 4096 + 128);
        assert_eq!(
            arena.allocate(0x2000, 8),
            Err(ArenaError::Exhausted {
                len: 0x2000,
                left: 0x3000 - 4096 - 128
            })
        );
        assert_eq!(arena.allocate(8, 3), Err(ArenaError::BadAlignment(3)));
    }

    #[test]
    fn releases_in_reverse_order_return_everything_padding_included() {
        let arena = Arena::new(1 << 20);
        let a = arena.allocate(100, 8).unwrap();
        let b = arena.allocate(200, 4096).unwrap();
        let c = arena.allocate(300, 8).unwrap();
        assert_eq!((a, b, c), (0, 4096, 4296));
        arena.release(c, 300);
        arena.release(b, 200);
        assert_eq!(
            arena.used(),
            100,
            "b's alignment padding is returned with it"
        );
        arena.release(a, 100);
        assert_eq!((arena.used(), arena.stranded()), (0, 0));
    }

    #[test]
    fn out_of_order_releases_are_counted_as_stranded() {
        let arena = Arena::new(1 << 20);
        let a = arena.allocate(100, 8).unwrap();
        let b = arena.allocate(200, 8).unwrap();
        arena.release(a, 100);
        assert_eq!((arena.used(), arena.stranded()), (b + 200, 100));
        // A release that matches nothing (a double free) is counted too, not trusted.
        arena.release(a, 100);
        assert_eq!(arena.stranded(), 200);
        arena.release(b, 200);
        assert_eq!(arena.used(), 100, "the top returns to a's end");
    }

    #[test]
    fn history_overflow_strands_only_the_forgotten_allocations() {
        let arena = Arena::new(1 << 20);
        let offsets: std::vec::Vec<usize> = (0..HISTORY + 2)
            .map(|_| arena.allocate(8, 8).unwrap())
            .collect();
        for offset in offsets.iter().rev() {
            arena.release(*offset, 8);
        }
        assert_eq!(arena.stranded(), 16);
        assert_eq!(arena.used(), 16);
    }

    proptest! {
        #[test]
        fn allocations_never_overlap_or_exceed_capacity(
            requests in proptest::collection::vec((1usize..5000, 0u32..13), 1..=HISTORY)
        ) {
            let arena = Arena::new(64 * 1024);
            let mut live: std::vec::Vec<(usize, usize)> = std::vec::Vec::new();
            for (len, align_shift) in requests {
                let align = 1usize << align_shift;
                if let Ok(offset) = arena.allocate(len, align) {
                    prop_assert_eq!(offset % align, 0);
                    prop_assert!(offset + len <= 64 * 1024);
                    for (o, l) in &live {
                        prop_assert!(offset >= o + l || offset + len <= *o);
                    }
                    live.push((offset, len));
                }
            }
            while let Some((offset, len)) = live.pop() {
                arena.release(offset, len);
            }
            prop_assert_eq!(arena.used(), 0);
        }
    }
}
