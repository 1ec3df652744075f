//! A driver-side model of one virtqueue, run against fuzzer-chosen driver operations and device
//! writes. The model knows which tokens are in flight and what each posted, so it can check
//! every answer the queue gives, whatever the device wrote.

use std::collections::BTreeMap;
use std::fmt::Debug;

use arbitrary::Arbitrary;
use virtio_core::dma::DmaMemory;
use virtio_core::fake::FakeHal;
use virtio_core::hal::{Hal, Segment};
use virtio_core::queue::{Token, Virtqueue};

/// Longest chain the harness builds (readable and writable segments together); the indirect
/// tables are sized for it.
pub const MAX_SEGMENTS: usize = 8;

/// What the driver posted for one chain still in flight.
#[derive(Clone, Copy, Debug)]
pub struct Posted {
    /// Sum of the writable segment lengths: no completion may report more written.
    pub writable: u64,
    /// Ring descriptors the chain occupies (1 when indirect).
    pub descriptors: u16,
    /// The indirect table lent to the chain, if any.
    pub table: Option<usize>,
    /// Which `add` this was, so a device model can tell a re-added token from a stale one.
    pub generation: u64,
}

/// The chains in flight, by token.
pub type InFlight = BTreeMap<u16, Posted>;

/// The device half: writes the fuzzer chose into the device-owned ring areas.
pub trait DeviceSide {
    /// One device write.
    type Write: Debug;
    /// Applies `write`; `in_flight` lets well-formed completions name real chains.
    fn write(&mut self, write: &Self::Write, in_flight: &InFlight);
    /// Forgets device state after a device reset (the queue has zeroed the ring).
    fn reset(&mut self);
}

/// One step of the run.
#[derive(Arbitrary, Debug)]
pub enum Step<W> {
    /// The device writes something.
    Device(W),
    /// `add` a chain of these readable and writable segment lengths.
    Add {
        /// Readable segment lengths.
        readable: Vec<u32>,
        /// Writable segment lengths.
        writable: Vec<u32>,
        /// Whether to pass an indirect table.
        indirect: bool,
    },
    /// `kick_prepare`.
    KickPrepare,
    /// `has_used`.
    HasUsed,
    /// `pop_used`.
    PopUsed,
    /// `enable_interrupts`.
    EnableInterrupts,
    /// `disable_interrupts`.
    DisableInterrupts,
    /// One `detach_next`, as if the device had been reset.
    Detach,
    /// Device reset: detach everything, then `reset`.
    Reset,
}

/// A whole fuzz input: queue shape, negotiated features and the steps.
#[derive(Arbitrary, Debug)]
pub struct Input<W> {
    /// Queue size selector (the target maps it to a valid size).
    pub size: u8,
    /// `VIRTIO_RING_F_EVENT_IDX` negotiated.
    pub event_idx: bool,
    /// `VIRTIO_RING_F_INDIRECT_DESC` negotiated.
    pub indirect: bool,
    /// The operations, in order.
    pub steps: Vec<Step<W>>,
}

/// A bus address for segment `index` of a chain; the device model never dereferences it.
fn segment_address(index: usize) -> u64 {
    0x1_0000_0000 + 0x1000 * index as u64
}

/// The driver's view: chains in flight and the indirect tables lent to them.
struct Model {
    tables: Vec<DmaMemory>,
    free_tables: Vec<usize>,
    in_flight: InFlight,
    generation: u64,
}

impl Model {
    /// `add`s a chain of these segment lengths and records it if the queue took it.
    fn add<Q: Virtqueue>(
        &mut self,
        queue: &mut Q,
        readable: &[u32],
        writable: &[u32],
        indirect: bool,
    ) {
        let readable: Vec<Segment> = readable
            .iter()
            .take(MAX_SEGMENTS)
            .enumerate()
            .map(|(i, len)| Segment::new(segment_address(i), *len))
            .collect();
        let writable: Vec<Segment> = writable
            .iter()
            .take(MAX_SEGMENTS - readable.len())
            .enumerate()
            .map(|(i, len)| Segment::new(segment_address(MAX_SEGMENTS + i), *len))
            .collect();
        let table = if indirect {
            self.free_tables.last().copied()
        } else {
            None
        };
        let result = queue.add(&readable, &writable, table.map(|t| &self.tables[t]));
        let Ok(token) = result else { return };
        let size = queue.size();
        assert!(token.0 < size, "token {token:?} outside a queue of {size}");
        let descriptors = if table.is_some() {
            self.free_tables.pop();
            1
        } else {
            (readable.len() + writable.len()) as u16
        };
        self.generation += 1;
        let posted = Posted {
            writable: writable.iter().map(|s| u64::from(s.len)).sum(),
            descriptors,
            table,
            generation: self.generation,
        };
        let previous = self.in_flight.insert(token.0, posted);
        assert!(
            previous.is_none(),
            "add returned {token:?}, already in flight"
        );
    }

    /// `pop_used`, checking what it returns. A device error leaves the queue unchanged, and the
    /// model with it.
    fn pop<Q: Virtqueue>(&mut self, queue: &mut Q) {
        if let Ok(Some(used)) = queue.pop_used() {
            let posted = self
                .in_flight
                .remove(&used.token.0)
                .unwrap_or_else(|| panic!("pop_used returned {used:?}, which is not in flight"));
            assert!(
                u64::from(used.written) <= posted.writable,
                "{used:?} reports more than the {} writable bytes posted",
                posted.writable
            );
            self.free_tables.extend(posted.table);
        }
    }

    /// One `detach_next`, checking what it returns.
    fn detach<Q: Virtqueue>(&mut self, queue: &mut Q) {
        match queue.detach_next() {
            Some(token) => {
                let posted = self.in_flight.remove(&token.0).unwrap_or_else(|| {
                    panic!("detach_next returned {token:?}, which is not in flight")
                });
                self.free_tables.extend(posted.table);
            }
            None => assert!(
                self.in_flight.is_empty(),
                "detach_next: None with {:?}",
                self.in_flight
            ),
        }
    }

    /// Detaches until `None`, checking each token was in flight and comes back once.
    fn detach_all<Q: Virtqueue>(&mut self, queue: &mut Q) {
        let mut budget = usize::from(queue.size()) + 1;
        while let Some(token) = queue.detach_next() {
            let Token(index) = token;
            let posted = self.in_flight.remove(&index).unwrap_or_else(|| {
                panic!("detach_next returned {token:?}: not in flight, or twice")
            });
            self.free_tables.extend(posted.table);
            budget -= 1;
            assert!(budget > 0, "detach_next never returns None");
        }
        assert!(
            self.in_flight.is_empty(),
            "detach_next missed {:?}",
            self.in_flight
        );
        assert_eq!(queue.in_flight(), 0);
        assert_eq!(
            queue.free_descriptors(),
            queue.size(),
            "free descriptors after detaching all"
        );
        assert_eq!(
            self.free_tables.len(),
            self.tables.len(),
            "indirect tables not all returned"
        );
    }
}

/// Runs `steps` against `queue` and `device`, checking after every step that the queue agrees
/// with the model, and at the end that detaching returns every chain still in flight once.
///
/// # Panics
/// When the queue breaks an invariant (that is the finding).
pub fn run<Q: Virtqueue, D: DeviceSide>(
    hal: &FakeHal,
    queue: &mut Q,
    device: &mut D,
    steps: &[Step<D::Write>],
) {
    let size = queue.size();
    let tables: Vec<DmaMemory> = (0..size)
        .map(|_| hal.dma_alloc(16 * MAX_SEGMENTS, 16).unwrap())
        .collect();
    let mut model = Model {
        free_tables: (0..tables.len()).rev().collect(),
        tables,
        in_flight: InFlight::new(),
        generation: 0,
    };
    for step in steps {
        match step {
            Step::Device(write) => device.write(write, &model.in_flight),
            Step::Add {
                readable,
                writable,
                indirect,
            } => model.add(queue, readable, writable, *indirect),
            Step::KickPrepare => {
                let _ = queue.kick_prepare();
            }
            Step::HasUsed => {
                let _ = queue.has_used();
            }
            Step::PopUsed => model.pop(queue),
            Step::EnableInterrupts => {
                let _ = queue.enable_interrupts();
            }
            Step::DisableInterrupts => queue.disable_interrupts(),
            Step::Detach => model.detach(queue),
            Step::Reset => {
                model.detach_all(queue);
                queue.reset();
                device.reset();
                assert_eq!(
                    queue.free_descriptors(),
                    size,
                    "free descriptors after reset"
                );
            }
        }
        assert_eq!(
            usize::from(queue.in_flight()),
            model.in_flight.len(),
            "in_flight after {step:?}"
        );
        assert!(queue.free_descriptors() <= size);
    }
    model.detach_all(queue);
}

/// Picks the `pick`-th in-flight chain (modulo their number) not in `completed`.
#[must_use]
pub fn pick_in_flight(
    in_flight: &InFlight,
    completed: &[(u16, u64)],
    pick: u16,
) -> Option<(u16, Posted)> {
    let candidates: Vec<(u16, Posted)> = in_flight
        .iter()
        .filter(|(token, posted)| !completed.contains(&(**token, posted.generation)))
        .map(|(token, posted)| (*token, *posted))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    candidates
        .get(usize::from(pick) % candidates.len())
        .copied()
}

/// The length a well-formed completion reports: `len` reduced into `0..=writable` when
/// `honest`, otherwise `len` as given.
#[must_use]
pub fn completion_len(len: u32, honest: bool, posted: &Posted) -> u32 {
    if honest {
        (u64::from(len) % (posted.writable + 1)) as u32
    } else {
        len
    }
}
