//! The only home of DriverEntry and the `extern "system"` HW routines StorPort calls. Each
//! trampoline checks its pointers, turns them into safe types and calls safe code; its
//! `# Safety` section says what StorPort guarantees at that call (IRQL, locks, ownership).

use core::ffi::{c_char, c_void};
use core::ptr::NonNull;

use crate::adapter::{ADAPTER_MAGIC, Adapter};
use crate::io::{self, Built};
use crate::storport::extension::{FreshExtension, placed};
use crate::storport::port::{Callbacks, DeviceExtension};
use crate::storport::queue_locks::HeldByStorPort;
use crate::storport::{
    ADDRESS_TYPE_FLAG_BTL8, AccessRange, Boolean, FALSE, HwInitializationData, PCIBus,
    PortConfigurationInformation, SP_RETURN_ERROR, SRB_STATUS_INVALID_REQUEST,
    SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK, SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK,
    STOR_MAP_NON_READ_WRITE_BUFFERS, ScsiAdapterControlSuccess, ScsiAdapterControlUnsuccessful,
    ScsiQuerySupportedControlTypes, ScsiQuerySupportedUnitControlTypes, ScsiRequestBlock,
    ScsiRestartAdapter, ScsiStopAdapter, ScsiSupportedControlTypeList, ScsiUnitControlSuccess,
    ScsiUnitControlUnsuccessful, StorAddrBtl8, StorDpc, StorPortInitialize, TRUE,
};
use crate::trace::ResetCause;

/// `NTSTATUS` is a signed 32-bit value.
pub type NtStatus = i32;

/// The registration StorPort receives: every HW routine and the sizes it allocates.
#[must_use]
pub fn initialization_data() -> HwInitializationData {
    let mut data = HwInitializationData::zeroed();
    data.hw_initialization_data_size = size_of::<HwInitializationData>() as u32;
    data.adapter_interface_type = PCIBus;
    data.hw_initialize = Some(hw_initialize);
    data.hw_build_io = Some(hw_build_io);
    data.hw_start_io = Some(hw_start_io);
    data.hw_interrupt = Some(hw_interrupt);
    data.hw_find_adapter = Some(hw_find_adapter);
    data.hw_reset_bus = Some(hw_reset_bus);
    data.hw_adapter_control = Some(hw_adapter_control);
    data.hw_unit_control = Some(hw_unit_control);
    data.device_extension_size = size_of::<Adapter>() as u32;
    data.specific_lu_extension_size = 0;
    // The largest request layout; find-adapter lowers it to what the device needs.
    data.srb_extension_size =
        crate::srb_extension::RequestLayout::new(crate::sizing::MAX_DATA_SEGMENTS).extension_size()
            as u32;
    data.number_of_access_ranges = 6;
    data.map_buffers = STOR_MAP_NON_READ_WRITE_BUFFERS;
    data.need_physical_addresses = TRUE;
    data.tagged_queuing = TRUE;
    data.auto_request_sense = TRUE;
    data.multiple_request_per_lu = TRUE;
    data.srb_type_flags = SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK | SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK;
    data.address_type_flags = ADDRESS_TYPE_FLAG_BTL8;
    data
}

/// The driver's entry point: registers the miniport with StorPort.
///
/// # Safety
/// Called once by the I/O manager (or the simulator) at PASSIVE_LEVEL with the driver object
/// and registry path, which are passed through to StorPortInitialize untouched.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(
    driver_object: *mut c_void,
    registry_path: *mut c_void,
) -> NtStatus {
    let mut data = initialization_data();
    // SAFETY: StorPortInitialize copies the registration (a valid local) during the call and
    // takes the two opaque arguments from our caller.
    let status = unsafe {
        StorPortInitialize(
            driver_object,
            registry_path,
            &raw mut data,
            core::ptr::null_mut(),
        )
    };
    status.cast_signed()
}

/// The routines bring-up registers with StorPort after find-adapter.
pub const CALLBACKS: Callbacks = Callbacks {
    message_interrupt: Some(hw_message_interrupt),
    passive_initialize: Some(hw_passive_initialize),
    queue_dpc: Some(hw_queue_dpc),
    timer: Some(hw_timer),
    state_change: Some(hw_state_change),
};

/// Bytes of HwFindAdapter's ArgumentString looked at (the dump port's is `dump=1`).
const ARGUMENT_MAX: usize = 256;

/// The bytes of `argument` before its NUL, at most [`ARGUMENT_MAX`] of them, copied to `out`.
///
/// # Safety
/// `argument` is null or a NUL-terminated string, readable up to its NUL.
unsafe fn argument_bytes(argument: *const c_char, out: &mut [u8; ARGUMENT_MAX]) -> &[u8] {
    let mut len = 0;
    if !argument.is_null() {
        while let Some(slot) = out.get_mut(len) {
            // SAFETY: the string is readable up to its NUL and the loop stops there, so every
            // byte read is inside it. Read as a byte: `c_char` is signed on Windows and x86-64
            // Linux but unsigned on AArch64 Linux.
            let byte = unsafe { argument.cast::<u8>().wrapping_add(len).read() };
            if byte == 0 {
                break;
            }
            *slot = byte;
            len += 1;
        }
    }
    out.get(..len).unwrap_or(&[])
}

/// HwFindAdapter. The dump port calls it too, above PASSIVE_LEVEL, with `dump=1` in
/// `argument_string` and ConfigInfo's DumpMode set ([`crate::dump`]).
///
/// The last parameter is `Reserved3`, an `_In_ PBOOLEAN` in storport.h: in SCSIport it was
/// `Again`, which a miniport set to FALSE to say it had no further adapter to find on the
/// bus. StorPort starts one find-adapter per PnP device and never asks again, so there is
/// nothing to say and the pointer is left untouched (StorPort owns what it points to).
///
/// # Safety
/// PASSIVE_LEVEL (any IRQL in the dump stack); `device_extension` is StorPort's zeroed extension
/// of the size registered; `config_info` is valid and exclusively ours for the call;
/// `argument_string` is null or NUL-terminated.
pub unsafe extern "system" fn hw_find_adapter(
    device_extension: *mut c_void,
    _hw_context: *mut c_void,
    _bus_information: *mut c_void,
    argument_string: *mut c_char,
    config_info: *mut PortConfigurationInformation,
    _reserved3: *mut Boolean,
) -> u32 {
    let (Some(extension), Some(mut config)) = (
        DeviceExtension::new(device_extension),
        NonNull::new(config_info),
    ) else {
        return SP_RETURN_ERROR;
    };
    // SAFETY: see the function's contract: exclusive, valid ConfigInfo for this call.
    let config = unsafe { config.as_mut() };
    let mut argument = [0u8; ARGUMENT_MAX];
    // SAFETY: StorPort's ArgumentString, null or NUL-terminated (the function's contract).
    let argument = unsafe { argument_bytes(argument_string, &mut argument) };
    let dump = crate::dump::detect(config, argument);
    // SAFETY: the extension is StorPort's, zeroed, of `size_of::<Adapter>()` bytes (the size
    // `initialization_data` registers), exclusively ours for this call.
    let Some(home) = (unsafe { FreshExtension::new(extension) }) else {
        return SP_RETURN_ERROR;
    };
    let ranges: &[AccessRange] = if config.access_ranges.is_null() {
        &[]
    } else {
        // SAFETY: StorPort passes `NumberOfAccessRanges` ranges at `AccessRanges`, valid for
        // the duration of HwFindAdapter; the copy of the pointer read here is not written
        // through `config` while the slice lives.
        unsafe {
            core::slice::from_raw_parts(
                config.access_ranges,
                config.number_of_access_ranges as usize,
            )
        }
    };
    Adapter::find(home, config, ranges, dump, CALLBACKS)
}

/// The adapter in `device_extension`, if find-adapter built one.
///
/// # Safety
/// `device_extension` is the extension StorPort passes to HW routines (registered by
/// [`initialization_data`] with `size_of::<Adapter>()` bytes, 8-aligned, zeroed before
/// find-adapter).
#[must_use]
pub unsafe fn adapter<'a>(device_extension: *mut c_void) -> Option<&'a Adapter> {
    // SAFETY: forwarded from the caller; `Adapter` is `repr(C)` with the magic first, written
    // only by find-adapter's `FreshExtension::place`, and mutated only through interior
    // mutability afterwards.
    unsafe { placed::<Adapter>(device_extension, ADAPTER_MAGIC) }
}

/// HwInitialize.
///
/// # Safety
/// DIRQL with the interrupt lock held, after HwFindAdapter, before any I/O.
pub unsafe extern "system" fn hw_initialize(device_extension: *mut c_void) -> Boolean {
    // SAFETY: StorPort's device extension.
    let Some(adapter) = (unsafe { adapter(device_extension) }) else {
        return FALSE;
    };
    // SAFETY: HwInitialize runs with StorPort's interrupt lock held (the contract above); the
    // proof lives for this call only.
    let mut held = unsafe { HeldByStorPort::interrupt_lock() };
    Boolean::from(adapter.initialize(&mut held))
}

/// HwPassiveInitializeRoutine.
///
/// # Safety
/// PASSIVE_LEVEL, after HwInitialize.
pub unsafe extern "system" fn hw_passive_initialize(device_extension: *mut c_void) -> Boolean {
    // SAFETY: StorPort's device extension.
    let Some(adapter) = (unsafe { adapter(device_extension) }) else {
        return FALSE;
    };
    Boolean::from(adapter.passive_initialize())
}

/// HwBuildIo.
///
/// # Safety
/// DISPATCH_LEVEL, no lock held; `srb` is a new request, ours until completed.
pub unsafe extern "system" fn hw_build_io(
    device_extension: *mut c_void,
    srb: *mut ScsiRequestBlock,
) -> Boolean {
    // The SRB checked first: the adapter is then one register, not a select beside the raw
    // pointer (cargo xtask bench).
    let Some(srb) = NonNull::new(srb) else {
        return FALSE;
    };
    // SAFETY: StorPort's device extension.
    let Some(adapter) = (unsafe { adapter(device_extension) }) else {
        return FALSE;
    };
    // SAFETY: `srb` is the SRB StorPort passed to HwBuildIo: valid and ours until completed.
    let parsed = unsafe { crate::storport::srb::Srb::from_raw(srb) };
    match io::build_io(adapter, parsed) {
        Built::Ready(srb) | Built::Control(srb) => {
            // StartIo finds everything in the SRB and its extension. It puts an EXECUTE_SCSI
            // request on a ring from the request's area, whose record must be this SRB's,
            // written by this BuildIo (`storport::request`): one whose view did not write it is
            // completed instead.
            if !srb.is_recorded()
                && srb.function() == u32::from(crate::storport::SRB_FUNCTION_EXECUTE_SCSI)
            {
                io::complete(adapter, srb, crate::storport::SRB_STATUS_ERROR);
                return FALSE;
            }
            srb.hand_over();
            TRUE
        }
        Built::Completed => FALSE,
    }
}

/// HwStartIo.
///
/// # Safety
/// DISPATCH_LEVEL; StartIo lock held unless concurrent channels are on; `srb` passed BuildIo.
pub unsafe extern "system" fn hw_start_io(
    device_extension: *mut c_void,
    srb: *mut ScsiRequestBlock,
) -> Boolean {
    // The SRB checked first: the adapter is then one register, not a select beside the raw
    // pointer (cargo xtask bench).
    let Some(raw) = NonNull::new(srb) else {
        return TRUE;
    };
    // SAFETY: StorPort's device extension.
    let Some(adapter) = (unsafe { adapter(device_extension) }) else {
        return TRUE;
    };
    // SAFETY: the SRB StorPort passed, ours until completed; BuildIo validated it (StorPort
    // calls StartIo only for SRBs whose BuildIo returned TRUE).
    let srb = unsafe { crate::storport::srb::Srb::validated(raw) };
    let function = srb.function();
    if function == u32::from(crate::storport::SRB_FUNCTION_EXECUTE_SCSI) {
        io::start_io(adapter, srb);
        return TRUE;
    }
    // Aborts and resets (the only other functions BuildIo passes on) need the SRB's address,
    // which the validated view does not keep: parse it again. It is the same SRB, still ours.
    srb.hand_over();
    // SAFETY: as above; the view just given up was the only one.
    match unsafe { crate::storport::srb::Srb::from_raw(raw) } {
        Ok(srb) => crate::recovery::tmf::start(adapter, srb),
        Err((srb, _)) => io::complete(adapter, srb, SRB_STATUS_INVALID_REQUEST),
    }
    TRUE
}

/// HwMSInterruptRoutine.
///
/// # Safety
/// DIRQL with the lock of `message_id` held by StorPort.
pub unsafe extern "system" fn hw_message_interrupt(
    device_extension: *mut c_void,
    message_id: u32,
) -> Boolean {
    // SAFETY: StorPort's device extension.
    let Some(adapter) = (unsafe { adapter(device_extension) }) else {
        return FALSE;
    };
    // SAFETY: StorPort holds the lock of `message_id` around this routine (the contract
    // above); the proof lives for this call only.
    let mut held = unsafe { HeldByStorPort::message(message_id) };
    Boolean::from(adapter.on_message(message_id, &mut held))
}

/// HwInterrupt (line-based); in the dump stack, the dump port's poll (`crate::dump`).
///
/// # Safety
/// DIRQL with the interrupt lock held (HIGH_LEVEL in the dump stack, with no interrupt).
pub unsafe extern "system" fn hw_interrupt(device_extension: *mut c_void) -> Boolean {
    // SAFETY: StorPort's device extension.
    let Some(adapter) = (unsafe { adapter(device_extension) }) else {
        return FALSE;
    };
    // SAFETY: StorPort (or the dump port) holds its interrupt lock around this routine (the
    // contract above); the proof lives for this call only.
    let mut held = unsafe { HeldByStorPort::interrupt_lock() };
    Boolean::from(adapter.on_line_interrupt(&mut held))
}

/// The per-queue completion DPC; `system_argument1` is the request queue number.
///
/// # Safety
/// DISPATCH_LEVEL; no lock held.
pub unsafe extern "system" fn hw_queue_dpc(
    _dpc: *mut StorDpc,
    device_extension: *mut c_void,
    system_argument1: *mut c_void,
    _system_argument2: *mut c_void,
) {
    // SAFETY: StorPort's device extension.
    if let Some(adapter) = unsafe { adapter(device_extension) } {
        adapter.on_dpc(system_argument1 as usize as u16);
    }
}

/// HwResetBus: StorPort's recovery from a timeout. In the normal stack, polls the queues, then
/// resets the nexus of every target still holding requests (`crate::recovery::tmf::reset_bus`); they
/// complete as the functions end, or by the full device reset they escalate to. In dump mode,
/// resets the device only if a request is in flight (`Adapter::reset_bus`).
///
/// # Safety
/// DISPATCH_LEVEL with the StartIo lock held (any IRQL and no lock in the dump stack).
pub unsafe extern "system" fn hw_reset_bus(
    device_extension: *mut c_void,
    _path_id: u32,
) -> Boolean {
    // SAFETY: StorPort's device extension.
    let Some(adapter) = (unsafe { adapter(device_extension) }) else {
        return FALSE;
    };
    adapter.reset_bus(ResetCause::ResetBus);
    TRUE
}

/// The adapter's one HwTimer: resets an ISR asked for, `DEVICE_NEEDS_RESET`, task management
/// deadlines and lost interrupts (`Adapter::on_timer`).
///
/// # Safety
/// DISPATCH_LEVEL with the StartIo lock held, no queue lock.
pub unsafe extern "system" fn hw_timer(device_extension: *mut c_void) {
    // SAFETY: StorPort's device extension.
    if let Some(adapter) = unsafe { adapter(device_extension) } {
        adapter.on_timer();
    }
}

/// HwStorStateChange: StorPort finished processing the `StorPortStateChangeDetected`
/// notification the event queue sent (see `crate::events`); the next one may be sent.
///
/// # Safety
/// DISPATCH_LEVEL with the StartIo lock held; `address` is the `STOR_ADDRESS` the notification
/// named (not read here), `context` the null context it was given.
pub unsafe extern "system" fn hw_state_change(
    device_extension: *mut c_void,
    _context: *mut c_void,
    _address_type: i16,
    _address: *mut c_void,
    _status: u32,
) {
    // SAFETY: StorPort's device extension.
    if let Some(adapter) = unsafe { adapter(device_extension) } {
        adapter.events().state_change_done();
    }
}

/// HwAdapterControl.
///
/// # Safety
/// IRQL per control type; `parameters` is the type's parameter block.
pub unsafe extern "system" fn hw_adapter_control(
    device_extension: *mut c_void,
    control_type: u32,
    parameters: *mut c_void,
) -> u32 {
    // SAFETY: StorPort's device extension.
    let Some(adapter) = (unsafe { adapter(device_extension) }) else {
        return ScsiAdapterControlUnsuccessful;
    };
    match control_type {
        query if query == ScsiQuerySupportedControlTypes => {
            let Some(list) = NonNull::new(parameters.cast::<ScsiSupportedControlTypeList>()) else {
                return ScsiAdapterControlUnsuccessful;
            };
            // SAFETY: StorPort passes a list header followed by `MaxControlType` BOOLEANs.
            let max = unsafe { list.as_ref() }.max_control_type;
            for supported in [
                ScsiQuerySupportedControlTypes,
                ScsiStopAdapter,
                ScsiRestartAdapter,
            ] {
                if supported < max {
                    let entry = list
                        .as_ptr()
                        .cast::<u8>()
                        .wrapping_add(core::mem::offset_of!(
                            ScsiSupportedControlTypeList,
                            supported_type_list
                        ))
                        .wrapping_add(supported as usize);
                    // SAFETY: index below `MaxControlType`, inside StorPort's array.
                    unsafe { entry.write(TRUE) };
                }
            }
            ScsiAdapterControlSuccess
        }
        stop if stop == ScsiStopAdapter => {
            // SAFETY: StorPort calls ScsiStopAdapter at DIRQL holding its interrupt lock (the
            // HW_ADAPTER_CONTROL table); the proof lives for this call only.
            let mut held = unsafe { HeldByStorPort::interrupt_lock() };
            adapter.stop(&mut held);
            ScsiAdapterControlSuccess
        }
        restart if restart == ScsiRestartAdapter => {
            // SAFETY: as for ScsiStopAdapter: DIRQL with the interrupt lock held.
            let mut held = unsafe { HeldByStorPort::interrupt_lock() };
            if adapter.restart(&mut held) {
                ScsiAdapterControlSuccess
            } else {
                ScsiAdapterControlUnsuccessful
            }
        }
        _ => ScsiAdapterControlUnsuccessful,
    }
}

/// HwStorUnitControl (see `crate::recovery::unit_control` for what each type does).
///
/// # Safety
/// PASSIVE_LEVEL with no StorPort lock held, for every type the query reports (Microsoft,
/// HW_UNIT_CONTROL). `parameters` is, for `ScsiQuerySupportedUnitControlTypes`, a
/// `SCSI_SUPPORTED_CONTROL_TYPE_LIST` header followed by `MaxControlType` BOOLEANs, writable;
/// for `ScsiUnitStart`, `ScsiUnitRemove` and `ScsiUnitSurpriseRemoval`, a readable
/// `STOR_ADDR_BTL8`; valid for the call. Other types are answered Unsuccessful unread.
pub unsafe extern "system" fn hw_unit_control(
    device_extension: *mut c_void,
    control_type: u32,
    parameters: *mut c_void,
) -> u32 {
    // SAFETY: StorPort's device extension.
    let Some(adapter) = (unsafe { adapter(device_extension) }) else {
        return ScsiUnitControlUnsuccessful;
    };
    if !crate::recovery::unit_control::is_supported(control_type) {
        return ScsiUnitControlUnsuccessful;
    }
    if control_type == ScsiQuerySupportedUnitControlTypes {
        let Some(list) = NonNull::new(parameters.cast::<ScsiSupportedControlTypeList>()) else {
            return ScsiUnitControlUnsuccessful;
        };
        // SAFETY: StorPort passes a readable list header (the function's contract).
        let max = unsafe { list.as_ref() }.max_control_type;
        // Only the entries below both MaxControlType and one past our highest type are handed
        // on: the caller's array has `MaxControlType` of them, and none beyond is ours to touch.
        let len = (max as usize).min(crate::recovery::unit_control::LIST_ENTRIES);
        let first = list
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(core::mem::offset_of!(
                ScsiSupportedControlTypeList,
                supported_type_list
            ));
        // SAFETY: `len <= MaxControlType` BOOLEANs (bytes) follow the header, writable and
        // exclusively ours for the call; nothing else references them meanwhile.
        let entries = unsafe { core::slice::from_raw_parts_mut(first, len) };
        crate::recovery::unit_control::report_supported(entries);
        return ScsiUnitControlSuccess;
    }
    let unit = NonNull::new(parameters.cast::<StorAddrBtl8>()).and_then(|address| {
        // SAFETY: a readable STOR_ADDR_BTL8 for the types that reach here (the function's
        // contract); read unaligned, so a caller's placement never matters.
        let address = unsafe { address.as_ptr().read_unaligned() };
        crate::recovery::unit_control::Unit::from_address(&address).ok()
    });
    crate::recovery::unit_control::control(adapter, control_type, unit)
}
