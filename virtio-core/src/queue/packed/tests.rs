//! Tests of the packed virtqueue: ring layouts, wrap counters, event suppression and untrusted
//! used descriptors over FakeHal memory, and property tests over random operation mixes.

use core::sync::atomic::AtomicBool;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::fake::FakeHal;
use crate::fake::packed_device::{PackedAreas, PackedDevice, PackedFeatures};
use crate::hal::Hal;
use crate::queue::{IndirectChain, IndirectWriter, RingFormat};

/// Largest chain the tests build (direct or indirect).
const MAX_SEGMENTS: usize = 6;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..bound` (`bound > 0`).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// One element of a chain: address, length, device-writable.
type Element = (u64, u32, bool);

/// A chain as the device decoded it from ring memory.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DeviceChain {
    id: u16,
    /// Ring descriptors the chain occupied.
    descriptors: u16,
    elements: Vec<Element>,
    indirect: bool,
}

impl DeviceChain {
    fn writable(&self) -> u32 {
        self.elements.iter().filter(|e| e.2).map(|e| e.1).sum()
    }
}

/// The device side: virtio-core's spec-written packed device
/// ([`crate::fake::packed_device`], shared with the simulator's device and the benchmark),
/// plus what only a test of our driver checks. Any spec violation it sees in what the
/// driver wrote fails the test, and so do the things the spec tells a driver not to do but
/// a device to ignore (WRITE on an indirect descriptor, reserved bits and ids in a table, a
/// misaligned table), and a buffer id out of range or reused while in flight.
struct SpecDevice {
    ring: DmaMemory,
    size: u16,
    driver_event: usize,
    device: PackedDevice,
    /// Chains read and not yet used, in ring order.
    pending: Vec<DeviceChain>,
    /// Report lengths as QEMU does: in `len`, without ever setting WRITE in a used
    /// descriptor. Otherwise WRITE is set exactly when data was written (section 2.8.3).
    qemu_style: bool,
    /// A second reader that only watches descriptors become available (for kick checks).
    observe_position: u16,
    observe_wrap: bool,
}

impl SpecDevice {
    fn new(hal: &FakeHal, addresses: QueueAddresses, size: u16) -> Self {
        let ring_bytes = 16 * usize::from(size) + 8;
        let ring = hal.memory_at(addresses.descriptors, ring_bytes).unwrap();
        let driver_event = (addresses.driver - addresses.descriptors) as usize;
        let device_event = (addresses.device - addresses.descriptors) as usize;
        assert_eq!(driver_event, 16 * usize::from(size));
        assert_eq!(device_event, driver_event + 4);
        let device = PackedDevice::new(
            size,
            PackedAreas {
                descriptors: addresses.descriptors,
                driver_event: addresses.driver,
                device_event: addresses.device,
            },
            // The device accepts both; the driver is held to its own negotiation by
            // `Rig`'s bookkeeping (an indirect chain is only posted with a table).
            PackedFeatures {
                indirect: true,
                event_idx: true,
            },
        );
        Self {
            ring,
            size,
            driver_event,
            device,
            pending: Vec::new(),
            qemu_style: false,
            observe_position: 0,
            observe_wrap: true,
        }
    }

    /// Reads every chain the driver has made available; returns how many.
    fn fetch(&mut self, hal: &FakeHal) -> usize {
        let mut count = 0;
        loop {
            let chain = match self.device.pop(hal) {
                Ok(Some(chain)) => chain,
                Ok(None) => return count,
                Err(error) => panic!("the driver broke the packed ring: {error:?}"),
            };
            if let Some(pointer) = chain.indirect_descriptor {
                assert_eq!(pointer.address % 16, 0, "indirect table misaligned");
                assert!(!pointer.writable, "WRITE with INDIRECT");
                for entry in &chain.elements {
                    let reserved = entry.flags & !VIRTQ_DESC_F_WRITE;
                    assert_eq!(reserved, 0, "indirect flags {:#x}", entry.flags);
                    assert_eq!(entry.id, 0, "reserved id in an indirect descriptor");
                }
            }
            assert!(chain.id < self.size, "buffer id {} out of range", chain.id);
            assert!(
                self.pending.iter().all(|c| c.id != chain.id),
                "buffer id {} reused while in flight",
                chain.id
            );
            self.pending.push(DeviceChain {
                id: chain.id,
                descriptors: chain.descriptors,
                elements: chain
                    .elements
                    .iter()
                    .map(|e| (e.address, e.len, e.writable))
                    .collect(),
                indirect: chain.indirect,
            });
            count += 1;
        }
    }

    /// Uses the `which`-th pending chain, reporting `written` bytes.
    fn complete(&mut self, which: usize, written: u32) -> DeviceChain {
        let chain = self.pending.remove(which);
        assert!(written <= chain.writable());
        let write = written > 0 && !self.qemu_style;
        self.device
            .push_used(&self.ring, chain.id, written, chain.descriptors, write)
            .unwrap();
        chain
    }

    /// Writes arbitrary bytes into the used position's descriptor (malformed devices).
    fn write_raw(&self, position: u16, id: u16, len: u32, flags: u16) {
        self.device
            .write_raw(&self.ring, position, id, len, flags)
            .unwrap();
    }

    /// The used buffer notification decision after writing used descriptors (section
    /// 2.8.10); reserved flags fail the test.
    fn should_interrupt(&mut self) -> bool {
        self.device.needs_interrupt(&self.ring).unwrap()
    }

    /// Writes the device event suppression structure.
    fn set_device_event(&mut self, desc: u16, flags: u16) {
        self.device
            .set_device_event(&self.ring, desc, flags)
            .unwrap();
    }

    /// Asks to be notified when the descriptor at the device's read position is made
    /// available.
    fn arm_kick_at_next(&mut self) {
        let (position, wrap) = self.device.next_avail();
        let wrap = if wrap { 0x8000 } else { 0 };
        self.set_device_event(position | wrap, RING_EVENT_FLAGS_DESC);
    }

    /// Descriptors that became available since the last call: (position, wrap counter).
    fn observe(&mut self) -> Vec<(u16, bool)> {
        let mut seen = Vec::new();
        loop {
            let offset = usize::from(self.observe_position) * 16;
            let flags = self.ring.load_u16(offset + 14, Ordering::Acquire);
            if !PackedDevice::is_available(flags, self.observe_wrap) {
                return seen;
            }
            seen.push((self.observe_position, self.observe_wrap));
            (self.observe_position, self.observe_wrap) =
                self.device.step(self.observe_position, self.observe_wrap);
        }
    }
}

/// What the driver posted for a token.
#[derive(Clone, Debug)]
struct Posted {
    elements: Vec<Element>,
    indirect: Option<DmaMemory>,
}

/// A queue, the spec device on the same memory, and the bookkeeping that checks them.
struct Rig {
    hal: FakeHal,
    queue: PackedQueue<Vec<Slot>>,
    device: SpecDevice,
    tables: Vec<DmaMemory>,
    posted: BTreeMap<u16, Posted>,
    /// (token, written) in the order the device used them: the order pops must return.
    used_order: VecDeque<(u16, u32)>,
    next_address: u64,
    added: u64,
    popped: u64,
}

impl Rig {
    fn new(size: u16, features: QueueFeatures) -> Self {
        let hal = FakeHal::new();
        let ring = hal
            .dma_alloc(PackedQueue::<Vec<Slot>>::ring_len(size), RING_ALIGN)
            .unwrap();
        let slots = vec![Slot::EMPTY; usize::from(size)];
        let queue = PackedQueue::new(7, size, ring, slots, features).unwrap();
        let device = SpecDevice::new(&hal, queue.addresses(), size);
        let tables = if features.indirect {
            (0..size)
                .map(|_| hal.dma_alloc(16 * MAX_SEGMENTS, 16).unwrap())
                .collect()
        } else {
            Vec::new()
        };
        Self {
            hal,
            queue,
            device,
            tables,
            posted: BTreeMap::new(),
            used_order: VecDeque::new(),
            next_address: 0x10_0000,
            added: 0,
            popped: 0,
            // Addresses are only compared, never dereferenced by the device.
        }
    }

    fn segments(&mut self, lens: &[u32]) -> Vec<Segment> {
        lens.iter()
            .map(|&len| {
                self.next_address += 0x1_0000;
                Segment::new(self.next_address, len)
            })
            .collect()
    }

    fn add(
        &mut self,
        readable: &[u32],
        writable: &[u32],
        indirect: bool,
    ) -> Result<Token, QueueError> {
        let readable = self.segments(readable);
        let writable = self.segments(writable);
        let table = if indirect { self.tables.pop() } else { None };
        let result = self.queue.add(&readable, &writable, table.as_ref());
        match result {
            Ok(token) => {
                let elements = readable
                    .iter()
                    .map(|s| (s.address, s.len, false))
                    .chain(writable.iter().map(|s| (s.address, s.len, true)))
                    .collect();
                let old = self.posted.insert(
                    token.0,
                    Posted {
                        elements,
                        indirect: table,
                    },
                );
                assert!(old.is_none(), "token {token:?} handed out twice");
                self.added += 1;
            }
            Err(_) => self.tables.extend(table),
        }
        result
    }

    /// As [`Rig::add`] with a table, but written by the indirect writer and added with
    /// `add_table`.
    fn add_written(&mut self, readable: &[u32], writable: &[u32]) -> Result<Token, QueueError> {
        let readable = self.segments(readable);
        let writable = self.segments(writable);
        let Some(table) = self.tables.pop() else {
            // A table per id: none is free only while every id is in flight.
            assert_eq!(self.queue.free_descriptors(), 0);
            return Err(QueueError::Full { needed: 1, free: 0 });
        };
        let result = write_packed(&table, &readable, &writable)
            .and_then(|chain| self.queue.add_table(&chain));
        match result {
            Ok(token) => {
                let elements = readable
                    .iter()
                    .map(|s| (s.address, s.len, false))
                    .chain(writable.iter().map(|s| (s.address, s.len, true)))
                    .collect();
                let old = self.posted.insert(
                    token.0,
                    Posted {
                        elements,
                        indirect: Some(table),
                    },
                );
                assert!(old.is_none(), "token {token:?} handed out twice");
                self.added += 1;
            }
            Err(_) => self.tables.push(table),
        }
        result
    }

    /// Device reads everything available and checks it against what was posted.
    fn fetch(&mut self) -> usize {
        let before = self.device.pending.len();
        let count = self.device.fetch(&self.hal);
        for chain in &self.device.pending[before..] {
            let posted = &self.posted[&chain.id];
            assert_eq!(chain.elements, posted.elements, "chain {}", chain.id);
            assert_eq!(chain.indirect, posted.indirect.is_some());
            let expected = if chain.indirect {
                1
            } else {
                chain.elements.len()
            };
            assert_eq!(usize::from(chain.descriptors), expected);
        }
        count
    }

    fn complete(&mut self, which: usize, written: u32) {
        let chain = self.device.complete(which, written);
        self.used_order.push_back((chain.id, written));
    }

    fn pop(&mut self) -> Option<UsedBuffer> {
        let used = self.queue.pop_used().unwrap()?;
        let (id, written) = self
            .used_order
            .pop_front()
            .expect("pop without a used chain");
        assert_eq!(
            used,
            UsedBuffer {
                token: Token(id),
                written
            }
        );
        let posted = self.posted.remove(&id).unwrap();
        self.tables.extend(posted.indirect);
        self.popped += 1;
        Some(used)
    }

    fn pop_all(&mut self) -> usize {
        let mut count = 0;
        while self.pop().is_some() {
            count += 1;
        }
        assert!(self.used_order.is_empty(), "used chains left behind");
        count
    }

    /// Free descriptors as the driver must count them: the ring minus what is in flight.
    fn check_counts(&self) {
        let occupied: usize = self
            .posted
            .values()
            .map(|p| {
                if p.indirect.is_some() {
                    1
                } else {
                    p.elements.len()
                }
            })
            .sum();
        assert_eq!(usize::from(self.queue.in_flight()), self.posted.len());
        assert_eq!(
            usize::from(self.queue.free_descriptors()),
            usize::from(self.queue.size()) - occupied
        );
    }

    fn ring_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0; PackedQueue::<Vec<Slot>>::ring_len(self.queue.size())];
        assert!(self.device.ring.read_bytes(0, &mut bytes));
        bytes
    }
}

/// Writes `readable` then `writable` into `table` with the indirect writer, packed format.
fn write_packed(
    table: &DmaMemory,
    readable: &[Segment],
    writable: &[Segment],
) -> Result<IndirectChain, QueueError> {
    super::super::indirect::write_chain(table, RingFormat::Packed, readable, writable)
}

#[test]
fn written_tables_land_exactly_as_add_writes_them() {
    // The same chains through `add` with a table on one ring and through the writer and
    // `add_table` on a twin, across several laps of a small ring: same table bytes, same ring
    // descriptors but for the table's address, same tokens and bookkeeping, and the spec
    // device reads the same chains from both.
    let shapes: [(&[u32], &[u32]); 6] = [
        (&[10], &[]),
        (&[], &[20]),
        (&[16], &[108, 4096]),
        (&[16, 4096], &[108]),
        (&[1, 2], &[4, 5, 6]),
        (&[7], &[8]),
    ];
    for features in [
        indirect(),
        QueueFeatures {
            event_idx: true,
            indirect: true,
        },
    ] {
        let mut by_add = Rig::new(4, features);
        let mut by_writer = Rig::new(4, features);
        for round in 0..4usize {
            for (n, (readable, writable)) in shapes.iter().enumerate() {
                let a = by_add.add(readable, writable, true).unwrap();
                let b = by_writer.add_written(readable, writable).unwrap();
                assert_eq!(a, b);
                let count = readable.len() + writable.len();
                let table_bytes = |rig: &Rig, token: Token| {
                    let table = rig.posted[&token.0].indirect.unwrap();
                    let mut bytes = vec![0u8; 16 * count];
                    assert!(table.read_bytes(0, &mut bytes));
                    (table.bus_address(), bytes)
                };
                let (bus_a, bytes_a) = table_bytes(&by_add, a);
                let (bus_b, bytes_b) = table_bytes(&by_writer, b);
                assert_eq!(bytes_a, bytes_b, "round {round} shape {n}");
                // The ring: one descriptor each, the same but for the table's address.
                let ring_a = by_add.ring_bytes();
                let ring_b = by_writer.ring_bytes();
                let position = ring_a
                    .chunks(16)
                    .position(|d| d[..8] == bus_a.to_le_bytes())
                    .expect("the ring names table a");
                assert_eq!(ring_b[16 * position..][..8], bus_b.to_le_bytes());
                assert_eq!(
                    ring_a[16 * position + 8..][..8],
                    ring_b[16 * position + 8..][..8]
                );
                let bookkeeping = |rig: &Rig| {
                    let state = format!("{:?}", rig.queue);
                    state
                        .split_once("slots:")
                        .map(|(_, rest)| String::from(rest))
                };
                assert_eq!(bookkeeping(&by_add), bookkeeping(&by_writer));
                assert_eq!(by_add.fetch(), 1);
                assert_eq!(by_writer.fetch(), 1);
                let writable_len: u32 = writable.iter().sum();
                let len = writable_len.saturating_sub(u32::try_from(round).unwrap());
                by_add.complete(0, len);
                by_writer.complete(0, len);
                assert_eq!(by_add.pop_all(), 1);
                assert_eq!(by_writer.pop_all(), 1);
                by_add.check_counts();
                by_writer.check_counts();
            }
        }
    }
}

#[test]
fn add_table_checks_what_only_the_ring_knows_without_side_effects() {
    let mut plain = Rig::new(2, QueueFeatures::default());
    let table = plain.hal.dma_alloc(64, 16).unwrap();
    let chain = write_packed(&table, &[Segment::new(0x1000, 8)], &[]).unwrap();
    let before = plain.ring_bytes();
    assert_eq!(
        plain.queue.add_table(&chain),
        Err(QueueError::IndirectNotNegotiated)
    );
    assert_eq!(plain.ring_bytes(), before);
    assert_eq!(plain.queue.in_flight(), 0);

    let mut rig = Rig::new(2, indirect());
    let mut split_writer = IndirectWriter::new(&table, RingFormat::Split).unwrap();
    split_writer.push_readable(Segment::new(0x1000, 8)).unwrap();
    let split = split_writer.finish().unwrap();
    let before = rig.ring_bytes();
    assert_eq!(
        rig.queue.add_table(&split),
        Err(QueueError::IndirectFormat {
            written: RingFormat::Split
        })
    );
    assert_eq!(rig.ring_bytes(), before);
    rig.add_written(&[8], &[8]).unwrap();
    rig.add_written(&[8], &[8]).unwrap();
    let before = rig.ring_bytes();
    let chain = write_packed(&table, &[Segment::new(0x1000, 8)], &[]).unwrap();
    assert_eq!(
        rig.queue.add_table(&chain),
        Err(QueueError::Full { needed: 1, free: 0 })
    );
    assert_eq!(rig.ring_bytes(), before);
    rig.check_counts();
}

#[test]
fn written_tables_mixed_with_direct_and_indirect_chains_complete_once_each() {
    let mut rng = Rng(0x5eed_1234_9876_abcd);
    for size in [1u16, 3, 4, 7] {
        for event_idx in [false, true] {
            let mut rig = Rig::new(
                size,
                QueueFeatures {
                    event_idx,
                    indirect: true,
                },
            );
            for _ in 0..400 {
                match rng.below(6) {
                    0..=2 => {
                        let lens = |rng: &mut Rng, n: usize| -> Vec<u32> {
                            (0..n).map(|_| 1 + rng.below(5000) as u32).collect()
                        };
                        let (readable_count, writable_count) = (1 + rng.below(3), rng.below(3));
                        let readable = lens(&mut rng, readable_count);
                        let writable = lens(&mut rng, writable_count);
                        let free = rig.queue.free_descriptors();
                        let how = rng.below(3);
                        // `Rig::add` falls back to a direct chain when no table is free.
                        let how = if how == 1 && rig.tables.is_empty() {
                            0
                        } else {
                            how
                        };
                        let result = match how {
                            0 => rig.add(&readable, &writable, false),
                            1 => rig.add(&readable, &writable, true),
                            _ => rig.add_written(&readable, &writable),
                        };
                        let needed = if how == 0 {
                            readable.len() + writable.len()
                        } else {
                            1
                        };
                        match result {
                            Ok(_) => assert!(needed <= usize::from(free)),
                            Err(QueueError::Full { .. }) => {
                                assert!(needed > usize::from(free));
                            }
                            Err(QueueError::ChainTooLong { segments, limit }) => {
                                assert!(how == 0 && segments == needed && limit < needed);
                                assert_eq!(limit, usize::from(size));
                            }
                            Err(error) => panic!("unexpected {error:?}"),
                        }
                    }
                    3 => {
                        rig.fetch();
                    }
                    4 => {
                        if !rig.device.pending.is_empty() {
                            let which = rng.below(rig.device.pending.len());
                            let writable = rig.device.pending[which].writable();
                            let written = rng.below(writable as usize + 1) as u32;
                            rig.complete(which, written);
                        }
                    }
                    _ => {
                        rig.pop_all();
                    }
                }
                rig.check_counts();
            }
        }
    }
}

fn events() -> QueueFeatures {
    QueueFeatures {
        event_idx: true,
        indirect: false,
    }
}

fn indirect() -> QueueFeatures {
    QueueFeatures {
        event_idx: false,
        indirect: true,
    }
}

// --- Layout -------------------------------------------------------------------------

#[test]
fn spec_structures_have_the_spec_layout() {
    assert_eq!(DESC_ADDR, 0);
    assert_eq!(DESC_LEN, 8);
    assert_eq!(DESC_ID, 12);
    assert_eq!(DESC_FLAGS, 14);
    assert_eq!(offset_of!(EventSuppress, desc), 0);
    assert_eq!(offset_of!(EventSuppress, flags), 2);
    assert_eq!(PackedQueue::<Vec<Slot>>::ring_len(1), 24);
    assert_eq!(PackedQueue::<Vec<Slot>>::ring_len(4), 72);
    assert_eq!(PackedQueue::<Vec<Slot>>::ring_len(32768), 524_296);
    assert_eq!(PackedQueue::<Vec<Slot>>::RING_ALIGN, 16);

    let descriptor = Descriptor {
        addr: U64::new(0x1122_3344_5566_7788),
        len: U32::new(0x99aa_bbcc),
        id: U16::new(0x0102),
        flags: U16::new(0x8081),
    };
    assert_eq!(
        descriptor.as_bytes(),
        [
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xcc, 0xbb, 0xaa, 0x99, 0x02, 0x01,
            0x81, 0x80
        ]
    );
}

#[test]
fn addresses_follow_the_layout() {
    let rig = Rig::new(5, QueueFeatures::default());
    let addresses = rig.queue.addresses();
    assert_eq!(addresses.driver, addresses.descriptors + 80);
    assert_eq!(addresses.device, addresses.descriptors + 84);
    assert_eq!(addresses.descriptors % 16, 0);
    assert_ne!(addresses.descriptors, rig.device.ring.cpu_address() as u64);
    assert_eq!(rig.queue.index(), 7);
    assert_eq!(rig.queue.size(), 5);
    assert_eq!(rig.queue.free_descriptors(), 5);
    assert_eq!(rig.queue.features(), QueueFeatures::default());
}

#[test]
fn new_validates_size_memory_and_slots() {
    type Q = PackedQueue<Vec<Slot>>;
    let hal = FakeHal::new();
    // Each accepted queue on its own memory: queues of other sizes put their fields at other
    // places, and one location keeps one access size (Miri's weak-memory emulation).
    let ring = hal.dma_alloc(256, 16).unwrap();
    let slots = |n: usize| vec![Slot::EMPTY; n];
    let none = QueueFeatures::default();
    assert_eq!(
        Q::new(0, 0, ring, slots(4), none).unwrap_err(),
        QueueError::InvalidSize(0)
    );
    assert_eq!(
        Q::new(0, 32769, ring, slots(32769), none).unwrap_err(),
        QueueError::InvalidSize(32769)
    );
    // Not a power of two is fine; the largest size is fine.
    let odd = hal.dma_alloc(Q::ring_len(3), 16).unwrap();
    assert!(Q::new(0, 3, odd, slots(3), none).is_ok());
    // The largest queue is 131,000 field stores to zero: too many steps for Miri.
    if !cfg!(miri) {
        let largest = hal.dma_alloc(Q::ring_len(MAX_QUEUE_SIZE), 16).unwrap();
        assert!(Q::new(0, MAX_QUEUE_SIZE, largest, slots(32768), none).is_ok());
    }

    let short = ring.sub(0, Q::ring_len(4) - 1).unwrap();
    assert_eq!(
        Q::new(0, 4, short, slots(4), none).unwrap_err(),
        QueueError::RingMemory {
            needed: 72,
            provided: 71
        }
    );
    let misaligned = ring.sub(8, 200).unwrap();
    assert_eq!(
        Q::new(0, 4, misaligned, slots(4), none).unwrap_err(),
        QueueError::RingMemory {
            needed: 72,
            provided: 200
        }
    );
    assert_eq!(
        Q::new(0, 4, ring, slots(3), none).unwrap_err(),
        QueueError::SlotStorage {
            needed: 4,
            provided: 3
        }
    );
    // Larger slot storage and ring memory are fine; extra ring memory is left alone.
    ring.store_u64(Q::ring_len(4) + 8, 0xfeed, Ordering::Relaxed);
    ring.store_u64(0, 0xdead, Ordering::Relaxed);
    let queue = Q::new(0, 4, ring, slots(10), none).unwrap();
    assert_eq!(ring.load_u64(0, Ordering::Relaxed), 0, "ring zeroed");
    assert_eq!(ring.load_u64(Q::ring_len(4) + 8, Ordering::Relaxed), 0xfeed);
    assert_eq!(queue.free_descriptors(), 4);
}

/// Hand-computed bytes of a size-4 ring through fill, out-of-order use, and a wrap.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one hand-computed scenario reads best in one piece"
)]
fn size_four_ring_bytes_by_hand() {
    let mut rig = Rig::new(4, QueueFeatures::default());
    let q = &mut rig.queue;
    let a = q.add(
        &[Segment::new(0x1000, 0x10)],
        &[Segment::new(0x2000, 0x20)],
        None,
    );
    assert_eq!(a, Ok(Token(0)));
    assert_eq!(
        q.add(&[Segment::new(0x3000, 0x30)], &[], None),
        Ok(Token(1))
    );
    let bytes = rig.ring_bytes();
    #[rustfmt::skip]
    let expected: [u8; 48] = [
        // position 0: addr 0x1000, len 0x10, id 0, flags NEXT | AVAIL = 0x0081
        0x00, 0x10, 0, 0, 0, 0, 0, 0,  0x10, 0, 0, 0,  0x00, 0x00,  0x81, 0x00,
        // position 1: addr 0x2000, len 0x20, id 0, flags WRITE | AVAIL = 0x0082
        0x00, 0x20, 0, 0, 0, 0, 0, 0,  0x20, 0, 0, 0,  0x00, 0x00,  0x82, 0x00,
        // position 2: addr 0x3000, len 0x30, id 1, flags AVAIL = 0x0080
        0x00, 0x30, 0, 0, 0, 0, 0, 0,  0x30, 0, 0, 0,  0x01, 0x00,  0x80, 0x00,
    ];
    assert_eq!(bytes[..48], expected);
    assert_eq!(
        bytes[48..],
        [0; 24],
        "position 3 and both event structures untouched"
    );

    // The device reads both chains and uses id 1 first: the used descriptor goes to
    // position 0 (id 1, flags AVAIL | USED = 0x8080) and the device skips one position.
    let dev = &mut rig.device;
    assert_eq!(dev.fetch(&rig.hal), 2);
    dev.complete(1, 0);
    assert_eq!(
        rig.device.ring_bytes_at(0),
        [
            0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x80, 0x80
        ]
    );
    assert_eq!(
        rig.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: Token(1),
            written: 0
        }))
    );
    // Then id 0 with 0x18 bytes written, at position 1 (flags WRITE | AVAIL | USED).
    rig.device.complete(0, 0x18);
    assert_eq!(
        rig.device.ring_bytes_at(1),
        [
            0x00, 0x20, 0, 0, 0, 0, 0, 0, 0x18, 0, 0, 0, 0x00, 0x00, 0x82, 0x80
        ]
    );
    assert_eq!(
        rig.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: Token(0),
            written: 0x18
        }))
    );
    assert_eq!(rig.queue.pop_used(), Ok(None));

    // A two-descriptor chain from position 3 wraps: position 3 carries the first lap's
    // AVAIL (0x0081), position 0 the second lap's: AVAIL = 0, USED = 1, WRITE (0x8002).
    let q = &mut rig.queue;
    let c = q.add(
        &[Segment::new(0x4000, 0x40)],
        &[Segment::new(0x5000, 0x50)],
        None,
    );
    assert_eq!(c, Ok(Token(0)));
    assert_eq!(
        rig.device.ring_bytes_at(3),
        [
            0x00, 0x40, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0x00, 0x00, 0x81, 0x00
        ]
    );
    assert_eq!(
        rig.device.ring_bytes_at(0),
        [
            0x00, 0x50, 0, 0, 0, 0, 0, 0, 0x50, 0, 0, 0, 0x00, 0x00, 0x02, 0x80
        ]
    );
    assert_eq!(rig.device.fetch(&rig.hal), 1);
    assert_eq!(rig.device.pending[0].descriptors, 2);
    rig.device.complete(0, 0x50);
    assert_eq!(rig.device.ring_bytes_at(3)[14..], [0x82, 0x80]);
    assert_eq!(
        rig.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: Token(0),
            written: 0x50
        }))
    );

    // Second lap at position 1: available is USED only (0x8000); used is neither (0x0000).
    assert_eq!(
        rig.queue.add(&[Segment::new(0x6000, 0x60)], &[], None),
        Ok(Token(0))
    );
    assert_eq!(rig.device.ring_bytes_at(1)[14..], [0x00, 0x80]);
    assert_eq!(rig.device.fetch(&rig.hal), 1);
    rig.device.complete(0, 0);
    assert_eq!(rig.device.ring_bytes_at(1)[14..], [0x00, 0x00]);
    assert_eq!(
        rig.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: Token(0),
            written: 0
        }))
    );
    assert_eq!(rig.queue.free_descriptors(), 4);
}

impl SpecDevice {
    fn ring_bytes_at(&self, position: u16) -> [u8; 16] {
        let mut bytes = [0; 16];
        assert!(self.ring.read_bytes(usize::from(position) * 16, &mut bytes));
        bytes
    }

    fn driver_event_bytes(&self) -> [u8; 4] {
        let mut bytes = [0; 4];
        assert!(self.ring.read_bytes(self.driver_event, &mut bytes));
        bytes
    }
}

#[test]
fn driver_event_bytes_by_hand() {
    let mut rig = Rig::new(4, events());
    // With EVENT_IDX a fresh queue is already in DESC mode at position 0 of the first lap
    // (desc = 0x8000, wrap 1; flags = 2), not ENABLE (zeroes), which would interrupt per
    // used buffer until the first re-arm.
    assert_eq!(
        rig.device.driver_event_bytes(),
        [0x00, 0x80, 0x02, 0x00],
        "DESC at the first used position after reset"
    );
    assert!(!rig.queue.enable_interrupts());
    assert_eq!(rig.device.driver_event_bytes(), [0x00, 0x80, 0x02, 0x00]);
    rig.queue.disable_interrupts();
    assert_eq!(rig.device.driver_event_bytes(), [0x00, 0x80, 0x01, 0x00]);
    // Three single chains used and popped, then one more chain to wrap: next used is
    // position 1 of the second lap (wrap 0): desc = 0x0001.
    for _ in 0..4 {
        rig.add(&[8], &[], false).unwrap();
    }
    rig.fetch();
    for _ in 0..4 {
        rig.complete(0, 0);
    }
    rig.pop_all();
    rig.add(&[8], &[], false).unwrap();
    rig.fetch();
    rig.complete(0, 0);
    rig.pop_all();
    assert!(!rig.queue.enable_interrupts());
    assert_eq!(rig.device.driver_event_bytes(), [0x01, 0x00, 0x02, 0x00]);

    // Without EVENT_IDX, enabling writes ENABLE (0) and leaves the offset alone.
    let mut plain = Rig::new(4, QueueFeatures::default());
    plain.queue.disable_interrupts();
    assert_eq!(plain.device.driver_event_bytes(), [0, 0, 0x01, 0]);
    assert!(!plain.queue.enable_interrupts());
    assert_eq!(plain.device.driver_event_bytes(), [0, 0, 0, 0]);
}

/// rust-vmm's own packed descriptor type (virtio-queue 0.18 has no packed queue, only the
/// descriptor definition) decodes what the driver wrote the same way.
#[test]
fn descriptors_decode_with_virtio_queue_packed_descriptor() {
    use virtio_queue::desc::packed::Descriptor as VmmDescriptor;
    use vm_memory::ByteValued;

    let mut rig = Rig::new(8, indirect());
    rig.add(&[0x10], &[0x20, 0x30], false).unwrap();
    rig.add(&[0x40], &[0x50], true).unwrap();
    let decode = |position: u16| {
        let mut d = VmmDescriptor::default();
        d.as_mut_slice()
            .copy_from_slice(&rig.device.ring_bytes_at(position));
        d
    };
    let (d0, d1, d2, d3) = (decode(0), decode(1), decode(2), decode(3));
    assert!(d0.has_next() && !d0.is_write_only() && !d0.refers_to_indirect_table());
    assert!(d1.has_next() && d1.is_write_only());
    assert!(!d2.has_next() && d2.is_write_only());
    assert_eq!((d0.len(), d1.len(), d2.len()), (0x10, 0x20, 0x30));
    assert_eq!(d2.id(), 0);
    assert!(d3.refers_to_indirect_table() && !d3.has_next() && !d3.is_write_only());
    assert_eq!((d3.id(), d3.len()), (1, 32));
    assert_eq!(d0.flags() & WRAP_FLAGS, 1 << 7);
    let table = rig.posted[&1].indirect.unwrap();
    assert_eq!(d3.addr().0, table.bus_address());
    let mut entry = VmmDescriptor::default();
    assert!(table.read_bytes(16, entry.as_mut_slice()));
    assert!(entry.is_write_only() && !entry.has_next());
    assert_eq!(entry.len(), 0x50);
}

// --- Adding -------------------------------------------------------------------------

#[test]
fn full_ring_reports_full_then_recovers() {
    let mut rig = Rig::new(4, indirect());
    for _ in 0..4 {
        rig.add(&[16], &[], false).unwrap();
    }
    assert_eq!(
        rig.add(&[16], &[], false),
        Err(QueueError::Full { needed: 1, free: 0 })
    );
    assert_eq!(
        rig.add(&[16], &[8], true),
        Err(QueueError::Full { needed: 1, free: 0 })
    );
    rig.fetch();
    rig.complete(2, 0);
    rig.pop_all();
    assert_eq!(rig.queue.free_descriptors(), 1);
    assert_eq!(
        rig.add(&[16, 16], &[8], false),
        Err(QueueError::Full { needed: 3, free: 1 })
    );
    // An indirect chain of three needs only one descriptor.
    rig.add(&[16, 16], &[8], true).unwrap();
    assert_eq!(rig.queue.free_descriptors(), 0);
    rig.fetch();
    for _ in 0..4 {
        rig.complete(0, 0);
    }
    rig.pop_all();
    rig.check_counts();
    assert_eq!(rig.queue.free_descriptors(), 4);
    rig.add(&[1, 2], &[3, 4], false).unwrap();
    rig.fetch();
    rig.complete(0, 7);
    rig.pop_all();
}

#[test]
fn malformed_chains_are_rejected_without_a_trace() {
    let mut rig = Rig::new(4, QueueFeatures::default());
    rig.add(&[8], &[], false).unwrap();
    let before = rig.ring_bytes();
    let (free, in_flight) = (rig.queue.free_descriptors(), rig.queue.in_flight());
    let seg = Segment::new(0x1000, 8);
    let q = &mut rig.queue;
    assert_eq!(q.add(&[], &[], None), Err(QueueError::EmptyChain));
    assert_eq!(
        q.add(&[seg, Segment::new(0x2000, 0)], &[], None),
        Err(QueueError::EmptySegment)
    );
    assert_eq!(
        q.add(&[seg], &[Segment::new(0x2000, 0)], None),
        Err(QueueError::EmptySegment)
    );
    let huge = Segment::new(0x2000, u32::MAX);
    assert_eq!(
        q.add(&[], &[huge, seg], None),
        Err(QueueError::WritableTooLong)
    );
    assert_eq!(
        q.add(&[seg; 5], &[], None),
        Err(QueueError::ChainTooLong {
            segments: 5,
            limit: 4
        })
    );
    assert_eq!(
        q.add(&[seg; 2], &[seg; 2], None),
        Err(QueueError::Full { needed: 4, free: 3 })
    );
    let table = rig.hal.dma_alloc(64, 16).unwrap();
    assert_eq!(
        q.add(&[seg], &[], Some(&table)),
        Err(QueueError::IndirectNotNegotiated)
    );
    assert_eq!(rig.ring_bytes(), before, "nothing written by failed adds");
    assert_eq!(
        (rig.queue.free_descriptors(), rig.queue.in_flight()),
        (free, in_flight)
    );

    let mut rig = Rig::new(4, indirect());
    let table = rig.hal.dma_alloc(64, 16).unwrap();
    let q = &mut rig.queue;
    let misaligned = table.sub(8, 48).unwrap();
    assert_eq!(
        q.add(&[seg], &[], Some(&misaligned)),
        Err(QueueError::IndirectMisaligned)
    );
    assert_eq!(
        q.add(&[seg; 3], &[seg; 2], Some(&table)),
        Err(QueueError::ChainTooLong {
            segments: 5,
            limit: 4
        })
    );
    // Indirect chains are limited by the table, not by the ring size.
    let big = rig.hal.dma_alloc(16 * 8, 16).unwrap();
    assert_eq!(
        rig.queue.add(&[seg; 4], &[seg; 4], Some(&big)),
        Ok(Token(0))
    );
    assert_eq!(rig.queue.free_descriptors(), 3);
}

// --- Stress: wraps, out-of-order use, indirect ----------------------------------------

/// Random chains until the ring is full, the device uses a random subset in random order,
/// the driver pops a random number; sizes 3, 5, 256, far more than 65,536 chains.
fn churn(size: u16, features: QueueFeatures, chains: u64, seed: u64) -> Rig {
    let mut rig = Rig::new(size, features);
    // Odd seeds report lengths the way QEMU does (no WRITE flag in used descriptors).
    rig.device.qemu_style = seed % 2 == 1;
    let mut rng = Rng(seed);
    let max = usize::from(size).min(MAX_SEGMENTS);
    let mut laps_seen = 0u64;
    let mut last_used_wrap = rig.queue.used_wrap_flags;
    let mut idle_rounds = 0;
    while rig.popped < chains {
        let progress_before = (rig.added, rig.device.pending.len(), rig.popped);
        for _ in 0..rng.below(usize::from(size) + 1) {
            let segments = 1 + rng.below(max);
            let readable_count = rng.below(segments + 1);
            let lens: Vec<u32> = (0..segments).map(|_| 1 + rng.below(4096) as u32).collect();
            let use_indirect = features.indirect && rng.below(2) == 0;
            match rig.add(
                &lens[..readable_count],
                &lens[readable_count..],
                use_indirect,
            ) {
                Ok(_) => {}
                Err(QueueError::Full { needed, free }) => {
                    assert!(needed > free);
                    assert_eq!(free, rig.queue.free_descriptors());
                    break;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        rig.fetch();
        for _ in 0..rng.below(rig.device.pending.len() + 1) {
            let which = rng.below(rig.device.pending.len());
            let writable = rig.device.pending[which].writable();
            let written = rng.below(writable as usize + 1) as u32;
            rig.complete(which, written);
        }
        for _ in 0..rng.below(rig.used_order.len() + 2) {
            rig.pop();
        }
        rig.check_counts();
        // Random choices can make a round do nothing, but not a thousand in a row unless the
        // two sides no longer see each other's descriptors.
        if (rig.added, rig.device.pending.len(), rig.popped) == progress_before {
            idle_rounds += 1;
            assert!(idle_rounds < 1000, "stalled after {} chains", rig.popped);
        } else {
            idle_rounds = 0;
        }
        if rig.queue.used_wrap_flags != last_used_wrap {
            laps_seen += 1;
        }
        last_used_wrap = rig.queue.used_wrap_flags;
    }
    assert!(laps_seen > 10, "only {laps_seen} laps");
    rig
}

#[test]
#[cfg_attr(
    miri,
    ignore = "tens of thousands of pure-arithmetic steps: run natively; Miri covers the same code in shorter tests"
)]
fn wraps_many_times_with_out_of_order_use() {
    for (size, seed) in [(3, 1), (5, 2), (256, 3)] {
        let rig = churn(size, QueueFeatures::default(), 70_000, seed);
        assert!(rig.added > 65_536);
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "tens of thousands of pure-arithmetic steps: run natively; Miri covers the same code in shorter tests"
)]
fn wraps_many_times_with_indirect_chains_mixed_in() {
    for (size, seed) in [(3, 4), (5, 5), (256, 6)] {
        let rig = churn(size, indirect(), 70_000, seed);
        assert!(rig.added > 65_536);
    }
}

#[test]
fn queue_size_one_works() {
    let mut rig = churn(1, indirect(), 1000, 9);
    rig.fetch();
    while !rig.device.pending.is_empty() {
        rig.complete(0, 0);
    }
    rig.pop_all();
    assert_eq!(rig.queue.free_descriptors(), 1);
}

// --- Notifications --------------------------------------------------------------------

/// The device works in batches: the driver adds 32 chains, asking `kick_prepare` after
/// each (as the miniport does), then the device reads and uses everything and re-arms.
/// Returns the number of kicks.
fn batched_kicks(features: QueueFeatures, device_mode: &str, batches: usize) -> usize {
    let mut rig = Rig::new(100, features);
    let mut rng = Rng(42);
    let mut kicks = 0;
    match device_mode {
        "desc" => rig.device.arm_kick_at_next(),
        "disable" => rig.device.set_device_event(0, RING_EVENT_FLAGS_DISABLE),
        _ => rig.device.set_device_event(0, RING_EVENT_FLAGS_ENABLE),
    }
    for _ in 0..batches {
        for _ in 0..32 {
            let segments = 1 + rng.below(3);
            let lens = vec![512; segments];
            rig.add(&lens[..1], &lens[1..], false).unwrap();
            let observed = rig.device.observe();
            let kick = rig.queue.kick_prepare();
            if device_mode == "desc" && features.event_idx {
                // The literal reading of section 2.8.10: notify exactly when the named
                // descriptor (offset and wrap counter) was among those just made available.
                let desc = rig
                    .device
                    .ring
                    .load_u16(rig.device.driver_event + 4, Ordering::Relaxed);
                let named = (desc & 0x7fff, desc & 0x8000 != 0);
                assert_eq!(kick, observed.contains(&named), "{observed:?} vs {desc:#x}");
            }
            if kick {
                kicks += 1;
                if device_mode == "toggle" {
                    // The device is now busy with the queue and suppresses notifications.
                    rig.device.set_device_event(0, RING_EVENT_FLAGS_DISABLE);
                }
            }
        }
        rig.fetch();
        while !rig.device.pending.is_empty() {
            let which = rng.below(rig.device.pending.len());
            rig.complete(which, 0);
        }
        match device_mode {
            "desc" => rig.device.arm_kick_at_next(),
            "toggle" => rig.device.set_device_event(0, RING_EVENT_FLAGS_ENABLE),
            _ => {}
        }
        rig.pop_all();
    }
    kicks
}

#[test]
#[cfg_attr(
    miri,
    ignore = "tens of thousands of pure-arithmetic steps: run natively; Miri covers the same code in shorter tests"
)]
fn event_idx_kicks_once_per_batch_across_many_wraps() {
    // 200 batches of 32 chains of 1..=3 descriptors in a ring of 100 wrap it ~130 times.
    assert_eq!(batched_kicks(events(), "desc", 200), 200);
}

#[test]
fn flag_suppression_kicks_once_per_batch_without_event_idx() {
    let plain = QueueFeatures::default();
    // 6,400 chains natively; a tenth under Miri, which interprets every ring access.
    let batches = if cfg!(miri) { 20 } else { 200 };
    assert_eq!(batched_kicks(plain, "toggle", batches), batches);
    assert_eq!(batched_kicks(plain, "enable", 10), 320);
    assert_eq!(batched_kicks(plain, "disable", 10), 0);
    // DESC without EVENT_IDX negotiated is not honoured: every add kicks.
    assert_eq!(batched_kicks(plain, "desc", 10), 320);
    // With EVENT_IDX negotiated, a device may still use the plain flags.
    assert_eq!(batched_kicks(events(), "toggle", 10), 10);
}

#[test]
fn no_kick_without_new_chains() {
    let mut rig = Rig::new(4, QueueFeatures::default());
    assert!(!rig.queue.kick_prepare());
    rig.add(&[8], &[], false).unwrap();
    assert!(rig.queue.kick_prepare());
    assert!(
        !rig.queue.kick_prepare(),
        "nothing added since the last call"
    );
}

#[test]
fn event_outside_the_ring_kicks() {
    let mut rig = Rig::new(4, events());
    rig.add(&[8], &[], false).unwrap();
    rig.device
        .set_device_event(0x8000 | 9, RING_EVENT_FLAGS_DESC);
    assert!(rig.queue.kick_prepare());
    rig.add(&[8], &[], false).unwrap();
    rig.device
        .set_device_event(0x8000 | 3, RING_EVENT_FLAGS_DESC);
    assert!(
        !rig.queue.kick_prepare(),
        "position 3 not made available yet"
    );
    rig.add(&[8], &[], false).unwrap();
    rig.device
        .set_device_event(0x8000 | 3, RING_EVENT_FLAGS_DESC | 4);
    assert!(!rig.queue.kick_prepare(), "reserved flag bits ignored");
    rig.add(&[8], &[], false).unwrap();
    rig.device.set_device_event(0, 3);
    assert!(rig.queue.kick_prepare(), "reserved value 3 kicks");
}

#[test]
fn interrupt_rearm_race_is_reported() {
    for features in [QueueFeatures::default(), events()] {
        let mut rig = Rig::new(8, features);
        for _ in 0..3 {
            rig.add(&[8], &[8], false).unwrap();
        }
        rig.fetch();
        rig.queue.disable_interrupts();
        rig.complete(0, 8);
        assert!(!rig.device.should_interrupt(), "disabled");
        assert_eq!(rig.pop_all(), 1);
        // The device uses a chain after the driver found the ring empty but before it
        // re-enables interrupts; the device sees DISABLE and stays silent...
        rig.complete(0, 4);
        assert!(!rig.device.should_interrupt());
        // ...so re-enabling must report the chain.
        assert!(rig.queue.enable_interrupts());
        assert!(rig.queue.has_used());
        assert_eq!(rig.pop_all(), 1);
        assert!(!rig.queue.enable_interrupts());
        rig.complete(0, 0);
        assert!(
            rig.device.should_interrupt(),
            "enabled: the next use interrupts"
        );
        assert_eq!(rig.pop_all(), 1);
    }
}

#[test]
fn desc_event_follows_pops_while_interrupts_stay_enabled() {
    let mut rig = Rig::new(4, events());
    assert!(!rig.queue.enable_interrupts());
    for lap in 0..10 {
        for _ in 0..3 {
            rig.add(&[], &[8], false).unwrap();
        }
        rig.fetch();
        rig.complete(0, 1);
        assert!(rig.device.should_interrupt(), "lap {lap}");
        // An interrupt handler that drains without disabling first.
        assert_eq!(rig.pop_all(), 1);
        rig.complete(0, 1);
        rig.complete(0, 1);
        assert!(
            rig.device.should_interrupt(),
            "lap {lap}: event moved with the pop"
        );
        assert_eq!(rig.pop_all(), 2);
        let wrap = if rig.queue.used_wrap_flags == 0 {
            0
        } else {
            0x80
        };
        let expected = [rig.queue.next_used as u8, wrap, 2, 0];
        assert_eq!(rig.device.driver_event_bytes(), expected);
    }
}

#[test]
fn driver_event_is_not_rewritten_when_unchanged() {
    let mut rig = Rig::new(4, events());
    rig.queue.disable_interrupts();
    // Something else (here, a scribbling device) changes the structure; a driver that
    // kept writing the same value would overwrite it, one that keeps a shadow does not.
    let at = rig.device.driver_event;
    rig.device.ring.store_u16(at, 0x5678, Ordering::Relaxed);
    rig.device.ring.store_u16(at + 2, 0x1234, Ordering::Relaxed);
    rig.queue.disable_interrupts();
    assert_eq!(rig.device.driver_event_bytes(), [0x78, 0x56, 0x34, 0x12]);
    assert!(!rig.queue.enable_interrupts());
    assert_eq!(rig.device.driver_event_bytes(), [0x00, 0x80, 0x02, 0x00]);
}

// --- Malformed device writes ---------------------------------------------------------

/// Snapshot of everything a failed pop must leave alone.
fn state(rig: &Rig) -> (u16, u16, u16, u16, Vec<u8>) {
    let q = &rig.queue;
    (
        q.in_flight(),
        q.free_descriptors(),
        q.next_used,
        q.used_wrap_flags,
        rig.ring_bytes(),
    )
}

#[test]
fn malformed_used_descriptors_are_typed_errors_with_state_unchanged() {
    let mut rig = Rig::new(4, QueueFeatures::default());
    rig.add(&[8], &[100], false).unwrap();
    rig.add(&[8], &[], false).unwrap();
    rig.fetch();
    rig.complete(0, 50);
    assert_eq!(rig.pop_all(), 1);
    // Position 2 (after the two descriptors of id 0) is the next used one; id 1 is in flight
    // with nothing writable.
    let position = rig.queue.next_used;
    assert_eq!(position, 2);
    let used = 0x8080;
    let cases = [
        (4, 0, used, DeviceError::UsedIdOutOfRange { id: 4 }),
        (
            0xffff,
            0,
            used,
            DeviceError::UsedIdOutOfRange { id: 0xffff },
        ),
        (0, 0, used, DeviceError::UsedIdNotInFlight { id: 0 }),
        // Id 1's chain posts 8 readable bytes and nothing writable: 9 is more than the
        // whole chain, with or without WRITE (`len` is not ignored; see `pop_used`).
        (
            1,
            9,
            used | VIRTQ_DESC_F_WRITE,
            DeviceError::UsedLengthTooLarge {
                id: 1,
                written: 9,
                posted: 8,
            },
        ),
        (
            1,
            0xdead,
            used,
            DeviceError::UsedLengthTooLarge {
                id: 1,
                written: 0xdead,
                posted: 8,
            },
        ),
        // AVAIL from the wrong lap, with or without USED.
        (
            1,
            0,
            0x8000,
            DeviceError::PackedWrapMismatch {
                position: 2,
                flags: 0x8000,
            },
        ),
        (
            1,
            0,
            0x0000,
            DeviceError::PackedWrapMismatch {
                position: 2,
                flags: 0x0000,
            },
        ),
    ];
    for (id, len, flags, error) in cases {
        rig.device.write_raw(position, id, len, flags);
        let before = state(&rig);
        assert!(rig.queue.has_used(), "an error is something to pop");
        assert_eq!(rig.queue.pop_used(), Err(error));
        assert_eq!(rig.queue.pop_used(), Err(error), "nothing consumed");
        assert_eq!(state(&rig), before);
    }
    // Repaired by the device, the same descriptor pops.
    rig.device.write_raw(position, 1, 0, used);
    assert_eq!(
        rig.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: Token(1),
            written: 0
        }))
    );
    assert_eq!(rig.queue.in_flight(), 0);
    // With nothing in flight, whatever sits at the used position is not looked at.
    rig.device.write_raw(rig.queue.next_used, 3, 0, used);
    assert!(!rig.queue.has_used());
    assert_eq!(rig.queue.pop_used(), Ok(None));
}

#[test]
fn len_is_clamped_to_the_writable_total_and_bounded_by_the_chain() {
    // QEMU's virtio-scsi reports response + data-out bytes for writes: more than posted.
    let mut rig = Rig::new(8, indirect());
    rig.add(&[8], &[100, 28], true).unwrap();
    rig.add(&[8], &[100, 28], false).unwrap();
    rig.add(&[8], &[4], false).unwrap();
    rig.fetch();
    let write_used = 0x8080 | VIRTQ_DESC_F_WRITE;
    rig.device.write_raw(0, 0, 128, write_used);
    assert_eq!(
        rig.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: Token(0),
            written: 128
        }))
    );
    // QEMU style: the length in `len` without the WRITE flag still counts, clamped.
    rig.device.write_raw(1, 1, 129, 0x8080);
    assert_eq!(
        rig.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: Token(1),
            written: 128
        }))
    );
    // Id 2 posts 8 readable and 4 writable bytes; its used descriptor follows id 1's three
    // (position 4). More than the whole chain is refused; up to it, clamped.
    rig.device.write_raw(4, 2, 13, write_used);
    assert_eq!(
        rig.queue.pop_used(),
        Err(DeviceError::UsedLengthTooLarge {
            id: 2,
            written: 13,
            posted: 12
        })
    );
    rig.device.write_raw(4, 2, 12, write_used);
    assert_eq!(
        rig.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: Token(2),
            written: 4
        }))
    );
}

// --- Reset ---------------------------------------------------------------------------

#[test]
fn detach_returns_every_in_flight_token_once_then_reset_starts_over() {
    let mut rig = Rig::new(16, indirect());
    rig.queue.disable_interrupts();
    let mut tokens = BTreeSet::new();
    for i in 0..6 {
        tokens.insert(rig.add(&[8], &[8, 8], i % 2 == 0).unwrap().0);
    }
    rig.fetch();
    rig.complete(3, 0);
    rig.pop_all();
    let mut detached = BTreeSet::new();
    while let Some(token) = rig.queue.detach_next() {
        assert!(detached.insert(token.0), "{token:?} detached twice");
    }
    assert_eq!(rig.queue.detach_next(), None);
    assert_eq!(detached.len(), 5);
    assert!(detached.is_subset(&tokens));
    assert_eq!(rig.queue.in_flight(), 0);
    assert_eq!(rig.queue.free_descriptors(), 16);

    rig.queue.reset();
    assert!(rig.ring_bytes().iter().all(|&b| b == 0), "ring cleared");
    assert!(!rig.queue.kick_prepare(), "kick bookkeeping cleared");
    // A fresh device on the reset ring: everything starts from position 0, lap 1.
    rig.device = SpecDevice::new(&rig.hal, rig.queue.addresses(), 16);
    rig.posted.clear();
    rig.tables = (0..16)
        .map(|_| rig.hal.dma_alloc(16 * MAX_SEGMENTS, 16).unwrap())
        .collect();
    assert_eq!(rig.add(&[8], &[], false), Ok(Token(0)));
    assert_eq!(rig.device.ring_bytes_at(0)[14..], [0x80, 0x00]);
    rig.fetch();
    rig.complete(0, 0);
    assert_eq!(rig.pop_all(), 1);
}

#[test]
fn detach_interleaved_with_adds_finds_everything() {
    let mut rig = Rig::new(4, QueueFeatures::default());
    rig.add(&[8], &[], false).unwrap();
    rig.add(&[8], &[], false).unwrap();
    assert_eq!(rig.queue.detach_next(), Some(Token(0)));
    assert_eq!(rig.queue.detach_next(), Some(Token(1)));
    rig.queue.reset();
    // The scan resumes where it stopped and wraps round.
    assert_eq!(
        rig.queue.add(&[Segment::new(8, 8)], &[], None),
        Ok(Token(0))
    );
    assert_eq!(
        rig.queue.add(&[Segment::new(8, 8)], &[], None),
        Ok(Token(1))
    );
    assert_eq!(rig.queue.detach_next(), Some(Token(0)));
    assert_eq!(
        rig.queue.add(&[Segment::new(8, 8)], &[], None),
        Ok(Token(0))
    );
    assert_eq!(rig.queue.detach_next(), Some(Token(1)));
    assert_eq!(rig.queue.detach_next(), Some(Token(0)));
    assert_eq!(rig.queue.detach_next(), None);
}

// --- A device thread ------------------------------------------------------------------

/// Sets its flag when dropped, including while unwinding from a panic.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The driver and the spec device on two threads, talking only through ring memory: the
/// orderings (release of the head flags, acquire of used flags) are what keeps this right.
#[test]
fn concurrent_device_thread_round_trips() {
    // Miri interprets every access; a few hundred chains still cover many ring wraps.
    const CHAINS: u64 = if cfg!(miri) { 600 } else { 100_000 };
    let hal = FakeHal::new();
    let size = 64;
    let ring = hal
        .dma_alloc(PackedQueue::<Vec<Slot>>::ring_len(size), 16)
        .unwrap();
    let mut queue = PackedQueue::new(0, size, ring, vec![Slot::EMPTY; 64], events()).unwrap();
    let mut device = SpecDevice::new(&hal, queue.addresses(), size);
    // Set when the driver side stops, normally or by panicking, so the device thread never
    // outlives it and a failure cannot turn into a hang.
    let driver_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let hal = &hal;
        let driver_done = &driver_done;
        let device_thread = scope.spawn(move || {
            let mut device_random = Rng(77);
            let mut used = 0;
            while used < CHAINS && !driver_done.load(Ordering::Relaxed) {
                device.fetch(hal);
                if device.pending.is_empty() {
                    std::thread::yield_now();
                    continue;
                }
                let which = device_random.below(device.pending.len());
                let chain = &device.pending[which];
                // The device checks the bytes the driver put in the chain.
                assert_eq!(chain.elements[0].0 >> 32, u64::from(chain.id));
                let writable = chain.writable();
                device.complete(which, writable);
                used += 1;
            }
        });
        let _done = SetOnDrop(driver_done);
        let mut driver_random = Rng(78);
        let mut posted: BTreeMap<u16, u32> = BTreeMap::new();
        let (mut added, mut popped) = (0u64, 0u64);
        let mut last_progress = std::time::Instant::now();
        while popped < CHAINS {
            while added < CHAINS {
                let segments = 1 + driver_random.below(3);
                let writable_len = 1 + driver_random.below(1000) as u32;
                // Tag the address with the id the chain will get: the free list head.
                let tag = u64::from(queue.free_head) << 32;
                let readable = vec![Segment::new(tag | 0x1000, 64); segments - 1];
                let writable = [Segment::new(tag | 0x2000, writable_len)];
                match queue.add(&readable, &writable, None) {
                    Ok(token) => {
                        assert!(posted.insert(token.0, writable_len).is_none());
                        added += 1;
                    }
                    Err(QueueError::Full { .. }) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            let mut progressed = false;
            while let Some(used) = queue.pop_used().unwrap() {
                let posted_len = posted.remove(&used.token.0).expect("token not in flight");
                assert_eq!(used.written, posted_len);
                popped += 1;
                progressed = true;
            }
            if progressed {
                last_progress = std::time::Instant::now();
            } else {
                // A device thread that stopped early panicked: `join` reports it.
                if device_thread.is_finished() {
                    break;
                }
                // Neither side moving for this long means the device cannot see what the
                // driver made available (or the reverse): fail rather than hang.
                let stalled = last_progress.elapsed() > std::time::Duration::from_secs(20);
                assert!(!stalled, "stalled after {added} added, {popped} used");
                std::thread::yield_now();
            }
        }
        device_thread.join().expect("device thread failed");
        // A poll that found nothing just before the device thread ended may have missed
        // its last used descriptors: visibility is not instant (Miri's weak-memory
        // emulation delays it, as hardware may). `join` orders them before this drain.
        while let Some(used) = queue.pop_used().unwrap() {
            let posted_len = posted.remove(&used.token.0).expect("token not in flight");
            assert_eq!(used.written, posted_len);
            popped += 1;
        }
        assert_eq!(popped, CHAINS);
        assert!(posted.is_empty());
        assert_eq!(queue.free_descriptors(), size);
    });
}

// --- Property tests -------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Add {
        readable: usize,
        writable: usize,
        indirect: bool,
    },
    Fetch,
    Complete {
        which: prop::sample::Index,
        written: prop::sample::Index,
    },
    Pop,
    Kick,
    Disable,
    Enable,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..=3, 0usize..=3, any::<bool>())
            .prop_map(|(readable, writable, indirect)| Op::Add { readable, writable, indirect }),
        2 => Just(Op::Fetch),
        3 => (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(which, written)| Op::Complete { which, written }),
        3 => Just(Op::Pop),
        1 => Just(Op::Kick),
        1 => Just(Op::Disable),
        1 => Just(Op::Enable),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any interleaving of driver and device steps: every token handed out completes
    /// exactly once, in the order the device used it, with the length it reported, and
    /// the free count always equals the ring minus what is in flight.
    #[test]
    fn every_token_completes_exactly_once(
        size in 1u16..=12,
        event_idx in any::<bool>(),
        indirect_on in any::<bool>(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let mut rig = Rig::new(size, QueueFeatures { event_idx, indirect: indirect_on });
        let mut issued = 0u64;
        for op in ops {
            match op {
                Op::Add { readable, writable, indirect } => {
                    let lens: Vec<u32> = (1..=(readable + writable) as u32).collect();
                    match rig.add(&lens[..readable], &lens[readable..], indirect) {
                        Ok(_) => issued += 1,
                        Err(
                            QueueError::Full { .. }
                            | QueueError::EmptyChain
                            | QueueError::IndirectNotNegotiated
                            | QueueError::ChainTooLong { .. },
                        ) => {}
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                Op::Fetch => { rig.fetch(); }
                Op::Complete { which, written } => {
                    if !rig.device.pending.is_empty() {
                        let which = which.index(rig.device.pending.len());
                        let writable = rig.device.pending[which].writable() as usize;
                        rig.complete(which, written.index(writable + 1) as u32);
                    }
                }
                Op::Pop => { rig.pop(); }
                Op::Kick => { rig.queue.kick_prepare(); }
                Op::Disable => rig.queue.disable_interrupts(),
                Op::Enable => {
                    let pending = !rig.used_order.is_empty();
                    prop_assert_eq!(rig.queue.enable_interrupts(), pending);
                }
            }
            rig.check_counts();
            prop_assert_eq!(rig.queue.has_used(), !rig.used_order.is_empty());
        }
        // Drain: the device uses everything, the driver pops everything.
        rig.fetch();
        while !rig.device.pending.is_empty() {
            rig.complete(0, 0);
        }
        rig.pop_all();
        prop_assert_eq!(rig.popped, issued);
        prop_assert!(rig.posted.is_empty());
        prop_assert_eq!(rig.queue.free_descriptors(), size);
    }

    /// `kick_prepare` against the literal rule: with EVENT_IDX and a DESC event the device
    /// placed anywhere, the driver kicks exactly when that descriptor (offset and wrap) was
    /// among those made available since the last call (never missing one; when a whole
    /// ring's worth was added, a spurious kick is allowed).
    #[test]
    fn kick_prepare_matches_the_named_descriptor(
        size in 1u16..=9,
        steps in prop::collection::vec(
            (0usize..4, 0u16..9, any::<bool>(), any::<bool>()), 1..200),
    ) {
        let mut rig = Rig::new(size, events());
        let mut since_kick: Vec<(u16, bool)> = Vec::new();
        for (adds, offset, wrap, drain) in steps {
            for _ in 0..adds {
                if rig.add(&[8], &[], false).is_ok() {
                    since_kick.extend(rig.device.observe());
                }
            }
            let offset = offset % size;
            rig.device.set_device_event(
                offset | if wrap { 0x8000 } else { 0 }, RING_EVENT_FLAGS_DESC);
            let named = since_kick.contains(&(offset, wrap));
            let kick = rig.queue.kick_prepare();
            if since_kick.len() < usize::from(size) {
                prop_assert_eq!(kick, named, "added {:?}", since_kick);
            } else {
                prop_assert!(kick || !named);
            }
            since_kick.clear();
            if drain {
                rig.fetch();
                while !rig.device.pending.is_empty() {
                    rig.complete(0, 0);
                }
                rig.pop_all();
            }
        }
    }

    /// No lost interrupts: a driver that waits after `enable_interrupts` returned false
    /// (or after draining with interrupts left enabled) is always woken for a chain the
    /// device uses, whatever the interleaving.
    #[test]
    fn no_lost_used_buffer_notifications(
        size in 2u16..=8,
        event_idx in any::<bool>(),
        steps in prop::collection::vec((0u8..5, any::<prop::sample::Index>()), 1..300),
    ) {
        let mut rig = Rig::new(size, QueueFeatures { event_idx, indirect: false });
        // The driver is asleep waiting for an interrupt.
        let mut waiting = !rig.queue.enable_interrupts();
        for (step, pick) in steps {
            match step {
                0 if rig.add(&[8], &[8], false).is_ok() => {
                    rig.fetch();
                }
                1 | 2 if !rig.device.pending.is_empty() => {
                    // The device uses one chain and decides whether to interrupt.
                    let which = pick.index(rig.device.pending.len());
                    rig.complete(which, 8);
                    if rig.device.should_interrupt() {
                        waiting = false;
                    }
                }
                3 if !waiting => {
                    // Interrupt handler, disabling style: disable, drain, enable, re-drain.
                    rig.queue.disable_interrupts();
                    rig.pop_all();
                    while rig.queue.enable_interrupts() {
                        rig.queue.disable_interrupts();
                        rig.pop_all();
                    }
                    waiting = true;
                }
                4 if !waiting => {
                    // Interrupt handler that leaves interrupts enabled (they always are
                    // here) and sleeps once `pop_used` finds nothing: with EVENT_IDX this
                    // relies on `pop_used` moving the event offset.
                    rig.pop_all();
                    waiting = true;
                }
                _ => {}
            }
            // The property: never asleep while used chains wait.
            prop_assert!(!waiting || rig.used_order.is_empty(),
                "driver asleep with {} used chains", rig.used_order.len());
        }
    }

    /// Whatever a device writes at the used position, `pop_used` neither panics nor
    /// consumes anything on error, and a success names an in-flight token.
    #[test]
    fn arbitrary_used_descriptors_never_panic(
        size in 1u16..=8,
        chains in 1usize..8,
        id in any::<u16>(),
        len in any::<u32>(),
        flags in any::<u16>(),
    ) {
        let mut rig = Rig::new(size, QueueFeatures::default());
        for _ in 0..chains.min(usize::from(size)) {
            rig.add(&[], &[16], false).unwrap();
        }
        let position = rig.queue.next_used;
        rig.device.write_raw(position, id, len, flags);
        let before = state(&rig);
        match rig.queue.pop_used() {
            Ok(Some(used)) => {
                prop_assert!(rig.posted.contains_key(&used.token.0));
                prop_assert!(used.written <= 16);
                prop_assert_eq!(rig.queue.in_flight() + 1, before.0);
            }
            Ok(None) => prop_assert_eq!(state(&rig), before),
            Err(_) => prop_assert_eq!(state(&rig), before),
        }
    }
}
