//! The split virtqueue (virtio 1.2 section 2.7): descriptor table, available ring, used ring.
//!
//! The driver owns the descriptor table and the available ring, the device owns the used ring.
//! Everything the driver needs to know about its own chains (the free list, the links of each
//! chain, how many descriptors it occupies and how many bytes the device may write) lives in
//! the caller's [`Slot`] storage, so nothing is ever read back from memory the device can
//! write. The only device-written values this module reads are `used.idx`, the used elements,
//! `used.flags` and `avail_event`, and each is validated before it is used.
//!
//! Token = head descriptor index. A direct chain takes one descriptor per segment, linked in
//! free-list order; an indirect chain takes one descriptor pointing at a caller-provided table.
#![forbid(unsafe_code)]

use core::borrow::BorrowMut;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{Ordering, fence};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{
    DeviceError, QueueAddresses, QueueError, QueueFeatures, Slot, Token, UsedBuffer, Virtqueue,
    need_event,
};
use crate::dma::{DmaArray, DmaMemory};
use crate::hal::Segment;

/// Alignment of the ring memory: the descriptor table needs 16 bytes (virtio 1.2 section 2.7);
/// the available ring (2) and used ring (4) follow at offsets that keep theirs.
pub const RING_ALIGN: usize = 16;

/// Largest split queue size (virtio 1.2 section 2.7: "Queue Size ... maximum is 32768").
pub const MAX_QUEUE_SIZE: u16 = 32_768;

/// `VIRTQ_DESC_F_NEXT`: the buffer continues via the `next` field (section 2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the buffer is device write-only (section 2.7.5).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT`: the buffer holds a table of descriptors (section 2.7.5.3).
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver asks not to be interrupted (section 2.7.7).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY`: the device asks not to be notified (section 2.7.10).
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;

/// `struct virtq_desc` (virtio 1.2 section 2.7.5): one entry of the descriptor table or of an
/// indirect table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Descriptor {
    /// Bus address of the buffer.
    pub addr: U64,
    /// Length of the buffer in bytes.
    pub len: U32,
    /// `VIRTQ_DESC_F_*` flags.
    pub flags: U16,
    /// Index of the next descriptor when `flags` has [`VIRTQ_DESC_F_NEXT`].
    pub next: U16,
}
const _: () = assert!(size_of::<Descriptor>() == 16);
// The descriptor writers store each field at its own offset and size.
const _: () = assert!(offset_of!(Descriptor, addr) == 0);
const _: () = assert!(offset_of!(Descriptor, len) == 8);
const _: () = assert!(offset_of!(Descriptor, flags) == 12);
const _: () = assert!(offset_of!(Descriptor, next) == 14);

/// `struct virtq_used_elem` (virtio 1.2 section 2.7.8): one entry of the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct UsedElement {
    /// Head descriptor index of the used chain.
    pub id: U32,
    /// Bytes the device wrote into the chain's writable buffers.
    pub len: U32,
}
const _: () = assert!(size_of::<UsedElement>() == 8);
const _: () = assert!(offset_of!(UsedElement, id) == 0);
const _: () = assert!(offset_of!(UsedElement, len) == 4);

/// Size of the `flags` and `idx` header of both rings.
const RING_HEADER: usize = 4;
/// Size of one available-ring entry (a `le16` descriptor index).
const AVAIL_ENTRY: usize = 2;

/// Byte offsets of the three parts of a split ring laid out contiguously (virtio 1.2 section
/// 2.7): the descriptor table at 0, `struct virtq_avail` right after it, `struct virtq_used`
/// after that at the next multiple of 4.
///
/// The queue itself does not compute offsets on its hot paths: it turns each part into a
/// [`DmaArray`] once, at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitLayout {
    size: u16,
}

impl SplitLayout {
    /// The layout for `size` entries. Any `u16` gives a layout; whether the size is usable is
    /// [`SplitQueue::new`]'s question.
    #[must_use]
    pub const fn new(size: u16) -> Self {
        Self { size }
    }

    /// Queue size the layout is for.
    #[must_use]
    pub const fn size(self) -> u16 {
        self.size
    }

    const fn entries(self) -> usize {
        self.size as usize
    }

    /// Offset of `struct virtq_avail` (its `flags` field).
    #[must_use]
    pub const fn avail(self) -> usize {
        size_of::<Descriptor>() * self.entries()
    }

    /// Offset of `struct virtq_used` (its `flags` field): after the available ring's flags,
    /// idx, ring and `used_event`, rounded up to the used ring's alignment of 4.
    #[must_use]
    pub const fn used(self) -> usize {
        // `(x + 3) & !3` rather than `next_multiple_of(4)`: the same value, but the compiler
        // then sees the alignment, and it is three instructions instead of a branch.
        (self.used_event() + 2 + 3) & !3
    }

    /// Total bytes of ring memory, up to and including `avail_event`.
    #[must_use]
    pub const fn ring_len(self) -> usize {
        self.avail_event() + 2
    }

    /// Offset of descriptor `index` in the descriptor table.
    #[must_use]
    pub const fn descriptor(self, index: u16) -> usize {
        descriptor_offset(index)
    }

    /// Offset of `avail.flags`.
    #[must_use]
    pub const fn avail_flags(self) -> usize {
        self.avail()
    }

    /// Offset of `avail.idx`.
    #[must_use]
    pub const fn avail_idx(self) -> usize {
        self.avail() + 2
    }

    /// Offset of `avail.ring[position]`.
    #[must_use]
    pub const fn avail_ring(self, position: u16) -> usize {
        self.avail() + RING_HEADER + AVAIL_ENTRY * position as usize
    }

    /// Offset of `used_event` (the last field of the available ring, section 2.7.7).
    #[must_use]
    pub const fn used_event(self) -> usize {
        self.avail() + RING_HEADER + AVAIL_ENTRY * self.entries()
    }

    /// Offset of `used.flags`.
    #[must_use]
    pub const fn used_flags(self) -> usize {
        self.used()
    }

    /// Offset of `used.idx`.
    #[must_use]
    pub const fn used_idx(self) -> usize {
        self.used() + 2
    }

    /// Offset of `used.ring[position]`.
    #[must_use]
    pub const fn used_ring(self, position: u16) -> usize {
        self.used() + RING_HEADER + size_of::<UsedElement>() * position as usize
    }

    /// Offset of `avail_event` (the last field of the used ring, section 2.7.10).
    #[must_use]
    pub const fn avail_event(self) -> usize {
        self.used() + RING_HEADER + size_of::<UsedElement>() * self.entries()
    }
}

/// Offset of `flags` in `struct virtq_avail` and `struct virtq_used` (section 2.7.6, 2.7.8).
const HEADER_FLAGS: usize = 0;
/// Offset of `idx` in `struct virtq_avail` and `struct virtq_used`.
const HEADER_IDX: usize = 2;

/// The parts of a split ring as arrays checked once against the ring memory, so that no ring
/// access on the I/O path computes an offset from the queue size or checks a bound: positions
/// and descriptor indices are reduced modulo the queue size by [`DmaArray`] itself, and the
/// single fields are one-element arrays.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RingView {
    /// The descriptor table (section 2.7.5).
    descriptors: DmaArray<{ size_of::<Descriptor>() }, 8>,
    /// `avail.flags` and `avail.idx` (section 2.7.6).
    avail_header: DmaArray<RING_HEADER, 2>,
    /// `avail.ring`.
    avail_ring: DmaArray<AVAIL_ENTRY, 2>,
    /// `used_event`, the available ring's last field (section 2.7.7).
    used_event: DmaArray<2, 2>,
    /// `used.flags` and `used.idx` (section 2.7.8).
    used_header: DmaArray<RING_HEADER, 2>,
    /// `used.ring`: 8-byte elements but only 4-aligned, so read as two `u32`s.
    used_ring: DmaArray<{ size_of::<UsedElement>() }, 4>,
    /// `avail_event`, the used ring's last field (section 2.7.10).
    avail_event: DmaArray<2, 2>,
}

/// The view is derived from the ring and the layout, which the queue's `Debug` shows already;
/// its pointers would only repeat the ring's address.
impl core::fmt::Debug for RingView {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingView").finish_non_exhaustive()
    }
}

impl RingView {
    /// Zeroes every field of the ring, each at the size it is always accessed with (not
    /// [`DmaMemory::zero`]'s 64-bit words over 16-bit fields: one access size per location).
    /// Relaxed: only while the device does not own the ring (reset).
    fn zero(&self, size: u16) {
        let relaxed = Ordering::Relaxed;
        for index in 0..usize::from(size) {
            self.descriptors
                .store_u64(index, offset_of!(Descriptor, addr), 0, relaxed);
            self.descriptors
                .store_u32(index, offset_of!(Descriptor, len), 0, relaxed);
            self.descriptors
                .store_u16(index, offset_of!(Descriptor, flags), 0, relaxed);
            self.descriptors
                .store_u16(index, offset_of!(Descriptor, next), 0, relaxed);
            self.avail_ring.store_u16(index, 0, 0, relaxed);
            self.used_ring
                .store_u32(index, offset_of!(UsedElement, id), 0, relaxed);
            self.used_ring
                .store_u32(index, offset_of!(UsedElement, len), 0, relaxed);
        }
        for header in [&self.avail_header, &self.used_header] {
            header.store_u16(0, HEADER_FLAGS, 0, relaxed);
            header.store_u16(0, HEADER_IDX, 0, relaxed);
        }
        self.used_event.store_u16(0, 0, 0, relaxed);
        self.avail_event.store_u16(0, 0, 0, relaxed);
    }

    /// The view of `ring` laid out as `layout` says, or `None` if some part does not fit (not
    /// possible once `ring` holds [`SplitLayout::ring_len`] bytes and the size is a power of
    /// two, but checked rather than assumed).
    fn new(ring: &DmaMemory, layout: SplitLayout) -> Option<Self> {
        let entries = usize::from(layout.size());
        Some(Self {
            descriptors: ring.array(layout.descriptor(0), entries)?,
            avail_header: ring.array(layout.avail(), 1)?,
            avail_ring: ring.array(layout.avail_ring(0), entries)?,
            used_event: ring.array(layout.used_event(), 1)?,
            used_header: ring.array(layout.used(), 1)?,
            used_ring: ring.array(layout.used_ring(0), entries)?,
            avail_event: ring.array(layout.avail_event(), 1)?,
        })
    }
}

/// A split virtqueue, driver side, over caller-provided ring memory and slot storage.
#[derive(Debug)]
pub struct SplitQueue<S: BorrowMut<[Slot]>> {
    /// The ring, trimmed to exactly [`SplitLayout::ring_len`] bytes.
    ring: DmaMemory,
    /// The ring's parts, checked once.
    view: RingView,
    /// One slot per descriptor: free list, chain links and per-chain bookkeeping.
    slots: S,
    layout: SplitLayout,
    index: u16,
    size: u16,
    /// `size - 1`: the size is a power of two, so ring positions are `idx & mask`.
    mask: u16,
    features: QueueFeatures,
    /// First free descriptor (meaningless when `num_free` is 0).
    free_head: u16,
    num_free: u16,
    in_flight: u16,
    /// Shadow of `avail.idx`: the value last published.
    avail_idx: u16,
    /// `avail.idx` at the previous `kick_prepare`, the `old` of `vring_need_event`.
    kicked_avail_idx: u16,
    /// Set when 65,536 chains were added since the previous `kick_prepare`: the event window
    /// then wraps to empty, so the next `kick_prepare` must notify unconditionally.
    force_kick: bool,
    /// The used index up to which chains were popped.
    last_used: u16,
    /// Shadow of `avail.flags` (without `EVENT_IDX`).
    avail_flags: u16,
    /// Shadow of `used_event` (with `EVENT_IDX`).
    used_event: u16,
    /// Whether the driver last asked for interrupts (`enable_interrupts`) rather than not.
    interrupts_enabled: bool,
    /// Where `detach_next` resumes its scan, so detaching everything is O(size) overall.
    detach_cursor: u16,
}

/// A descriptor table: the ring's own ([`RingView::descriptors`]) or an indirect one.
///
/// One access-size policy, the packed ring's: every field is always written at its own size
/// (`addr` 64-bit, `len` 32-bit, `flags` and `next` 16-bit), never merged into a wider store.
/// `len|flags|next` used to go out as one 64-bit store while `set_flags` later rewrote `flags`
/// alone with a 16-bit one; the C++/Rust memory model leaves such mixed-size atomic accesses to
/// one location without defined semantics, and Miri's weak-memory emulation rejects them, so
/// the two stores saved per descriptor cost the checker that matters most for ring ordering.
trait DescriptorTable {
    /// Writes descriptor `index`.
    fn write(&self, index: u16, segment: &Segment, flags: u16, next: u16);
    /// Rewrites the `flags` of descriptor `index`.
    fn set_flags(&self, index: u16, flags: u16);
}

/// The ring's descriptor table, checked once: `index` is reduced modulo the queue size.
impl DescriptorTable for DmaArray<{ size_of::<Descriptor>() }, 8> {
    #[inline]
    fn write(&self, index: u16, segment: &Segment, flags: u16, next: u16) {
        let index = usize::from(index);
        let addr = offset_of!(Descriptor, addr);
        self.store_u64(index, addr, segment.address, Ordering::Relaxed);
        self.store_u32(
            index,
            offset_of!(Descriptor, len),
            segment.len,
            Ordering::Relaxed,
        );
        self.store_u16(
            index,
            offset_of!(Descriptor, flags),
            flags,
            Ordering::Relaxed,
        );
        self.store_u16(index, offset_of!(Descriptor, next), next, Ordering::Relaxed);
    }

    #[inline]
    fn set_flags(&self, index: u16, flags: u16) {
        let field = offset_of!(Descriptor, flags);
        self.store_u16(usize::from(index), field, flags, Ordering::Relaxed);
    }
}

/// An indirect table: caller memory of any length, so every access is bounds-checked.
impl DescriptorTable for DmaMemory {
    #[inline]
    fn write(&self, index: u16, segment: &Segment, flags: u16, next: u16) {
        let offset = descriptor_offset(index);
        self.store_u64(offset, segment.address, Ordering::Relaxed);
        self.store_u32(
            offset + offset_of!(Descriptor, len),
            segment.len,
            Ordering::Relaxed,
        );
        self.store_u16(
            offset + offset_of!(Descriptor, flags),
            flags,
            Ordering::Relaxed,
        );
        self.store_u16(
            offset + offset_of!(Descriptor, next),
            next,
            Ordering::Relaxed,
        );
    }

    #[inline]
    fn set_flags(&self, index: u16, flags: u16) {
        let offset = descriptor_offset(index) + offset_of!(Descriptor, flags);
        self.store_u16(offset, flags, Ordering::Relaxed);
    }
}

/// Offset of descriptor `index` in a descriptor table (the ring's or an indirect one).
#[inline]
const fn descriptor_offset(index: u16) -> usize {
    size_of::<Descriptor>() * index as usize
}

impl<S: BorrowMut<[Slot]>> SplitQueue<S> {
    /// Alignment the ring memory needs (same as the module's [`RING_ALIGN`]).
    pub const RING_ALIGN: usize = RING_ALIGN;

    /// Bytes of ring memory a queue of `size` entries needs (see [`SplitLayout`]).
    #[must_use]
    pub const fn ring_len(size: u16) -> usize {
        SplitLayout::new(size).ring_len()
    }

    /// Creates queue `index` of `size` entries over `ring` (at least [`Self::ring_len`] bytes,
    /// bus address aligned to [`RING_ALIGN`]) and `slots` (at least `size` of them). Zeroes the
    /// ring and puts every descriptor on the free list.
    ///
    /// # Errors
    /// [`QueueError::InvalidSize`] unless `size` is a power of two in `1..=32768`,
    /// [`QueueError::RingMemory`] if the ring memory is too small or misaligned,
    /// [`QueueError::SlotStorage`] if there are fewer than `size` slots.
    pub fn new(
        index: u16,
        size: u16,
        ring: DmaMemory,
        slots: S,
        features: QueueFeatures,
    ) -> Result<Self, QueueError> {
        if !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(QueueError::InvalidSize(size));
        }
        let layout = SplitLayout::new(size);
        let misaligned = !ring.bus_address().is_multiple_of(RING_ALIGN as u64);
        let trimmed = ring.sub(0, layout.ring_len()).filter(|_| !misaligned);
        let view = trimmed.and_then(|ring| RingView::new(&ring, layout).map(|view| (ring, view)));
        let Some((ring, view)) = view else {
            return Err(QueueError::RingMemory {
                needed: layout.ring_len(),
                provided: ring.len(),
            });
        };
        let provided = slots.borrow().len();
        if provided < usize::from(size) {
            return Err(QueueError::SlotStorage {
                needed: size,
                provided,
            });
        }
        let mut queue = Self {
            ring,
            view,
            slots,
            layout,
            index,
            size,
            mask: size - 1,
            features,
            free_head: 0,
            num_free: size,
            in_flight: 0,
            avail_idx: 0,
            kicked_avail_idx: 0,
            force_kick: false,
            last_used: 0,
            avail_flags: 0,
            used_event: 0,
            interrupts_enabled: true,
            detach_cursor: 0,
        };
        queue.reset();
        Ok(queue)
    }

    /// The ring layout (offsets of every field), for diagnostics and device models.
    #[must_use]
    pub const fn layout(&self) -> SplitLayout {
        self.layout
    }

    /// The features the queue was created with.
    #[must_use]
    pub const fn features(&self) -> QueueFeatures {
        self.features
    }

    /// The slot storage as exactly `size` slots, or `None` if it is shorter (which `new`
    /// ruled out; only a `BorrowMut` that changes its answer could get here).
    #[inline]
    fn slots_mut(slots: &mut S, mask: usize) -> Option<&mut [Slot]> {
        slots.borrow_mut().get_mut(..=mask)
    }
}

/// The `next` link of slot `index`.
///
/// `slots` holds exactly `mask + 1` slots (the queue size). Indices are masked with `mask`:
/// they are in range anyway (every link is a slot index by construction), but written this
/// way the compiler can see it and drops the bounds checks.
#[inline]
fn link(slots: &[Slot], mask: usize, index: u16) -> u16 {
    slots
        .get(usize::from(index) & mask)
        .map_or(0, |slot| slot.next)
}

/// Sets the `next` link of slot `index` (masked as in [`link`]).
#[inline]
fn set_link(slots: &mut [Slot], mask: usize, index: u16, next: u16) {
    if let Some(slot) = slots.get_mut(usize::from(index) & mask) {
        slot.next = next;
    }
}

/// Records the chain `head ..= tail` just taken off the free list (one descriptor: `head ==
/// tail`) so that [`release_chain`] finds its tail without walking it.
///
/// A direct chain's links are the free-list links it was taken with, so only its ends need
/// remembering. While the chain is in flight, the head's link names the tail and the tail's
/// link names the head's successor: the two are swapped. (The tail's own link, the first
/// descriptor that was still free, is stale once the chain is in flight and is not needed.)
/// Every other descriptor keeps its link, and nothing the device sees changes.
#[inline]
fn hold_chain(slots: &mut [Slot], mask: usize, head: u16, tail: u16) {
    let second = link(slots, mask, head);
    set_link(slots, mask, tail, second);
    set_link(slots, mask, head, tail);
}

/// Puts chain `head` (recorded by [`hold_chain`]) back on the free list in front of
/// `free_head` and marks it not in flight; the caller makes `head` the new free head. O(1):
/// restores the head's link and points the tail's at `free_head`, whatever the chain's length.
#[expect(
    clippy::inline_always,
    reason = "pop_used's hot path; with plain #[inline] LLVM keeps it out of line (it has two callers)"
)]
#[inline(always)]
fn release_chain(slots: &mut [Slot], mask: usize, head: u16, free_head: u16) {
    let tail = link(slots, mask, head);
    let second = link(slots, mask, tail);
    set_link(slots, mask, head, second);
    set_link(slots, mask, tail, free_head);
    if let Some(slot) = slots.get_mut(usize::from(head) & mask) {
        slot.in_flight = false;
    }
}

/// Where a chain's descriptors go: the ring's descriptor table in free-list order (direct) or
/// an indirect table in index order.
trait Placement {
    /// The index that follows `index` in the chain.
    fn next(&self, index: u16) -> u16;
}

/// Direct chains follow the free list: the free-list link becomes the chain link, so a chain
/// needs no bookkeeping beyond its two ends (see [`hold_chain`]).
struct FreeList<'a> {
    /// The slots, exactly `mask + 1` of them (see [`link`] on masking).
    slots: &'a [Slot],
    mask: usize,
}

impl Placement for FreeList<'_> {
    #[inline]
    fn next(&self, index: u16) -> u16 {
        link(self.slots, self.mask, index)
    }
}

/// Indirect tables are filled in order from entry 0.
struct InOrder;

impl Placement for InOrder {
    #[inline]
    fn next(&self, index: u16) -> u16 {
        index.wrapping_add(1)
    }
}

/// A chain written by [`write_chain`]: its last descriptor, the index after it, the total
/// writable length and the whole chain's length (saturating; no used length may exceed it).
struct Written {
    last: u16,
    after: u16,
    writable: u32,
    posted: u32,
}

/// Writes `readable` then `writable` (at least one segment in all) as descriptors into
/// `table`, starting at `first` and linked as `placement` says: readable without and writable
/// with `VIRTQ_DESC_F_WRITE`, `VIRTQ_DESC_F_NEXT` on all but the last.
///
/// Validation happens on the way (one pass instead of two): on an error some of the
/// descriptors may have been written, but they are free descriptors (or a table not yet
/// published) that the device has no reason to read, and no driver state has changed.
#[inline]
fn write_chain(
    table: &impl DescriptorTable,
    readable: &[Segment],
    writable: &[Segment],
    first: u16,
    placement: &impl Placement,
) -> Result<Written, QueueError> {
    let mut current = first;
    let mut last = first;
    let mut readable_len: u32 = 0;
    for segment in readable {
        if segment.len == 0 {
            return Err(QueueError::EmptySegment);
        }
        readable_len = readable_len.saturating_add(segment.len);
        let next = placement.next(current);
        table.write(current, segment, VIRTQ_DESC_F_NEXT, next);
        last = current;
        current = next;
    }
    let mut writable_len: u32 = 0;
    for segment in writable {
        if segment.len == 0 {
            return Err(QueueError::EmptySegment);
        }
        writable_len = writable_len
            .checked_add(segment.len)
            .ok_or(QueueError::WritableTooLong)?;
        let next = placement.next(current);
        let flags = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT;
        table.write(current, segment, flags, next);
        last = current;
        current = next;
    }
    // End the chain: clear NEXT in the last descriptor's flags. One store here is cheaper than
    // deciding "last or not" for every segment. Its `next` keeps the link written above, which
    // the device ignores without NEXT (section 2.7.5).
    let flags = if writable.is_empty() {
        0
    } else {
        VIRTQ_DESC_F_WRITE
    };
    table.set_flags(last, flags);
    Ok(Written {
        last,
        after: current,
        writable: writable_len,
        posted: writable_len.saturating_add(readable_len),
    })
}

impl<S: BorrowMut<[Slot]>> Virtqueue for SplitQueue<S> {
    fn index(&self) -> u16 {
        self.index
    }

    fn size(&self) -> u16 {
        self.size
    }

    fn free_descriptors(&self) -> u16 {
        self.num_free
    }

    fn in_flight(&self) -> u16 {
        self.in_flight
    }

    fn addresses(&self) -> QueueAddresses {
        let base = self.ring.bus_address();
        QueueAddresses {
            descriptors: base,
            driver: base + self.layout.avail() as u64,
            device: base + self.layout.used() as u64,
        }
    }

    fn add(
        &mut self,
        readable: &[Segment],
        writable: &[Segment],
        indirect: Option<&DmaMemory>,
    ) -> Result<Token, QueueError> {
        let segments = readable.len() + writable.len();
        if segments == 0 {
            return Err(QueueError::EmptyChain);
        }
        // The descriptor table's own mask: the same value as `self.mask`, but the same load
        // too, so the compiler reduces each descriptor index once for the slot and the table.
        let mask = self.view.descriptors.mask();
        let Some(slots) = Self::slots_mut(&mut self.slots, mask) else {
            let provided = self.slots.borrow().len();
            return Err(QueueError::SlotStorage {
                needed: self.size,
                provided,
            });
        };
        let head = self.free_head;
        let (descriptors, chain) = if let Some(table) = indirect {
            if !self.features.indirect {
                return Err(QueueError::IndirectNotNegotiated);
            }
            if !table
                .bus_address()
                .is_multiple_of(size_of::<Descriptor>() as u64)
            {
                return Err(QueueError::IndirectMisaligned);
            }
            // An indirect table's `next` fields are 16-bit, and its length is what the table
            // memory holds; the device's own limit (virtio-scsi `seg_max`) is the caller's.
            let limit = (table.len() / size_of::<Descriptor>()).min(usize::from(u16::MAX));
            if segments > limit {
                return Err(QueueError::ChainTooLong { segments, limit });
            }
            if self.num_free == 0 {
                return Err(QueueError::Full { needed: 1, free: 0 });
            }
            let chain = write_chain(table, readable, writable, 0, &InOrder)?;
            let table_len = u32::from(chain.last + 1) * size_of::<Descriptor>() as u32;
            let entry = Segment::new(table.bus_address(), table_len);
            self.view
                .descriptors
                .write(head, &entry, VIRTQ_DESC_F_INDIRECT, 0);
            self.free_head = link(slots, mask, head);
            // A chain of one descriptor: `hold_chain(slots, mask, head, head)` comes down to
            // this single link.
            set_link(slots, mask, head, head);
            (1, chain)
        } else {
            // A chain that fits in the free descriptors fits in the queue, so the I/O path
            // compares once; the size limit is told apart only when the chain does not fit.
            if segments > usize::from(self.num_free) {
                let limit = usize::from(self.size);
                if segments > limit {
                    return Err(QueueError::ChainTooLong { segments, limit });
                }
                return Err(QueueError::Full {
                    needed: segments as u16,
                    free: self.num_free,
                });
            }
            // At most `num_free`, so a u16.
            let count = segments as u16;
            let free_list = FreeList { slots, mask };
            let chain = write_chain(&self.view.descriptors, readable, writable, head, &free_list)?;
            // The last descriptor's link is the first descriptor still free.
            self.free_head = chain.after;
            hold_chain(slots, mask, head, chain.last);
            (count, chain)
        };
        self.num_free -= descriptors;
        if let Some(slot) = slots.get_mut(usize::from(head) & mask) {
            slot.descriptors = descriptors;
            slot.writable = chain.writable;
            slot.posted = chain.posted;
            slot.in_flight = true;
        }

        let position = usize::from(self.avail_idx);
        self.view
            .avail_ring
            .store_u16(position, 0, head, Ordering::Relaxed);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // ORDERING: Release orders the descriptor (and indirect table) stores and the ring entry
        // above before the new `avail.idx`; it pairs with the device's read barrier after reading
        // `avail.idx` (virtio 1.2 section 2.7.13.3: "The driver MUST perform a suitable memory
        // barrier before the idx update").
        self.view
            .avail_header
            .store_u16(0, HEADER_IDX, self.avail_idx, Ordering::Release);
        self.in_flight += 1;
        if self.avail_idx == self.kicked_avail_idx {
            self.force_kick = true;
        }
        Ok(Token(head))
    }

    fn kick_prepare(&mut self) -> bool {
        let new = self.avail_idx;
        let old = self.kicked_avail_idx;
        if new == old && !self.force_kick {
            return false;
        }
        self.kicked_avail_idx = new;
        let forced = core::mem::take(&mut self.force_kick);
        // ORDERING: a full fence between the Release store of `avail.idx` (in `add`) and the
        // loads of `avail_event` / `used.flags` below. Release alone does not stop a later load
        // from being satisfied before the store is visible (store-load reordering), and then we
        // could read a stale `avail_event` while the device, having re-armed it and re-read a
        // stale `avail.idx`, goes to sleep: a lost notification. It pairs with the device's full
        // barrier between writing `avail_event` (or clearing NO_NOTIFY) and re-reading
        // `avail.idx` (virtio 1.2 section 2.7.13.4: "The driver MUST perform a suitable memory
        // barrier before reading flags or avail_event").
        fence(Ordering::SeqCst);
        let notify = if self.features.event_idx {
            let avail_event = self.view.avail_event.load_u16(0, 0, Ordering::Relaxed);
            need_event(avail_event, new, old)
        } else {
            let flags = self
                .view
                .used_header
                .load_u16(0, HEADER_FLAGS, Ordering::Relaxed);
            flags & VIRTQ_USED_F_NO_NOTIFY == 0
        };
        notify || forced
    }

    fn has_used(&self) -> bool {
        // ORDERING: Relaxed is enough for a hint; `pop_used` reads `used.idx` again with Acquire
        // before touching the used element.
        self.view
            .used_header
            .load_u16(0, HEADER_IDX, Ordering::Relaxed)
            != self.last_used
    }

    fn pop_used(&mut self) -> Result<Option<UsedBuffer>, DeviceError> {
        // ORDERING: Acquire pairs with the device's write barrier between writing a used element
        // and publishing the new `used.idx` (virtio 1.2 sections 2.7.8 and 2.7.14), so the
        // element read below is the one the device wrote.
        let published = self
            .view
            .used_header
            .load_u16(0, HEADER_IDX, Ordering::Acquire);
        let last_seen = self.last_used;
        if published == last_seen {
            return Ok(None);
        }
        if published.wrapping_sub(last_seen) > self.in_flight {
            return Err(DeviceError::UsedIndexJump {
                last_seen,
                published,
            });
        }
        let position = usize::from(last_seen);
        let used_ring = &self.view.used_ring;
        let id = used_ring.load_u32(position, offset_of!(UsedElement, id), Ordering::Relaxed);
        let written = used_ring.load_u32(position, offset_of!(UsedElement, len), Ordering::Relaxed);
        // `id <= mask` is `id < size`; the size is at most 32,768, so such an id is a u16.
        let mask = usize::from(self.mask);
        let found = match Self::slots_mut(&mut self.slots, mask) {
            Some(slots) if id as usize <= mask => {
                slots.get(id as usize).copied().map(|slot| (slots, slot))
            }
            _ => None,
        };
        let Some((slots, slot)) = found else {
            return Err(DeviceError::UsedIdOutOfRange { id });
        };
        let head = id as u16;
        if !slot.in_flight {
            return Err(DeviceError::UsedIdNotInFlight { id: head });
        }
        let written = slot.used_length(head, written)?;
        release_chain(slots, mask, head, self.free_head);
        self.free_head = head;
        self.num_free += slot.descriptors;
        self.in_flight -= 1;
        self.last_used = last_seen.wrapping_add(1);
        // With EVENT_IDX, `used_event` is not moved here (Linux moves it, with a full fence,
        // on every pop while interrupts are enabled). Pops normally run inside the interrupt
        // handler's disable/drain/enable bracket, where that would be wasted; a caller that
        // pops outside it (polling) must finish with `enable_interrupts`, which the interrupt
        // handler that any used chain triggers does anyway.
        Ok(Some(UsedBuffer {
            token: Token(head),
            written,
        }))
    }

    fn disable_interrupts(&mut self) {
        if !self.interrupts_enabled {
            return;
        }
        self.interrupts_enabled = false;
        if self.features.event_idx {
            // With EVENT_IDX, `avail.flags` must stay 0 (section 2.7.7.1); the device interrupts
            // when `used.idx` passes `used_event`. Left alone, `used_event` (= `last_used`, set by
            // `enable_interrupts`) would still trigger one interrupt for the next used chain.
            // Parking it one behind `last_used` puts it as far ahead of the device as the 16-bit
            // index allows: the device is at most `in_flight` (<= 32,768) entries past
            // `last_used`, so it would have to use at least 32,767 more chains before crossing
            // it, and `enable_interrupts` moves it back first.
            let parked = self.last_used.wrapping_sub(1);
            self.view
                .used_event
                .store_u16(0, 0, parked, Ordering::Relaxed);
            self.used_event = parked;
        } else {
            self.avail_flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
            self.view
                .avail_header
                .store_u16(0, HEADER_FLAGS, self.avail_flags, Ordering::Relaxed);
        }
    }

    fn enable_interrupts(&mut self) -> bool {
        let stored = if self.features.event_idx {
            // Interrupt when the device uses the entry at `last_used`, the first not popped.
            let changed = self.used_event != self.last_used;
            if changed {
                self.used_event = self.last_used;
                self.view
                    .used_event
                    .store_u16(0, 0, self.last_used, Ordering::Relaxed);
            }
            changed
        } else {
            let changed = self.avail_flags != 0;
            if changed {
                self.avail_flags = 0;
                self.view
                    .avail_header
                    .store_u16(0, HEADER_FLAGS, 0, Ordering::Relaxed);
            }
            changed
        };
        self.interrupts_enabled = true;
        if stored {
            // ORDERING: a full fence between the store of `used_event` / `avail.flags` above and
            // the load of `used.idx` below; it pairs with the device's full barrier between
            // publishing `used.idx` and reading `used_event` / `avail.flags` to decide whether to
            // interrupt (virtio 1.2 section 2.7.7). Either the device sees our request and
            // interrupts, or we see its new `used.idx` here; without the fence both can miss.
            // When nothing was stored, the previous store was already followed by this fence,
            // so the load below is ordered after it too.
            fence(Ordering::SeqCst);
        }
        self.view
            .used_header
            .load_u16(0, HEADER_IDX, Ordering::Relaxed)
            != self.last_used
    }

    fn detach_next(&mut self) -> Option<Token> {
        if self.in_flight == 0 {
            return None;
        }
        let mask = self.mask;
        let slots = Self::slots_mut(&mut self.slots, usize::from(mask))?;
        for step in 0..=mask {
            let head = self.detach_cursor.wrapping_add(step) & mask;
            let slot = slots.get(usize::from(head)).copied();
            if let Some(slot) = slot.filter(|slot| slot.in_flight) {
                release_chain(slots, usize::from(mask), head, self.free_head);
                self.free_head = head;
                self.num_free += slot.descriptors;
                self.in_flight -= 1;
                self.detach_cursor = head.wrapping_add(1) & mask;
                return Some(Token(head));
            }
        }
        None
    }

    fn reset(&mut self) {
        self.view.zero(self.size);
        let mask = self.mask;
        let slots = self.slots.borrow_mut();
        for (index, slot) in (0..self.size).zip(slots.iter_mut()) {
            // The last slot links back to 0; `num_free` says where the list ends, and every
            // link stays a valid index.
            *slot = Slot {
                next: index.wrapping_add(1) & mask,
                ..Slot::EMPTY
            };
        }
        self.free_head = 0;
        self.num_free = self.size;
        self.in_flight = 0;
        self.avail_idx = 0;
        self.kicked_avail_idx = 0;
        self.force_kick = false;
        self.last_used = 0;
        self.avail_flags = 0;
        self.used_event = 0;
        self.interrupts_enabled = true;
        self.detach_cursor = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::format;
    use std::string::String;
    use std::vec;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::fake::FakeHal;
    use crate::hal::Hal;

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
    fn run_batches(
        features: QueueFeatures,
        batches: u32,
        per_batch: u16,
        rearm: bool,
    ) -> (u32, u32) {
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
            indirect: bool,
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
            3 => (lens(4usize), lens(4usize), any::<bool>())
                .prop_map(|(readable, writable, indirect)| Step::Add { readable, writable, indirect }),
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

        fn add(&mut self, readable: &[u32], writable: &[u32], indirect: bool) {
            let free = self.free();
            let readable = self.segments(readable);
            let writable = self.segments(writable);
            let count = readable.len() + writable.len();
            let table = if indirect {
                self.free_tables.pop()
            } else {
                None
            };
            let result = self
                .f
                .queue
                .add(&readable, &writable, table.map(|t| &self.tables[t]));
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
                    indirect,
                } => self.add(readable, writable, *indirect),
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
}
