//! `SRB_FUNCTION_IO_CONTROL` through the safe SRB view, in both shapes StorPort sends
//! (`SCSI_REQUEST_BLOCK` and `STORAGE_REQUEST_BLOCK`): the status, `DataTransferLength` and
//! `ReturnCode` each request completes with, and that nothing past `DataTransferLength` is read
//! or written.

use std::mem::{offset_of, size_of};
use std::ptr::NonNull;

use rvscsi::control::ioctl::{CLUSDISK_SIGNATURE, handle};
use rvscsi::storport::srb::{Srb, SrbError};
use rvscsi::storport::{
    IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE, IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
    SRB_FLAGS_DATA_IN, SRB_FUNCTION_EXECUTE_SCSI, SRB_FUNCTION_IO_CONTROL,
    SRB_FUNCTION_STORAGE_REQUEST_BLOCK, SRB_SIGNATURE, SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
    SRB_STATUS_ERROR, SRB_STATUS_INVALID_REQUEST, STATUS_NOT_SUPPORTED, STOR_ADDRESS_TYPE_BTL8,
    STORAGE_REQUEST_BLOCK_VERSION_1, ScsiRequestBlock, StorAddrBtl8, StorageRequestBlock,
};

/// Bytes after the request's `DataTransferLength` in its backing, checked to stay untouched.
const TAIL: usize = 32;

/// 8-aligned storage for one SRB.
struct SrbMemory(Vec<u64>);

impl SrbMemory {
    fn new<T: Copy>(value: T, len: usize) -> Self {
        let mut memory = Self(vec![0; len.div_ceil(8)]);
        memory.put(0, value);
        memory
    }

    fn put<T: Copy>(&mut self, offset: usize, value: T) {
        assert!(offset + size_of::<T>() <= self.0.len() * 8);
        let at = self.0.as_mut_ptr().cast::<u8>().wrapping_add(offset);
        // SAFETY: in bounds (checked above); unaligned writes need no alignment.
        unsafe { at.cast::<T>().write_unaligned(value) };
    }

    fn get<T: Copy>(&self, offset: usize) -> T {
        assert!(offset + size_of::<T>() <= self.0.len() * 8);
        let at = self.0.as_ptr().cast::<u8>().wrapping_add(offset);
        // SAFETY: in bounds (checked above); unaligned reads need no alignment.
        unsafe { at.cast::<T>().read_unaligned() }
    }

    fn pointer(&mut self) -> NonNull<ScsiRequestBlock> {
        NonNull::new(self.0.as_mut_ptr().cast()).unwrap()
    }
}

/// The SRB shapes.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Classic,
    /// SRB_EX with a BTL8 address block, as StorPort builds it.
    Extended,
    /// SRB_EX whose address offset points at nothing valid (the WDK does not promise one for
    /// IO_CONTROL).
    ExtendedWithoutAddress,
}

/// An `SRB_FUNCTION_IO_CONTROL` SRB of `shape` over `buffer`, `DataTransferLength` `length`.
fn io_control(shape: Shape, buffer: *mut u8, length: u32) -> SrbMemory {
    match shape {
        Shape::Classic => {
            let mut srb = ScsiRequestBlock::zeroed();
            srb.length = size_of::<ScsiRequestBlock>() as u16;
            srb.function = SRB_FUNCTION_IO_CONTROL;
            srb.srb_flags = SRB_FLAGS_DATA_IN;
            srb.time_out_value = 30;
            srb.data_buffer = buffer.cast();
            srb.data_transfer_length = length;
            SrbMemory::new(srb, size_of::<ScsiRequestBlock>())
        }
        Shape::Extended | Shape::ExtendedWithoutAddress => {
            let header_len = size_of::<StorageRequestBlock>();
            let total = header_len + size_of::<StorAddrBtl8>();
            let mut srb = StorageRequestBlock::zeroed();
            srb.length = 8;
            srb.function = SRB_FUNCTION_STORAGE_REQUEST_BLOCK;
            srb.signature = SRB_SIGNATURE;
            srb.version = STORAGE_REQUEST_BLOCK_VERSION_1;
            srb.srb_length = total as u32;
            srb.srb_function = u32::from(SRB_FUNCTION_IO_CONTROL);
            srb.srb_flags = SRB_FLAGS_DATA_IN;
            srb.time_out_value = 30;
            srb.address_offset = match shape {
                Shape::ExtendedWithoutAddress => 4096,
                _ => header_len as u32,
            };
            srb.data_transfer_length = length;
            srb.data_buffer = buffer.cast();
            let mut memory = SrbMemory::new(srb, total);
            memory.put(size_of::<StorageRequestBlock>() - 4, 0u32);
            memory.put(
                header_len,
                StorAddrBtl8 {
                    r#type: STOR_ADDRESS_TYPE_BTL8,
                    port: 0,
                    address_length: 4,
                    path: 0,
                    target: 0,
                    lun: 0,
                    reserved: 0,
                },
            );
            memory.put(header_len + 12, 0u32);
            memory
        }
    }
}

const SHAPES: [Shape; 3] = [
    Shape::Classic,
    Shape::Extended,
    Shape::ExtendedWithoutAddress,
];

/// What one request completed with: status, DataTransferLength, the buffer afterwards.
#[derive(Debug, PartialEq, Eq)]
struct Completed {
    status: u8,
    length: u32,
    buffer: Vec<u8>,
}

/// Runs `handle` on an SRB of `shape` whose `DataTransferLength` is `length` over `backing`.
fn run(shape: Shape, backing: &mut [u8], length: u32) -> Completed {
    let mut memory = io_control(shape, backing.as_mut_ptr(), length);
    // SAFETY: the memory holds a complete SRB of the shape built above, and its data buffer
    // (`backing`) is valid for `length` bytes; both outlive the view.
    let mut srb = unsafe { Srb::from_raw(memory.pointer()) }
        .map_err(|(_, error)| error)
        .unwrap();
    assert_eq!(srb.function(), u32::from(SRB_FUNCTION_IO_CONTROL));
    let status = handle(&mut srb);
    let length_at = if matches!(shape, Shape::Classic) {
        offset_of!(ScsiRequestBlock, data_transfer_length)
    } else {
        offset_of!(StorageRequestBlock, data_transfer_length)
    };
    Completed {
        status,
        length: memory.get(length_at),
        buffer: backing.to_vec(),
    }
}

fn probe(control_code: u32) -> Vec<u8> {
    let mut bytes = 28u32.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&CLUSDISK_SIGNATURE);
    for word in [30u32, control_code, 0, 0] {
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    bytes
}

#[test]
fn clusdisk_probes_fail_as_the_cluster_expects_in_every_shape() {
    for shape in SHAPES {
        for (code, status) in [
            (IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE, SRB_STATUS_ERROR),
            (
                IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE,
                SRB_STATUS_INVALID_REQUEST,
            ),
        ] {
            let mut backing = probe(code);
            backing.extend_from_slice(&[0x5A; TAIL]);
            let done = run(shape, &mut backing, 28);
            assert_eq!(done.status, status, "{shape:?} {code:#x}");
            assert_eq!(done.length, 28, "{shape:?} {code:#x}");
            assert_eq!(
                u32::from_ne_bytes(done.buffer[20..24].try_into().unwrap()),
                STATUS_NOT_SUPPORTED.cast_unsigned()
            );
            assert_eq!(
                done.buffer[28..],
                [0x5A; TAIL],
                "{shape:?}: past the buffer"
            );
        }
    }
}

#[test]
fn short_null_and_foreign_buffers_are_refused_in_every_shape() {
    for shape in SHAPES {
        // 27 bytes: too short for the header, whatever the pointer.
        let mut backing = probe(IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE);
        let before = backing.clone();
        let done = run(shape, &mut backing, 27);
        assert_eq!(done.status, SRB_STATUS_BAD_SRB_BLOCK_LENGTH, "{shape:?}");
        assert_eq!(done.length, 0);
        assert_eq!(done.buffer, before);
        // A header whose Length claims 4 bytes the buffer does not have.
        backing[24..28].copy_from_slice(&4u32.to_ne_bytes());
        let before = backing.clone();
        let done = run(shape, &mut backing, 28);
        assert_eq!(done.status, SRB_STATUS_BAD_SRB_BLOCK_LENGTH, "{shape:?}");
        assert_eq!((done.length, done.buffer), (0, before));
        // Another miniport's request.
        let mut backing = probe(IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE);
        backing[4..12].copy_from_slice(b"NVME    ");
        let before = backing.clone();
        let done = run(shape, &mut backing, 28);
        assert_eq!(done.status, SRB_STATUS_INVALID_REQUEST, "{shape:?}");
        assert_eq!((done.length, done.buffer), (0, before));
        // No buffer at all, with a length that would hold a header.
        let mut memory = io_control(shape, std::ptr::null_mut(), 28);
        // SAFETY: a complete SRB; its null data buffer is never dereferenced (that is the test).
        let mut srb = unsafe { Srb::from_raw(memory.pointer()) }
            .map_err(|(_, error)| error)
            .unwrap();
        assert_eq!(handle(&mut srb), SRB_STATUS_INVALID_REQUEST, "{shape:?}");
        assert_eq!(srb.data_transfer_length(), 0);
    }
}

#[test]
fn only_io_control_srbs_may_omit_their_address_block() {
    let mut backing = probe(IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE);
    let mut memory = io_control(Shape::ExtendedWithoutAddress, backing.as_mut_ptr(), 28);
    memory.put(
        offset_of!(StorageRequestBlock, srb_function),
        u32::from(SRB_FUNCTION_EXECUTE_SCSI),
    );
    // SAFETY: a complete SRB built above, over a live buffer.
    let refused = unsafe { Srb::from_raw(memory.pointer()) }.map_err(|(_, error)| error);
    assert!(matches!(
        refused,
        Err(SrbError::BadAddress { offset: 4096 })
    ));
    // And an IO_CONTROL view hands out no buffer for another function.
    memory.put(
        offset_of!(StorageRequestBlock, address_offset),
        size_of::<StorageRequestBlock>() as u32,
    );
    // SAFETY: as above.
    let mut srb = unsafe { Srb::from_raw(memory.pointer()) }
        .map_err(|(_, error)| error)
        .unwrap();
    assert!(srb.io_control_buffer().is_none());
}

proptest::proptest! {
    /// Arbitrary contents and DataTransferLength in both shapes: the answer is the same
    /// whatever lies past DataTransferLength (so nothing there was read), nothing there is
    /// written, and DataTransferLength never grows.
    #[test]
    fn nothing_past_data_transfer_length_is_read_or_written(
        contents in proptest::collection::vec(proptest::num::u8::ANY, 0..72),
        header_valid in proptest::bool::ANY,
        clusdisk in proptest::bool::ANY,
        quorum in proptest::bool::ANY,
        claimed in 0u32..48,
        tail_a in proptest::collection::vec(proptest::num::u8::ANY, TAIL),
        tail_b in proptest::collection::vec(proptest::num::u8::ANY, TAIL),
        shape in proptest::sample::select(SHAPES.to_vec()),
    ) {
        let mut contents = contents;
        if contents.len() >= 28 {
            if header_valid {
                contents[..4].copy_from_slice(&28u32.to_ne_bytes());
                contents[24..28].copy_from_slice(&claimed.to_ne_bytes());
            }
            if clusdisk {
                contents[4..12].copy_from_slice(&CLUSDISK_SIGNATURE);
            }
            let code = if quorum {
                IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE
            } else {
                IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE
            };
            contents[16..20].copy_from_slice(&code.to_ne_bytes());
        }
        let length = contents.len() as u32;
        let mut first = contents.clone();
        first.extend_from_slice(&tail_a);
        let mut second = contents.clone();
        second.extend_from_slice(&tail_b);
        let a = run(shape, &mut first, length);
        let b = run(shape, &mut second, length);
        proptest::prop_assert_eq!(a.status, b.status);
        proptest::prop_assert_eq!(a.length, b.length);
        proptest::prop_assert_eq!(&a.buffer[..contents.len()], &b.buffer[..contents.len()]);
        proptest::prop_assert_eq!(&a.buffer[contents.len()..], &tail_a[..]);
        proptest::prop_assert_eq!(&b.buffer[contents.len()..], &tail_b[..]);
        proptest::prop_assert!(a.length <= length);
    }
}
