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
    DeviceError, IndirectChain, QueueAddresses, QueueError, QueueFeatures, RingFormat, Slot, Token,
    UsedBuffer, Virtqueue, need_event_since,
};
use crate::dma::{DmaArray, DmaMemory, DmaTable};
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
    index: u16,
    /// The queue size, which is also the whole [`SplitLayout`].
    size: u16,
    features: QueueFeatures,
    /// First free descriptor (meaningless when `num_free` is 0).
    free_head: u16,
    num_free: u16,
    in_flight: u16,
    /// Shadow of `avail.idx`: the value last published.
    avail_idx: u16,
    /// Chains published since the previous `kick_prepare`: the length of the window
    /// `vring_need_event` looks for `avail_event` in, ending at `avail_idx`; 65,536 or more
    /// cover the whole index space, so the next `kick_prepare` notifies unconditionally
    /// ([`need_event_since`]). One counter, bumped on each publish and read once per
    /// `kick_prepare` (64-bit: it cannot wrap back to 0).
    unkicked: u64,
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

/// An indirect table, checked once against the caller's memory for exactly the chain's
/// descriptors ([`DmaMemory::table`]): each access compares the index with that count, one
/// compare per descriptor once the compiler merges the four, instead of a bounds check per
/// field on a byte offset.
impl DescriptorTable for DmaTable<{ size_of::<Descriptor>() }, 8> {
    #[inline]
    fn write(&self, index: u16, segment: &Segment, flags: u16, next: u16) {
        let index = usize::from(index);
        let relaxed = Ordering::Relaxed;
        self.store_u64(
            index,
            offset_of!(Descriptor, addr),
            segment.address,
            relaxed,
        );
        self.store_u32(index, offset_of!(Descriptor, len), segment.len, relaxed);
        self.store_u16(index, offset_of!(Descriptor, flags), flags, relaxed);
        self.store_u16(index, offset_of!(Descriptor, next), next, relaxed);
    }

    #[inline]
    fn set_flags(&self, index: u16, flags: u16) {
        let field = offset_of!(Descriptor, flags);
        self.store_u16(usize::from(index), field, flags, Ordering::Relaxed);
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
            index,
            size,
            features,
            free_head: 0,
            num_free: size,
            in_flight: 0,
            avail_idx: 0,
            unkicked: 0,
            last_used: 0,
            avail_flags: 0,
            used_event: 0,
            interrupts_enabled: true,
            detach_cursor: 0,
        };
        queue.reset();
        Ok(queue)
    }

    /// `size - 1`: the size is a power of two, so ring positions are `idx & mask`.
    #[inline]
    const fn mask(&self) -> u16 {
        self.size - 1
    }

    /// The ring layout (offsets of every field), for diagnostics and device models.
    #[must_use]
    pub const fn layout(&self) -> SplitLayout {
        SplitLayout::new(self.size)
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

    /// Puts chain `head` (written, its slot filled) in the available ring and publishes it.
    #[expect(
        clippy::inline_always,
        reason = "the tail of both adds; out of line it costs each I/O a call (cargo xtask bench)"
    )]
    #[inline(always)]
    fn publish(&mut self, head: u16) -> Token {
        // Loaded once and kept in a register: the ring stores below may alias `self` for the
        // compiler, which would otherwise load the index again after each.
        let position = self.avail_idx;
        self.view
            .avail_ring
            .store_u16(usize::from(position), 0, head, Ordering::Relaxed);
        let published = position.wrapping_add(1);
        self.avail_idx = published;
        // ORDERING: Release orders the descriptor (and indirect table) stores and the ring entry
        // above before the new `avail.idx`; it pairs with the device's read barrier after reading
        // `avail.idx` (virtio 1.2 section 2.7.13.3: "The driver MUST perform a suitable memory
        // barrier before the idx update"). An indirect table written before the queue's lock
        // was taken (`add_table`) is covered too: its stores happen before this call (earlier
        // in this thread, or in one whose hand-over to this thread synchronised with it), and
        // happens-before is transitive through the release.
        self.view
            .avail_header
            .store_u16(0, HEADER_IDX, published, Ordering::Release);
        self.in_flight += 1;
        self.unkicked += 1;
        Token(head)
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

/// Writes free descriptor `head` as the ring's entry for an indirect `table` and takes it off
/// the free list as a chain of one (what `hold_chain(slots, mask, head, head)` comes down to);
/// returns the new free head. Shared by `add` with a table and `add_table`.
#[expect(
    clippy::inline_always,
    reason = "inside StartIo's one ring call; out of line it costs each I/O a call (rvscsi's cargo xtask bench)"
)]
#[inline(always)]
fn put_indirect_entry(
    descriptors: &DmaArray<{ size_of::<Descriptor>() }, 8>,
    slots: &mut [Slot],
    mask: usize,
    head: u16,
    table: Segment,
) -> u16 {
    descriptors.write(head, &table, VIRTQ_DESC_F_INDIRECT, 0);
    let free_head = link(slots, mask, head);
    set_link(slots, mask, head, head);
    free_head
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
#[expect(
    clippy::inline_always,
    reason = "one call site per table type; out of line, the call and its Result cost an I/O about 30 instructions"
)]
#[inline(always)]
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
            driver: base + self.layout().avail() as u64,
            device: base + self.layout().used() as u64,
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
        // The descriptor table's own mask (`size - 1`, the one mask the queue keeps), the same
        // load for the slot and the table, so the compiler reduces each index once.
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
            // The chain's descriptors are checked against the memory once, here.
            let descriptors_of_chain = table
                .table::<{ size_of::<Descriptor>() }, 8>(0, segments)
                .filter(|_| u16::try_from(segments).is_ok());
            let Some(chain_table) = descriptors_of_chain else {
                let limit = (table.len() / size_of::<Descriptor>()).min(usize::from(u16::MAX));
                return Err(QueueError::ChainTooLong { segments, limit });
            };
            if self.num_free == 0 {
                return Err(QueueError::Full { needed: 1, free: 0 });
            }
            let chain = write_chain(&chain_table, readable, writable, 0, &InOrder)?;
            let table_len = u32::from(chain.last + 1) * size_of::<Descriptor>() as u32;
            self.free_head = put_indirect_entry(
                &self.view.descriptors,
                slots,
                mask,
                head,
                Segment::new(table.bus_address(), table_len),
            );
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

        Ok(self.publish(head))
    }

    #[expect(
        clippy::inline_always,
        reason = "StartIo's one ring call; out of line it costs each I/O a call and a Result"
    )]
    #[inline(always)]
    fn add_table(&mut self, chain: &IndirectChain) -> Result<Token, QueueError> {
        chain.check_for(RingFormat::Split, self.features.indirect)?;
        if self.num_free == 0 {
            return Err(QueueError::Full { needed: 1, free: 0 });
        }
        let mask = self.view.descriptors.mask();
        let Some(slots) = Self::slots_mut(&mut self.slots, mask) else {
            let provided = self.slots.borrow().len();
            return Err(QueueError::SlotStorage {
                needed: self.size,
                provided,
            });
        };
        let head = self.free_head;
        self.free_head = put_indirect_entry(
            &self.view.descriptors,
            slots,
            mask,
            head,
            Segment::new(chain.table(), chain.table_len()),
        );
        self.num_free -= 1;
        if let Some(slot) = slots.get_mut(usize::from(head) & mask) {
            slot.descriptors = 1;
            slot.writable = chain.writable();
            slot.posted = chain.posted();
            slot.in_flight = true;
        }
        Ok(self.publish(head))
    }

    #[expect(
        clippy::inline_always,
        reason = "a driver's submission path asks on every request; out of line it costs a call and the queue's fields loaded again (rvscsi's cargo xtask bench)"
    )]
    #[inline(always)]
    fn kick_prepare(&mut self) -> bool {
        let added = core::mem::take(&mut self.unkicked);
        if added == 0 {
            return false;
        }
        let new = self.avail_idx;
        // ORDERING: a full fence between the Release store of `avail.idx` (in `add`) and the
        // loads of `avail_event` / `used.flags` below. Release alone does not stop a later load
        // from being satisfied before the store is visible (store-load reordering), and then we
        // could read a stale `avail_event` while the device, having re-armed it and re-read a
        // stale `avail.idx`, goes to sleep: a lost notification. It pairs with the device's full
        // barrier between writing `avail_event` (or clearing NO_NOTIFY) and re-reading
        // `avail.idx` (virtio 1.2 section 2.7.13.4: "The driver MUST perform a suitable memory
        // barrier before reading flags or avail_event").
        fence(Ordering::SeqCst);
        if self.features.event_idx {
            let avail_event = self.view.avail_event.load_u16(0, 0, Ordering::Relaxed);
            // 65,536 chains or more since the last call wrap the window to all of the index
            // space: every event is in it, which `need_event_since` answers with the one compare.
            need_event_since(avail_event, new, added)
        } else {
            let flags = self
                .view
                .used_header
                .load_u16(0, HEADER_FLAGS, Ordering::Relaxed);
            flags & VIRTQ_USED_F_NO_NOTIFY == 0 || added > u64::from(u16::MAX)
        }
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
        let mask = self.view.descriptors.mask();
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
        let mask = self.mask();
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
        let mask = self.mask();
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
        self.unkicked = 0;
        self.last_used = 0;
        self.avail_flags = 0;
        self.used_event = 0;
        self.interrupts_enabled = true;
        self.detach_cursor = 0;
    }
}

#[cfg(test)]
mod tests;
