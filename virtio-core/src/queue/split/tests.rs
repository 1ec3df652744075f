//! Tests of the split virtqueue: a byte-level device over FakeHal memory checks layouts, kicks,
//! interrupt suppression and untrusted used entries; property tests run random operation mixes.

use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::fake::FakeHal;
use crate::hal::Hal;
use crate::queue::IndirectWriter;
use crate::queue::need_event;

const EVENT_IDX: QueueFeatures = QueueFeatures {
    event_idx: true,
    indirect: false,
};
const PLAIN: QueueFeatures = QueueFeatures {
    event_idx: false,
    indirect: false,
};
const INDIRECT: QueueFeatures = QueueFeatures {
    event_idx: false,
    indirect: true,
};

/// A device model that finds every field by the spec's own arithmetic (virtio 1.2 section
/// 2.7), not through [`SplitLayout`], so a layout bug cannot hide behind itself.
struct Device {
    ring: DmaMemory,
    size: u16,
    next_avail: u16,
    next_used: u16,
}

/// A chain as the device found it: head index and its descriptors, indirection resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceChain {
    head: u16,
    indirect: bool,
    descriptors: Vec<(u64, u32, u16)>,
}

impl Device {
    fn new(ring: DmaMemory, size: u16) -> Self {
        Self {
            ring,
            size,
            next_avail: 0,
            next_used: 0,
        }
    }
    fn avail(&self) -> usize {
        16 * usize::from(self.size)
    }
    fn used(&self) -> usize {
        (self.avail() + 6 + 2 * usize::from(self.size)).next_multiple_of(4)
    }
    fn avail_flags(&self) -> u16 {
        self.ring.load_u16(self.avail(), Ordering::Relaxed)
    }
    fn avail_idx(&self) -> u16 {
        self.ring.load_u16(self.avail() + 2, Ordering::Acquire)
    }
    fn used_event(&self) -> u16 {
        self.ring.load_u16(
            self.avail() + 4 + 2 * usize::from(self.size),
            Ordering::Relaxed,
        )
    }
    fn used_idx(&self) -> u16 {
        self.ring.load_u16(self.used() + 2, Ordering::Relaxed)
    }
    fn set_used_flags(&self, flags: u16) {
        self.ring.store_u16(self.used(), flags, Ordering::Relaxed);
    }
    fn set_avail_event(&self, value: u16) {
        self.ring.store_u16(
            self.used() + 4 + 8 * usize::from(self.size),
            value,
            Ordering::Relaxed,
        );
    }
    fn set_used_idx(&self, value: u16) {
        self.ring
            .store_u16(self.used() + 2, value, Ordering::Release);
    }
    fn write_used_element(&self, position: u16, id: u32, len: u32) {
        let offset = self.used() + 4 + 8 * usize::from(position % self.size);
        self.ring.store_u32(offset, id, Ordering::Relaxed);
        self.ring.store_u32(offset + 4, len, Ordering::Relaxed);
    }
    /// Reads descriptor `index` field by field, each at its own size (as the driver
    /// writes it: one access size per location), at the spec's offsets: addr at 0, len at
    /// 8, flags at 12, next at 14.
    fn descriptor(memory: &DmaMemory, index: u16) -> Descriptor {
        let at = 16 * usize::from(index);
        let relaxed = Ordering::Relaxed;
        Descriptor {
            addr: memory.load_u64(at, relaxed).into(),
            len: memory.load_u32(at + 8, relaxed).into(),
            flags: memory.load_u16(at + 12, relaxed).into(),
            next: memory.load_u16(at + 14, relaxed).into(),
        }
    }
    /// Follows `next` links through `table` of `entries` from `first`, as a device would.
    fn walk(table: &DmaMemory, entries: u16, first: u16) -> Vec<(u64, u32, u16)> {
        let mut out = Vec::new();
        let mut index = first;
        loop {
            assert!(index < entries, "next {index} outside a table of {entries}");
            assert!(out.len() < usize::from(entries), "loop in the chain");
            let d = Self::descriptor(table, index);
            out.push((d.addr.get(), d.len.get(), d.flags.get()));
            if d.flags.get() & VIRTQ_DESC_F_NEXT == 0 {
                return out;
            }
            index = d.next.get();
        }
    }
    /// Takes the next available chain, if any.
    fn pop(&mut self, hal: &FakeHal) -> Option<DeviceChain> {
        if self.avail_idx() == self.next_avail {
            return None;
        }
        let position = usize::from(self.next_avail % self.size);
        let head = self
            .ring
            .load_u16(self.avail() + 4 + 2 * position, Ordering::Relaxed);
        self.next_avail = self.next_avail.wrapping_add(1);
        let first = Self::descriptor(&self.ring, head);
        if first.flags.get() & VIRTQ_DESC_F_INDIRECT != 0 {
            assert_eq!(
                first.flags.get(),
                VIRTQ_DESC_F_INDIRECT,
                "INDIRECT with other flags"
            );
            let len = first.len.get() as usize;
            assert_eq!(len % 16, 0);
            let table = hal
                .memory_at(first.addr.get(), len)
                .expect("indirect table");
            let descriptors = Self::walk(&table, (len / 16) as u16, 0);
            return Some(DeviceChain {
                head,
                indirect: true,
                descriptors,
            });
        }
        let descriptors = Self::walk(&self.ring, self.size, head);
        Some(DeviceChain {
            head,
            indirect: false,
            descriptors,
        })
    }
    /// Completes chain `id` with `len` bytes written, publishing `used.idx`.
    fn push_used(&mut self, id: u16, len: u32) {
        self.write_used_element(self.next_used, u32::from(id), len);
        self.next_used = self.next_used.wrapping_add(1);
        self.set_used_idx(self.next_used);
    }
}

/// A descriptor's address, length, flags, and `next` when NEXT makes it meaningful.
fn fields(d: Descriptor) -> (u64, u32, u16, Option<u16>) {
    let next = (d.flags.get() & VIRTQ_DESC_F_NEXT != 0).then(|| d.next.get());
    (d.addr.get(), d.len.get(), d.flags.get(), next)
}

struct Fixture {
    hal: FakeHal,
    queue: SplitQueue<Vec<Slot>>,
    device: Device,
}

fn fixture(size: u16, features: QueueFeatures) -> Fixture {
    let hal = FakeHal::new();
    let len = SplitQueue::<Vec<Slot>>::ring_len(size);
    let ring = hal.dma_alloc(len, RING_ALIGN).unwrap();
    let queue = SplitQueue::new(
        3,
        size,
        ring,
        vec![Slot::EMPTY; usize::from(size)],
        features,
    )
    .unwrap();
    Fixture {
        hal,
        queue,
        device: Device::new(ring, size),
    }
}

fn segment(address: u64, len: u32) -> Segment {
    Segment::new(address, len)
}

/// Everything the queue knows, for "unchanged after an error" checks.
fn state(queue: &SplitQueue<Vec<Slot>>) -> String {
    format!("{queue:?}")
}

#[test]
fn layout_matches_the_spec_table() {
    for size in [1u16, 2, 4, 8, 256, 1024, 32_768] {
        let q = usize::from(size);
        let layout = SplitLayout::new(size);
        // Descriptor table 16*Q at 0; available ring 6+2*Q right after (alignment 2); used
        // ring 6+8*Q at the next multiple of 4.
        assert_eq!(layout.avail(), 16 * q);
        assert_eq!(layout.used(), (16 * q + 6 + 2 * q).next_multiple_of(4));
        assert_eq!(layout.ring_len(), layout.used() + 6 + 8 * q);
        assert_eq!(layout.used_event(), layout.avail() + 4 + 2 * q);
        assert_eq!(layout.avail_event(), layout.used() + 4 + 8 * q);
        assert_eq!(layout.used_ring(1), layout.used() + 12);
        assert_eq!(layout.avail_ring(1), layout.avail() + 6);
        assert_eq!(layout.avail_idx(), layout.avail() + 2);
        assert_eq!(layout.used_idx(), layout.used() + 2);
        assert_eq!(layout.descriptor(3), 48);
        assert_eq!(layout.size(), size);
        assert_eq!(SplitQueue::<Vec<Slot>>::ring_len(size), layout.ring_len());
    }
    // Worked examples: 256 entries is 4096 + 518 (+2 padding) + 2054.
    assert_eq!(SplitQueue::<Vec<Slot>>::ring_len(256), 6670);
    assert_eq!(SplitQueue::<Vec<Slot>>::ring_len(1), 16 + 8 + 14);
    assert_eq!(SplitQueue::<Vec<Slot>>::ring_len(2), 32 + 10 + 2 + 22);
    assert_eq!(SplitQueue::<[Slot; 4]>::RING_ALIGN, 16);
}

#[test]
fn new_validates_size_memory_and_slots() {
    let hal = FakeHal::new();
    let ring = hal
        .dma_alloc(SplitQueue::<Vec<Slot>>::ring_len(32_768), 16)
        .unwrap();
    let slots = || vec![Slot::EMPTY; 32_768];
    for size in [0u16, 3, 12, 32_769, 65_535, 40_000] {
        let r = SplitQueue::new(0, size, ring, slots(), PLAIN);
        assert_eq!(r.err(), Some(QueueError::InvalidSize(size)));
    }
    // A fresh ring per accepted queue: a ring of another size puts its fields elsewhere, and
    // one location keeps one access size (Miri's weak-memory emulation).
    let fresh = |size: u16| {
        hal.dma_alloc(SplitQueue::<Vec<Slot>>::ring_len(size), 16)
            .unwrap()
    };
    // The largest queue is 229,000 field stores to zero: too many steps for Miri.
    let largest = if cfg!(miri) { 64 } else { 32_768 };
    for size in [1u16, 2, 64, largest] {
        assert!(SplitQueue::new(0, size, fresh(size), slots(), PLAIN).is_ok());
    }
    let needed = SplitQueue::<Vec<Slot>>::ring_len(256);
    let short = ring.sub(0, needed - 1).unwrap();
    let r = SplitQueue::new(0, 256, short, slots(), PLAIN);
    assert_eq!(
        r.err(),
        Some(QueueError::RingMemory {
            needed,
            provided: needed - 1
        })
    );
    let misaligned = ring.sub(8, needed).unwrap();
    let r = SplitQueue::new(0, 256, misaligned, slots(), PLAIN);
    assert_eq!(
        r.err(),
        Some(QueueError::RingMemory {
            needed,
            provided: needed
        })
    );
    let r = SplitQueue::new(0, 256, ring, vec![Slot::EMPTY; 255], PLAIN);
    assert_eq!(
        r.err(),
        Some(QueueError::SlotStorage {
            needed: 256,
            provided: 255
        })
    );
    // Arrays and borrowed slices work as slot storage too.
    let mut array = [Slot::EMPTY; 8];
    let small = fresh(8);
    assert!(SplitQueue::new(0, 8, small, &mut array[..], PLAIN).is_ok());
    assert!(SplitQueue::new(0, 8, small, [Slot::EMPTY; 8], PLAIN).is_ok());
}

#[test]
fn new_zeroes_the_ring_and_frees_every_descriptor() {
    let hal = FakeHal::new();
    let len = SplitQueue::<Vec<Slot>>::ring_len(16);
    let ring = hal.dma_alloc(len, 16).unwrap();
    // A ring a previous queue left dirty (written field by field, each at its own size, as
    // a ring always is; scribbling bytes over it would mix access sizes).
    let mut previous = SplitQueue::new(7, 16, ring, vec![Slot::EMPTY; 16], EVENT_IDX).unwrap();
    for _ in 0..5 {
        previous
            .add(&[segment(0x1000, 512)], &[segment(0x2000, 4096)], None)
            .unwrap();
    }
    assert!(previous.kick_prepare());
    assert!(!previous.enable_interrupts());
    let mut dirty = vec![0u8; len];
    assert!(ring.read_bytes(0, &mut dirty));
    assert!(dirty.iter().any(|&b| b != 0));
    let queue = SplitQueue::new(7, 16, ring, vec![Slot::EMPTY; 16], PLAIN).unwrap();
    let mut bytes = vec![0xffu8; len];
    assert!(ring.read_bytes(0, &mut bytes));
    assert!(bytes.iter().all(|&b| b == 0));
    assert_eq!(queue.index(), 7);
    assert_eq!(queue.size(), 16);
    assert_eq!(queue.free_descriptors(), 16);
    assert_eq!(queue.in_flight(), 0);
    assert!(!queue.has_used());
    let base = ring.bus_address();
    assert_eq!(
        queue.addresses(),
        QueueAddresses {
            descriptors: base,
            driver: base + 256,
            device: base + 256 + 40
        }
    );
}

#[test]
fn direct_chain_lands_as_the_spec_lays_it_out() {
    let mut f = fixture(8, PLAIN);
    let readable = [segment(0x1000, 16), segment(0x2000_0000_0000, 512)];
    let writable = [segment(0x3000, 96)];
    let token = f.queue.add(&readable, &writable, None).unwrap();
    assert_eq!(token, Token(0));
    assert_eq!(f.queue.free_descriptors(), 5);
    assert_eq!(f.queue.in_flight(), 1);
    // avail.idx = 1, avail.ring[0] = head; flags untouched.
    assert_eq!(f.device.avail_idx(), 1);
    assert_eq!(f.device.avail_flags(), 0);
    assert_eq!(f.device.ring.load_u16(8 * 16 + 4, Ordering::Relaxed), 0);
    // Descriptors 0, 1, 2 in free-list order: readable first, then writable with WRITE;
    // NEXT (and a meaningful `next`) on all but the last.
    let d = |i| fields(Device::descriptor(&f.device.ring, i));
    assert_eq!(d(0), (0x1000, 16, 1, Some(1)));
    assert_eq!(d(1), (0x2000_0000_0000, 512, 1, Some(2)));
    assert_eq!(d(2), (0x3000, 96, 2, None));
    // The next chain starts at descriptor 3 and goes into avail.ring[1].
    let second = f.queue.add(&[], &[segment(0x4000, 8)], None).unwrap();
    assert_eq!(second, Token(3));
    assert_eq!(f.device.ring.load_u16(8 * 16 + 6, Ordering::Relaxed), 3);
    assert_eq!(f.device.avail_idx(), 2);
    let chain = f.device.pop(&f.hal).unwrap();
    assert_eq!(
        chain.descriptors,
        vec![(0x1000, 16, 1), (0x2000_0000_0000, 512, 1), (0x3000, 96, 2)]
    );
    assert_eq!(
        f.device.pop(&f.hal).unwrap().descriptors,
        vec![(0x4000, 8, 2)]
    );
}

#[test]
fn indirect_chain_lands_as_the_spec_lays_it_out() {
    let mut f = fixture(4, INDIRECT);
    let table = f.hal.dma_alloc(16 * 4, 16).unwrap();
    let readable = [segment(0x10, 4), segment(0x20, 8)];
    let writable = [segment(0x30, 12), segment(0x40, 16)];
    let token = f.queue.add(&readable, &writable, Some(&table)).unwrap();
    assert_eq!(
        f.queue.free_descriptors(),
        3,
        "an indirect chain takes one ring descriptor"
    );
    // The ring descriptor: the table's bus address, 16 bytes per entry, INDIRECT only.
    let head = Device::descriptor(&f.device.ring, token.0);
    assert_eq!(head.addr.get(), table.bus_address());
    assert_eq!(head.len.get(), 64);
    assert_eq!(head.flags.get(), VIRTQ_DESC_F_INDIRECT);
    // The table: entries 0..4 linked in order.
    let expected = [
        (0x10, 4, 1, Some(1)),
        (0x20, 8, 1, Some(2)),
        (0x30, 12, 3, Some(3)),
        (0x40, 16, 2, None),
    ];
    for (i, e) in (0u16..).zip(expected) {
        assert_eq!(fields(Device::descriptor(&table, i)), e, "entry {i}");
    }
    let chain = f.device.pop(&f.hal).unwrap();
    assert!(chain.indirect);
    assert_eq!(chain.head, token.0);
    f.device.push_used(token.0, 28);
    assert_eq!(
        f.queue.pop_used(),
        Ok(Some(UsedBuffer { token, written: 28 }))
    );
    assert_eq!(f.queue.free_descriptors(), 4);
    // A table larger than needed is fine; the descriptor's len covers only the entries used.
    let big = f.hal.dma_alloc(16 * 32, 16).unwrap();
    let token = f.queue.add(&[segment(0x50, 1)], &[], Some(&big)).unwrap();
    assert_eq!(Device::descriptor(&f.device.ring, token.0).len.get(), 16);
}

/// Writes `readable` then `writable` into `table` with the indirect writer, split format.
fn written_chain(
    table: &DmaMemory,
    readable: &[Segment],
    writable: &[Segment],
) -> Result<IndirectChain, QueueError> {
    super::super::indirect::write_chain(table, RingFormat::Split, readable, writable)
}

#[test]
fn written_tables_land_exactly_as_add_writes_them() {
    // Each shape through `add` with a table on one queue and through the writer and
    // `add_table` on a twin: same table bytes, same ring descriptor but for the table's
    // address, same token, and the same used-length policy afterwards.
    let shapes: [(&[u32], &[u32]); 6] = [
        (&[10], &[]),
        (&[], &[20]),
        (&[16], &[108, 4096]),
        (&[16, 4096], &[108]),
        (&[1, 2, 3], &[4, 5, 6]),
        (&[7], &[8]),
    ];
    let mut by_add = fixture(8, INDIRECT);
    let mut by_writer = fixture(8, INDIRECT);
    for round in 0..3u64 {
        for (n, (readable, writable)) in (0u64..).zip(shapes) {
            let base = 0x10_0000 * (round + 1) + 0x1000 * n;
            let segments = |lens: &[u32], at: u64| -> Vec<Segment> {
                (0u64..)
                    .zip(lens)
                    .map(|(i, &len)| segment(at + 0x100 * i, len))
                    .collect()
            };
            let readable = segments(readable, base);
            let writable = segments(writable, base + 0x800);
            let table_a = by_add.hal.dma_alloc(16 * 8, 16).unwrap();
            let table_b = by_writer.hal.dma_alloc(16 * 8, 16).unwrap();
            let a = by_add
                .queue
                .add(&readable, &writable, Some(&table_a))
                .unwrap();
            let chain = written_chain(&table_b, &readable, &writable).unwrap();
            let b = by_writer.queue.add_table(&chain).unwrap();
            assert_eq!(a, b);
            let count = readable.len() + writable.len();
            let mut bytes_a = vec![0u8; 16 * count];
            let mut bytes_b = vec![0u8; 16 * count];
            assert!(table_a.read_bytes(0, &mut bytes_a));
            assert!(table_b.read_bytes(0, &mut bytes_b));
            assert_eq!(bytes_a, bytes_b, "table of shape {n}");
            let ring_a = Device::descriptor(&by_add.device.ring, a.0);
            let ring_b = Device::descriptor(&by_writer.device.ring, b.0);
            assert_eq!(ring_a.addr.get(), table_a.bus_address());
            assert_eq!(ring_b.addr.get(), table_b.bus_address());
            assert_eq!(
                (ring_a.len, ring_a.flags, ring_a.next),
                (ring_b.len, ring_b.flags, ring_b.next)
            );
            // Everything but the ring memory's own address: slots, free list, indices.
            let bookkeeping = |queue: &SplitQueue<Vec<Slot>>| {
                let state = state(queue);
                state
                    .split_once("view:")
                    .map(|(_, rest)| String::from(rest))
            };
            assert_eq!(bookkeeping(&by_add.queue), bookkeeping(&by_writer.queue));
            // The device sees the same chain through either table.
            let seen_a = by_add.device.pop(&by_add.hal).unwrap();
            let seen_b = by_writer.device.pop(&by_writer.hal).unwrap();
            assert_eq!(seen_a, seen_b);
            // Used lengths: within the writable part, past it (clamped), past the whole chain
            // (refused) are judged alike.
            let writable_len: u32 = writable.iter().map(|s| s.len).sum();
            let posted: u32 = readable.iter().map(|s| s.len).sum::<u32>() + writable_len;
            let len = [writable_len, posted, posted + 1][(round % 3) as usize];
            by_add.device.push_used(a.0, len);
            by_writer.device.push_used(b.0, len);
            let popped = by_add.queue.pop_used();
            assert_eq!(popped, by_writer.queue.pop_used());
            if popped.is_err() {
                // Take it back the way a driver would after the reset it owes the device.
                assert_eq!(by_add.queue.detach_next(), by_writer.queue.detach_next());
                by_add.queue.reset();
                by_writer.queue.reset();
                by_add.device = Device::new(by_add.device.ring, 8);
                by_writer.device = Device::new(by_writer.device.ring, 8);
            }
        }
    }
}

#[test]
fn add_table_checks_what_only_the_ring_knows_without_side_effects() {
    let f = fixture(2, INDIRECT);
    let table = f.hal.dma_alloc(64, 16).unwrap();
    let chain = written_chain(&table, &[segment(0x1000, 8)], &[segment(0x2000, 8)]).unwrap();

    let mut plain = fixture(2, PLAIN);
    let before = state(&plain.queue);
    assert_eq!(
        plain.queue.add_table(&chain),
        Err(QueueError::IndirectNotNegotiated)
    );
    assert_eq!(state(&plain.queue), before);

    let mut f = f;
    let mut packed_writer = IndirectWriter::new(&table, RingFormat::Packed).unwrap();
    packed_writer.push_readable(segment(0x1000, 8)).unwrap();
    let packed = packed_writer.finish().unwrap();
    let before = state(&f.queue);
    assert_eq!(
        f.queue.add_table(&packed),
        Err(QueueError::IndirectFormat {
            written: RingFormat::Packed
        })
    );
    assert_eq!(state(&f.queue), before);

    let chain = written_chain(&table, &[segment(0x1000, 8)], &[segment(0x2000, 8)]).unwrap();
    f.queue.add_table(&chain).unwrap();
    f.queue.add_table(&chain).unwrap();
    let before = state(&f.queue);
    assert_eq!(
        f.queue.add_table(&chain),
        Err(QueueError::Full { needed: 1, free: 0 })
    );
    assert_eq!(state(&f.queue), before);
    assert_eq!(f.device.avail_idx(), 2);
}

/// Readable and writable segments, indirect table, and the error `add` must return.
type AddCase<'a> = (
    &'a [Segment],
    &'a [Segment],
    Option<&'a DmaMemory>,
    QueueError,
);

#[test]
fn add_rejects_malformed_chains_without_side_effects() {
    let mut f = fixture(4, PLAIN);
    let table = f.hal.dma_alloc(64, 16).unwrap();
    let before = state(&f.queue);
    let s = segment(0x1000, 8);
    let cases: [AddCase<'_>; 6] = [
        (&[], &[], None, QueueError::EmptyChain),
        (
            &[s, segment(0x2000, 0)],
            &[],
            None,
            QueueError::EmptySegment,
        ),
        (&[s], &[segment(0x2000, 0)], None, QueueError::EmptySegment),
        (
            &[],
            &[segment(0, u32::MAX), segment(0, 1)],
            None,
            QueueError::WritableTooLong,
        ),
        (
            &[s, s, s],
            &[s, s],
            None,
            QueueError::ChainTooLong {
                segments: 5,
                limit: 4,
            },
        ),
        (&[s], &[], Some(&table), QueueError::IndirectNotNegotiated),
    ];
    for (readable, writable, indirect, error) in cases {
        assert_eq!(f.queue.add(readable, writable, indirect), Err(error));
        assert_eq!(state(&f.queue), before);
    }
    assert_eq!(f.device.avail_idx(), 0);

    let mut f = fixture(4, INDIRECT);
    let before = state(&f.queue);
    let misaligned = table.sub(8, 48).unwrap();
    assert_eq!(
        f.queue.add(&[s], &[], Some(&misaligned)),
        Err(QueueError::IndirectMisaligned)
    );
    // Four entries fit in 64 bytes; five do not, even though the ring would take them.
    assert_eq!(
        f.queue.add(&[s, s, s], &[s, s], Some(&table)),
        Err(QueueError::ChainTooLong {
            segments: 5,
            limit: 4
        })
    );
    assert_eq!(state(&f.queue), before);
    assert!(f.queue.add(&[s, s], &[s, s], Some(&table)).is_ok());
}

#[test]
fn full_queue_reports_full_and_recovers_after_pops() {
    let mut f = fixture(8, INDIRECT);
    let s = segment(0x1000, 64);
    let first = f.queue.add(&[s], &[s, s], None).unwrap();
    let second = f.queue.add(&[s, s], &[s], None).unwrap();
    assert_eq!(
        f.queue.add(&[s], &[s, s], None),
        Err(QueueError::Full { needed: 3, free: 2 })
    );
    let single = f.queue.add(&[s], &[], None).unwrap();
    let table = f.hal.dma_alloc(16 * 8, 16).unwrap();
    let indirect = f.queue.add(&[s; 3], &[s; 5], Some(&table)).unwrap();
    assert_eq!(f.queue.free_descriptors(), 0);
    assert_eq!(
        f.queue.add(&[s], &[], None),
        Err(QueueError::Full { needed: 1, free: 0 })
    );
    assert_eq!(
        f.queue.add(&[s], &[], Some(&table)),
        Err(QueueError::Full { needed: 1, free: 0 })
    );
    assert_eq!(f.queue.in_flight(), 4);
    for _ in 0..4 {
        f.device.pop(&f.hal).unwrap();
    }
    // Complete out of order: the second chain first, which frees three descriptors.
    f.device.push_used(second.0, 64);
    assert_eq!(
        f.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: second,
            written: 64
        }))
    );
    assert_eq!(f.queue.free_descriptors(), 3);
    let again = f.queue.add(&[s], &[s, s], None).unwrap();
    assert_eq!(f.queue.free_descriptors(), 0);
    for token in [indirect, first, single] {
        f.device.push_used(token.0, 0);
        assert_eq!(
            f.queue.pop_used(),
            Ok(Some(UsedBuffer { token, written: 0 }))
        );
    }
    let chain = f.device.pop(&f.hal).unwrap();
    assert_eq!(chain.head, again.0);
    assert_eq!(
        chain.descriptors,
        vec![(0x1000, 64, 1), (0x1000, 64, 3), (0x1000, 64, 2)]
    );
    f.device.push_used(again.0, 128);
    assert_eq!(
        f.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: again,
            written: 128
        }))
    );
    assert_eq!(f.queue.pop_used(), Ok(None));
    assert_eq!(f.queue.free_descriptors(), 8);
    assert_eq!(f.queue.in_flight(), 0);
}

/// Descriptor indices of the direct chain at `head`, following the `next` fields the device
/// reads.
fn chain_indices(f: &Fixture, head: u16) -> Vec<u16> {
    let mut indices = vec![head];
    let mut index = head;
    loop {
        let d = Device::descriptor(&f.device.ring, index);
        if d.flags.get() & VIRTQ_DESC_F_NEXT == 0 {
            return indices;
        }
        index = d.next.get();
        indices.push(index);
    }
}

#[test]
fn released_chains_rejoin_the_free_list_whole_and_in_order() {
    // Chains of 3, 2 and 1 descriptors and an indirect one, released out of order: each
    // goes back in front of the free list with its own links, so the next chain reuses
    // exactly the freed descriptors in that order. A release that lost a chain's middle or
    // tail (the O(1) release only keeps the ends) would show up here as a different walk,
    // a short count, or a token reused while in flight.
    let mut f = fixture(8, INDIRECT);
    let s = segment(0x1000, 64);
    let three = f.queue.add(&[s], &[s, s], None).unwrap();
    let two = f.queue.add(&[s], &[s], None).unwrap();
    let one = f.queue.add(&[s], &[], None).unwrap();
    let table = f.hal.dma_alloc(16 * 4, 16).unwrap();
    let indirect = f.queue.add(&[s], &[s; 3], Some(&table)).unwrap();
    assert_eq!(
        (three, two, one, indirect),
        (Token(0), Token(3), Token(5), Token(6))
    );
    assert_eq!(chain_indices(&f, three.0), [0, 1, 2]);
    assert_eq!(chain_indices(&f, two.0), [3, 4]);
    for _ in 0..4 {
        f.device.pop(&f.hal).unwrap();
    }
    for token in [two, indirect, three] {
        f.device.push_used(token.0, 0);
        assert_eq!(f.queue.pop_used().unwrap().unwrap().token, token);
    }
    // Free list now: three's 0, 1, 2, then indirect's 6, then two's 3, 4, then 7.
    assert_eq!(f.queue.free_descriptors(), 7);
    let all = f.queue.add(&[s; 3], &[s; 4], None).unwrap();
    assert_eq!(all, Token(0));
    assert_eq!(chain_indices(&f, all.0), [0, 1, 2, 6, 3, 4, 7]);
    assert_eq!(f.queue.free_descriptors(), 0);
    // The single descriptor and the long chain come back too, whole.
    f.device.pop(&f.hal).unwrap();
    for token in [one, all] {
        f.device.push_used(token.0, 0);
        assert_eq!(f.queue.pop_used().unwrap().unwrap().token, token);
    }
    assert_eq!(f.queue.free_descriptors(), 8);
    let again = f.queue.add(&[s; 4], &[s; 4], None).unwrap();
    assert_eq!(chain_indices(&f, again.0), [0, 1, 2, 6, 3, 4, 7, 5]);
    assert_eq!(f.queue.in_flight(), 1);
}

#[test]
fn kick_with_event_idx_follows_avail_event_and_batches() {
    let mut f = fixture(64, EVENT_IDX);
    let s = [segment(0x1000, 8)];
    assert!(!f.queue.kick_prepare(), "nothing added, nothing to notify");
    // The device last saw index 0 and keeps avail_event there while it works through the
    // batch: only the first chain crosses it.
    let mut kicks = 0;
    for _ in 0..32 {
        f.queue.add(&s, &[], None).unwrap();
        kicks += u32::from(f.queue.kick_prepare());
    }
    assert_eq!(kicks, 1);
    // The device drains and re-arms at the index it will look at next.
    while f.device.pop(&f.hal).is_some() {}
    f.device.set_avail_event(f.device.next_avail);
    f.queue.add(&s, &[], None).unwrap();
    assert!(f.queue.kick_prepare());
    // Several chains before one kick_prepare: notify iff avail_event is in [old, new).
    f.device.set_avail_event(40);
    for _ in 0..5 {
        f.queue.add(&s, &[], None).unwrap();
    }
    assert!(!f.queue.kick_prepare(), "window [33, 38) misses 40");
    for _ in 0..5 {
        f.queue.add(&s, &[], None).unwrap();
    }
    assert!(f.queue.kick_prepare(), "window [38, 43) holds 40");
    // The used flags do not matter with EVENT_IDX.
    f.device.set_used_flags(VIRTQ_USED_F_NO_NOTIFY);
    f.device.set_avail_event(43);
    f.queue.add(&s, &[], None).unwrap();
    assert!(f.queue.kick_prepare());
}

#[test]
fn kick_without_event_idx_honours_no_notify() {
    let mut f = fixture(64, PLAIN);
    let s = [segment(0x1000, 8)];
    f.device.set_avail_event(12_345); // ignored without EVENT_IDX
    let mut kicks = 0;
    for _ in 0..10 {
        f.queue.add(&s, &[], None).unwrap();
        kicks += u32::from(f.queue.kick_prepare());
    }
    assert_eq!(kicks, 10);
    assert!(!f.queue.kick_prepare(), "nothing added since the last kick");
    f.device.set_used_flags(VIRTQ_USED_F_NO_NOTIFY);
    for _ in 0..10 {
        f.queue.add(&s, &[], None).unwrap();
        assert!(!f.queue.kick_prepare());
    }
    f.device.set_used_flags(0);
    f.queue.add(&s, &[], None).unwrap();
    assert!(f.queue.kick_prepare());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "tens of thousands of pure-arithmetic steps: run natively; Miri covers the same code in shorter tests"
)]
fn sixty_five_thousand_adds_without_kick_prepare_still_kick() {
    // 65,536 adds since the last kick_prepare make the event window [old, new) empty; the
    // queue must notify anyway.
    let mut f = fixture(4, EVENT_IDX);
    let s = [segment(0x1000, 8)];
    f.device.set_avail_event(30_000);
    for _ in 0..65_536 {
        let token = f.queue.add(&s, &[], None).unwrap();
        f.device.pop(&f.hal).unwrap();
        f.device.push_used(token.0, 0);
        f.queue.pop_used().unwrap().unwrap();
    }
    assert_eq!(f.device.avail_idx(), 0);
    assert!(f.queue.kick_prepare());
    assert!(!f.queue.kick_prepare());
}

#[test]
fn interrupt_suppression_without_event_idx_uses_avail_flags() {
    let mut f = fixture(8, PLAIN);
    assert_eq!(f.device.avail_flags(), 0);
    f.queue.disable_interrupts();
    assert_eq!(f.device.avail_flags(), VIRTQ_AVAIL_F_NO_INTERRUPT);
    assert_eq!(f.device.used_event(), 0);
    // The shadow avoids rewriting: scribble over the flags and disable again.
    f.device
        .ring
        .store_u16(f.device.avail(), 0x7777, Ordering::Relaxed);
    f.queue.disable_interrupts();
    assert_eq!(f.device.avail_flags(), 0x7777);
    assert!(!f.queue.enable_interrupts());
    assert_eq!(f.device.avail_flags(), 0);
    f.device
        .ring
        .store_u16(f.device.avail(), 0x7777, Ordering::Relaxed);
    assert!(!f.queue.enable_interrupts());
    assert_eq!(f.device.avail_flags(), 0x7777, "already enabled: no store");
}

#[test]
fn interrupt_suppression_with_event_idx_uses_used_event() {
    let mut f = fixture(8, EVENT_IDX);
    let s = [segment(0x1000, 8)];
    for _ in 0..3 {
        let token = f.queue.add(&s, &s, None).unwrap();
        f.device.pop(&f.hal).unwrap();
        f.device.push_used(token.0, 8);
        f.queue.pop_used().unwrap().unwrap();
    }
    // Disabling parks used_event one behind last_used (3), the farthest point ahead of the
    // device; flags stay 0 as section 2.7.7.1 requires with EVENT_IDX.
    f.queue.disable_interrupts();
    assert_eq!(f.device.used_event(), 2);
    assert_eq!(f.device.avail_flags(), 0);
    // The device at used index 3 would have to wrap all the way round to cross 2.
    assert!(!need_event(f.device.used_event(), 4, 3));
    assert!(!f.queue.enable_interrupts());
    assert_eq!(f.device.used_event(), 3);
    assert!(need_event(f.device.used_event(), 4, 3));
    // Already enabled at the same index: no store.
    f.device
        .ring
        .store_u16(f.device.avail() + 4 + 16, 999, Ordering::Relaxed);
    assert!(!f.queue.enable_interrupts());
    assert_eq!(f.device.used_event(), 999);
    // After more pops, enabling moves used_event along even without a disable.
    let token = f.queue.add(&s, &s, None).unwrap();
    f.device.pop(&f.hal).unwrap();
    f.device.push_used(token.0, 8);
    f.queue.pop_used().unwrap().unwrap();
    assert!(!f.queue.enable_interrupts());
    assert_eq!(f.device.used_event(), 4);
    assert_eq!(f.device.avail_flags(), 0);
}

#[test]
fn enable_interrupts_reports_chains_used_while_disabled() {
    for features in [PLAIN, EVENT_IDX] {
        let mut f = fixture(8, features);
        let s = [segment(0x1000, 8)];
        let a = f.queue.add(&s, &s, None).unwrap();
        let b = f.queue.add(&s, &s, None).unwrap();
        f.device.pop(&f.hal).unwrap();
        f.device.pop(&f.hal).unwrap();
        f.queue.disable_interrupts();
        // The device uses a chain while interrupts are off and, seeing them off, does not
        // interrupt: enable_interrupts must say so, or the chain would sit there forever.
        f.device.push_used(a.0, 1);
        assert!(f.queue.enable_interrupts(), "{features:?}");
        assert!(f.queue.has_used());
        assert_eq!(
            f.queue.pop_used(),
            Ok(Some(UsedBuffer {
                token: a,
                written: 1
            }))
        );
        assert!(!f.queue.enable_interrupts(), "{features:?}");
        f.queue.disable_interrupts();
        f.device.push_used(b.0, 2);
        assert!(f.queue.enable_interrupts(), "{features:?}");
        assert_eq!(
            f.queue.pop_used(),
            Ok(Some(UsedBuffer {
                token: b,
                written: 2
            }))
        );
        assert!(!f.queue.enable_interrupts());
    }
}

#[test]
fn polling_leaves_used_event_to_enable_interrupts() {
    // With EVENT_IDX, pops do not move used_event (no store, no fence per pop); the next
    // enable_interrupts moves it to the first entry not popped.
    let mut f = fixture(8, EVENT_IDX);
    let s = [segment(0x1000, 8)];
    for _ in 0..3 {
        let token = f.queue.add(&s, &s, None).unwrap();
        f.device.pop(&f.hal).unwrap();
        f.device.push_used(token.0, 8);
        f.queue.pop_used().unwrap().unwrap();
        assert_eq!(f.device.used_event(), 0);
    }
    assert!(!f.queue.enable_interrupts());
    assert_eq!(f.device.used_event(), 3);
    assert_eq!(f.device.avail_flags(), 0);
}

/// Device-side interrupt decision after publishing used entries `old..new`.
fn device_interrupts(device: &Device, features: QueueFeatures, old: u16, new: u16) -> bool {
    if features.event_idx {
        need_event(device.used_event(), new, old)
    } else {
        device.avail_flags() & VIRTQ_AVAIL_F_NO_INTERRUPT == 0
    }
}

/// Runs `batches` batches of `per_batch` three-descriptor chains through a queue of 16 and
/// returns (kicks, interrupts). The device re-arms notifications after each batch when
/// `rearm`.
fn run_batches(features: QueueFeatures, batches: u32, per_batch: u16, rearm: bool) -> (u32, u32) {
    let mut f = fixture(16, features);
    let s = [segment(0x1000, 8)];
    let w = [segment(0x2000, 8), segment(0x3000, 8)];
    if !rearm && !features.event_idx {
        f.device.set_used_flags(VIRTQ_USED_F_NO_NOTIFY);
    }
    let (mut kicks, mut interrupts) = (0, 0);
    let mut expected_token_checks = 0u32;
    for batch in 0..batches {
        let mut tokens = Vec::new();
        for _ in 0..per_batch {
            tokens.push(f.queue.add(&s, &w, None).unwrap());
        }
        kicks += u32::from(f.queue.kick_prepare());
        let old = f.device.next_used;
        while let Some(chain) = f.device.pop(&f.hal) {
            f.device.push_used(chain.head, batch % 17);
        }
        if rearm && features.event_idx {
            f.device.set_avail_event(f.device.next_avail);
        }
        if device_interrupts(&f.device, features, old, f.device.next_used) {
            interrupts += 1;
            f.queue.disable_interrupts();
            loop {
                while let Some(used) = f.queue.pop_used().unwrap() {
                    assert_eq!(used.token, tokens.remove(0));
                    assert_eq!(used.written, batch % 17);
                    expected_token_checks += 1;
                }
                if !f.queue.enable_interrupts() {
                    break;
                }
            }
        } else {
            // No interrupt: the driver polls.
            while let Some(used) = f.queue.pop_used().unwrap() {
                assert_eq!(used.token, tokens.remove(0));
                expected_token_checks += 1;
            }
        }
        assert!(tokens.is_empty());
    }
    assert_eq!(expected_token_checks, batches * u32::from(per_batch));
    let total = batches * u32::from(per_batch);
    assert_eq!(f.device.avail_idx(), total as u16);
    assert_eq!(f.device.used_idx(), total as u16);
    assert_eq!(f.queue.free_descriptors(), 16);
    (kicks, interrupts)
}

#[test]
#[cfg_attr(
    miri,
    ignore = "tens of thousands of pure-arithmetic steps: run natively; Miri covers the same code in shorter tests"
)]
fn seventy_thousand_cycles_wrap_the_indices_with_exact_kick_counts() {
    // 70,000 chains: avail.idx and used.idx wrap past 65,535 once.
    assert_eq!(run_batches(EVENT_IDX, 70_000, 1, true), (70_000, 70_000));
    assert_eq!(run_batches(EVENT_IDX, 17_500, 4, true), (17_500, 17_500));
    assert_eq!(run_batches(PLAIN, 17_500, 4, true), (17_500, 17_500));
    // A device that never re-arms avail_event (left at 0) is crossed exactly twice: by
    // chain 0 and by chain 65,536 after the wrap.
    let (kicks, _) = run_batches(EVENT_IDX, 17_500, 4, false);
    assert_eq!(kicks, 2);
    // A device that keeps NO_NOTIFY set is never notified.
    assert_eq!(run_batches(PLAIN, 17_500, 4, false).0, 0);
}

/// Sets up a queue of 8 with chains in flight (a: 3 descriptors with 100 writable bytes,
/// b: 1 readable descriptor) that the device has fetched.
fn in_flight_pair() -> (Fixture, Token, Token) {
    let mut f = fixture(8, PLAIN);
    let a = f
        .queue
        .add(
            &[segment(0x1000, 10)],
            &[segment(0x2000, 60), segment(0x3000, 40)],
            None,
        )
        .unwrap();
    let b = f.queue.add(&[segment(0x4000, 10)], &[], None).unwrap();
    f.device.pop(&f.hal).unwrap();
    f.device.pop(&f.hal).unwrap();
    (f, a, b)
}

#[test]
fn malformed_used_entries_are_typed_errors_and_change_nothing() {
    let cases: [(u32, u32, DeviceError); 6] = [
        (8, 0, DeviceError::UsedIdOutOfRange { id: 8 }),
        (0x1_0000, 0, DeviceError::UsedIdOutOfRange { id: 0x1_0000 }),
        (u32::MAX, 0, DeviceError::UsedIdOutOfRange { id: u32::MAX }),
        // Descriptor 5 is free.
        (5, 0, DeviceError::UsedIdNotInFlight { id: 5 }),
        // Descriptors 1 and 2 are the body of chain a (head 0), not heads.
        (1, 0, DeviceError::UsedIdNotInFlight { id: 1 }),
        (2, 0, DeviceError::UsedIdNotInFlight { id: 2 }),
    ];
    for (id, len, error) in cases {
        let (mut f, a, _) = in_flight_pair();
        f.device.write_used_element(0, id, len);
        f.device.set_used_idx(1);
        let before = state(&f.queue);
        assert_eq!(f.queue.pop_used(), Err(error));
        assert_eq!(
            f.queue.pop_used(),
            Err(error),
            "the error sticks until fixed"
        );
        assert_eq!(state(&f.queue), before);
        // Nothing was consumed: once the entry is right, it pops normally.
        f.device.write_used_element(0, u32::from(a.0), 100);
        assert_eq!(
            f.queue.pop_used(),
            Ok(Some(UsedBuffer {
                token: a,
                written: 100
            }))
        );
    }
}

#[test]
fn used_lengths_are_clamped_to_the_writable_part_and_bounded_by_the_chain() {
    // QEMU's virtio-scsi reports response + data-out bytes for writes: more than the
    // writable part, never more than the whole chain.
    let (mut f, a, b) = in_flight_pair();
    f.device.write_used_element(0, u32::from(a.0), 111);
    f.device.write_used_element(1, u32::from(b.0), 11);
    f.device.set_used_idx(2);
    let before = state(&f.queue);
    assert_eq!(
        f.queue.pop_used(),
        Err(DeviceError::UsedLengthTooLarge {
            id: a.0,
            written: 111,
            posted: 110
        })
    );
    assert_eq!(state(&f.queue), before, "nothing consumed");
    f.device.write_used_element(0, u32::from(a.0), 110);
    f.device.write_used_element(1, u32::from(b.0), 10);
    assert_eq!(
        f.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: a,
            written: 100
        }))
    );
    // Chain b has nothing writable.
    assert_eq!(
        f.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: b,
            written: 0
        }))
    );
}

#[test]
fn used_index_jumps_and_double_completions_are_detected() {
    let (mut f, a, b) = in_flight_pair();
    f.device.write_used_element(0, u32::from(a.0), 0);
    f.device.write_used_element(1, u32::from(b.0), 0);
    for published in [3u16, 100, 65_535] {
        f.device.set_used_idx(published);
        let before = state(&f.queue);
        assert_eq!(
            f.queue.pop_used(),
            Err(DeviceError::UsedIndexJump {
                last_seen: 0,
                published
            })
        );
        assert_eq!(state(&f.queue), before);
    }
    f.device.set_used_idx(2);
    assert_eq!(
        f.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: a,
            written: 0
        }))
    );
    // One in flight now: used.idx may be at most 1 ahead of last_used (1).
    f.device.set_used_idx(3);
    assert_eq!(
        f.queue.pop_used(),
        Err(DeviceError::UsedIndexJump {
            last_seen: 1,
            published: 3
        })
    );
    f.device.set_used_idx(2);
    assert_eq!(
        f.queue.pop_used(),
        Ok(Some(UsedBuffer {
            token: b,
            written: 0
        }))
    );
    // used.idx going backwards is a jump of nearly 2^16.
    f.device.set_used_idx(1);
    assert_eq!(
        f.queue.pop_used(),
        Err(DeviceError::UsedIndexJump {
            last_seen: 2,
            published: 1
        })
    );
    // The device reports a completed chain again.
    let c = f.queue.add(&[segment(0x1000, 4)], &[], None).unwrap();
    assert_ne!(c, a);
    f.device.write_used_element(2, u32::from(a.0), 0);
    f.device.set_used_idx(3);
    assert_eq!(
        f.queue.pop_used(),
        Err(DeviceError::UsedIdNotInFlight { id: a.0 })
    );
}

#[test]
fn detach_returns_every_in_flight_token_exactly_once() {
    let mut f = fixture(16, INDIRECT);
    let s = segment(0x1000, 32);
    let table = f.hal.dma_alloc(16 * 4, 16).unwrap();
    let mut tokens = BTreeSet::new();
    for i in 0..6 {
        let indirect = (i % 2 == 0).then_some(&table);
        tokens.insert(f.queue.add(&[s], &[s, s], indirect).unwrap());
    }
    // Two complete normally.
    let done: Vec<Token> = tokens.iter().copied().take(2).collect();
    for token in &done {
        f.device.push_used(token.0, 0);
        assert_eq!(f.queue.pop_used().unwrap().unwrap().token, *token);
        tokens.remove(token);
    }
    let mut detached = BTreeSet::new();
    while let Some(token) = f.queue.detach_next() {
        assert!(detached.insert(token), "{token:?} detached twice");
    }
    assert_eq!(detached, tokens);
    assert_eq!(f.queue.in_flight(), 0);
    assert_eq!(f.queue.free_descriptors(), 16);
    assert_eq!(f.queue.detach_next(), None);
    f.queue.reset();
    assert_eq!(f.device.avail_idx(), 0);
    // Works again from scratch, and the free list covers all 16 descriptors.
    let t = f.queue.add(&[s; 8], &[s; 8], None).unwrap();
    assert_eq!(t, Token(0));
    assert_eq!(f.queue.free_descriptors(), 0);
}

#[test]
fn reset_clears_memory_indices_and_shadows() {
    let mut f = fixture(8, PLAIN);
    let s = [segment(0x1000, 8)];
    for _ in 0..5 {
        let token = f.queue.add(&s, &s, None).unwrap();
        f.device.pop(&f.hal).unwrap();
        f.device.push_used(token.0, 8);
        f.queue.pop_used().unwrap().unwrap();
    }
    f.queue.add(&s, &s, None).unwrap();
    f.queue.disable_interrupts();
    f.device.set_used_flags(VIRTQ_USED_F_NO_NOTIFY);
    while f.queue.detach_next().is_some() {}
    f.queue.reset();
    let len = f.queue.layout().ring_len();
    let mut bytes = vec![0xffu8; len];
    assert!(f.device.ring.read_bytes(0, &mut bytes));
    assert!(bytes.iter().all(|&b| b == 0));
    let fresh = fixture(8, PLAIN);
    let normalize = |q: &SplitQueue<Vec<Slot>>| state(q).replace(&format!("{:?}", q.ring), "");
    assert_eq!(normalize(&f.queue), normalize(&fresh.queue));
    // Interrupts are enabled again (flags 0) and a fresh device sees a fresh ring.
    f.queue.disable_interrupts();
    assert_eq!(f.device.avail_flags(), VIRTQ_AVAIL_F_NO_INTERRUPT);
}

/// One step of the property test.
#[derive(Clone, Debug)]
enum Step {
    Add {
        readable: Vec<u32>,
        writable: Vec<u32>,
        /// 0: a direct chain; 1: an indirect table through `add`; 2: a table written by
        /// the indirect writer and added with `add_table`.
        how: u8,
    },
    Fetch,
    Complete {
        pick: usize,
        written: u32,
    },
    Pop,
}

fn step() -> impl Strategy<Value = Step> {
    let lens = |max| prop::collection::vec(1u32..5000, 0..max);
    prop_oneof![
        3 => (lens(4usize), lens(4usize), 0u8..3)
            .prop_map(|(readable, writable, how)| Step::Add { readable, writable, how }),
        2 => Just(Step::Fetch),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(pick, written)| Step::Complete { pick, written }),
        2 => Just(Step::Pop),
    ]
}

/// What the driver side of the model remembers about a chain in flight.
struct Posted {
    segments: Vec<(u64, u32, u16)>,
    writable: u32,
    table: Option<usize>,
}

/// The property test's model: a queue, a device that fetches and completes in the order
/// the steps say, and what each side should see.
struct Model {
    f: Fixture,
    size: u16,
    tables: Vec<DmaMemory>,
    free_tables: Vec<usize>,
    posted: BTreeMap<u16, Posted>,
    fetched: Vec<u16>,
    completed: BTreeMap<u16, u32>,
    next_address: u64,
    adds: usize,
    pops: usize,
}

impl Model {
    fn new(size: u16, event_idx: bool) -> Self {
        let f = fixture(
            size,
            QueueFeatures {
                event_idx,
                indirect: true,
            },
        );
        let tables = (0..size)
            .map(|_| f.hal.dma_alloc(16 * 8, 16).unwrap())
            .collect();
        Self {
            f,
            size,
            tables,
            free_tables: (0..usize::from(size)).collect(),
            posted: BTreeMap::new(),
            fetched: Vec::new(),
            completed: BTreeMap::new(),
            next_address: 0x10_0000,
            adds: 0,
            pops: 0,
        }
    }

    /// Free descriptors according to the model.
    fn free(&self) -> u16 {
        let used: u16 = self
            .posted
            .values()
            .map(|p| {
                if p.table.is_some() {
                    1
                } else {
                    p.segments.len() as u16
                }
            })
            .sum();
        self.size - used
    }

    fn segments(&mut self, lens: &[u32]) -> Vec<Segment> {
        lens.iter()
            .map(|&len| {
                self.next_address += 0x1_0000;
                segment(self.next_address, len)
            })
            .collect()
    }

    fn add(&mut self, readable: &[u32], writable: &[u32], how: u8) {
        let free = self.free();
        let readable = self.segments(readable);
        let writable = self.segments(writable);
        let count = readable.len() + writable.len();
        let table = if how == 0 {
            None
        } else {
            self.free_tables.pop()
        };
        let result = match table {
            Some(t) if how == 2 => written_chain(&self.tables[t], &readable, &writable)
                .and_then(|chain| self.f.queue.add_table(&chain)),
            _ => self
                .f
                .queue
                .add(&readable, &writable, table.map(|t| &self.tables[t])),
        };
        let needed = if table.is_some() { 1 } else { count as u16 };
        match result {
            Ok(token) => {
                assert!(count > 0 && needed <= free);
                let shape = |s: &Segment, write: bool| {
                    (s.address, s.len, u16::from(write) * VIRTQ_DESC_F_WRITE)
                };
                let segments = readable
                    .iter()
                    .map(|s| shape(s, false))
                    .chain(writable.iter().map(|s| shape(s, true)))
                    .collect();
                let writable = writable.iter().map(|s| s.len).sum();
                let chain = Posted {
                    segments,
                    writable,
                    table,
                };
                let previous = self.posted.insert(token.0, chain);
                assert!(previous.is_none(), "token reused while in flight");
                self.adds += 1;
            }
            Err(QueueError::EmptyChain) => {
                assert_eq!(count, 0);
                self.free_tables.extend(table);
            }
            Err(QueueError::Full {
                needed: reported,
                free: reported_free,
            }) => {
                assert_eq!((reported, reported_free), (needed, free));
                assert!(needed > free);
                self.free_tables.extend(table);
            }
            Err(QueueError::ChainTooLong { segments, limit }) => {
                assert_eq!(segments, count);
                assert!(table.is_none() && count > usize::from(self.size));
                assert_eq!(limit, usize::from(self.size));
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    fn fetch(&mut self) {
        if let Some(chain) = self.f.device.pop(&self.f.hal) {
            let posted = &self.posted[&chain.head];
            assert_eq!(chain.indirect, posted.table.is_some());
            let seen: Vec<(u64, u32, u16)> = chain
                .descriptors
                .iter()
                .map(|&(address, len, flags)| (address, len, flags & VIRTQ_DESC_F_WRITE))
                .collect();
            assert_eq!(seen, posted.segments);
            self.fetched.push(chain.head);
        }
    }

    fn complete(&mut self, pick: usize, written: u32) {
        if !self.fetched.is_empty() {
            let head = self.fetched.swap_remove(pick % self.fetched.len());
            let len = written % (self.posted[&head].writable + 1);
            self.f.device.push_used(head, len);
            self.completed.insert(head, len);
        }
    }

    fn pop(&mut self) {
        match self.f.queue.pop_used().unwrap() {
            None => assert!(
                self.completed.is_empty(),
                "{:?} completed, none pops",
                self.completed
            ),
            Some(used) => {
                let written = self.completed.remove(&used.token.0).expect("not completed");
                assert_eq!(used.written, written);
                let chain = self
                    .posted
                    .remove(&used.token.0)
                    .expect("token completed twice");
                self.free_tables.extend(chain.table);
                self.pops += 1;
            }
        }
    }

    fn step(&mut self, step: &Step) {
        assert_eq!(self.f.queue.free_descriptors(), self.free());
        assert_eq!(usize::from(self.f.queue.in_flight()), self.posted.len());
        match step {
            Step::Add {
                readable,
                writable,
                how,
            } => self.add(readable, writable, *how),
            Step::Fetch => self.fetch(),
            Step::Complete { pick, written } => self.complete(*pick, *written),
            Step::Pop => self.pop(),
        }
    }

    /// The device takes and completes everything, the driver pops everything; then every
    /// descriptor and table is free again.
    fn drain(mut self) {
        while let Some(chain) = self.f.device.pop(&self.f.hal) {
            self.fetched.push(chain.head);
        }
        for head in core::mem::take(&mut self.fetched).into_iter().rev() {
            self.f.device.push_used(head, 0);
            self.completed.insert(head, 0);
        }
        while !self.posted.is_empty() {
            self.pop();
        }
        assert_eq!(self.f.queue.pop_used(), Ok(None));
        assert_eq!(self.pops, self.adds);
        assert_eq!(self.f.queue.free_descriptors(), self.size);
        assert_eq!(self.f.queue.in_flight(), 0);
        assert_eq!(self.free_tables.len(), usize::from(self.size));
    }
}

proptest! {
    #[test]
    fn every_token_completes_exactly_once(
        size_log in 0u32..5,
        event_idx in any::<bool>(),
        steps in prop::collection::vec(step(), 0..200),
    ) {
        let mut model = Model::new(1 << size_log, event_idx);
        for step in &steps {
            model.step(step);
        }
        model.drain();
    }

    #[test]
    fn arbitrary_used_entries_never_corrupt_the_queue(
        entries in prop::collection::vec(
            (prop_oneof![0u32..10, any::<u32>()], 0u32..120, 0u16..4),
            1..60,
        ),
    ) {
        // A device writing garbage: each pop either is a valid completion of a chain in
        // flight or a typed error that leaves the queue exactly as it was.
        let mut f = fixture(8, PLAIN);
        let mut outstanding: BTreeMap<u16, u32> = BTreeMap::new();
        let mut last_used = 0u16;
        for (id, len, advance) in entries {
            if f.queue.free_descriptors() >= 3 {
                let writable = [segment(0x2000, 60), segment(0x3000, 40)];
                let token = f.queue.add(&[segment(0x1000, 10)], &writable, None).unwrap();
                outstanding.insert(token.0, 100);
            }
            f.device.write_used_element(last_used, id, len);
            f.device.set_used_idx(last_used.wrapping_add(advance));
            let before = state(&f.queue);
            match f.queue.pop_used() {
                Ok(None) => prop_assert_eq!(advance, 0),
                Ok(Some(used)) => {
                    prop_assert_eq!(u32::from(used.token.0), id);
                    let posted = outstanding.remove(&used.token.0).unwrap();
                    // Lengths beyond the posted writable length are clamped to it.
                    prop_assert_eq!(used.written, len.min(posted));
                    prop_assert!(usize::from(advance) <= outstanding.len() + 1);
                    last_used = last_used.wrapping_add(1);
                }
                Err(_) => prop_assert_eq!(state(&f.queue), before),
            }
            prop_assert_eq!(usize::from(f.queue.in_flight()), outstanding.len());
            prop_assert_eq!(f.queue.free_descriptors(), 8 - 3 * outstanding.len() as u16);
        }
    }
}
