//! The StorPort simulator's contract, exercised with a small test miniport written against the
//! StorPort C API (the same symbols the real miniport links against).
#![expect(clippy::cast_possible_wrap, reason = "test values are small")]

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rvscsi_tests::device::PhysicalMemory;
use rvscsi_tests::device::memory::IOVA_BASE;
use rvscsi_tests::sim::abi::{self, HwInitializationData, PortConfigurationInformation};
use rvscsi_tests::sim::{
    Adapter, Contiguity, DataDirection, DmaArena, DumpPort, InterruptLine, Lock, Notification,
    PciFunction, Platform, Request, SimError, SimOptions, Simulator, Violation,
};

unsafe extern "system" {
    fn StorPortInitialize(a1: *mut c_void, a2: *mut c_void, hw: *mut c_void, u: *mut c_void)
    -> u32;
    fn StorPortGetDeviceBase(
        ext: *mut c_void,
        bus_type: u32,
        bus: u32,
        address: i64,
        len: u32,
        io: u8,
    ) -> *mut c_void;
    fn StorPortGetBusData(
        ext: *mut c_void,
        data_type: u32,
        bus: u32,
        slot: u32,
        buffer: *mut c_void,
        len: u32,
    ) -> u32;
    fn StorPortGetUncachedExtension(ext: *mut c_void, config: *mut c_void, len: u32)
    -> *mut c_void;
    fn StorPortGetPhysicalAddress(
        ext: *mut c_void,
        srb: *mut c_void,
        va: *mut c_void,
        len: *mut u32,
    ) -> i64;
    fn StorPortGetScatterGatherList(ext: *mut c_void, srb: *mut c_void) -> *mut c_void;
    fn StorPortWriteRegisterUlong(ext: *mut c_void, register: *mut c_void, value: u32);
    fn StorPortReadRegisterUlong(ext: *mut c_void, register: *mut c_void) -> u32;
    fn StorPortCompleteRequest(ext: *mut c_void, path: u8, target: u8, lun: u8, status: u8);
    fn StorPortBusy(ext: *mut c_void, requests: u32) -> u8;
}

unsafe extern "C" {
    fn StorPortNotification(notification: u32, ext: *mut c_void, ...);
    fn StorPortExtendedFunction(function: u32, ext: *mut c_void, ...) -> u32;
    fn StorPortDebugPrint(level: u32, format: *const u8, ...);
}

const REQUEST_COMPLETE: u32 = 0;
const RESET_DETECTED: u32 = 3;
const BUS_CHANGE_DETECTED: u32 = 7;
const STATE_CHANGE_DETECTED: u32 = 0x1005;
/// Vendor CDBs the test miniport answers itself: send a StorPortStateChangeDetected for the
/// address in its extension (byte 1: the address type to claim), change that address, or send
/// BusChangeDetected.
const CDB_STATE_CHANGE: u8 = 0xC1;
const CDB_CHANGE_ADDRESS: u8 = 0xC2;
const CDB_BUS_CHANGE: u8 = 0xC3;
/// Vendor CDBs of a miniport that overruns: one byte past the data buffer, one byte past the
/// sense buffer, or a DataTransferLength 512 above the one sent.
const CDB_WRITE_PAST_DATA: u8 = 0xC4;
const CDB_WRITE_PAST_SENSE: u8 = 0xC5;
const CDB_GROW_TRANSFER: u8 = 0xC6;
const ENABLE_PASSIVE_INITIALIZATION: u32 = 0x1000;
const INITIALIZE_DPC: u32 = 0x1001;
const ISSUE_DPC: u32 = 0x1002;
const ACQUIRE_SPIN_LOCK: u32 = 0x1003;
const RELEASE_SPIN_LOCK: u32 = 0x1004;
const EXT_ACQUIRE_MSI_SPIN_LOCK: u32 = 11;
const EXT_RELEASE_MSI_SPIN_LOCK: u32 = 12;
const EXT_GET_MSI_INFO: u32 = 13;
const EXT_PERF_OPTS: u32 = 14;
const EXT_CURRENT_PROCESSOR: u32 = 17;
/// The test device's DMA registers: the bus address (low, high half), the offset in the read
/// pattern to start from, and the length to write, which starts the transfer (reading it
/// back: 1 if the device could write, 0 if the IOMMU refused).
const DMA_ADDRESS_LOW: usize = 8;
const DMA_ADDRESS_HIGH: usize = 12;
const DMA_PATTERN_OFFSET: usize = 16;
const DMA_GO: usize = 20;

/// How the test miniport behaves, chosen per test (boot runs on the test's thread).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Complete every SRB in HwStartIo.
    Immediate,
    /// Ring the doorbell; the device interrupts on message 1; the ISR issues a DPC that
    /// completes the SRBs.
    Interrupt,
    /// Complete every SRB twice.
    DoubleComplete,
    /// Never complete; HwResetBus completes everything with SRB_STATUS_BUS_RESET.
    HoldUntilReset,
    /// Never complete; HwResetBus does nothing.
    HoldForever,
    /// Take the StartIo lock inside HwStartIo (already held) and release a lock not held.
    BadLocks,
    /// As `Interrupt`, but HwStartIo queues the SRB and rings the doorbell holding the
    /// interrupt lock (which with per-message synchronisation must keep message 1's ISR out);
    /// the ISR also asks for the interrupt lock while holding its message's lock, and
    /// ScsiStopAdapter for message 1's lock under the interrupt lock StorPort holds (both
    /// recursive acquisitions on real Windows).
    InterruptLockIsEveryMessageLock,
    /// HwStorUnitControl's query writes past MaxControlType, and every other type is answered
    /// Success though the query did not report it.
    BadUnitControl,
    /// Answer the first three requests BUSY (calling StorPortBusy), then complete normally.
    BusyThrice,
    /// Answer every request BUSY.
    AlwaysBusy,
    /// HwFindAdapter writes FALSE through `Reserved3`, as a SCSIport miniport clears `Again`.
    WritesReserved3,
    /// Under DMA remapping, as a compatible miniport does: the device writes into the SRB
    /// extension at the bus address StorPortGetPhysicalAddress gave with the SRB, and the read
    /// data into the data buffer through the scatter/gather list's bus addresses.
    DmaThroughStorPort,
    /// The offender: hands the device the SRB extension's physical address (what
    /// MmGetPhysicalAddress gives), which no IOMMU mapping covers.
    DmaToPhysicalAddress,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Immediate) };
    static ADVERTISE_SRB_EX: Cell<bool> = const { Cell::new(true) };
}

/// The test miniport's device extension.
#[repr(C, align(16))]
struct Extension {
    mode: Mode,
    registers: usize,
    dpc: [u64; 9],
    pending: [usize; 256],
    pending_count: usize,
    uncached: usize,
    uncached_physical: i64,
    uncached_contiguous: u32,
    seen_config: PortConfigurationInformation,
    vendor_device: u32,
    msi_info_vector: u32,
    in_start_io: AtomicU32,
    max_in_start_io: AtomicU32,
    isr_count: AtomicU32,
    dpc_count: AtomicU32,
    isr_processor: AtomicU32,
    dpc_processor: AtomicU32,
    dpc_after_isr: AtomicU32,
    srb_ex_parsed: AtomicU32,
    passive_ran: AtomicU32,
    sg_bytes: AtomicUsize,
    /// The STOR_ADDR_BTL8 of the last state-change notification (kept until the callback).
    state_address: abi::StorAddrBtl8,
    /// STOR_STATUS of each state-change notification sent, in order (atomics: the extension
    /// starts zeroed, which they accept).
    state_statuses: [AtomicU32; 4],
    state_sent: AtomicUsize,
    /// HwStorStateChange calls, and the address and status of the last one.
    state_callbacks: AtomicUsize,
    state_callback_address: AtomicUsize,
    state_callback_status: AtomicU32,
    /// HwStartIo holds the interrupt lock (`InterruptLockIsEveryMessageLock`).
    interrupt_lock_held: AtomicU32,
    /// ISRs that ran while HwStartIo held the interrupt lock.
    isr_under_interrupt_lock: AtomicU32,
    /// `HoldUntilReset`: requests held now and the most held at once, per LUN (0..8) and in all.
    holding: [AtomicU32; 8],
    holding_peak: [AtomicU32; 8],
    holding_total: AtomicU32,
    holding_total_peak: AtomicU32,
    /// StartIo calls (`BusyThrice`, `AlwaysBusy`).
    starts: AtomicU32,
    /// The DMA modes: the SRB extension's bus address StorPortGetPhysicalAddress gave with the
    /// SRB and with NULL, and how many device DMAs failed.
    dma_bus: AtomicUsize,
    bus_without_srb: AtomicUsize,
    dma_failures: AtomicU32,
    /// The DMA modes: requests whose SRB extension held what the device wrote there.
    dma_delivered: AtomicU32,
}

impl Extension {
    fn state_statuses(&self) -> Vec<u32> {
        let sent = self.state_sent.load(Ordering::SeqCst);
        self.state_statuses
            .iter()
            .take(sent)
            .map(|status| status.load(Ordering::SeqCst))
            .collect()
    }
}

fn ext<'a>(extension: *mut c_void) -> &'a mut Extension {
    // SAFETY: the simulator passes the device extension it allocated with
    // DeviceExtensionSize = size_of::<Extension>(), zeroed, 16-aligned, live for the adapter.
    unsafe { &mut *extension.cast::<Extension>() }
}

/// The SRB fields the test miniport needs, from either SRB type.
struct SrbView {
    extended: bool,
    target: u8,
    lun: u8,
    cdb: [u8; 16],
    data: usize,
    len: u32,
    sense: usize,
    sense_len: u8,
}

fn view(srb: *mut c_void) -> SrbView {
    // SAFETY: the simulator hands HwStartIo an SRB it built; the first bytes say which type.
    let function = unsafe { srb.cast::<u8>().wrapping_add(2).read() };
    if function == abi::SRB_FUNCTION_STORAGE_REQUEST_BLOCK {
        // SAFETY: a STORAGE_REQUEST_BLOCK header is at the SRB's start.
        let header = unsafe { srb.cast::<abi::StorageRequestBlock>().read_unaligned() };
        assert_eq!(header.signature, abi::SRB_SIGNATURE);
        assert_eq!(header.version, abi::STORAGE_REQUEST_BLOCK_VERSION_1);
        assert_eq!(header.num_srb_ex_data, 1);
        // SAFETY: AddressOffset points inside the SRB (SrbLength) at a STOR_ADDR_BTL8.
        let address = unsafe {
            srb.cast::<u8>()
                .wrapping_add(header.address_offset as usize)
                .cast::<abi::StorAddrBtl8>()
                .read_unaligned()
        };
        assert_eq!(address.address_type, abi::STOR_ADDRESS_TYPE_BTL8);
        assert_eq!(address.address_length, abi::STOR_ADDR_BTL8_ADDRESS_LENGTH);
        // SAFETY: SrbExDataOffset[0] points inside the SRB at an SRBEX_DATA_SCSI_CDB16.
        let cdb = unsafe {
            srb.cast::<u8>()
                .wrapping_add(header.srb_ex_data_offset[0] as usize)
                .cast::<abi::SrbExDataScsiCdb16>()
                .read_unaligned()
        };
        assert_eq!(cdb.data_type, abi::SRBEX_DATA_TYPE_SCSI_CDB16);
        assert_eq!(cdb.length, abi::SRBEX_DATA_SCSI_CDB16_LENGTH);
        assert!(header.srb_length as usize >= header.srb_ex_data_offset[0] as usize + 40);
        SrbView {
            extended: true,
            target: address.target,
            lun: address.lun,
            cdb: cdb.cdb,
            data: header.data_buffer as usize,
            len: header.data_transfer_length,
            sense: cdb.sense_info_buffer as usize,
            sense_len: cdb.sense_info_buffer_length,
        }
    } else {
        // SAFETY: a SCSI_REQUEST_BLOCK.
        let block = unsafe { srb.cast::<abi::ScsiRequestBlock>().read_unaligned() };
        assert_eq!(block.function, abi::SRB_FUNCTION_EXECUTE_SCSI);
        SrbView {
            extended: false,
            target: block.target_id,
            lun: block.lun,
            cdb: block.cdb,
            data: block.data_buffer as usize,
            len: block.data_transfer_length,
            sense: block.sense_info_buffer as usize,
            sense_len: block.sense_info_buffer_length,
        }
    }
}

fn set_status(srb: *mut c_void, status: u8, transfer: u32) {
    // SAFETY: SrbStatus is byte 3 of both SRB types.
    unsafe { srb.cast::<u8>().wrapping_add(3).write(status) };
    let function = {
        // SAFETY: byte 2 is Function in both types.
        unsafe { srb.cast::<u8>().wrapping_add(2).read() }
    };
    let offset = if function == abi::SRB_FUNCTION_STORAGE_REQUEST_BLOCK {
        std::mem::offset_of!(abi::StorageRequestBlock, data_transfer_length)
    } else {
        std::mem::offset_of!(abi::ScsiRequestBlock, data_transfer_length)
    };
    // SAFETY: DataTransferLength is a ULONG at `offset` in the SRB.
    unsafe {
        srb.cast::<u8>()
            .wrapping_add(offset)
            .cast::<u32>()
            .write_unaligned(transfer);
    }
}

/// The overrunning miniport's vendor CDBs (see [`CDB_WRITE_PAST_DATA`]).
fn overrun(srb: *mut c_void, request: &SrbView) {
    match request.cdb[0] {
        CDB_WRITE_PAST_DATA => {
            let past = (request.data as *mut u8).wrapping_add(request.len as usize);
            // SAFETY: deliberately one byte past the data buffer: the simulator's guard there
            // is DMA memory it allocated with the buffer.
            unsafe { past.write(0x11) };
            set_status(srb, abi::SRB_STATUS_SUCCESS, request.len);
        }
        CDB_WRITE_PAST_SENSE => {
            let past = (request.sense as *mut u8).wrapping_add(usize::from(request.sense_len));
            // SAFETY: deliberately one byte past the sense buffer, into the simulator's guard.
            unsafe { past.write(0x70) };
            set_status(srb, 0x04, 0); // SRB_STATUS_ERROR
        }
        _ => set_status(srb, abi::SRB_STATUS_SUCCESS, request.len + 512),
    }
}

/// Runs the command against a one-target, two-LUN disk: fills the data buffer through the SG
/// list (checking that it covers the transfer) and sets the status.
fn execute(extension: *mut c_void, srb: *mut c_void) {
    let request = view(srb);
    let e = ext(extension);
    if request.extended {
        e.srb_ex_parsed.fetch_add(1, Ordering::SeqCst);
    }
    match request.cdb[0] {
        CDB_STATE_CHANGE => {
            e.state_address = abi::StorAddrBtl8 {
                address_type: u16::from(request.cdb[1]),
                address_length: abi::STOR_ADDR_BTL8_ADDRESS_LENGTH,
                target: 0,
                lun: 1,
                ..abi::StorAddrBtl8::default()
            };
            let mut status = 0xFFFF_FFFF_u32;
            // SAFETY: StateChangeDetectedCall with storport.h's argument list; the address
            // lives in the device extension until the callback.
            unsafe {
                StorPortNotification(
                    STATE_CHANGE_DETECTED,
                    extension,
                    1_u32,
                    &raw mut e.state_address,
                    0_u32,
                    state_changed as *const c_void,
                    std::ptr::null_mut::<c_void>(),
                    &raw mut status,
                );
            }
            let index = e.state_sent.fetch_add(1, Ordering::SeqCst);
            e.state_statuses[index].store(status, Ordering::SeqCst);
            set_status(srb, abi::SRB_STATUS_SUCCESS, 0);
            return;
        }
        CDB_CHANGE_ADDRESS => {
            e.state_address.lun = 7;
            set_status(srb, abi::SRB_STATUS_SUCCESS, 0);
            return;
        }
        CDB_BUS_CHANGE => {
            // SAFETY: BusChangeDetected takes the path id (promoted to int).
            unsafe { StorPortNotification(BUS_CHANGE_DETECTED, extension, 0_u32) };
            set_status(srb, abi::SRB_STATUS_SUCCESS, 0);
            return;
        }
        CDB_WRITE_PAST_DATA | CDB_WRITE_PAST_SENSE | CDB_GROW_TRANSFER => {
            overrun(srb, &request);
            return;
        }
        _ => {}
    }
    if request.target != 0 || request.lun > 1 {
        set_status(srb, 0x0A, 0);
        return;
    }
    let payload: Vec<u8> = match request.cdb[0] {
        0x12 => {
            let mut inquiry = vec![0_u8; 36];
            inquiry[4] = 31;
            inquiry[8..16].copy_from_slice(b"RVSCSI  ");
            inquiry[16..20].copy_from_slice(b"TEST");
            inquiry
        }
        0xA0 => vec![
            0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
        ],
        0x25 => vec![0, 0, 0x0F, 0xFF, 0, 0, 2, 0],
        0x28 => (0..request.len).map(|i| (i % 251) as u8).collect(),
        _ => Vec::new(),
    };
    let len = payload.len().min(request.len as usize);
    if len > 0 {
        // SAFETY: StorPortGetScatterGatherList is called in HwStartIo with this adapter's
        // extension and an outstanding SRB.
        let list = unsafe { StorPortGetScatterGatherList(extension, srb) };
        assert!(!list.is_null());
        // SAFETY: the list header is followed by NumberOfElements elements.
        let header = unsafe {
            list.cast::<abi::StorScatterGatherListHeader>()
                .read_unaligned()
        };
        let mut covered = 0_usize;
        let mut cursor = request.data;
        for i in 0..header.number_of_elements as usize {
            // SAFETY: element i is inside the list.
            let element = unsafe {
                list.cast::<u8>()
                    .wrapping_add(16 + 24 * i)
                    .cast::<abi::StorScatterGatherElement>()
                    .read_unaligned()
            };
            assert_eq!(
                element.physical_address as usize, cursor,
                "identity physical addresses"
            );
            cursor += element.length as usize;
            covered += element.length as usize;
        }
        assert_eq!(covered, request.len as usize);
        e.sg_bytes.fetch_add(covered, Ordering::SeqCst);
        // SAFETY: the data buffer holds DataTransferLength bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), request.data as *mut u8, len);
        }
    }
    set_status(srb, abi::SRB_STATUS_SUCCESS, len as u32);
}

extern "system" fn state_changed(
    extension: *mut c_void,
    _context: *mut c_void,
    address_type: i16,
    address: *mut c_void,
    status: u32,
) {
    assert_eq!(address_type, 1, "STOR_ADDRESS_TYPE_BTL8");
    let e = ext(extension);
    e.state_callback_address
        .store(address.addr(), Ordering::SeqCst);
    e.state_callback_status.store(status, Ordering::SeqCst);
    e.state_callbacks.fetch_add(1, Ordering::SeqCst);
}

/// The SRB extension of either SRB type.
fn srb_extension(srb: *mut c_void) -> usize {
    // SAFETY: byte 2 is Function in both types.
    let function = unsafe { srb.cast::<u8>().wrapping_add(2).read() };
    if function == abi::SRB_FUNCTION_STORAGE_REQUEST_BLOCK {
        // SAFETY: a STORAGE_REQUEST_BLOCK header is at the SRB's start.
        let header = unsafe { srb.cast::<abi::StorageRequestBlock>().read_unaligned() };
        header.miniport_context as usize
    } else {
        // SAFETY: a SCSI_REQUEST_BLOCK.
        let block = unsafe { srb.cast::<abi::ScsiRequestBlock>().read_unaligned() };
        block.srb_extension as usize
    }
}

/// Has the test device write `len` bytes of the read pattern, from `offset` in it, at bus
/// address `bus`; whether the device could.
fn device_dma(extension: *mut c_void, bus: u64, len: u32, offset: u32) -> bool {
    let e = ext(extension);
    for (register, value) in [
        (DMA_ADDRESS_LOW, bus as u32),
        (DMA_ADDRESS_HIGH, (bus >> 32) as u32),
        (DMA_PATTERN_OFFSET, offset),
        (DMA_GO, len),
    ] {
        // SAFETY: a register of the test device's BAR, mapped in HwFindAdapter.
        unsafe {
            StorPortWriteRegisterUlong(extension, (e.registers + register) as *mut c_void, value);
        };
    }
    // SAFETY: as above.
    let ok = unsafe { StorPortReadRegisterUlong(extension, (e.registers + DMA_GO) as *mut c_void) };
    ok == 1
}

/// The DMA modes' request: the device writes 8 pattern bytes into the SRB extension, then the
/// read data (the READ pattern of `execute`) into the data buffer element by element.
fn dma_request(extension: *mut c_void, srb: *mut c_void) {
    let e = ext(extension);
    let request = view(srb);
    let srb_extension = srb_extension(srb);
    let mut length = 0;
    // SAFETY: the SRB extension of an SRB this miniport holds, translated with its SRB.
    let with_srb = unsafe {
        StorPortGetPhysicalAddress(
            extension,
            srb,
            srb_extension as *mut c_void,
            &raw mut length,
        )
    };
    // SAFETY: the same, without the SRB.
    let without_srb = unsafe {
        StorPortGetPhysicalAddress(
            extension,
            std::ptr::null_mut(),
            srb_extension as *mut c_void,
            &raw mut length,
        )
    };
    e.dma_bus
        .store(with_srb.cast_unsigned() as usize, Ordering::SeqCst);
    e.bus_without_srb
        .store(without_srb.cast_unsigned() as usize, Ordering::SeqCst);
    let handed = if e.mode == Mode::DmaThroughStorPort {
        with_srb.cast_unsigned()
    } else {
        srb_extension as u64
    };
    if !device_dma(extension, handed, 8, 0) {
        e.dma_failures.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: the SRB extension is 64 bytes.
    let written = unsafe { std::slice::from_raw_parts(srb_extension as *const u8, 8) };
    if written == [0, 1, 2, 3, 4, 5, 6, 7] {
        e.dma_delivered.fetch_add(1, Ordering::SeqCst);
    }
    let mut moved = 0;
    if request.len > 0 {
        // SAFETY: StorPortGetScatterGatherList in HwStartIo for an outstanding SRB.
        let list = unsafe { StorPortGetScatterGatherList(extension, srb) };
        assert!(!list.is_null());
        // SAFETY: the list header is followed by NumberOfElements elements.
        let header = unsafe {
            list.cast::<abi::StorScatterGatherListHeader>()
                .read_unaligned()
        };
        for i in 0..header.number_of_elements as usize {
            // SAFETY: element i is inside the list.
            let element = unsafe {
                list.cast::<u8>()
                    .wrapping_add(16 + 24 * i)
                    .cast::<abi::StorScatterGatherElement>()
                    .read_unaligned()
            };
            if !device_dma(extension, element.physical_address, element.length, moved) {
                e.dma_failures.fetch_add(1, Ordering::SeqCst);
            }
            moved += element.length;
        }
    }
    set_status(srb, abi::SRB_STATUS_SUCCESS, moved);
}

fn complete(extension: *mut c_void, srb: *mut c_void) {
    // SAFETY: RequestComplete with an SRB this miniport owns.
    unsafe { StorPortNotification(REQUEST_COMPLETE, extension, srb) };
}

fn processor(extension: *mut c_void) -> u32 {
    let mut number = abi::ProcessorNumber::default();
    // SAFETY: GetCurrentProcessorNumber writes a PROCESSOR_NUMBER.
    let status =
        unsafe { StorPortExtendedFunction(EXT_CURRENT_PROCESSOR, extension, &raw mut number) };
    assert_eq!(status, abi::STOR_STATUS_SUCCESS);
    u32::from(number.number)
}

extern "system" fn find_adapter(
    extension: *mut c_void,
    _context: *mut c_void,
    _bus: *mut c_void,
    _argument: *mut u8,
    config: *mut c_void,
    reserved3: *mut u8,
) -> u32 {
    let e = ext(extension);
    e.mode = MODE.with(Cell::get);
    if e.mode == Mode::WritesReserved3 {
        // SAFETY: the simulator passes a valid byte (which it then checks).
        unsafe { reserved3.write(0) };
    }
    // SAFETY: StorPort's PORT_CONFIGURATION_INFORMATION.
    let info = unsafe { &mut *config.cast::<PortConfigurationInformation>() };
    e.seen_config = *info;
    let mut header = [0_u32; 16];
    // SAFETY: 64 bytes of configuration space into a 64-byte buffer.
    let read = unsafe {
        StorPortGetBusData(
            extension,
            abi::PCI_CONFIGURATION,
            0,
            0,
            header.as_mut_ptr().cast(),
            64,
        )
    };
    assert_eq!(read, 64);
    e.vendor_device = header[0];
    // SAFETY: AccessRanges has NumberOfAccessRanges entries.
    let range = unsafe { (info.access_ranges as *const abi::AccessRange).read_unaligned() };
    assert_eq!(
        u64::from(header[4] & !0xF),
        range.range_start,
        "BAR0 reads back its address"
    );
    // SAFETY: mapping the first access range.
    e.registers = unsafe {
        StorPortGetDeviceBase(
            extension,
            abi::PCI_BUS,
            0,
            range.range_start as i64,
            range.range_length,
            0,
        )
    }
    .addr();
    // SAFETY: one uncached extension, in HwFindAdapter.
    e.uncached = unsafe { StorPortGetUncachedExtension(extension, config, 3 * 4096) }.addr();
    let mut contiguous = 0;
    // SAFETY: the physical address of the uncached extension's second byte.
    e.uncached_physical = unsafe {
        StorPortGetPhysicalAddress(
            extension,
            std::ptr::null_mut(),
            (e.uncached + 1) as *mut c_void,
            &raw mut contiguous,
        )
    };
    e.uncached_contiguous = contiguous;
    info.maximum_transfer_length = 0x10_0000;
    info.number_of_physical_breaks = 257;
    info.srb_extension_size = 64;
    info.max_number_of_io = 77;
    info.max_ios_per_lun = 33;
    info.interrupt_synchronization_mode = abi::INTERRUPT_SYNCHRONIZE_PER_MESSAGE;
    info.hw_ms_interrupt_routine = message_interrupt as *const () as usize as u64;
    info.dma64_bit_addresses = abi::SCSI_DMA64_MINIPORT_SUPPORTED;
    // SAFETY: a NUL-terminated format with one %u argument.
    unsafe {
        StorPortDebugPrint(
            1,
            c"find adapter: %u ranges".as_ptr().cast(),
            info.number_of_access_ranges,
        );
    }
    abi::SP_RETURN_FOUND
}

extern "system" fn initialize(extension: *mut c_void) -> u8 {
    let e = ext(extension);
    // Under the dump port this miniport still asks for passive initialisation and a DPC, so
    // that the simulator's refusal shows; it asserts nothing the dump port does not offer.
    let dump = e.seen_config.dump_mode != 0;
    // StorPort honours this only from HwInitialize.
    let mut enabled = 0_i32;
    // SAFETY: EnablePassiveInitialization with a routine and a result slot.
    unsafe {
        StorPortNotification(
            ENABLE_PASSIVE_INITIALIZATION,
            extension,
            passive_initialize as extern "system" fn(*mut c_void) -> u8,
            &raw mut enabled,
        );
    }
    assert_eq!(enabled, i32::from(!dump));
    let dpc = e.dpc.as_mut_ptr().cast::<c_void>();
    // SAFETY: InitializeDpc with a STOR_DPC inside the extension.
    unsafe {
        StorPortNotification(
            INITIALIZE_DPC,
            extension,
            dpc,
            completion_dpc
                as extern "system" fn(*mut c_void, *mut c_void, *mut c_void, *mut c_void),
        );
    }
    let mut info = abi::MessageInterruptInformation::default();
    // SAFETY: GetMSIInfo for message 1 into a MESSAGE_INTERRUPT_INFORMATION.
    let status =
        unsafe { StorPortExtendedFunction(EXT_GET_MSI_INFO, extension, 1_u32, &raw mut info) };
    // The dump port grants no message at all.
    let expected = if dump {
        abi::STOR_STATUS_INVALID_PARAMETER
    } else {
        abi::STOR_STATUS_SUCCESS
    };
    assert_eq!(status, expected);
    e.msi_info_vector = info.interrupt_vector;
    // SAFETY: a register write and read through the mapped base.
    unsafe {
        StorPortWriteRegisterUlong(extension, (e.registers + 4) as *mut c_void, 0xA5A5_0001);
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            StorPortReadRegisterUlong(extension, (e.registers + 4) as *mut c_void),
            0xA5A5_0001
        );
    }
    1
}

extern "system" fn passive_initialize(extension: *mut c_void) -> u8 {
    let e = ext(extension);
    let mut perf = abi::PerfConfigurationData {
        version: 2,
        size: size_of::<abi::PerfConfigurationData>() as u32,
        ..abi::PerfConfigurationData::default()
    };
    // SAFETY: query, then set, of PERF_CONFIGURATION_DATA.
    let status =
        unsafe { StorPortExtendedFunction(EXT_PERF_OPTS, extension, 1_i32, &raw mut perf) };
    assert_eq!(status, abi::STOR_STATUS_SUCCESS);
    assert_ne!(perf.flags & abi::STOR_PERF_CONCURRENT_CHANNELS, 0);
    perf.flags = abi::STOR_PERF_DPC_REDIRECTION;
    // SAFETY: as above.
    let status =
        unsafe { StorPortExtendedFunction(EXT_PERF_OPTS, extension, 0_i32, &raw mut perf) };
    assert_eq!(status, abi::STOR_STATUS_SUCCESS);
    e.passive_ran.store(1, Ordering::SeqCst);
    1
}

/// StorPortNotification(AcquireSpinLock, `lock`) into `handle`. The simulator records a misuse
/// (a recursive acquisition, a lock the rules forbid here) instead of taking the lock.
fn acquire_spin_lock(extension: *mut c_void, lock: u32, handle: &mut abi::StorLockHandle) {
    // SAFETY: the simulator's AcquireSpinLock reads its arguments and writes a STOR_LOCK_HANDLE
    // to `handle`, a live and exclusive reference; a misused lock is recorded, never taken.
    unsafe {
        StorPortNotification(
            ACQUIRE_SPIN_LOCK,
            extension,
            lock,
            std::ptr::null_mut::<c_void>(),
            std::ptr::from_mut(handle),
        );
    }
}

/// StorPortNotification(ReleaseSpinLock) with `handle`. The simulator records the release of a
/// lock this thread does not hold instead of releasing it.
fn release_spin_lock(extension: *mut c_void, handle: &mut abi::StorLockHandle) {
    // SAFETY: the simulator's ReleaseSpinLock reads the STOR_LOCK_HANDLE at `handle`, a live
    // reference; a lock not held is recorded, never released.
    unsafe { StorPortNotification(RELEASE_SPIN_LOCK, extension, std::ptr::from_mut(handle)) };
}

extern "system" fn start_io(extension: *mut c_void, srb: *mut c_void) -> u8 {
    let e = ext(extension);
    let inside = e.in_start_io.fetch_add(1, Ordering::SeqCst) + 1;
    e.max_in_start_io.fetch_max(inside, Ordering::SeqCst);
    std::thread::yield_now();
    match e.mode {
        Mode::Immediate | Mode::BadUnitControl | Mode::WritesReserved3 => {
            execute(extension, srb);
            complete(extension, srb);
        }
        Mode::BusyThrice | Mode::AlwaysBusy => {
            let start = e.starts.fetch_add(1, Ordering::SeqCst);
            if e.mode == Mode::AlwaysBusy || start < 3 {
                // SAFETY: StorPortBusy with this adapter's extension, in HwStartIo.
                unsafe { StorPortBusy(extension, 1) };
                set_status(srb, abi::SRB_STATUS_BUSY, 0);
            } else {
                execute(extension, srb);
            }
            complete(extension, srb);
        }
        Mode::DoubleComplete => {
            execute(extension, srb);
            complete(extension, srb);
            complete(extension, srb);
        }
        Mode::Interrupt => {
            execute(extension, srb);
            let mut old_irql = 0_u32;
            // SAFETY: the MSI lock of message 1 guards the pending list shared with the DPC.
            unsafe {
                StorPortExtendedFunction(
                    EXT_ACQUIRE_MSI_SPIN_LOCK,
                    extension,
                    1_u32,
                    &raw mut old_irql,
                )
            };
            e.pending[e.pending_count] = srb.addr();
            e.pending_count += 1;
            // SAFETY: as above.
            unsafe {
                StorPortExtendedFunction(EXT_RELEASE_MSI_SPIN_LOCK, extension, 1_u32, old_irql)
            };
            // SAFETY: the doorbell register.
            unsafe { StorPortWriteRegisterUlong(extension, e.registers as *mut c_void, 1) };
        }
        Mode::HoldUntilReset | Mode::HoldForever => {
            let lun = usize::from(view(srb).lun).min(7);
            let held = e.holding[lun].fetch_add(1, Ordering::SeqCst) + 1;
            e.holding_peak[lun].fetch_max(held, Ordering::SeqCst);
            let total = e.holding_total.fetch_add(1, Ordering::SeqCst) + 1;
            e.holding_total_peak.fetch_max(total, Ordering::SeqCst);
            execute(extension, srb);
        }
        Mode::InterruptLockIsEveryMessageLock => {
            execute(extension, srb);
            // No lock is held here.
            let mut handle = abi::StorLockHandle::default();
            acquire_spin_lock(extension, abi::INTERRUPT_LOCK, &mut handle);
            e.interrupt_lock_held.store(1, Ordering::SeqCst);
            // The interrupt lock guards the pending list as message 1's lock does.
            e.pending[e.pending_count] = srb.addr();
            e.pending_count += 1;
            // SAFETY: the doorbell register.
            unsafe { StorPortWriteRegisterUlong(extension, e.registers as *mut c_void, 1) };
            // Time for message 1's ISR to run on its processor, if the lock let it.
            std::thread::sleep(Duration::from_millis(30));
            e.interrupt_lock_held.store(0, Ordering::SeqCst);
            release_spin_lock(extension, &mut handle);
        }
        Mode::DmaThroughStorPort | Mode::DmaToPhysicalAddress => {
            dma_request(extension, srb);
            complete(extension, srb);
        }
        Mode::BadLocks => {
            // The StartIo lock is already held here: a recursive acquisition.
            let mut handle = abi::StorLockHandle::default();
            acquire_spin_lock(extension, abi::START_IO_LOCK, &mut handle);
            // Releasing the interrupt lock, which this thread does not hold.
            let mut foreign = abi::StorLockHandle {
                lock: abi::INTERRUPT_LOCK,
                ..abi::StorLockHandle::default()
            };
            release_spin_lock(extension, &mut foreign);
            execute(extension, srb);
            complete(extension, srb);
        }
    }
    e.in_start_io.fetch_sub(1, Ordering::SeqCst);
    1
}

extern "system" fn message_interrupt(extension: *mut c_void, message: u32) -> u8 {
    let e = ext(extension);
    if e.mode == Mode::InterruptLockIsEveryMessageLock {
        if e.interrupt_lock_held.load(Ordering::SeqCst) != 0 {
            e.isr_under_interrupt_lock.fetch_add(1, Ordering::SeqCst);
        }
        // AcquireSpinLock(InterruptLock) while this message's lock is held: refused
        // (recorded), so the handle stays unused.
        let mut handle = abi::StorLockHandle::default();
        acquire_spin_lock(extension, abi::INTERRUPT_LOCK, &mut handle);
    }
    e.isr_count.fetch_add(1, Ordering::SeqCst);
    e.isr_processor
        .store(processor(extension), Ordering::SeqCst);
    let mut queued = 0_i32;
    // SAFETY: IssueDpc on the STOR_DPC initialised in HwInitialize.
    unsafe {
        StorPortNotification(
            ISSUE_DPC,
            extension,
            e.dpc.as_mut_ptr().cast::<c_void>(),
            message as usize as *mut c_void,
            std::ptr::null_mut::<c_void>(),
            &raw mut queued,
        );
    }
    1
}

extern "system" fn completion_dpc(
    _dpc: *mut c_void,
    extension: *mut c_void,
    message: *mut c_void,
    _a2: *mut c_void,
) {
    let e = ext(extension);
    if e.isr_count.load(Ordering::SeqCst) > e.dpc_count.load(Ordering::SeqCst) {
        e.dpc_after_isr.fetch_add(1, Ordering::SeqCst);
    }
    e.dpc_count.fetch_add(1, Ordering::SeqCst);
    e.dpc_processor
        .store(processor(extension), Ordering::SeqCst);
    let mut old_irql = 0_u32;
    let message = message.addr() as u32;
    // SAFETY: the MSI lock guarding the pending list.
    unsafe {
        StorPortExtendedFunction(
            EXT_ACQUIRE_MSI_SPIN_LOCK,
            extension,
            message,
            &raw mut old_irql,
        )
    };
    let pending: Vec<usize> = e.pending[..e.pending_count].to_vec();
    e.pending_count = 0;
    // SAFETY: as above.
    unsafe { StorPortExtendedFunction(EXT_RELEASE_MSI_SPIN_LOCK, extension, message, old_irql) };
    for srb in pending {
        complete(extension, srb as *mut c_void);
    }
}

extern "system" fn reset_bus(extension: *mut c_void, path: u32) -> u8 {
    if ext(extension).mode == Mode::HoldUntilReset {
        let e = ext(extension);
        for held in &e.holding {
            held.store(0, Ordering::SeqCst);
        }
        e.holding_total.store(0, Ordering::SeqCst);
        // SAFETY: completing everything on the path, as a bus reset does.
        unsafe {
            StorPortNotification(RESET_DETECTED, extension);
        }
        // SAFETY: as above.
        unsafe {
            StorPortCompleteRequest(
                extension,
                path as u8,
                abi::SP_UNTAGGED,
                abi::SP_UNTAGGED,
                abi::SRB_STATUS_BUS_RESET,
            );
        }
    }
    1
}

extern "system" fn adapter_control(
    extension: *mut c_void,
    control: u32,
    parameters: *mut c_void,
) -> u32 {
    let e = ext(extension);
    if control == abi::SCSI_STOP_ADAPTER && e.mode == Mode::InterruptLockIsEveryMessageLock {
        let mut old_irql = 0_u32;
        // SAFETY: message 1's lock under the interrupt lock StorPort holds: refused (recorded),
        // so there is nothing to release.
        let status = unsafe {
            StorPortExtendedFunction(
                EXT_ACQUIRE_MSI_SPIN_LOCK,
                extension,
                1_u32,
                &raw mut old_irql,
            )
        };
        assert_ne!(status, abi::STOR_STATUS_SUCCESS);
    }
    if control == abi::SCSI_QUERY_SUPPORTED_CONTROL_TYPES {
        // SAFETY: SCSI_SUPPORTED_CONTROL_TYPE_LIST: MaxControlType then the BOOLEAN list.
        let max = unsafe { parameters.cast::<u32>().read_unaligned() };
        for control in [
            abi::SCSI_QUERY_SUPPORTED_CONTROL_TYPES,
            abi::SCSI_STOP_ADAPTER,
            abi::SCSI_RESTART_ADAPTER,
        ] {
            if control < max {
                // SAFETY: entry `control` of the list, below MaxControlType.
                unsafe {
                    parameters
                        .cast::<u8>()
                        .wrapping_add(4 + control as usize)
                        .write(1);
                }
            }
        }
    }
    abi::SCSI_ADAPTER_CONTROL_SUCCESS
}

/// HwStorUnitControl: reports only the query itself and refuses every other type, except in
/// `BadUnitControl`, which also writes the eight entries past MaxControlType and answers
/// Success to everything.
extern "system" fn unit_control(
    extension: *mut c_void,
    control: u32,
    parameters: *mut c_void,
) -> u32 {
    let bad = ext(extension).mode == Mode::BadUnitControl;
    if control == abi::SCSI_QUERY_SUPPORTED_UNIT_CONTROL_TYPES {
        // SAFETY: SCSI_SUPPORTED_CONTROL_TYPE_LIST: MaxControlType then the BOOLEAN list.
        let max = unsafe { parameters.cast::<u32>().read_unaligned() } as usize;
        let last = if bad { max + 8 } else { max.min(1) };
        let entries = if bad {
            (max..last).chain(0..1).collect()
        } else {
            (0..last).collect::<Vec<_>>()
        };
        for entry in entries {
            // SAFETY: inside the list, or (`BadUnitControl`, on purpose) inside the simulator's
            // guard bytes after it.
            unsafe { parameters.cast::<u8>().wrapping_add(4 + entry).write(1) };
        }
        return abi::SCSI_UNIT_CONTROL_SUCCESS;
    }
    if bad {
        abi::SCSI_UNIT_CONTROL_SUCCESS
    } else {
        abi::SCSI_UNIT_CONTROL_UNSUCCESSFUL
    }
}

unsafe extern "system" fn driver_entry(
    driver_object: *mut c_void,
    registry_path: *mut c_void,
) -> i32 {
    let mut hw = HwInitializationData {
        hw_initialization_data_size: size_of::<HwInitializationData>() as u32,
        adapter_interface_type: abi::PCI_BUS,
        hw_initialize: initialize as *const () as usize as u64,
        hw_start_io: start_io as *const () as usize as u64,
        hw_find_adapter: find_adapter as *const () as usize as u64,
        hw_reset_bus: reset_bus as *const () as usize as u64,
        hw_adapter_control: adapter_control as *const () as usize as u64,
        hw_unit_control: unit_control as *const () as usize as u64,
        device_extension_size: size_of::<Extension>() as u32,
        specific_lu_extension_size: 32,
        srb_extension_size: 64,
        number_of_access_ranges: 1,
        tagged_queuing: 1,
        auto_request_sense: 1,
        multiple_request_per_lu: 1,
        srb_type_flags: if ADVERTISE_SRB_EX.with(Cell::get) {
            abi::SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK | abi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK
        } else {
            abi::SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK
        },
        ..HwInitializationData::default()
    };
    // SAFETY: StorPortInitialize with DriverEntry's arguments and a filled structure.
    unsafe {
        StorPortInitialize(
            driver_object,
            registry_path,
            (&raw mut hw).cast(),
            std::ptr::null_mut(),
        ) as i32
    }
}

/// A bump arena over one leaked, page-aligned allocation.
struct TestArena {
    base: usize,
    size: usize,
    next: Mutex<usize>,
}

impl TestArena {
    fn new(size: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(size, 4096).unwrap();
        // SAFETY: a non-zero-sized layout.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!base.is_null());
        Self {
            base: base.expose_provenance(),
            size,
            next: Mutex::new(0),
        }
    }
}

impl DmaArena for TestArena {
    fn alloc(&self, len: usize, align: usize) -> Option<usize> {
        let mut next = self.next.lock().unwrap();
        let start = (self.base + *next).next_multiple_of(align) - self.base;
        if start + len > self.size {
            return None;
        }
        *next = start + len;
        let address = self.base + start;
        // SAFETY: freshly carved, inside the allocation.
        unsafe { std::ptr::write_bytes(address as *mut u8, 0, len) };
        Some(address)
    }
    fn free(&self, _address: usize, _len: usize) {}
    fn write(&self, address: usize, bytes: &[u8]) -> bool {
        if address < self.base || address + bytes.len() > self.base + self.size {
            return false;
        }
        // SAFETY: inside the allocation.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), address as *mut u8, bytes.len()) };
        true
    }
    fn read(&self, address: usize, out: &mut [u8]) -> bool {
        if address < self.base || address + out.len() > self.base + self.size {
            return false;
        }
        // SAFETY: inside the allocation.
        unsafe { std::ptr::copy_nonoverlapping(address as *const u8, out.as_mut_ptr(), out.len()) };
        true
    }
}

/// A PCI function with one 4 KiB memory BAR: offset 0 is a doorbell that raises the MSI-X
/// message written to it, offset 4 a scratch register; 4 MSI-X messages.
///
/// With DMA memory ([`boot_dma`]) it is a bus master too: offsets 8 to 20 (`DMA_*`) make it
/// write the read pattern at a bus address, through the memory's IOMMU.
struct TestDevice {
    line: OnceLock<InterruptLine>,
    scratch: AtomicU32,
    doorbells: AtomicU32,
    dma: OnceLock<PhysicalMemory>,
    /// `DMA_ADDRESS_LOW`, `DMA_ADDRESS_HIGH`, `DMA_PATTERN_OFFSET`, and the last outcome.
    dma_registers: [AtomicU32; 3],
    dma_ok: AtomicU32,
}

impl TestDevice {
    fn new() -> Self {
        Self {
            line: OnceLock::new(),
            scratch: AtomicU32::new(0),
            doorbells: AtomicU32::new(0),
            dma: OnceLock::new(),
            dma_registers: Default::default(),
            dma_ok: AtomicU32::new(0),
        }
    }

    /// Writes `len` bytes of the read pattern (from `offset` in it) at bus address `bus`, as a
    /// bus master does: through the IOMMU. Whether the write went through.
    fn dma(&self, bus: u64, len: u32, offset: u32) -> bool {
        use vm_memory::{Bytes, GuestAddress};
        let Some(memory) = self.dma.get() else {
            return false;
        };
        let bytes: Vec<u8> = (offset..offset + len).map(|i| (i % 251) as u8).collect();
        memory
            .device_memory()
            .write_slice(&bytes, GuestAddress(bus))
            .is_ok()
    }
}

impl PciFunction for TestDevice {
    fn config_read(&self, offset: u16, out: &mut [u8]) {
        let mut space = [0_u8; 256];
        space[0..4].copy_from_slice(&0x1048_1AF4_u32.to_le_bytes());
        space[6] = 0x10;
        space[0x10] = 0x00;
        space[0x34] = 0x40;
        space[0x40] = 0x11;
        space[0x42] = 3;
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = space.get(usize::from(offset) + i).copied().unwrap_or(0xFF);
        }
    }
    fn config_write(&self, _offset: u16, _data: &[u8]) {}
    fn bar_len(&self, bar: u8) -> Option<u64> {
        (bar == 0).then_some(4096)
    }
    fn mmio_read(&self, _bar: u8, offset: u64, _width: u8) -> u64 {
        match offset {
            4 => u64::from(self.scratch.load(Ordering::SeqCst)),
            20 => u64::from(self.dma_ok.load(Ordering::SeqCst)),
            _ => 0,
        }
    }
    fn mmio_write(&self, _bar: u8, offset: u64, _width: u8, value: u64) {
        match offset {
            0 => {
                self.doorbells.fetch_add(1, Ordering::SeqCst);
                if let Some(line) = self.line.get() {
                    line.raise(value as u16);
                }
            }
            4 => self.scratch.store(value as u32, Ordering::SeqCst),
            8 | 12 | 16 => {
                self.dma_registers[(offset as usize - 8) / 4].store(value as u32, Ordering::SeqCst);
            }
            20 => {
                let [low, high, pattern] =
                    [0, 1, 2].map(|i| self.dma_registers[i].load(Ordering::SeqCst));
                let bus = u64::from(low) | u64::from(high) << 32;
                let ok = self.dma(bus, value as u32, pattern);
                self.dma_ok.store(u32::from(ok), Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

fn boot_with(mode: Mode, options: SimOptions) -> (Adapter, Arc<TestDevice>) {
    MODE.with(|cell| cell.set(mode));
    let device = Arc::new(TestDevice::new());
    let line = InterruptLine::new();
    let _ = device.line.set(line.clone());
    let platform = Platform {
        entry: driver_entry,
        pci: Arc::clone(&device) as Arc<dyn PciFunction>,
        memory: Arc::new(TestArena::new(16 << 20)),
        interrupts: line,
    };
    (Simulator::boot(options, platform).unwrap(), device)
}

fn boot(mode: Mode) -> (Adapter, Arc<TestDevice>) {
    boot_with(mode, SimOptions::default())
}

/// Boots `mode` with DMA remapping on: the test device masters DMA through the IOMMU of the
/// memory it shares with the simulator.
fn boot_dma(mode: Mode) -> (Adapter, Arc<TestDevice>, PhysicalMemory) {
    MODE.with(|cell| cell.set(mode));
    let memory = PhysicalMemory::with_iommu(16 << 20).unwrap();
    let device = Arc::new(TestDevice::new());
    let _ = device.dma.set(memory.clone());
    let line = InterruptLine::new();
    let _ = device.line.set(line.clone());
    let platform = Platform {
        entry: driver_entry,
        pci: Arc::clone(&device) as Arc<dyn PciFunction>,
        memory: Arc::new(rvscsi_tests::harness::Memory(memory.clone())),
        interrupts: line,
    };
    let options = SimOptions {
        iommu: true,
        ..SimOptions::default()
    };
    (Simulator::boot(options, platform).unwrap(), device, memory)
}

fn extension_of(adapter: &Adapter) -> &Extension {
    // SAFETY: the adapter's device extension is the test miniport's Extension.
    unsafe { &*(adapter.device_extension() as *const Extension) }
}

#[test]
fn boot_round_trips_the_configuration() {
    let (adapter, _device) = boot(Mode::Immediate);
    let e = extension_of(&adapter);
    let seen = e.seen_config;
    assert_eq!(seen.length, abi::PORT_CONFIGURATION_INFORMATION_SIZE);
    assert_eq!(seen.adapter_interface_type, abi::PCI_BUS);
    assert_eq!(seen.number_of_access_ranges, 1);
    assert_eq!(seen.maximum_transfer_length, abi::SP_UNINITIALIZED_VALUE);
    assert_eq!(seen.number_of_physical_breaks, abi::SP_UNINITIALIZED_VALUE);
    assert_eq!(seen.dma64_bit_addresses, abi::SCSI_DMA64_SYSTEM_SUPPORTED);
    assert_eq!(seen.srb_extension_size, 64);
    assert_eq!(seen.srb_type, abi::SRB_TYPE_STORAGE_REQUEST_BLOCK);
    assert_eq!(e.vendor_device, 0x1048_1AF4);
    assert!(e.registers >= adapter.register_cookie_base());
    assert_eq!(
        usize::try_from(e.uncached_physical).unwrap(),
        e.uncached + 1
    );
    assert_eq!(e.uncached_contiguous, 3 * 4096 - 1);
    assert_eq!(e.msi_info_vector, 0x81);
    assert_eq!(e.passive_ran.load(Ordering::SeqCst), 1);
    let found = adapter.found_adapter();
    assert_eq!(found.config.maximum_transfer_length, 0x10_0000);
    assert_eq!(found.config.number_of_physical_breaks, 257);
    assert_eq!(found.config.max_number_of_io, 77);
    assert_eq!(found.config.max_ios_per_lun, 33);
    assert_eq!(
        found.config.interrupt_synchronization_mode,
        abi::INTERRUPT_SYNCHRONIZE_PER_MESSAGE
    );
    assert_eq!(found.messages, 4);
    assert!(found.extended_srbs);
    assert!(found.passive_initialized);
    assert_eq!(found.perf_flags, abi::STOR_PERF_DPC_REDIRECTION);
    assert!(
        adapter
            .log()
            .iter()
            .any(|line| line == "[1] find adapter: 1 ranges")
    );
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn page_boundary_contiguity_spares_the_uncached_extension() {
    // The uncached extension is a common buffer, contiguous on every machine: even when pool
    // memory is reported page by page, its whole length is (12,287 bytes from one byte in).
    let options = SimOptions {
        contiguity: Contiguity::PageBoundary,
        ..SimOptions::default()
    };
    let (adapter, _device) = boot_with(Mode::Immediate, options);
    assert_eq!(extension_of(&adapter).uncached_contiguous, 12_287);
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn bus_scan_finds_both_luns_through_srb_ex() {
    let (adapter, _device) = boot(Mode::Immediate);
    let disks = adapter.scan_bus().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!((disks[0].target, disks[0].lun, disks[1].lun), (0, 0, 1));
    assert_eq!(disks[0].blocks, 0x1000);
    assert_eq!(disks[0].block_size, 512);
    assert_eq!(&disks[0].inquiry[8..16], b"RVSCSI  ");
    let parsed = extension_of(&adapter).srb_ex_parsed.load(Ordering::SeqCst);
    assert!(
        parsed >= 4 + 3,
        "every SRB was a parsed STORAGE_REQUEST_BLOCK ({parsed})"
    );
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn forced_scsi_request_blocks_work_too() {
    ADVERTISE_SRB_EX.with(|cell| cell.set(false));
    let (adapter, _device) = boot(Mode::Immediate);
    ADVERTISE_SRB_EX.with(|cell| cell.set(true));
    assert!(!adapter.found_adapter().extended_srbs);
    let read = adapter
        .execute(
            1,
            &Request::new(0, 0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 16, 0]).reading(8192),
        )
        .unwrap();
    assert_eq!(read.status(), abi::SRB_STATUS_SUCCESS);
    assert_eq!(read.data.len(), 8192);
    assert_eq!(read.data[300], (300 % 251) as u8);
    assert_eq!(
        extension_of(&adapter).srb_ex_parsed.load(Ordering::SeqCst),
        0
    );
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn requests_from_many_threads_complete_once_through_interrupt_and_dpc() {
    let options = SimOptions {
        merge_adjacent_pages: true,
        ..SimOptions::default()
    };
    let (adapter, device) = boot_with(Mode::Interrupt, options);
    let adapter = Arc::new(adapter);
    let threads: Vec<_> = (0..4_u32)
        .map(|thread| {
            let adapter = Arc::clone(&adapter);
            std::thread::spawn(move || {
                for i in 0..25_u32 {
                    let mut request = Request::new(0, 0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
                        .reading(4096 + i * 100);
                    request.data_offset = (i * 512 % 4096) as u16;
                    let done = adapter.execute(thread % 2, &request).unwrap();
                    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
                    assert_eq!(done.data.len(), (4096 + i * 100) as usize);
                    assert_eq!(done.data[4000], (4000 % 251) as u8);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let e = extension_of(&adapter);
    assert_eq!(
        e.max_in_start_io.load(Ordering::SeqCst),
        1,
        "HwStartIo runs under the StartIo lock"
    );
    assert!(e.isr_count.load(Ordering::SeqCst) >= 1);
    assert_eq!(device.doorbells.load(Ordering::SeqCst), 100);
    assert!(e.dpc_after_isr.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        e.isr_processor.load(Ordering::SeqCst),
        1,
        "message 1 targets processor 1"
    );
    assert_eq!(
        e.dpc_processor.load(Ordering::SeqCst),
        1,
        "the DPC runs where the ISR issued it"
    );
    assert!(e.sg_bytes.load(Ordering::SeqCst) >= 100 * 4096);
    assert_eq!(adapter.outstanding(), 0);
    let adapter = Arc::into_inner(adapter).unwrap();
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn writing_through_find_adapters_reserved3_is_caught() {
    let (adapter, _device) = boot(Mode::WritesReserved3);
    let violations = adapter.shutdown();
    assert_eq!(
        violations,
        [Violation::FindAdapterWroteReserved3 { value: 0 }]
    );
    // A miniport that leaves it alone is not flagged.
    let (adapter, _device) = boot(Mode::Immediate);
    assert_eq!(adapter.shutdown(), []);
}

#[test]
fn double_completion_is_caught() {
    let (adapter, _device) = boot(Mode::DoubleComplete);
    let done = adapter
        .execute(0, &Request::new(0, 0, &[0, 0, 0, 0, 0, 0]))
        .unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
    let violations = adapter.shutdown();
    assert_eq!(violations.len(), 1);
    assert!(matches!(violations[0], Violation::DoubleCompletion { .. }));
}

#[test]
fn lock_misuse_is_caught() {
    let (adapter, _device) = boot(Mode::BadLocks);
    adapter
        .execute(0, &Request::new(0, 0, &[0, 0, 0, 0, 0, 0]))
        .unwrap();
    let violations = adapter.shutdown();
    assert!(violations.contains(&Violation::RecursiveAcquire {
        lock: Lock::StartIo
    }));
    assert!(violations.contains(&Violation::ReleaseNotHeld {
        lock: Lock::Interrupt
    }));
}

#[test]
fn the_interrupt_lock_is_every_message_lock_with_per_message_synchronisation() {
    let (adapter, _device) = boot(Mode::InterruptLockIsEveryMessageLock);
    let done = adapter
        .execute(0, &Request::new(0, 0, &[0, 0, 0, 0, 0, 0]))
        .unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
    let e = extension_of(&adapter);
    assert!(e.isr_count.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        e.isr_under_interrupt_lock.load(Ordering::SeqCst),
        0,
        "holding the interrupt lock keeps message 1's ISR out"
    );
    adapter.power_cycle().unwrap();
    let violations = adapter.shutdown();
    assert!(
        violations.contains(&Violation::RecursiveAcquire {
            lock: Lock::Interrupt
        }),
        "{violations:?}"
    );
    assert!(
        violations.contains(&Violation::RecursiveAcquire {
            lock: Lock::Message(1)
        }),
        "{violations:?}"
    );
    assert!(
        violations
            .iter()
            .all(|violation| matches!(violation, Violation::RecursiveAcquire { .. })),
        "{violations:?}"
    );
}

#[test]
fn a_timed_out_request_gets_a_bus_reset_and_completes() {
    let (adapter, _device) = boot(Mode::HoldUntilReset);
    let mut request = Request::new(0, 0, &[0, 0, 0, 0, 0, 0]);
    request.timeout_seconds = 2;
    let done = adapter.execute(0, &request).unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_BUS_RESET);
    let notifications = adapter.notifications();
    assert!(
        notifications
            .iter()
            .any(|n| matches!(n, Notification::TimeoutReset { path: 0, .. }))
    );
    assert!(notifications.contains(&Notification::ResetDetected));
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn storport_never_builds_a_transfer_beyond_the_reported_limits() {
    // The test miniport reports MaximumTransferLength 1 MiB and 257 physical breaks.
    let (adapter, _device) = boot(Mode::Immediate);
    let read = |len: u32, offset: u16| {
        let blocks = (len / 512) as u16;
        let mut request = Request::new(
            0,
            0,
            &[0x28, 0, 0, 0, 0, 0, 0, (blocks >> 8) as u8, blocks as u8, 0],
        )
        .reading(len);
        request.data_offset = offset;
        request
    };
    // At the limit, at the worst offset: 257 pages, within 258.
    let done = adapter.execute(0, &read(0x10_0000, 4095)).unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
    assert_eq!(
        adapter.submit(0, &read(0x10_0000 + 512, 0)),
        Err(SimError::BeyondTransferLimits {
            length: 0x10_0000 + 512,
            pages: 257,
            max_transfer_length: 0x10_0000,
            physical_breaks: 257,
        })
    );
    assert_eq!(adapter.outstanding(), 0);
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn a_miniport_accepting_a_transfer_beyond_its_limits_is_caught() {
    // The test miniport completes every read with SUCCESS, whatever its length: sent one
    // beyond the limits it reported by a port driver that ignores them, it claims it.
    let (adapter, _device) = boot(Mode::Immediate);
    let len = 0x10_0000 + 4096;
    let blocks = (len / 512) as u16;
    let mut request = Request::new(
        0,
        0,
        &[0x28, 0, 0, 0, 0, 0, 0, (blocks >> 8) as u8, blocks as u8, 0],
    )
    .reading(len);
    request.ignore_port_limits = true;
    let ticket = adapter.submit(0, &request).unwrap();
    let done = adapter.wait(ticket, Duration::from_secs(10)).unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
    assert_eq!(
        adapter.shutdown(),
        vec![Violation::AcceptedBeyondTransferLimits { ticket: ticket.0 }]
    );
}

#[test]
fn storport_holds_requests_beyond_the_lun_queue_depth_and_max_number_of_io() {
    // The test miniport reports MaxNumberOfIO 77 and MaxIOsPerLun 33 and leaves
    // InitialLunQueueDepth at StorPort's 20; it holds every request until HwResetBus. 25
    // requests to each of six LUNs (150) must reach it at most 20 per LUN and 77 in all; the
    // rest wait in the port driver and go to the miniport as the resets complete the others.
    let (adapter, _device) = boot(Mode::HoldUntilReset);
    let mut tickets = Vec::new();
    for lun in 0..6u8 {
        for _ in 0..25 {
            let mut request = Request::new(0, lun, &[0, 0, 0, 0, 0, 0]);
            request.timeout_seconds = 3;
            tickets.push(adapter.submit(u32::from(lun % 2), &request).unwrap());
        }
    }
    for ticket in tickets {
        let done = adapter.wait(ticket, Duration::from_secs(30)).unwrap();
        assert_eq!(done.status(), abi::SRB_STATUS_BUS_RESET);
    }
    let e = extension_of(&adapter);
    assert_eq!(e.holding_total_peak.load(Ordering::SeqCst), 77);
    let peaks: Vec<u32> = e.holding_peak[..6]
        .iter()
        .map(|peak| peak.load(Ordering::SeqCst))
        .collect();
    // The first LUNs reach their depth in the first round; none ever exceeds it.
    assert_eq!(peaks[0], 20, "{peaks:?}");
    assert!(peaks.iter().all(|&peak| peak <= 20), "{peaks:?}");
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn storport_sends_a_busy_request_again_until_it_completes() {
    let (adapter, _device) = boot(Mode::BusyThrice);
    let done = adapter
        .execute(0, &Request::new(0, 0, &[0x12, 0, 0, 0, 36, 0]).reading(36))
        .unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
    assert_eq!(
        done.data.len(),
        36,
        "the retry's DataTransferLength is the buffer's"
    );
    let e = extension_of(&adapter);
    assert_eq!(e.starts.load(Ordering::SeqCst), 4);
    let figures = adapter.port_queue_figures();
    assert_eq!((figures.busy_retries, figures.busy_calls), (3, 3));
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn a_request_busy_past_its_timeout_fails_busy_to_the_class_driver() {
    let (adapter, _device) = boot(Mode::AlwaysBusy);
    let mut request = Request::new(0, 0, &[0, 0, 0, 0, 0, 0]);
    request.timeout_seconds = 2;
    let done = adapter.execute(0, &request).unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_BUSY);
    // Resent for 200 ms of real time, each time after StorPortBusy's hold (which, with no
    // other request to complete, lasts its whole limit), and never reset: the miniport
    // answered every time.
    assert!(extension_of(&adapter).starts.load(Ordering::SeqCst) > 1);
    assert!(
        !adapter
            .notifications()
            .iter()
            .any(|n| matches!(n, Notification::TimeoutReset { .. }))
    );
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn the_processor_each_completion_runs_on_is_counted() {
    // The test miniport always interrupts on message 1, which targets processor 1 (of two):
    // a request from processor 0 completes elsewhere, one from processor 1 at home.
    let (adapter, _device) = boot(Mode::Interrupt);
    for processor in [0, 1] {
        let done = adapter
            .execute(processor, &Request::new(0, 0, &[0, 0, 0, 0, 0, 0]))
            .unwrap();
        assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
    }
    let figures = adapter.port_queue_figures();
    assert_eq!(
        (figures.completed_on_submitter, figures.completed_elsewhere),
        (1, 1)
    );
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn a_request_never_completed_after_reset_is_caught() {
    let (adapter, _device) = boot(Mode::HoldForever);
    let mut request = Request::new(0, 0, &[0, 0, 0, 0, 0, 0]);
    request.timeout_seconds = 1;
    let ticket = adapter.submit(0, &request).unwrap();
    // The timeout (1 s: 100 ms real) plus the grace after HwResetBus (two SRB seconds, 200 ms)
    // is 300 ms; wait well past it, or the violation may not be recorded yet.
    assert_eq!(
        adapter.wait(ticket, Duration::from_millis(600)),
        Err(SimError::WaitTimedOut { ticket: ticket.0 })
    );
    let violations = adapter.shutdown();
    assert!(violations.contains(&Violation::NotCompletedAfterReset { ticket: ticket.0 }));
    assert!(violations.contains(&Violation::OutstandingAtShutdown { ticket: ticket.0 }));
}

#[test]
fn power_cycle_stops_and_restarts_through_adapter_control() {
    let (adapter, _device) = boot(Mode::Immediate);
    let supported = adapter.supported_control_types().unwrap();
    assert_eq!(&supported[..3], &[true, true, true]);
    adapter.power_cycle().unwrap();
    let done = adapter
        .execute(0, &Request::new(0, 0, &[0, 0, 0, 0, 0, 0]))
        .unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn unknown_target_completes_with_selection_timeout() {
    let (adapter, _device) = boot(Mode::Immediate);
    let done = adapter
        .execute(0, &Request::new(3, 0, &[0x12, 0, 0, 0, 36, 0]).reading(36))
        .unwrap();
    assert_eq!(done.status(), 0x0A);
    assert!(done.data.is_empty());
    assert_eq!(done.sense, Vec::<u8>::new());
    let _ = DataDirection::None;
    assert_eq!(adapter.shutdown(), Vec::new());
}

fn vendor(adapter: &Adapter, cdb: &[u8]) {
    let done = adapter.execute(0, &Request::new(0, 0, cdb)).unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
}

#[test]
fn bus_change_detected_rescans_the_bus_once_per_burst() {
    let (adapter, _device) = boot(Mode::Immediate);
    assert!(adapter.pnp().disks.is_empty());
    adapter.pause_pnp(true);
    for _ in 0..3 {
        vendor(&adapter, &[CDB_BUS_CHANGE, 0, 0, 0, 0, 0]);
    }
    adapter.pause_pnp(false);
    let view = adapter
        .wait_pnp(Duration::from_secs(10), |view| {
            view.idle && view.rescans > 0
        })
        .unwrap();
    assert_eq!(
        view.rescans, 1,
        "three notifications before the scan make one"
    );
    let found: Vec<_> = view.disks.iter().map(|d| (d.target, d.lun)).collect();
    assert_eq!(found, [(0, 0), (0, 1)]);
    assert!(
        view.history
            .contains(&rvscsi_tests::sim::PnpEvent::Arrived { target: 0, lun: 1 })
    );
    assert_eq!(
        adapter
            .notifications()
            .iter()
            .filter(|n| **n == Notification::BusChangeDetected { path: 0 })
            .count(),
        3
    );
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn state_change_detected_is_one_at_a_time_and_calls_back_with_the_address() {
    let (adapter, _device) = boot(Mode::Immediate);
    adapter.pause_pnp(true);
    vendor(&adapter, &[CDB_STATE_CHANGE, 1, 0, 0, 0, 0]);
    vendor(&adapter, &[CDB_STATE_CHANGE, 1, 0, 0, 0, 0]);
    let e = extension_of(&adapter);
    assert_eq!(
        e.state_statuses(),
        [abi::STOR_STATUS_SUCCESS, abi::STOR_STATUS_BUSY]
    );
    adapter.pause_pnp(false);
    let view = adapter
        .wait_pnp(Duration::from_secs(10), |view| {
            view.idle && view.state_changes == 1
        })
        .unwrap();
    // The unit was re-enumerated, then the callback got the notification's address.
    assert!(
        view.history
            .contains(&rvscsi_tests::sim::PnpEvent::Arrived { target: 0, lun: 1 })
    );
    let address = std::ptr::addr_of!(e.state_address).addr();
    assert_eq!(e.state_callbacks.load(Ordering::SeqCst), 1);
    assert_eq!(e.state_callback_address.load(Ordering::SeqCst), address);
    assert_eq!(
        e.state_callback_status.load(Ordering::SeqCst),
        abi::STOR_STATUS_SUCCESS
    );
    // Free again after the callback.
    vendor(&adapter, &[CDB_STATE_CHANGE, 1, 0, 0, 0, 0]);
    adapter
        .wait_pnp(Duration::from_secs(10), |view| {
            view.idle && view.state_changes == 2
        })
        .unwrap();
    assert_eq!(e.state_statuses().last(), Some(&abi::STOR_STATUS_SUCCESS));
    assert_eq!(e.state_callbacks.load(Ordering::SeqCst), 2);
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn state_change_misuse_is_caught() {
    // An address type StorPort does not know: refused.
    let (adapter, _device) = boot(Mode::Immediate);
    vendor(&adapter, &[CDB_STATE_CHANGE, 0, 0, 0, 0, 0]);
    let e = extension_of(&adapter);
    assert_eq!(e.state_statuses(), [abi::STOR_STATUS_INVALID_PARAMETER]);
    assert_eq!(e.state_callbacks.load(Ordering::SeqCst), 0);
    assert_eq!(
        adapter.shutdown(),
        [Violation::StateChangeInvalid { entity: 1 }]
    );
    // An address changed before the callback.
    let (adapter, _device) = boot(Mode::Immediate);
    adapter.pause_pnp(true);
    vendor(&adapter, &[CDB_STATE_CHANGE, 1, 0, 0, 0, 0]);
    vendor(&adapter, &[CDB_CHANGE_ADDRESS, 0, 0, 0, 0, 0]);
    adapter.pause_pnp(false);
    adapter
        .wait_pnp(Duration::from_secs(10), |view| {
            view.idle && view.state_changes == 1
        })
        .unwrap();
    let address = std::ptr::addr_of!(extension_of(&adapter).state_address).addr();
    assert_eq!(
        adapter.shutdown(),
        [Violation::StateChangeAddressChanged { address }]
    );
}

fn dump_options() -> SimOptions {
    SimOptions {
        dump: Some(DumpPort::default()),
        ..SimOptions::default()
    }
}

#[test]
fn the_dump_port_runs_one_request_at_a_time_and_flags_what_it_lacks() {
    let (adapter, _device) = boot_with(Mode::Immediate, dump_options());
    let e = extension_of(&adapter);
    // DriverEntry got NULL (StorPortInitialize accepted a NULL driver object), find-adapter
    // got DumpMode, and the uncached extension is not page aligned.
    assert_eq!(e.seen_config.dump_mode, abi::DUMP_MODE_CRASH);
    assert_eq!(e.uncached % 4096, 16);
    let found = adapter.found_adapter();
    assert_eq!(found.messages, 0);
    assert!(!found.passive_initialized);
    assert_eq!(e.passive_ran.load(Ordering::SeqCst), 0);
    // Requests from four threads: the port runs them one at a time, each complete on return.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..8 {
                    let done = adapter
                        .execute(0, &Request::new(0, 0, &[0, 0, 0, 0, 0, 0]))
                        .unwrap();
                    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
                }
            });
        }
    });
    assert_eq!(e.max_in_start_io.load(Ordering::SeqCst), 1);
    assert_eq!(adapter.outstanding(), 0);
    assert_eq!(
        adapter.shutdown(),
        vec![
            Violation::ForbiddenInDumpMode {
                routine: "StorPortEnablePassiveInitialization"
            },
            Violation::ForbiddenInDumpMode {
                routine: "StorPortInitializeDpc"
            },
        ]
    );
}

#[test]
fn the_dump_port_resets_a_timed_out_request_and_catches_one_never_completed() {
    let (adapter, _device) = boot_with(Mode::HoldUntilReset, dump_options());
    let mut request = Request::new(0, 0, &[0, 0, 0, 0, 0, 0]);
    request.timeout_seconds = 1;
    let done = adapter.execute(0, &request).unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_BUS_RESET);
    assert!(
        adapter
            .notifications()
            .iter()
            .any(|n| matches!(n, Notification::TimeoutReset { path: 0, .. }))
    );
    let violations = adapter.shutdown();
    assert!(
        violations
            .iter()
            .all(|v| matches!(v, Violation::ForbiddenInDumpMode { .. }))
    );

    let (adapter, _device) = boot_with(Mode::HoldForever, dump_options());
    let ticket = adapter.submit(0, &request).unwrap();
    // The port gave up on it before `submit` returned.
    assert_eq!(
        adapter.wait(ticket, Duration::from_millis(10)),
        Err(SimError::WaitTimedOut { ticket: ticket.0 })
    );
    let violations = adapter.shutdown();
    assert!(violations.contains(&Violation::NotCompletedAfterReset { ticket: ticket.0 }));
    assert!(violations.contains(&Violation::OutstandingAtShutdown { ticket: ticket.0 }));
}

#[test]
fn unit_control_is_queried_at_start_and_only_reported_types_are_sent() {
    let (adapter, _device) = boot(Mode::Immediate);
    let supported = adapter.supported_unit_controls();
    assert_eq!(supported.len(), abi::SCSI_UNIT_CONTROL_MAX as usize);
    assert_eq!(supported.iter().filter(|&&on| on).count(), 1);
    assert!(supported[0]);
    assert_eq!(
        adapter.surprise_remove_unit(0, 1),
        Err(SimError::UnitControl(abi::SCSI_UNIT_SURPRISE_REMOVAL))
    );
    assert_eq!(
        adapter.unit_control(abi::SCSI_UNIT_POWER, abi::StorAddrBtl8::new(0, 0, 1)),
        Ok(abi::SCSI_UNIT_CONTROL_UNSUCCESSFUL)
    );
    assert_eq!(adapter.shutdown(), Vec::new());
}

#[test]
fn unit_control_overruns_and_unreported_successes_are_caught() {
    let (adapter, _device) = boot(Mode::BadUnitControl);
    assert_eq!(
        adapter.unit_control(abi::SCSI_UNIT_POWER, abi::StorAddrBtl8::new(0, 0, 1)),
        Ok(abi::SCSI_UNIT_CONTROL_SUCCESS)
    );
    assert_eq!(
        adapter.query_unit_control_types(3).map(|list| list.len()),
        Ok(3)
    );
    let violations = adapter.shutdown();
    assert!(
        violations.contains(&Violation::UnitControlListOverrun {
            max: abi::SCSI_UNIT_CONTROL_MAX
        }),
        "{violations:?}"
    );
    assert!(violations.contains(&Violation::UnitControlListOverrun { max: 3 }));
    assert!(
        violations.contains(&Violation::UnsupportedUnitControlSucceeded {
            control: abi::SCSI_UNIT_POWER
        })
    );
}

#[test]
fn under_dma_remapping_storport_maps_the_srb_extension_and_data_only_through_the_srb() {
    let (adapter, device, memory) = boot_dma(Mode::DmaThroughStorPort);
    let e = extension_of(&adapter);
    // The uncached extension is mapped for the adapter's life, at a bus address that is no
    // physical one.
    let uncached_bus = u64::try_from(e.uncached_physical).unwrap();
    assert!(uncached_bus >= IOVA_BASE);
    assert_eq!(e.uncached_contiguous, 3 * 4096 - 1);
    assert!(device.dma(uncached_bus, 16, 0));
    let request = Request::new(0, 0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 3, 0]).reading(3 * 512);
    let done = adapter.execute(0, &request).unwrap();
    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
    // The device wrote the data through the scatter/gather list's bus addresses.
    let expected: Vec<u8> = (0..3 * 512_u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(done.data, expected);
    assert_eq!(e.dma_delivered.load(Ordering::SeqCst), 1);
    assert_eq!(e.dma_failures.load(Ordering::SeqCst), 0);
    // With the SRB the extension translated to a bus address; without it, to 0 (what
    // StorPort answers under an IOMMU).
    let extension_bus = e.dma_bus.load(Ordering::SeqCst) as u64;
    assert!(extension_bus >= IOVA_BASE);
    assert_eq!(e.bus_without_srb.load(Ordering::SeqCst), 0);
    assert_eq!(memory.iommu_faults(), Vec::new());
    // The mapping ended with the request: the device can no longer reach the extension.
    assert!(!device.dma(extension_bus, 8, 0));
    let faults = memory.iommu_faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].address, extension_bus);
    // Asking for the extension without its SRB breaks the documented contract, IOMMU or not.
    let violations = adapter.shutdown();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(matches!(
        violations[0],
        Violation::SrbExtensionTranslatedWithoutSrb { .. }
    ));
}

#[test]
fn a_miniport_handing_the_device_a_physical_address_under_dma_remapping_is_caught() {
    let (adapter, device, memory) = boot_dma(Mode::DmaToPhysicalAddress);
    let request = Request::new(0, 0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]).reading(512);
    let done = adapter.execute(0, &request).unwrap();
    let e = extension_of(&adapter);
    // The device's write to the physical address faulted: nothing reached the extension.
    assert_eq!(e.dma_failures.load(Ordering::SeqCst), 1);
    assert_eq!(e.dma_delivered.load(Ordering::SeqCst), 0);
    let faults = memory.iommu_faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(faults[0].address < IOVA_BASE && faults[0].write);
    // The data still went through the scatter/gather list, which is mapped.
    assert_eq!(done.status(), abi::SRB_STATUS_SUCCESS);
    assert_eq!(
        done.data,
        (0..512_u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()
    );
    drop(device);
    let violations = adapter.shutdown();
    assert!(
        violations.iter().all(|violation| matches!(
            violation,
            Violation::SrbExtensionTranslatedWithoutSrb { .. }
        )),
        "{violations:?}"
    );
}

#[test]
fn dma_remapping_needs_an_arena_with_an_iommu() {
    MODE.with(|cell| cell.set(Mode::Immediate));
    let platform = Platform {
        entry: driver_entry,
        pci: Arc::new(TestDevice::new()),
        memory: Arc::new(TestArena::new(1 << 20)),
        interrupts: InterruptLine::new(),
    };
    let options = SimOptions {
        iommu: true,
        ..SimOptions::default()
    };
    assert!(matches!(
        Simulator::boot(options, platform),
        Err(SimError::NoIommu)
    ));
}

#[test]
fn writing_past_a_data_or_sense_buffer_or_growing_the_transfer_is_caught() {
    use rvscsi_tests::sim::SrbBuffer;
    let (adapter, _device) = boot(Mode::Immediate);
    let past_data = adapter
        .execute(
            0,
            &Request::new(0, 0, &[CDB_WRITE_PAST_DATA, 0, 0, 0, 0, 0]).reading(512),
        )
        .unwrap();
    let past_sense = adapter
        .execute(
            0,
            &Request::new(0, 0, &[CDB_WRITE_PAST_SENSE, 0, 0, 0, 0, 0]),
        )
        .unwrap();
    let grown = adapter
        .execute(
            0,
            &Request::new(0, 0, &[CDB_GROW_TRANSFER, 0, 0, 0, 0, 0]).reading(512),
        )
        .unwrap();
    assert_eq!(grown.data_transfer_length, 1024);
    let _ = past_data;
    let _ = past_sense;
    let violations = adapter.shutdown();
    assert!(
        matches!(
            violations.as_slice(),
            [
                Violation::WroteBeyondBuffer {
                    buffer: SrbBuffer::Data,
                    ..
                },
                Violation::WroteBeyondBuffer {
                    buffer: SrbBuffer::Sense,
                    ..
                },
                Violation::TransferLengthGrew {
                    sent: 512,
                    completed: 1024,
                    ..
                },
            ]
        ),
        "{violations:?}"
    );
    // A miniport that stays inside them is not flagged.
    let (adapter, _device) = boot(Mode::Immediate);
    let read = adapter
        .execute(
            0,
            &Request::new(0, 0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]).reading(512),
        )
        .unwrap();
    assert_eq!(read.status(), abi::SRB_STATUS_SUCCESS);
    assert_eq!(adapter.shutdown(), []);
}
