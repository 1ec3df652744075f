//! The packed virtqueue (virtio 1.x section 2.8): one descriptor ring both sides write, plus
//! the driver and device event suppression structures.
//!
//! Section numbers are those of virtio 1.2 (section 2.8 "Packed Virtqueues"); each reference
//! also names the section's title, which is stable across spec versions.
//!
//! # How the ring is driven
//! - **Buffer ids are tokens.** An id comes from a free list kept in the caller's [`Slot`]s;
//!   per id the slot remembers how many ring descriptors the chain occupies (the driver skips
//!   that many when the device reports the id used) and the writable length posted (the bound
//!   for the device's `len`).
//! - **Wrap counters.** The driver keeps a Driver Ring Wrap Counter for the positions it makes
//!   available and a second one for the positions it reads used descriptors from; both start at
//!   1 and flip each time their position passes the end of the ring (section 2.8.1). They are
//!   stored as the AVAIL/USED flag bits they imply, so marking a descriptor costs one OR.
//! - **Free space.** Every in-flight chain occupies exactly the ring positions between the used
//!   and the available position, so the free descriptor count is all the bookkeeping needed to
//!   know that the next positions may be overwritten.
//! - **Nothing read back is trusted.** The device writes `id`, `len` and `flags` of used
//!   descriptors; each is checked against the driver-private slots before anything changes.
//!   `len` counts even without the WRITE flag (QEMU never sets it in used descriptors), always
//!   bounded by the writable length posted.
//! - **Interrupt suppression.** With `VIRTIO_F_RING_EVENT_IDX`, enabled interrupts mean
//!   `RING_EVENT_FLAGS_DESC` at the used position, and `pop_used` moves that position along as
//!   it consumes, so a driver that drains without disabling interrupts is still woken next time.
#![forbid(unsafe_code)]

use core::borrow::BorrowMut;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{Ordering, fence};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{
    DeviceError, IndirectChain, QueueAddresses, QueueError, QueueFeatures, RingFormat, Slot, Token,
    UsedBuffer, Virtqueue,
};
use crate::dma::{DmaArray, DmaMemory, DmaTable};
use crate::hal::Segment;

/// `struct pvirtq_desc`: one descriptor of the packed ring or of an indirect table (virtio 1.x
/// section 2.8.13, "The Virtqueue Descriptor Format").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Descriptor {
    /// Buffer Address: bus address of the element (an indirect table for `VIRTQ_DESC_F_INDIRECT`).
    pub addr: U64,
    /// Buffer Length: of the element when available, bytes written by the device when used.
    pub len: U32,
    /// Buffer ID: names the buffer the descriptor belongs to.
    pub id: U16,
    /// `VIRTQ_DESC_F_*` bits.
    pub flags: U16,
}

const _: () = assert!(size_of::<Descriptor>() == 16);

/// `struct pvirtq_event_suppress`: the driver and device event suppression structures (virtio
/// 1.x section 2.8.14, "Event Suppression Structure Format").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EventSuppress {
    /// `desc_event_off` (bits 0..=14) and `desc_event_wrap` (bit 15), used with
    /// [`RING_EVENT_FLAGS_DESC`].
    pub desc: U16,
    /// `desc_event_flags` (bits 0..=1): one of the `RING_EVENT_FLAGS_*` values; the rest is
    /// reserved.
    pub flags: U16,
}

const _: () = assert!(size_of::<EventSuppress>() == 4);

/// The descriptor continues in the next ring position (section 2.8.6, "Next Flag").
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// The element is device-writable; in a used descriptor, the device wrote data (section 2.8.3).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// The element is an indirect descriptor table (section 2.8.7, "Indirect Flag").
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Available flag, set to the driver's wrap counter (section 2.8.1, "Ring Wrap Counters").
pub const VIRTQ_DESC_F_AVAIL: u16 = 1 << 7;
/// Used flag, set by the device to its wrap counter (section 2.8.1).
pub const VIRTQ_DESC_F_USED: u16 = 1 << 15;
/// Event suppression: notify for every event (section 2.8.10).
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0x0;
/// Event suppression: do not notify.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 0x1;
/// Event suppression: notify when the descriptor named by `desc` is made available / used
/// (only with `VIRTIO_F_RING_EVENT_IDX`).
pub const RING_EVENT_FLAGS_DESC: u16 = 0x2;
/// The `desc_event_flags` field's bits inside [`EventSuppress::flags`].
const RING_EVENT_FLAGS_MASK: u16 = 0x3;
/// `desc_event_wrap`: the wrap counter bit inside [`EventSuppress::desc`].
const DESC_EVENT_WRAP: u16 = 1 << 15;
/// `desc_event_off`: the ring offset bits inside [`EventSuppress::desc`].
const DESC_EVENT_OFF_MASK: u16 = DESC_EVENT_WRAP - 1;

/// Both wrap-counter flag bits; XOR with it flips a wrap counter kept as flag bits.
const WRAP_FLAGS: u16 = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;

// The wrap counters kept as flag bits turn into `desc_event_wrap` by masking (USED) or by one
// shift (AVAIL); `used_event` and `event_crossed` rely on it.
const _: () = assert!(VIRTQ_DESC_F_USED == DESC_EVENT_WRAP);
const _: () = assert!(VIRTQ_DESC_F_AVAIL << 8 == DESC_EVENT_WRAP);

/// Largest packed queue size (section 2.8: "up to 2^15 entries").
pub const MAX_QUEUE_SIZE: u16 = 1 << 15;

/// Alignment of the descriptor ring (section 2.8.10.1, "Structure Size and Alignment"); the
/// event suppression structures that follow it need 4, which the layout gives them.
pub const RING_ALIGN: usize = 16;

const DESC_SIZE: usize = size_of::<Descriptor>();
const DESC_ADDR: usize = offset_of!(Descriptor, addr);
const DESC_LEN: usize = offset_of!(Descriptor, len);
const DESC_ID: usize = offset_of!(Descriptor, id);
const DESC_FLAGS: usize = offset_of!(Descriptor, flags);
const EVENT_SIZE: usize = size_of::<EventSuppress>();

/// Byte offset of ring position (or table entry) `position`; a shift, since descriptors are 16
/// bytes.
#[inline]
fn desc_offset(position: u16) -> usize {
    usize::from(position) * DESC_SIZE
}

/// The parts of the ring checked once against the ring memory, at creation, so that no ring
/// access on the I/O path computes a byte offset or checks one: ring positions are compared
/// with the queue size by [`DmaTable`] (they stay below it by construction), and the event
/// suppression structures are one-element arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RingView {
    /// The descriptor ring (section 2.8.13), one element per ring position.
    descriptors: DmaTable<DESC_SIZE, 8>,
    /// The driver event suppression structure (section 2.8.14): two 16-bit fields.
    driver_event: DmaArray<EVENT_SIZE, 4>,
    /// The device event suppression structure: two 16-bit fields.
    device_event: DmaArray<EVENT_SIZE, 4>,
}

impl RingView {
    /// Zeroes every field of the ring, each at the size it is always accessed with (not
    /// [`DmaMemory::zero`]'s 64-bit words over 16-bit fields: one access size per location).
    /// Relaxed: only while the device does not own the ring (reset).
    fn zero(&self) {
        let relaxed = Ordering::Relaxed;
        for index in 0..self.descriptors.count() {
            self.descriptors.store_u64(index, DESC_ADDR, 0, relaxed);
            self.descriptors.store_u32(index, DESC_LEN, 0, relaxed);
            self.descriptors.store_u16(index, DESC_ID, 0, relaxed);
            self.descriptors.store_u16(index, DESC_FLAGS, 0, relaxed);
        }
        for event in [&self.driver_event, &self.device_event] {
            event.store_u16(0, EVENT_OFF_WRAP, 0, relaxed);
            event.store_u16(0, EVENT_FLAGS, 0, relaxed);
        }
    }

    /// The view of `ring` (at least [`PackedQueue::ring_len`] bytes for `size`), or `None` if
    /// some part does not fit (not possible for such a ring, but checked rather than assumed).
    fn new(ring: &DmaMemory, size: u16) -> Option<Self> {
        let driver_event = desc_offset(size);
        Some(Self {
            descriptors: ring.table(0, usize::from(size))?,
            driver_event: ring.array(driver_event, 1)?,
            device_event: ring.array(driver_event + EVENT_SIZE, 1)?,
        })
    }
}

/// Offsets of the two fields of an event suppression structure (section 2.8.10).
const EVENT_OFF_WRAP: usize = 0;
const EVENT_FLAGS: usize = 2;

const _: () = assert!(DESC_LEN == 8 && DESC_ID == 12 && DESC_FLAGS == 14);

/// What the flags at the driver's used position say, for an in-flight position.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UsedState {
    /// AVAIL == USED == the used wrap counter: the device wrote a used descriptor here.
    Used,
    /// AVAIL matches the used wrap counter, USED does not: still the driver's available
    /// descriptor.
    Pending,
    /// AVAIL does not match the wrap counter the driver wrote it with: only the device can have
    /// written that, and section 2.8.1 forbids it.
    Mismatch,
}

/// Byte totals of a chain being added: what the device may write, and the whole chain (the
/// bound no used length can exceed).
#[derive(Clone, Copy, Debug)]
struct ChainLengths {
    writable: u32,
    total: u32,
}

/// A packed virtqueue (virtio 1.x section 2.8), driver side.
///
/// Ring memory is [`PackedQueue::ring_len`] bytes at [`RING_ALIGN`]: the descriptor ring
/// (`16 * size` bytes), then the driver event suppression structure, then the device event
/// suppression structure. Slot storage holds at least `size` [`Slot`]s.
///
/// [`Virtqueue::has_used`] also answers `true` when the used position holds flags the spec
/// forbids there, so that the following [`Virtqueue::pop_used`] reports the error.
#[derive(Debug)]
pub struct PackedQueue<S: BorrowMut<[Slot]>> {
    /// The queue's index on the device.
    index: u16,
    /// Queue size: ring positions and buffer ids.
    size: u16,
    /// Exactly [`PackedQueue::ring_len`] bytes of ring memory.
    ring: DmaMemory,
    /// The ring's parts, checked once.
    view: RingView,
    /// Driver-private per-id state; only the first `size` entries are used.
    slots: S,
    /// Negotiated ring features.
    features: QueueFeatures,
    /// Byte offset of the driver event suppression structure (the device's follows it).
    driver_event_offset: usize,
    /// Ring position the next descriptor is made available at.
    next_avail: u16,
    /// AVAIL/USED bits for descriptors made available at `next_avail`: `VIRTQ_DESC_F_AVAIL` while
    /// the Driver Ring Wrap Counter is 1, `VIRTQ_DESC_F_USED` while it is 0.
    avail_wrap_flags: u16,
    /// Ring descriptors not occupied by in-flight chains.
    free_descriptors: u16,
    /// Chains in flight (ids allocated).
    in_flight: u16,
    /// Head of the free id list, linked through [`Slot::next`]; meaningful while
    /// `in_flight < size`.
    free_head: u16,
    /// Ring descriptors made available since the last [`Virtqueue::kick_prepare`] (saturating).
    added_since_kick: u16,
    /// Ring position of the next used descriptor.
    next_used: u16,
    /// AVAIL and USED bits a used descriptor at `next_used` carries: both while the used wrap
    /// counter is 1, neither while it is 0.
    used_wrap_flags: u16,
    /// Last value written to the driver event suppression structure, as a little-endian `u32`
    /// (`desc` in the low half, `flags` in the high half).
    driver_event_shadow: u32,
    /// `pop_used` moved the `RING_EVENT_FLAGS_DESC` event offset and no full fence followed yet;
    /// one is due before reporting the ring empty.
    event_store_unfenced: bool,
    /// Where [`Virtqueue::detach_next`] resumes its scan.
    detach_cursor: u16,
}

impl<S: BorrowMut<[Slot]>> PackedQueue<S> {
    /// Alignment of the ring memory; see [`RING_ALIGN`].
    pub const RING_ALIGN: usize = RING_ALIGN;

    /// Bytes of ring memory a queue of `size` needs: `16 * size` for the descriptor ring, then
    /// 4 for the driver and 4 for the device event suppression structure.
    #[must_use]
    pub const fn ring_len(size: u16) -> usize {
        size as usize * DESC_SIZE + 2 * EVENT_SIZE
    }

    /// Creates queue `index` of `size` descriptors in `ring` (at least
    /// [`PackedQueue::ring_len`] bytes, bus address aligned to [`RING_ALIGN`]), keeping
    /// driver-private state in `slots` (at least `size` entries). The ring memory is zeroed
    /// (section 2.8.13: "The descriptor ring is zero-initialized").
    ///
    /// # Errors
    /// [`QueueError::InvalidSize`] unless `1 <= size <= 32768`; [`QueueError::RingMemory`] if
    /// `ring` is too small or misaligned; [`QueueError::SlotStorage`] if `slots` is too short.
    pub fn new(
        index: u16,
        size: u16,
        ring: DmaMemory,
        slots: S,
        features: QueueFeatures,
    ) -> Result<Self, QueueError> {
        if size == 0 || size > MAX_QUEUE_SIZE {
            return Err(QueueError::InvalidSize(size));
        }
        let needed = Self::ring_len(size);
        let memory_error = QueueError::RingMemory {
            needed,
            provided: ring.len(),
        };
        if !ring.bus_address().is_multiple_of(RING_ALIGN as u64) {
            return Err(memory_error);
        }
        let ring = ring.sub(0, needed).ok_or(memory_error)?;
        let view = RingView::new(&ring, size).ok_or(memory_error)?;
        let provided = slots.borrow().len();
        if provided < usize::from(size) {
            return Err(QueueError::SlotStorage {
                needed: size,
                provided,
            });
        }
        let mut queue = Self {
            index,
            size,
            ring,
            view,
            slots,
            features,
            driver_event_offset: desc_offset(size),
            next_avail: 0,
            avail_wrap_flags: VIRTQ_DESC_F_AVAIL,
            free_descriptors: size,
            in_flight: 0,
            free_head: 0,
            added_since_kick: 0,
            next_used: 0,
            used_wrap_flags: WRAP_FLAGS,
            driver_event_shadow: 0,
            event_store_unfenced: false,
            detach_cursor: 0,
        };
        queue.reset();
        Ok(queue)
    }

    /// The negotiated features this queue was created with.
    #[must_use]
    pub const fn features(&self) -> QueueFeatures {
        self.features
    }

    /// Allocates a buffer id for a chain of `descriptors` ring descriptors with `writable` bytes
    /// posted, or `None` if the ring lacks the descriptors or no id is free (the latter cannot
    /// happen while the counts are consistent, since every chain takes at least one descriptor,
    /// but it is checked rather than assumed).
    #[expect(
        clippy::inline_always,
        reason = "on every add; out of line it costs each I/O a call (packed ring under cargo xtask bench)"
    )]
    #[inline(always)]
    fn allocate_id(&mut self, descriptors: u16, lengths: ChainLengths) -> Option<u16> {
        if descriptors > self.free_descriptors || self.in_flight >= self.size {
            return None;
        }
        let id = self.free_head;
        let slot = self.slots.borrow_mut().get_mut(usize::from(id))?;
        self.free_head = slot.next;
        *slot = Slot {
            next: 0,
            descriptors,
            writable: lengths.writable,
            posted: lengths.total,
            in_flight: true,
        };
        self.in_flight += 1;
        self.free_descriptors -= descriptors;
        Some(id)
    }

    /// Returns `id` (in flight, occupying `descriptors`) to the free list.
    fn release_id(&mut self, id: u16, descriptors: u16) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(usize::from(id)) {
            *slot = Slot {
                next: self.free_head,
                ..Slot::EMPTY
            };
            self.free_head = id;
            self.in_flight -= 1;
            self.free_descriptors += descriptors;
        }
    }

    /// Classifies `flags` read at the used position, which holds an in-flight descriptor.
    #[inline]
    fn used_state(&self, flags: u16) -> UsedState {
        let bits = flags & WRAP_FLAGS;
        if bits == self.used_wrap_flags {
            UsedState::Used
        } else if bits & VIRTQ_DESC_F_AVAIL == self.used_wrap_flags & VIRTQ_DESC_F_AVAIL {
            UsedState::Pending
        } else {
            UsedState::Mismatch
        }
    }

    /// Loads the flags at the used position.
    #[inline]
    fn load_used_flags(&self) -> u16 {
        // ORDERING: Acquire pairs with the device's barrier before it writes a used descriptor's
        // flags (section 2.8.22, "Receiving Used Buffers From The Device": the driver's
        // `read_memory_barrier()` after seeing the flags), so the `id` and `len` read next are
        // the ones the device wrote with these flags.
        self.view
            .descriptors
            .load_u16(usize::from(self.next_used), DESC_FLAGS, Ordering::Acquire)
    }

    /// `desc_event_off`/`desc_event_wrap` naming the used position and its wrap counter.
    #[inline]
    fn used_event(&self) -> u16 {
        // `used_wrap_flags` is either both flags or neither, and USED is the wrap bit's place.
        self.next_used | (self.used_wrap_flags & VIRTQ_DESC_F_USED)
    }

    /// Writes the driver event suppression structure (`flags << 16 | off_wrap`) if `value`
    /// differs from what is there: both 16-bit fields, each at its own size, since the device
    /// reads them as two 16-bit fields and one access size per field keeps the ring free of
    /// mixed-size accesses (which Miri's weak-memory emulation rejects).
    #[inline]
    fn write_driver_event(&mut self, value: u32) {
        if value == self.driver_event_shadow {
            return;
        }
        self.view
            .driver_event
            .store_u16(0, EVENT_OFF_WRAP, value as u16, Ordering::Relaxed);
        // ORDERING: Release after the offset, so a device that sees the new flags (with an
        // acquire load) sees the offset they go with (section 2.8.10), as a single store of
        // both fields did. Callers that need the store ordered before a later load fence
        // after it.
        self.view
            .driver_event
            .store_u16(0, EVENT_FLAGS, (value >> 16) as u16, Ordering::Release);
        self.driver_event_shadow = value;
    }

    /// Whether the driver event suppression structure currently asks for an interrupt at a
    /// descriptor (`RING_EVENT_FLAGS_DESC`).
    #[inline]
    fn driver_event_is_desc(&self) -> bool {
        (self.driver_event_shadow >> 16) as u16 == RING_EVENT_FLAGS_DESC
    }

    /// Whether the device event `desc` (`desc_event_off` + `desc_event_wrap`) names one of the
    /// `added` descriptors made available just before `next_avail` (`added < size`).
    ///
    /// Positions are laid on a line where the current lap is `0 .. size` and the previous lap
    /// is `-size .. 0`; the descriptors just made available are then `next_avail - added ..
    /// next_avail`, and the event is at its offset in the lap its wrap counter names. An event
    /// in the lap after the current one maps onto the previous lap and can only cause a
    /// spurious notification, which the spec allows; a missed one cannot happen.
    fn event_crossed(&self, desc: u16, added: u16) -> bool {
        let offset = desc & DESC_EVENT_OFF_MASK;
        if offset >= self.size {
            // Not a ring position: notify rather than guess.
            return true;
        }
        // The Driver Ring Wrap Counter is 1 exactly when AVAIL is set in `avail_wrap_flags`, so
        // the event's wrap bit and AVAIL moved to bit 15 differ when the event is in the other
        // lap (the previous one, on the line above).
        let wrap_as_event_bit = (self.avail_wrap_flags & VIRTQ_DESC_F_AVAIL) << 8;
        let lap_back = if (desc ^ wrap_as_event_bit) & DESC_EVENT_WRAP == 0 {
            0
        } else {
            u32::from(self.size)
        };
        // How far before `next_avail` the event lies: the event is one of the `added` just
        // made available when `1 <= distance <= added`. A negative distance (an event ahead,
        // not yet reached) wraps to a large u32 and fails the test, as does 0.
        let distance = (u32::from(self.next_avail) + lap_back).wrapping_sub(u32::from(offset));
        distance.wrapping_sub(1) < u32::from(added)
    }

    /// Validates a chain before anything is written: no empty segment, writable total fits in
    /// 32 bits. Returns the writable total and the whole chain's (saturating).
    fn check_segments(
        readable: &[Segment],
        writable: &[Segment],
    ) -> Result<ChainLengths, QueueError> {
        let mut readable_total: u32 = 0;
        for segment in readable {
            if segment.len == 0 {
                return Err(QueueError::EmptySegment);
            }
            readable_total = readable_total.saturating_add(segment.len);
        }
        let mut writable_total: u32 = 0;
        for segment in writable {
            if segment.len == 0 {
                return Err(QueueError::EmptySegment);
            }
            writable_total = writable_total
                .checked_add(segment.len)
                .ok_or(QueueError::WritableTooLong)?;
        }
        Ok(ChainLengths {
            writable: writable_total,
            total: writable_total.saturating_add(readable_total),
        })
    }

    /// Writes the chain as `segments` ring descriptors; validation is done.
    fn add_direct(
        &mut self,
        readable: &[Segment],
        writable: &[Segment],
        segments: usize,
        lengths: ChainLengths,
    ) -> Result<Token, QueueError> {
        // A chain that fits in the free descriptors fits in the ring, so the I/O path compares
        // once; the ring size limit is told apart only when the chain does not fit.
        if segments > usize::from(self.free_descriptors) {
            let limit = usize::from(self.size);
            if segments > limit {
                return Err(QueueError::ChainTooLong { segments, limit });
            }
            return Err(QueueError::Full {
                // `segments <= size <= 32768` here, so this is exact.
                needed: segments as u16,
                free: self.free_descriptors,
            });
        }
        // At most `free_descriptors`, so a u16.
        let needed = segments as u16;
        let id = self.allocate_id(needed, lengths).ok_or(QueueError::Full {
            needed,
            free: self.free_descriptors,
        })?;

        let head = self.next_avail;
        let size = self.size;
        let wrap_flags = self.avail_wrap_flags;
        // A copy, so the table's count stays in a register across the stores.
        let descriptors = self.view.descriptors;
        // The chain takes positions `head + index`; those at or past the end of the ring (the
        // table's count, equal to `size`) are in the next lap. Usually none is: then no
        // descriptor needs the wrap test, and the compiler, knowing `head + segments < count`,
        // drops the table's per-descriptor bounds checks.
        let count = descriptors.count();
        let crosses_end = usize::from(head) + segments >= count;
        let mut head_flags = 0;
        let last = needed - 1;
        let mut index: u16 = 0;
        for (list, write) in [(readable, 0), (writable, VIRTQ_DESC_F_WRITE)] {
            for segment in list {
                // Section 2.8.6: NEXT on all but the last; section 2.8.17 ("Scatter-Gather
                // Support"): AVAIL/USED/WRITE right in every descriptor, not just the first.
                let next = if index == last { 0 } else { VIRTQ_DESC_F_NEXT };
                let mut flags = write | wrap_flags | next;
                let mut at = usize::from(head) + usize::from(index);
                if crosses_end && at >= count {
                    // Section 2.8.1: the wrap counter flips after the last ring position.
                    at -= count;
                    flags ^= WRAP_FLAGS;
                }
                // ORDERING: Relaxed stores: nothing reads this chain before the Release store
                // of the head's flags below publishes it.
                descriptors.store_u64(at, DESC_ADDR, segment.address, Ordering::Relaxed);
                // The spec needs the id only in the last descriptor (section 2.8.6); every
                // descriptor gets it, which the spec allows and which costs nothing here.
                if index == 0 {
                    descriptors.store_u32(at, DESC_LEN, segment.len, Ordering::Relaxed);
                    descriptors.store_u16(at, DESC_ID, id, Ordering::Relaxed);
                    head_flags = flags;
                } else {
                    // Not the head, so unpublished until the head's flags: every field at its
                    // own size, as the device reads it (no mixed-size accesses).
                    descriptors.store_u32(at, DESC_LEN, segment.len, Ordering::Relaxed);
                    descriptors.store_u16(at, DESC_ID, id, Ordering::Relaxed);
                    descriptors.store_u16(at, DESC_FLAGS, flags, Ordering::Relaxed);
                }
                index += 1;
            }
        }
        // ORDERING: Release pairs with the device's read barrier after it sees the head's
        // AVAIL flag. The driver writes the flags of the first descriptor last (section
        // 2.8.21.1, "Placing Available Buffers Into The Descriptor Ring", and 2.8.21.1.1,
        // "Updating flags": a memory barrier before the flags update), so the device never
        // sees a partial chain, nor the caller's buffer contents older than the chain.
        descriptors.store_u16(usize::from(head), DESC_FLAGS, head_flags, Ordering::Release);
        let mut next_avail = head + needed;
        if next_avail >= size {
            next_avail -= size;
            self.avail_wrap_flags = wrap_flags ^ WRAP_FLAGS;
        }
        self.next_avail = next_avail;
        self.added_since_kick = self.added_since_kick.saturating_add(needed);
        Ok(Token(id))
    }

    /// Writes the chain into `table` and one ring descriptor pointing at it; validation of the
    /// segments is done.
    fn add_indirect(
        &mut self,
        readable: &[Segment],
        writable: &[Segment],
        segments: usize,
        lengths: ChainLengths,
        table: &DmaMemory,
    ) -> Result<Token, QueueError> {
        if !self.features.indirect {
            return Err(QueueError::IndirectNotNegotiated);
        }
        if !table.bus_address().is_multiple_of(DESC_SIZE as u64) {
            return Err(QueueError::IndirectMisaligned);
        }
        // The table's length goes into a 32-bit `len`, which bounds it too.
        let limit = (table.len() / DESC_SIZE).min(u32::MAX as usize / DESC_SIZE);
        if segments > limit {
            return Err(QueueError::ChainTooLong { segments, limit });
        }
        let table_len = (segments * DESC_SIZE) as u32;
        let id = self.allocate_id(1, lengths).ok_or(QueueError::Full {
            needed: 1,
            free: self.free_descriptors,
        })?;

        let mut offset = 0;
        for (list, write) in [(readable, 0), (writable, VIRTQ_DESC_F_WRITE)] {
            for segment in list {
                // Section 2.8.7: WRITE is the only valid flag in an indirect descriptor and the
                // Buffer ID is reserved (written as zero). ORDERING: Relaxed, published by the
                // Release store of the ring descriptor's flags below.
                table.store_u64(offset + DESC_ADDR, segment.address, Ordering::Relaxed);
                table.store_u32(offset + DESC_LEN, segment.len, Ordering::Relaxed);
                table.store_u16(offset + DESC_ID, 0, Ordering::Relaxed);
                table.store_u16(offset + DESC_FLAGS, write, Ordering::Relaxed);
                offset += DESC_SIZE;
            }
        }

        Ok(self.publish_table(id, table.bus_address(), table_len))
    }

    /// Makes the indirect table at `table` (`table_len` bytes, written) available as buffer
    /// `id` in one ring descriptor.
    #[expect(
        clippy::inline_always,
        reason = "the tail of both indirect adds; out of line it costs each I/O a call"
    )]
    #[inline(always)]
    fn publish_table(&mut self, id: u16, table: u64, table_len: u32) -> Token {
        let at = usize::from(self.next_avail);
        let descriptors = &self.view.descriptors;
        descriptors.store_u64(at, DESC_ADDR, table, Ordering::Relaxed);
        descriptors.store_u32(at, DESC_LEN, table_len, Ordering::Relaxed);
        descriptors.store_u16(at, DESC_ID, id, Ordering::Relaxed);
        // ORDERING: Release, as for a direct chain's head (section 2.8.21.1.1, "Updating
        // flags"): the table and the ring descriptor are visible before the AVAIL flag. A
        // table written before the queue's lock was taken (`add_table`) is covered too: its
        // stores happen before this call (earlier in this thread, or in one whose hand-over to
        // this thread synchronised with it). WRITE is left clear: it is reserved with INDIRECT
        // (section 2.8.7).
        descriptors.store_u16(
            at,
            DESC_FLAGS,
            VIRTQ_DESC_F_INDIRECT | self.avail_wrap_flags,
            Ordering::Release,
        );
        self.next_avail += 1;
        if self.next_avail == self.size {
            self.next_avail = 0;
            self.avail_wrap_flags ^= WRAP_FLAGS;
        }
        self.added_since_kick = self.added_since_kick.saturating_add(1);
        Token(id)
    }
}

impl<S: BorrowMut<[Slot]>> Virtqueue for PackedQueue<S> {
    fn index(&self) -> u16 {
        self.index
    }

    fn size(&self) -> u16 {
        self.size
    }

    fn free_descriptors(&self) -> u16 {
        self.free_descriptors
    }

    fn in_flight(&self) -> u16 {
        self.in_flight
    }

    fn addresses(&self) -> QueueAddresses {
        let base = self.ring.bus_address();
        let driver = base.wrapping_add(self.driver_event_offset as u64);
        QueueAddresses {
            descriptors: base,
            driver,
            device: driver.wrapping_add(EVENT_SIZE as u64),
        }
    }

    fn add(
        &mut self,
        readable: &[Segment],
        writable: &[Segment],
        indirect: Option<&DmaMemory>,
    ) -> Result<Token, QueueError> {
        let segments = readable.len().saturating_add(writable.len());
        if segments == 0 {
            return Err(QueueError::EmptyChain);
        }
        // Everything is checked before the first descriptor is written: a descriptor left
        // behind by a failed add would carry a valid AVAIL flag for a later lap's device to find.
        let lengths = Self::check_segments(readable, writable)?;
        match indirect {
            None => self.add_direct(readable, writable, segments, lengths),
            Some(table) => self.add_indirect(readable, writable, segments, lengths, table),
        }
    }

    #[expect(
        clippy::inline_always,
        reason = "StartIo's one ring call; out of line it costs each I/O a call and a Result"
    )]
    #[inline(always)]
    fn add_table(&mut self, chain: &IndirectChain) -> Result<Token, QueueError> {
        chain.check_for(RingFormat::Packed, self.features.indirect)?;
        let lengths = ChainLengths {
            writable: chain.writable(),
            total: chain.posted(),
        };
        let id = self.allocate_id(1, lengths).ok_or(QueueError::Full {
            needed: 1,
            free: self.free_descriptors,
        })?;
        Ok(self.publish_table(id, chain.table(), chain.table_len()))
    }

    #[expect(
        clippy::inline_always,
        reason = "a driver's submission path asks on every request; out of line it costs a call and the queue's fields loaded again (rvscsi's cargo xtask bench)"
    )]
    #[inline(always)]
    fn kick_prepare(&mut self) -> bool {
        let added = core::mem::take(&mut self.added_since_kick);
        if added == 0 {
            return false;
        }
        // ORDERING: a full fence between the AVAIL flag stores (release) and the load of the
        // device event suppression structure (section 2.8.21.2, "Sending Available Buffer
        // Notifications": "a suitable memory barrier before reading the Event Suppression
        // structure"). It pairs with the device's full barrier between writing that structure
        // and re-reading the ring, so either the device sees the new descriptors or the driver
        // sees the device's request to be notified. Release alone would not order the store
        // before the load.
        fence(Ordering::SeqCst);
        // Each field at its own size, as the device writes them; the flags first and with
        // Acquire, pairing with a device that releases them after the offset they go with.
        let flags = self
            .view
            .device_event
            .load_u16(0, EVENT_FLAGS, Ordering::Acquire)
            & RING_EVENT_FLAGS_MASK;
        let desc = self
            .view
            .device_event
            .load_u16(0, EVENT_OFF_WRAP, Ordering::Relaxed);
        match flags {
            RING_EVENT_FLAGS_DISABLE => false,
            RING_EVENT_FLAGS_DESC if self.features.event_idx => {
                // After a whole ring's worth every position was made available at least once;
                // the event may lie in any lap, so notify (spurious is allowed, missed is not).
                added >= self.size || self.event_crossed(desc, added)
            }
            // ENABLE; DESC without EVENT_IDX and the reserved value 3 are device errors that
            // a notification cannot make worse.
            _ => true,
        }
    }

    fn has_used(&self) -> bool {
        if self.in_flight == 0 {
            return false;
        }
        if self.event_store_unfenced {
            // ORDERING: as in `pop_used`: the moved event offset must be visible to the device
            // before the flags load that may let the caller wait for an interrupt.
            fence(Ordering::SeqCst);
        }
        // A mismatch counts: `pop_used` reports it.
        self.used_state(self.load_used_flags()) != UsedState::Pending
    }

    fn pop_used(&mut self) -> Result<Option<UsedBuffer>, DeviceError> {
        if self.in_flight == 0 {
            // Nothing at the used position belongs to the device: it may hold a stale used
            // descriptor or a skipped chain descriptor from the previous lap.
            return Ok(None);
        }
        let position = self.next_used;
        let mut flags = self.load_used_flags();
        let mut state = self.used_state(flags);
        if state == UsedState::Pending && self.event_store_unfenced {
            // ORDERING: a full fence between the store that moved the driver event offset (in
            // an earlier `pop_used`) and this reload, paired with the device's full barrier
            // between writing a used descriptor and reading the driver event structure (section
            // 2.8.22's note on missed notifications). Either the device saw the new offset and
            // will interrupt, or the reload sees its descriptor. Paid once per drain, not per
            // chain.
            fence(Ordering::SeqCst);
            self.event_store_unfenced = false;
            flags = self.load_used_flags();
            state = self.used_state(flags);
        }
        match state {
            UsedState::Pending => return Ok(None),
            UsedState::Mismatch => {
                return Err(DeviceError::PackedWrapMismatch { position, flags });
            }
            UsedState::Used => {}
        }

        // ORDERING: Relaxed, after the Acquire load of the flags above, which orders these
        // loads after the device's stores of `id` and `len`. Each field is read at its own
        // width: a wider load overlapping the flags would be a mixed-size access to a word the
        // device also reads and writes at 16 bits, which Rust's memory model (and Miri) rejects
        // when the accesses race. Whatever a faulty device wrote is validated below.
        let len =
            self.view
                .descriptors
                .load_u32(usize::from(position), DESC_LEN, Ordering::Relaxed);
        let id = self
            .view
            .descriptors
            .load_u16(usize::from(position), DESC_ID, Ordering::Relaxed);
        if id >= self.size {
            return Err(DeviceError::UsedIdOutOfRange { id: u32::from(id) });
        }
        let free_head = self.free_head;
        let Some(slot) = self.slots.borrow_mut().get_mut(usize::from(id)) else {
            return Err(DeviceError::UsedIdOutOfRange { id: u32::from(id) });
        };
        if !slot.in_flight {
            return Err(DeviceError::UsedIdNotInFlight { id });
        }
        // Section 2.8.4 calls `len` reserved in a used descriptor without WRITE, but QEMU
        // (`virtqueue_packed_fill_desc`) never sets WRITE there and reports the length in `len`
        // anyway, and Linux reads `len` regardless. So `len` counts either way.
        // What `len` may be, and how it is clamped, is `Slot::used_length`'s.
        let written = slot.used_length(id, len)?;
        let descriptors = slot.descriptors;
        // Back on the free list. The other fields are only read while the id is in flight, and
        // `allocate_id` writes them all, so they are left as they are.
        slot.next = free_head;
        slot.in_flight = false;
        self.free_head = id;
        self.in_flight -= 1;
        self.free_descriptors += descriptors;

        // Section 2.8.6: skip the chain's descriptors; the sum is below 2^16 since both terms
        // are at most 2^15.
        let mut next = position + descriptors;
        if next >= self.size {
            next -= self.size;
            self.used_wrap_flags ^= WRAP_FLAGS;
        }
        self.next_used = next;
        if self.driver_event_is_desc() {
            // Interrupts are on with EVENT_IDX: move the event to the new used position, or the
            // device, already past the old one, would not interrupt again for a whole lap. The
            // position (with its wrap counter) moved, so the value differs from what is there.
            let value = u32::from(RING_EVENT_FLAGS_DESC) << 16 | u32::from(self.used_event());
            // The flags stay DESC: only the offset is stored.
            self.write_driver_event(value);
            self.event_store_unfenced = true;
        }
        Ok(Some(UsedBuffer {
            token: Token(id),
            written,
        }))
    }

    fn disable_interrupts(&mut self) {
        // A hint: no ordering needed (the device may interrupt anyway).
        let value = (self.driver_event_shadow & 0xffff) | u32::from(RING_EVENT_FLAGS_DISABLE) << 16;
        self.write_driver_event(value);
        self.event_store_unfenced = false;
    }

    fn enable_interrupts(&mut self) -> bool {
        let value = if self.features.event_idx {
            u32::from(RING_EVENT_FLAGS_DESC) << 16 | u32::from(self.used_event())
        } else {
            (self.driver_event_shadow & 0xffff) | u32::from(RING_EVENT_FLAGS_ENABLE) << 16
        };
        self.write_driver_event(value);
        // ORDERING: a full fence between the driver event store and the re-check load below,
        // pairing with the device's full barrier between writing a used descriptor and reading
        // the driver event structure (section 2.8.22, "Receiving Used Buffers From The
        // Device": the `memory_barrier()` after enabling and before re-reading the flags).
        fence(Ordering::SeqCst);
        self.event_store_unfenced = false;
        self.has_used()
    }

    fn detach_next(&mut self) -> Option<Token> {
        if self.in_flight == 0 {
            return None;
        }
        let size = usize::from(self.size);
        let start = usize::from(self.detach_cursor).min(size);
        let slots = self.slots.borrow();
        let found = (start..size)
            .chain(0..start)
            .find(|&id| slots.get(id).is_some_and(|slot| slot.in_flight))?;
        let descriptors = slots.get(found).map_or(0, |slot| slot.descriptors);
        // `found < size <= 32768`.
        let id = found as u16;
        self.release_id(id, descriptors);
        self.detach_cursor = id + 1;
        Some(Token(id))
    }

    fn reset(&mut self) {
        self.view.zero();
        let size = self.size;
        for (id, slot) in self
            .slots
            .borrow_mut()
            .iter_mut()
            .take(usize::from(size))
            .enumerate()
        {
            // The last link points past the end; it is never followed (`in_flight == size`).
            *slot = Slot {
                next: id as u16 + 1,
                ..Slot::EMPTY
            };
        }
        self.next_avail = 0;
        self.avail_wrap_flags = VIRTQ_DESC_F_AVAIL;
        self.free_descriptors = size;
        self.in_flight = 0;
        self.free_head = 0;
        self.added_since_kick = 0;
        self.next_used = 0;
        self.used_wrap_flags = WRAP_FLAGS;
        self.driver_event_shadow = 0;
        self.event_store_unfenced = false;
        self.detach_cursor = 0;
        // With EVENT_IDX, start in descriptor mode at the first used position, as
        // `enable_interrupts` would leave it. The zeroed state is ENABLE, which makes the device
        // interrupt for every used buffer until the first re-arm (QEMU does; seen in vmtest).
        if self.features.event_idx {
            let value = u32::from(RING_EVENT_FLAGS_DESC) << 16 | u32::from(self.used_event());
            self.write_driver_event(value);
        }
    }
}

#[cfg(test)]
mod tests;
