//! Where each part of one request lives in its SRB extension: context, virtio-scsi header and
//! response, indirect descriptor table and the segment scratch list.
//!
//! StorPort gives every SRB an extension of the size we ask for in find-adapter; one request is
//! built there and nowhere else, so the I/O path allocates nothing.
#![forbid(unsafe_code)]

use virtio_core::hal::Segment;
use virtio_core::scsi::{CmdReq, CmdResp};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::sizing::HEADER_DESCRIPTORS;
use crate::sizing::{DESCRIPTOR_LEN, REQUEST_ALIGN};
use crate::storport::request::{AreaShape, SRB_RECORD_LEN};

/// Lifecycle of a request, kept in its context so a completion for a request that is not in
/// flight is caught instead of completing an SRB twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RequestState {
    /// Built by BuildIo, not yet on a ring.
    Built = 1,
    /// On a ring, owned by the device.
    InFlight = 2,
    /// Completed back to StorPort; the extension may be reused.
    Done = 3,
}

impl RequestState {
    /// The state stored as `raw`, if it is one.
    #[must_use]
    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Built),
            2 => Some(Self::InFlight),
            3 => Some(Self::Done),
            _ => None,
        }
    }
}

/// Driver-private bookkeeping at the start of every request, after the SRB record the FFI floor
/// keeps ([`crate::storport::request`]). Plain bytes, read and written through the request's
/// view, so every access is bounds-checked.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RequestContext {
    /// Data bytes posted (the SRB's `DataTransferLength` at submission).
    pub data_length: U32,
    /// Sense bytes the SRB can take (0 when it has no sense buffer or disables autosense).
    pub sense_capacity: U32,
    /// Request queue number (0-based, not the virtqueue index).
    pub queue: U16,
    /// Ring token while in flight.
    pub token: U16,
    /// [`RequestState`] as a byte.
    pub state: u8,
    /// `DataDirection` as a byte: 0 none, 1 to device, 2 from device.
    pub direction: u8,
    /// Target and LUN, for the VPD 0x83 synthesis at completion.
    pub target: u8,
    /// The first CDB byte, to recognise INQUIRY at completion without re-reading the SRB.
    pub opcode: u8,
    /// The LUN.
    pub lun: U16,
    /// INQUIRY EVPD page code when `opcode` is INQUIRY with EVPD set, the service action when
    /// `opcode` is SERVICE ACTION IN (16), else 0xFFFF: what the completion needs to recognise
    /// the VPD page to synthesise and the answers the LUN table keeps.
    pub vpd_page: U16,
    /// Readable segments of the request (request header and data-out): in the scratch list,
    /// or at the start of the indirect table BuildIo wrote.
    pub readable: U16,
    /// Writable segments of the request (response and data-in), after the readable ones.
    pub writable: U16,
    /// With an indirect table BuildIo wrote (in the ring format the negotiated features
    /// name): total bytes of the writable segments, the bound the ring keeps for the device's
    /// used length.
    pub table_writable: U32,
    /// With an indirect table BuildIo wrote: total bytes of every segment (saturating), at
    /// least the request header's; 0 when BuildIo filled the scratch list instead, which
    /// StartIo hands to the ring.
    pub table_posted: U32,
    /// Bus address of the request's aligned start (valid for the contiguous parts), so
    /// StartIo needs no second translation.
    pub bus: U64,
    /// The queue's submission count when StartIo put the request on the ring (under the queue
    /// lock): a task management function covers the requests of its queue numbered below the
    /// count it snapshotted before it was sent (see [`crate::recovery::tmf`]).
    pub sequence: U64,
}
const _: () = assert!(size_of::<RequestContext>() == 48);
// `bus` and `sequence` 8-aligned (the context starts 16-aligned, after the floor's SRB record),
// as their single-word loads and stores need; the other fields StartIo loads one by one at
// their own alignment.
const _: () = assert!(
    RequestContext::SEQUENCE_OFFSET.is_multiple_of(8)
        && RequestContext::BUS_OFFSET.is_multiple_of(8)
        && RequestContext::TOKEN_OFFSET.is_multiple_of(2)
        && RequestContext::QUEUE_OFFSET.is_multiple_of(2)
        && RequestContext::LUN_OFFSET.is_multiple_of(2)
        && RequestContext::READABLE_OFFSET.is_multiple_of(2)
        && RequestContext::WRITABLE_OFFSET.is_multiple_of(2)
        && RequestContext::TABLE_WRITABLE_OFFSET.is_multiple_of(4)
        && RequestContext::TABLE_POSTED_OFFSET.is_multiple_of(4)
        && SRB_RECORD_LEN.is_multiple_of(8)
);

impl RequestContext {
    /// Byte offset of `state` in the stored context, for single-byte updates.
    pub const STATE_OFFSET: usize = core::mem::offset_of!(Self, state);
    /// Byte offset of `token` in the stored context.
    pub const TOKEN_OFFSET: usize = core::mem::offset_of!(Self, token);
    /// Byte offset of `sequence` in the stored context.
    pub const SEQUENCE_OFFSET: usize = core::mem::offset_of!(Self, sequence);
    /// Byte offset of `queue` in the stored context.
    pub const QUEUE_OFFSET: usize = core::mem::offset_of!(Self, queue);
    /// Byte offset of `target` in the stored context.
    pub const TARGET_OFFSET: usize = core::mem::offset_of!(Self, target);
    /// Byte offset of `opcode` in the stored context.
    pub const OPCODE_OFFSET: usize = core::mem::offset_of!(Self, opcode);
    /// Byte offset of `lun` in the stored context.
    pub const LUN_OFFSET: usize = core::mem::offset_of!(Self, lun);
    /// Byte offset of `readable` in the stored context.
    pub const READABLE_OFFSET: usize = core::mem::offset_of!(Self, readable);
    /// Byte offset of `writable` in the stored context.
    pub const WRITABLE_OFFSET: usize = core::mem::offset_of!(Self, writable);
    /// Byte offset of `table_writable` in the stored context.
    pub const TABLE_WRITABLE_OFFSET: usize = core::mem::offset_of!(Self, table_writable);
    /// Byte offset of `table_posted` in the stored context.
    pub const TABLE_POSTED_OFFSET: usize = core::mem::offset_of!(Self, table_posted);
    /// Byte offset of `bus` in the stored context.
    pub const BUS_OFFSET: usize = core::mem::offset_of!(Self, bus);
}

/// Offsets of a request's parts from the 16-aligned start of its SRB extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLayout {
    /// Data segments the layout has room for.
    pub max_segments: u32,
    /// [`RequestContext`] (after the floor's SRB record).
    pub context: usize,
    /// `virtio_scsi_req_cmd` device-readable header ([`CmdReq`]).
    pub cmd_req: usize,
    /// `virtio_scsi_req_cmd` device-writable response ([`CmdResp`]).
    pub cmd_resp: usize,
    /// Indirect descriptor table: one descriptor per segment plus header and response.
    pub indirect: usize,
    /// Bytes of the indirect table.
    pub indirect_len: usize,
    /// CPU-only scratch list of [`Segment`]s handed to the ring as a direct chain (when no
    /// indirect table can be used).
    pub segments: usize,
    /// Bytes used from the aligned start.
    pub len: usize,
    /// The request area's shape for the FFI floor (the headers, everything before the
    /// indirect table, in one page; the scratch list last), checked once here; `None` only for
    /// a layout the floor cannot use, which no request then gets.
    pub area: Option<AreaShape>,
}

const fn align_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

impl RequestLayout {
    /// The layout for requests of up to `max_segments` data segments.
    #[must_use]
    pub const fn new(max_segments: u32) -> Self {
        let descriptors = max_segments as usize + HEADER_DESCRIPTORS as usize;
        // The SRB record comes first: it belongs to the FFI floor (`storport::request`).
        let context = SRB_RECORD_LEN;
        let cmd_req = align_up(context + size_of::<RequestContext>(), REQUEST_ALIGN);
        let cmd_resp = align_up(cmd_req + size_of::<CmdReq>(), REQUEST_ALIGN);
        let indirect = align_up(cmd_resp + size_of::<CmdResp>(), REQUEST_ALIGN);
        let indirect_len = descriptors * DESCRIPTOR_LEN;
        let segments = align_up(indirect + indirect_len, REQUEST_ALIGN);
        let len = segments + descriptors * size_of::<Segment>();
        Self {
            max_segments,
            context,
            cmd_req,
            cmd_resp,
            indirect,
            indirect_len,
            segments,
            len,
            area: AreaShape::new(indirect, segments, descriptors),
        }
    }

    /// The SRB extension size to ask StorPort for: the layout plus room to align its start to
    /// [`REQUEST_ALIGN`] (StorPort promises pointer alignment only) and to move it to the next
    /// page when the headers would straddle one (see `io::request_base`).
    #[must_use]
    pub const fn extension_size(&self) -> usize {
        self.len + REQUEST_ALIGN - 1 + self.indirect
    }

    /// Segments the scratch list holds (data segments plus header and response).
    #[must_use]
    pub const fn segment_capacity(&self) -> usize {
        self.max_segments as usize + HEADER_DESCRIPTORS as usize
    }
}

/// Where every layout keeps the context, the request header, the response and the indirect
/// table: all of them precede the first part whose size depends on the segment count (the
/// table's length), so they are constants (asserted below for every segment count). The I/O
/// path writes and reads them through one window checked once, with no offset loaded.
pub const CONTEXT_AT: usize = RequestLayout::new(1).context;
/// See [`CONTEXT_AT`].
pub const CMD_REQ_AT: usize = RequestLayout::new(1).cmd_req;
/// See [`CONTEXT_AT`].
pub const CMD_RESP_AT: usize = RequestLayout::new(1).cmd_resp;
/// See [`CONTEXT_AT`].
pub const INDIRECT_AT: usize = RequestLayout::new(1).indirect;
const _: () = {
    let mut segments = 1;
    while segments <= crate::sizing::MAX_DATA_SEGMENTS {
        let layout = RequestLayout::new(segments);
        assert!(
            layout.context == CONTEXT_AT
                && layout.cmd_req == CMD_REQ_AT
                && layout.cmd_resp == CMD_RESP_AT
                && layout.indirect == INDIRECT_AT
        );
        segments += 1;
    }
    // Everything at a constant offset lies before the indirect table.
    assert!(CONTEXT_AT + CONTEXT_LEN <= INDIRECT_AT);
    assert!(CMD_REQ_AT + size_of::<CmdReq>() <= INDIRECT_AT);
    assert!(CMD_RESP_AT + size_of::<CmdResp>() <= INDIRECT_AT);
};

/// Offset to add to `address` to reach the next [`REQUEST_ALIGN`] boundary.
#[must_use]
pub const fn alignment_offset(address: usize) -> usize {
    align_up(address, REQUEST_ALIGN) - address
}

/// The stored size of a context.
pub const CONTEXT_LEN: usize = size_of::<RequestContext>();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_aligned_disjoint_and_in_order() {
        for segments in [1, 17, 254, 512] {
            let layout = RequestLayout::new(segments);
            assert_eq!(layout.cmd_req % 16, 0);
            assert_eq!(layout.indirect % 16, 0);
            assert_eq!(layout.segments % 16, 0);
            assert!(layout.context + CONTEXT_LEN <= layout.cmd_req);
            assert!(layout.cmd_req + size_of::<CmdReq>() <= layout.cmd_resp);
            assert!(layout.cmd_resp + size_of::<CmdResp>() <= layout.indirect);
            assert_eq!(layout.indirect_len, (segments as usize + 2) * 16);
            assert!(layout.indirect + layout.indirect_len <= layout.segments);
            assert_eq!(
                layout.len,
                layout.segments + (segments as usize + 2) * size_of::<Segment>()
            );
            assert_eq!(layout.extension_size(), layout.len + 15 + layout.indirect);
        }
    }

    #[test]
    fn qemu_default_extension_is_under_nine_kib() {
        // 254 segments: context and headers 240 bytes, table 4096, scratch 4096.
        let layout = RequestLayout::new(254);
        assert_eq!(layout.indirect, 240);
        assert_eq!(layout.len, 240 + 4096 + 4096);
        assert!(layout.extension_size() < 9 * 1024);
    }

    #[test]
    fn states_round_trip_and_garbage_is_refused() {
        for state in [
            RequestState::Built,
            RequestState::InFlight,
            RequestState::Done,
        ] {
            assert_eq!(RequestState::from_raw(state as u8), Some(state));
        }
        assert_eq!(RequestState::from_raw(0), None);
        assert_eq!(RequestState::from_raw(0xFF), None);
    }

    #[test]
    fn alignment_offsets() {
        assert_eq!(alignment_offset(0x1000), 0);
        assert_eq!(alignment_offset(0x1008), 8);
        assert_eq!(alignment_offset(0x100F), 1);
    }
}
