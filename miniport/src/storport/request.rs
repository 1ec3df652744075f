//! The SRBs the miniport holds without an [`Srb`] in hand, as types: a request's area in its
//! SRB extension ([`RequestArea`], [`RequestView`], the scratch segment list), the token of an
//! SRB on a ring ([`InFlightRequest`]), an SRB kept by task management ([`KeptSrb`],
//! [`KeptSrbCell`]), and the mapped data buffer of a command StorPort maps. With them the
//! layers above keep, find and complete such SRBs without `unsafe` code.
//!
//! # The SRB record
//! The first [`SRB_RECORD_LEN`] bytes of every request area belong to this module: the address
//! of the SRB the request was built for and the [`SrbLayout`] its validation found, written by
//! [`RequestArea::of`] from the [`Srb`] itself at BuildIo; HwBuildIo passes on to StartIo no
//! EXECUTE_SCSI SRB whose view did not write it ([`Srb::is_recorded`]). No view
//! this module hands out reaches them, so the only SRB an [`InFlightRequest`] can turn back
//! into is the one whose area it is, recorded at its BuildIo and given up to the token by
//! StartIo ([`PendingRequest`]).
//!
//! # What the layers above are trusted with
//! The area's size: the SRB extension StorPort allocated holds the [`AreaShape`] the adapter
//! passes, because the adapter asked StorPort for exactly that size in find-adapter
//! (`RequestLayout::extension_size`). Everything else is checked here.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use virtio_core::dma::{DmaMemory, DmaTable};
use virtio_core::hal::Segment;

use super::ScsiRequestBlock;
use super::srb::{Srb, SrbLayout};

/// Bytes at the start of every request area kept for the SRB record (see the module
/// documentation); the I/O path's parts start at or after it.
pub const SRB_RECORD_LEN: usize = 16;

/// The record: two words, the SRB's address, then its shape packed as `extended` (bits 0-7),
/// `mapped` (8-15), and the offsets of the SCSI status (16-31), sense length (32-47) and sense
/// buffer (48-63); two word stores and loads, on every request.
const RECORD_SRB: usize = 0;
const RECORD_SHAPE: usize = 8;
const _: () = assert!(RECORD_SHAPE + 8 == SRB_RECORD_LEN);

/// The shape word of the record.
const fn pack_shape(layout: SrbLayout, mapped: bool) -> u64 {
    layout.extended as u64
        | (mapped as u64) << 8
        | (layout.scsi_status as u64) << 16
        | (layout.sense_length as u64) << 32
        | (layout.sense_buffer as u64) << 48
}

/// The layout and the mapped flag a shape word holds.
#[expect(
    clippy::cast_possible_truncation,
    reason = "each field is cut out of its own bits"
)]
const fn unpack_shape(word: u64) -> (SrbLayout, bool) {
    let layout = SrbLayout {
        extended: word & 0xFF == 1,
        scsi_status: (word >> 16) as u16,
        sense_length: (word >> 32) as u16,
        sense_buffer: (word >> 48) as u16,
    };
    (layout, (word >> 8) & 0xFF == 1)
}

/// The alignment of an area's start: the record and the scratch list need 8, the parts the
/// device reads 16 (see `sizing::REQUEST_ALIGN`).
const AREA_ALIGN: usize = 16;
/// A page: the head of an area must not straddle one, so that it is physically contiguous.
const PAGE: usize = 4096;

/// Where a request lives in its SRB extension, as the adapter's request layout says; checked
/// once, when the layout is made ([`AreaShape::new`]), not on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaShape {
    /// Bytes from the area's start that must lie in one page (the area moves to the next page
    /// otherwise).
    head: usize,
    /// Offset of the scratch segment list, which ends the part the device may reach.
    scratch: usize,
    /// Segments the scratch list holds.
    scratch_capacity: usize,
}

impl AreaShape {
    /// The shape of an area whose first `head` bytes must lie in one page, with a scratch list
    /// of `scratch_capacity` segments at `scratch`; `None` unless the list is 8-aligned, after
    /// the SRB record, and the area's size fits a `usize`.
    #[must_use]
    pub const fn new(head: usize, scratch: usize, scratch_capacity: usize) -> Option<Self> {
        let shape = Self {
            head,
            scratch,
            scratch_capacity,
        };
        if shape.is_usable() { Some(shape) } else { None }
    }

    /// Bytes from the area's start that must lie in one page.
    #[must_use]
    pub const fn head(&self) -> usize {
        self.head
    }

    /// Bytes of the area: everything up to the scratch list, and the list.
    const fn len(&self) -> Option<usize> {
        match self.scratch_capacity.checked_mul(size_of::<Segment>()) {
            Some(list) => self.scratch.checked_add(list),
            None => None,
        }
    }

    /// Whether the shape keeps the record and the scratch list where this module needs them,
    /// with a head that fits in a page.
    const fn is_usable(&self) -> bool {
        self.head <= PAGE
            && self.scratch >= SRB_RECORD_LEN
            && self.scratch.is_multiple_of(align_of::<Segment>())
            && self.len().is_some()
    }
}

/// The start of the request area in an SRB extension at `extension`: its first 16-aligned
/// byte, moved to the next page if the first `head` bytes would straddle a page boundary (so
/// each of them is physically contiguous, whatever StorPort's pool gave us). `head` is at most
/// a page ([`AreaShape::new`] refuses a larger one), so a start that moves is not at a page
/// boundary already: the next page is the one after its own.
#[must_use]
pub const fn area_start(extension: usize, head: usize) -> usize {
    let aligned = extension.next_multiple_of(AREA_ALIGN);
    if aligned % PAGE + head > PAGE {
        (aligned & !(PAGE - 1)) + PAGE
    } else {
        aligned
    }
}

/// The part of a request area the device may reach (everything before the scratch list), as
/// the I/O path reads and writes it: every access is bounds-checked, and none reaches the SRB
/// record. Offsets are from the area's start.
#[derive(Debug)]
pub struct RequestView {
    /// The area's start (non-null and 16-aligned, [`area_start`]) up to the scratch list.
    memory: DmaMemory,
}

impl RequestView {
    /// The view of `scratch` bytes at `start` with bus address `bus`.
    #[expect(
        clippy::inline_always,
        reason = "on every I/O; left out of line it costs instructions per I/O (cargo xtask bench)"
    )]
    #[inline(always)]
    fn at(start: usize, scratch: usize, bus: u64) -> Option<Self> {
        let pointer = NonNull::new(start as *mut u8)?;
        // SAFETY: `start .. start + scratch` is the front of a request area in the SRB
        // extension of an SRB this miniport holds (an `Srb` borrowed by `RequestArea::of`, or
        // one given up to an `InFlightRequest`); StorPort allocated the extension with the size
        // the adapter's shape needs (the module documentation). Those bytes are reached only
        // through `DmaMemory` views (the record included: `record` and `srb_record` use this
        // view) and by the device, never through a Rust reference: the scratch list, which is
        // referenced, starts at `scratch`, past this view.
        let memory = unsafe { DmaMemory::new(pointer, scratch, bus) }?;
        Some(Self { memory })
    }

    /// The area's start (the request's tag for the device).
    #[must_use]
    pub fn start(&self) -> usize {
        self.memory.cpu_address()
    }

    /// Reads `out.len()` bytes at `offset`; false if they are not all in the view or `offset`
    /// is inside the SRB record.
    #[must_use]
    #[inline]
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> bool {
        offset >= SRB_RECORD_LEN && self.memory.read_bytes(offset, out)
    }

    /// Writes `bytes` at `offset`; false if they are not all in the view or `offset` is inside
    /// the SRB record.
    #[must_use]
    #[inline]
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) -> bool {
        offset >= SRB_RECORD_LEN && self.memory.write_bytes(offset, bytes)
    }

    /// The `LEN` bytes at `offset` (8-aligned, after the SRB record) as one record whose
    /// fields are then loaded and stored without a check each: the bounds are checked here,
    /// once, and a field offset is a constant the compiler checks against `LEN`. `None` if the
    /// bytes are not all in the view, or `offset` is inside the SRB record or misaligned.
    #[must_use]
    #[inline]
    pub fn fields<const LEN: usize>(&self, offset: usize) -> Option<DmaTable<LEN, 8>> {
        if offset < SRB_RECORD_LEN {
            return None;
        }
        self.memory.table(offset, 1)
    }

    /// Loads the byte at `offset` (0 inside the SRB record or outside the view).
    #[must_use]
    #[inline]
    pub fn load_u8(&self, offset: usize) -> u8 {
        if offset >= SRB_RECORD_LEN {
            self.memory.load_u8(offset)
        } else {
            0
        }
    }

    /// Loads the `u16` at `offset` (0 inside the SRB record or outside the view).
    #[must_use]
    #[inline]
    pub fn load_u16(&self, offset: usize, order: Ordering) -> u16 {
        if offset >= SRB_RECORD_LEN {
            self.memory.load_u16(offset, order)
        } else {
            0
        }
    }

    /// Loads the `u32` at `offset` (0 inside the SRB record or outside the view).
    #[must_use]
    #[inline]
    pub fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        if offset >= SRB_RECORD_LEN {
            self.memory.load_u32(offset, order)
        } else {
            0
        }
    }

    /// Loads the `u64` at `offset` (0 inside the SRB record or outside the view).
    #[must_use]
    #[inline]
    pub fn load_u64(&self, offset: usize, order: Ordering) -> u64 {
        if offset >= SRB_RECORD_LEN {
            self.memory.load_u64(offset, order)
        } else {
            0
        }
    }

    /// Stores one byte at `offset` (nothing inside the SRB record).
    #[inline]
    pub fn store_u8(&self, offset: usize, value: u8) {
        if offset >= SRB_RECORD_LEN {
            self.memory.store_u8(offset, value);
        }
    }

    /// Stores a `u16` at `offset` (nothing inside the SRB record).
    #[inline]
    pub fn store_u16(&self, offset: usize, value: u16, order: Ordering) {
        if offset >= SRB_RECORD_LEN {
            self.memory.store_u16(offset, value, order);
        }
    }

    /// Stores a `u64` at `offset` (nothing inside the SRB record).
    #[inline]
    pub fn store_u64(&self, offset: usize, value: u64, order: Ordering) {
        if offset >= SRB_RECORD_LEN {
            self.memory.store_u64(offset, value, order);
        }
    }

    /// The part `offset .. offset + len` as device memory (an indirect table for the ring),
    /// if it lies in the view, after the SRB record; `area_bus` is the bus address of the
    /// area's start, which the caller found contiguous up to the part's end.
    #[must_use]
    #[inline]
    pub fn part(&self, offset: usize, len: usize, area_bus: u64) -> Option<DmaMemory> {
        if offset < SRB_RECORD_LEN {
            return None;
        }
        let bus = area_bus.checked_add(offset as u64)?;
        // SAFETY: `bus` is the caller's translation of the part (a wrong one misdirects the
        // device, whose accesses are outside Rust's memory model, and touches no Rust memory);
        // `sub_at` keeps the part inside this view, after the record (checked just above).
        unsafe { self.memory.sub_at(offset, len, bus) }
    }

    /// The SRB record: the SRB's address, its layout, and whether its data buffer is mapped.
    #[inline]
    fn srb_record(&self) -> (usize, SrbLayout, bool) {
        let address = self.memory.load_u64(RECORD_SRB, Ordering::Relaxed) as usize;
        let (layout, mapped) = unpack_shape(self.memory.load_u64(RECORD_SHAPE, Ordering::Relaxed));
        (address, layout, mapped)
    }
}

/// A request's area in the SRB extension of an SRB the caller holds: the [`RequestView`] and
/// the scratch segment list, which BuildIo fills and StartIo hands to the ring. It borrows the
/// SRB mutably for its life, so no second area of the same SRB exists while its scratch list
/// is written or read.
#[derive(Debug)]
pub struct RequestArea<'s> {
    view: RequestView,
    scratch: NonNull<Segment>,
    capacity: usize,
    _srb: PhantomData<&'s mut Srb>,
}

impl<'s> RequestArea<'s> {
    /// The area of `srb` shaped `shape`, for BuildIo, with `srb` back for reading; `None` if
    /// `srb` has no extension. Writes the SRB record (see the module documentation): the SRB's
    /// address, its layout and whether StorPort mapped its data buffer (its command is one of
    /// those whose answers the completion reads), and notes in `srb` that it did, for HwBuildIo
    /// to check before it passes the SRB on to StartIo.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "on every I/O; left out of line it costs instructions per I/O (cargo xtask bench)"
    )]
    #[inline(always)]
    pub fn of(srb: &'s mut Srb, shape: AreaShape) -> Option<(Self, &'s Srb)> {
        let extension = srb.extension() as usize;
        if extension == 0 {
            return None;
        }
        let start = area_start(extension, shape.head);
        // A usable shape's scratch list starts after the record already; `max` tells the
        // compiler so, and the record's stores below go unchecked.
        let view = RequestView::at(start, shape.scratch.max(SRB_RECORD_LEN), 0)?;
        let scratch = NonNull::new((start + shape.scratch) as *mut Segment)?;
        let (layout, opcode) = srb.record_shape();
        let mapped = opcode.is_some_and(is_mapped_opcode);
        view.memory
            .store_u64(RECORD_SRB, srb.raw().as_ptr() as u64, Ordering::Relaxed);
        view.memory
            .store_u64(RECORD_SHAPE, pack_shape(layout, mapped), Ordering::Relaxed);
        srb.set_recorded();
        let area = Self {
            view,
            scratch,
            capacity: shape.scratch_capacity,
            _srb: PhantomData,
        };
        Some((area, srb))
    }

    /// The part the device may reach.
    #[must_use]
    pub const fn view(&self) -> &RequestView {
        &self.view
    }

    /// The scratch list, emptied, for BuildIo to fill.
    pub fn scratch(&mut self) -> ScratchList<'_> {
        ScratchList {
            first: self.scratch,
            capacity: self.capacity,
            count: 0,
            _area: PhantomData,
        }
    }
}

/// A built request with its SRB, owned, as StartIo puts it on a ring: the request's view and
/// its scratch list, and [`PendingRequest::into_in_flight`], which gives the SRB up to the
/// token that stands for it. The area is the SRB's own (found from its extension), whose
/// record [`RequestArea::of`] wrote at the SRB's BuildIo.
#[derive(Debug)]
pub struct PendingRequest {
    srb: Srb,
    /// The area's start: non-null and 16-aligned ([`area_start`]).
    start: NonNull<u8>,
    /// The area up to the scratch list, which follows it.
    view: RequestView,
    capacity: usize,
}

impl PendingRequest {
    /// The request of `srb`, its area shaped `shape`; `srb` back if it has no extension.
    ///
    /// # Errors
    /// `srb` back, for the caller to complete.
    #[expect(
        clippy::inline_always,
        reason = "on every I/O; left out of line it costs instructions per I/O (cargo xtask bench)"
    )]
    #[inline(always)]
    pub fn of(srb: Srb, shape: AreaShape) -> Result<Self, Srb> {
        let extension = srb.extension() as usize;
        if extension == 0 {
            return Err(srb);
        }
        let start = area_start(extension, shape.head);
        let (Some(pointer), Some(view)) = (
            NonNull::new(start as *mut u8),
            RequestView::at(start, shape.scratch, 0),
        ) else {
            return Err(srb);
        };
        Ok(Self {
            srb,
            start: pointer,
            view,
            capacity: shape.scratch_capacity,
        })
    }

    /// The part the device may reach.
    #[must_use]
    pub const fn view(&self) -> &RequestView {
        &self.view
    }

    /// The first `count` segments of the scratch list (what BuildIo pushed), or `None` if the
    /// list has fewer slots.
    #[must_use]
    #[inline]
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "the scratch list is 8-aligned: a 16-aligned start plus an 8-aligned offset"
    )]
    pub fn segments(&self, count: usize) -> Option<&[Segment]> {
        if count > self.capacity {
            return None;
        }
        let first = self
            .start
            .as_ptr()
            .wrapping_add(self.view.memory.len())
            .cast::<Segment>();
        // SAFETY: the scratch list is `capacity` `Segment` slots right after the view, at an
        // 8-aligned offset of the area (`AreaShape::is_usable`), inside the SRB extension of
        // the SRB this request owns, so no `RequestArea` or `ScratchList` of it exists while the slice (which
        // borrows the request) lives; no `DmaMemory` view covers it. The extension is memory
        // StorPort allocated, outside Rust's allocations, so its bytes are initialised (to
        // what BuildIo of this SRB wrote, or to unknown values), and a `Segment` (a `u64` and
        // a `u32`) is valid for any bits.
        Some(unsafe { core::slice::from_raw_parts(first, count) })
    }

    /// The SRB back, not handed over (to be completed by the caller).
    #[must_use]
    pub fn into_srb(self) -> Srb {
        self.srb
    }

    /// Gives the SRB to the ring: the token then stands for it until the request completes.
    #[inline]
    pub fn into_in_flight(self) -> InFlightRequest {
        self.srb.hand_over();
        InFlightRequest { start: self.start }
    }
}

/// The scratch segment list of a request, as BuildIo fills it.
#[derive(Debug)]
pub struct ScratchList<'a> {
    first: NonNull<Segment>,
    capacity: usize,
    count: usize,
    _area: PhantomData<&'a mut Segment>,
}

impl ScratchList<'_> {
    /// Appends `segment`; false if the list is full.
    #[must_use]
    #[inline]
    pub fn push(&mut self, segment: Segment) -> bool {
        if self.count >= self.capacity {
            return false;
        }
        // SAFETY: slot `count < capacity` of the scratch list, which lies in the SRB extension
        // of the SRB the area borrows mutably, and which this list borrows mutably from the
        // area (no slice of it lives meanwhile); 8-aligned (`AreaShape::is_usable`).
        unsafe { self.first.as_ptr().wrapping_add(self.count).write(segment) };
        self.count += 1;
        true
    }

    /// Segments pushed so far.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing was pushed.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// An SRB StorPort handed us that is on a ring and not completed yet, as the token the
/// in-flight table keeps: its request area's start, whose record names the SRB. Made only by
/// [`PendingRequest::into_in_flight`] from the [`Srb`] itself, not `Copy` or `Clone`, and turned back
/// into that `Srb` once, by [`InFlightRequest::into_parts`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "dropping the token leaves its SRB uncompleted"]
pub struct InFlightRequest {
    /// The area's start: non-null and 16-aligned ([`area_start`]).
    start: NonNull<u8>,
}

// The in-flight table keeps one word per token, as it did when it kept addresses.
const _: () = assert!(size_of::<Option<InFlightRequest>>() == size_of::<usize>());

impl InFlightRequest {
    /// The request's view, `scratch` bytes long (where the adapter's scratch list starts,
    /// `RequestLayout::segments`).
    #[must_use]
    #[inline]
    pub fn view(&self, scratch: usize) -> Option<RequestView> {
        RequestView::at(self.start(), scratch, 0)
    }

    /// The area's start (the tag the request header carries).
    #[must_use]
    pub fn start(&self) -> usize {
        self.start.as_ptr() as usize
    }

    /// The address of the SRB the token stands for (compared with an abort's target, never
    /// dereferenced by the caller).
    #[must_use]
    pub fn srb_address(&self) -> usize {
        RequestView::at(self.start(), SRB_RECORD_LEN, 0).map_or(0, |record| record.srb_record().0)
    }

    /// The SRB back, to be completed, with the request's view (`scratch` bytes, as in
    /// [`Self::view`]); the SRB knows whether StorPort mapped its data buffer
    /// ([`Srb::mapped_data`]). `None` only if `scratch` is shorter than the record, a caller's
    /// bug (the SRB then stays uncompleted).
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "on every I/O; left out of line it costs instructions per I/O (cargo xtask bench)"
    )]
    #[inline(always)]
    pub fn into_parts(self, scratch: usize) -> Option<(Srb, RequestView)> {
        let view = self.view(scratch.max(SRB_RECORD_LEN))?;
        let (address, layout, mapped) = view.srb_record();
        let raw = NonNull::new(address as *mut ScsiRequestBlock)?;
        // SAFETY: the token was made by `PendingRequest::into_in_flight` from the `Srb` whose
        // extension holds this area, which it consumed; the area's record was written by
        // `RequestArea::of` from that `Srb` at its BuildIo (HwBuildIo checks that it was before
        // it lets StartIo have the SRB, and StorPort calls StartIo only for an SRB whose BuildIo
        // returned TRUE, the contract `Srb::validated` rests on), and no view this module hands
        // out reaches it, so it names the SRB at `raw` with that SRB's layout. The token is
        // neither `Copy` nor `Clone`, so this is the one way back, taken once. StorPort does
        // not touch an SRB the miniport holds, so the SRB has not changed shape since.
        let mut srb = unsafe { Srb::from_layout(raw, layout) };
        srb.set_mapped(mapped);
        Some((srb, view))
    }
}

/// The operation codes whose data buffers the completion reads (the bus scan's INQUIRY, READ
/// CAPACITY (10), SERVICE ACTION IN (16), REPORT LUNS): commands other than reads and writes,
/// so StorPort maps their buffers. A bit per operation code, tested on every request.
const MAPPED_OPCODES: [u64; 4] = {
    let mut bits = [0u64; 4];
    let opcodes = [0x12u8, 0x25, 0x9E, 0xA0];
    let mut i = 0;
    while i < opcodes.len() {
        let opcode = opcodes[i];
        bits[(opcode >> 6) as usize] |= 1 << (opcode & 63);
        i += 1;
    }
    bits
};

/// Whether StorPort maps the data buffer of a command with `opcode` ([`MAPPED_OPCODES`]).
const fn is_mapped_opcode(opcode: u8) -> bool {
    (MAPPED_OPCODES[(opcode >> 6) as usize] >> (opcode & 63)) & 1 == 1
}

impl Srb {
    /// The first `len` bytes of the data buffer, if StorPort mapped it (the SRB came back from
    /// the ring, and its command is one whose answers the completion reads) and it has them.
    #[must_use]
    pub fn mapped_data(&self, len: usize) -> Option<&[u8]> {
        let buffer = self.mapped_buffer(len)?;
        // SAFETY: `mapped_buffer`: StorPort mapped this SRB's buffer (its command is one of
        // `MAPPED_OPCODES`, recorded by the floor from the SRB's CDB) and it is valid for
        // `DataTransferLength` bytes, at least `len`; the device finished with it (the request
        // came back from the ring) and nothing else touches it until the SRB, which the slice
        // borrows, is completed.
        Some(unsafe { core::slice::from_raw_parts(buffer.as_ptr(), len) })
    }

    /// As [`Self::mapped_data`], writable: the slice borrows the SRB mutably.
    #[must_use]
    pub fn mapped_data_mut(&mut self, len: usize) -> Option<&mut [u8]> {
        let buffer = self.mapped_buffer(len)?;
        // SAFETY: as in `mapped_data`, and the slice borrows the SRB mutably, so it is the only
        // access to the buffer while it lives.
        Some(unsafe { core::slice::from_raw_parts_mut(buffer.as_ptr(), len) })
    }

    /// The mapped data buffer, if there is one with at least `len` bytes.
    fn mapped_buffer(&self, len: usize) -> Option<NonNull<u8>> {
        if !self.is_mapped() || len > self.data_transfer_length() as usize {
            return None;
        }
        NonNull::new(self.data_buffer().cast::<u8>())
    }
}

/// An SRB StorPort handed us that task management holds (an abort or a reset, answered when
/// the function ends), as the token its slot keeps. Made only from the [`Srb`] itself.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "dropping the token leaves its SRB uncompleted"]
pub struct KeptSrb {
    raw: NonNull<ScsiRequestBlock>,
    extended: bool,
}

impl KeptSrb {
    /// Keeps `srb` (its header only: completing it sets its status).
    pub fn keep(srb: Srb) -> Self {
        let kept = Self {
            raw: srb.raw(),
            extended: srb.is_extended(),
        };
        srb.hand_over();
        kept
    }

    /// A token for the unit tests of task management's table, which only store and compare
    /// tokens: never turned back into an SRB (there is none at `address`).
    #[cfg(test)]
    pub(crate) fn for_table_tests(address: usize, extended: bool) -> Self {
        Self {
            raw: NonNull::new(address as *mut ScsiRequestBlock).expect("a non-zero address"),
            extended,
        }
    }

    /// The SRB's address (compared with an abort's target, never dereferenced by the caller).
    #[must_use]
    pub fn address(&self) -> usize {
        self.raw.as_ptr() as usize
    }

    /// Whether it is an SRB_EX.
    #[must_use]
    pub const fn is_extended(&self) -> bool {
        self.extended
    }

    /// The SRB back, to be completed.
    #[must_use]
    pub fn into_srb(self) -> Srb {
        let layout = SrbLayout {
            extended: self.extended,
            ..NO_SCSI_FIELDS
        };
        // SAFETY: made by `keep` from the `Srb` at `raw`, which it consumed; not `Copy` or
        // `Clone`, and stored only in a `KeptSrbCell`, which gives it back once: this is the
        // one way back. A layout without SCSI fields touches only the header, whose shape
        // `extended` names.
        unsafe { Srb::from_layout(self.raw, layout) }
    }

    /// The word a [`KeptSrbCell`] stores: the address with the SRB_EX flag in bit 0 (SRBs are
    /// at least 8-aligned).
    fn pack(self) -> u64 {
        self.raw.as_ptr() as u64 | u64::from(self.extended)
    }
}

/// A layout with no SCSI fields: completion touches the header only.
const NO_SCSI_FIELDS: SrbLayout = SrbLayout {
    extended: false,
    scsi_status: 0,
    sense_length: 0,
    sense_buffer: 0,
};

/// A place for one [`KeptSrb`], shared between contexts: what goes in comes out once.
#[derive(Debug, Default)]
pub struct KeptSrbCell(AtomicU64);

impl KeptSrbCell {
    /// An empty cell.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Puts `srb` in the cell; an SRB already there comes back (the caller completes it).
    pub fn put(&self, srb: KeptSrb, order: Ordering) -> Option<KeptSrb> {
        Self::unpack(self.0.swap(srb.pack(), order))
    }

    /// Takes the SRB out, if there is one.
    pub fn take(&self, order: Ordering) -> Option<KeptSrb> {
        Self::unpack(self.0.swap(0, order))
    }

    /// The kept SRB's address and shape without taking it (0 when empty).
    #[must_use]
    pub fn peek(&self, order: Ordering) -> Option<(usize, bool)> {
        let word = self.0.load(order);
        (word != 0).then_some(((word & !1) as usize, word & 1 == 1))
    }

    fn unpack(word: u64) -> Option<KeptSrb> {
        let raw = NonNull::new((word & !1) as usize as *mut ScsiRequestBlock)?;
        Some(KeptSrb {
            raw,
            extended: word & 1 == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_area_moves_to_the_next_page_only_when_its_head_would_straddle_one() {
        // Aligned to 16 first.
        assert_eq!(area_start(0x1_0001, 240), 0x1_0010);
        assert_eq!(area_start(0x1_0010, 240), 0x1_0010);
        // The head ends exactly at the page's end: it stays.
        assert_eq!(area_start(0x1_0F10, 240), 0x1_0F10);
        assert_eq!(area_start(0x1_0F09, 240), 0x1_0F10);
        // One byte more would straddle: the next page.
        assert_eq!(area_start(0x1_0F11, 240), 0x1_1000);
        assert_eq!(area_start(0x1_0F20, 240), 0x1_1000);
        // At a page boundary, even a whole page of head fits.
        assert_eq!(area_start(0x1_1000, PAGE), 0x1_1000);
        assert_eq!(area_start(0x1_0FFF, PAGE), 0x1_1000);
        assert_eq!(area_start(0x1_0010, PAGE), 0x1_1000);
    }

    #[test]
    fn parts_lie_in_the_view_after_the_record_at_the_bus_address_given() {
        #[repr(C, align(16))]
        struct Area([u8; 256]);
        let mut area = Area([0; 256]);
        let start = area.0.as_mut_ptr() as usize;
        let view = RequestView::at(start, 256, 0).unwrap();
        let part = view.part(0x40, 0x20, 0x1_0000).unwrap();
        assert_eq!(
            (part.cpu_address(), part.len(), part.bus_address()),
            (start + 0x40, 0x20, 0x1_0040)
        );
        // Up to the view's end, not past it.
        assert_eq!(view.part(0xF0, 0x10, 0).map(|p| p.len()), Some(0x10));
        assert!(view.part(0xF0, 0x11, 0).is_none(), "past the view");
        assert!(view.part(usize::MAX, 2, 0).is_none(), "offset overflows");
        // Never the record, and never a misaligned start.
        assert!(view.part(8, 8, 0).is_none(), "inside the record");
        assert!(view.part(0x44, 8, 0).is_none(), "misaligned");
        // A bus address that would wrap is refused.
        assert!(view.part(0x40, 8, u64::MAX - 0x20).is_none(), "bus wraps");
    }

    #[test]
    fn a_head_larger_than_a_page_is_refused() {
        assert!(AreaShape::new(PAGE, PAGE + 16, 4).is_some());
        assert!(AreaShape::new(PAGE + 16, PAGE + 16, 4).is_none());
    }
}
