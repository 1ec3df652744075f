//! The StorPort routines with their C names and signatures (the non-variadic ones), and the
//! fixed-signature Rust halves of the variadic ones that `variadic.c` decodes.

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

use super::abi;
use super::locks::{CallContext, LockId, current_machine, with_cpu};
use super::machine::{DpcState, Machine, callback};
use super::win64::export;
use super::{Notification, Violation};

/// The machine of the calling thread, checked against the extension the miniport passed.
fn machine_for(routine: &'static str, extension: *mut c_void) -> Option<Arc<Machine>> {
    let machine = current_machine()?;
    machine
        .check_extension(routine, extension)
        .then_some(machine)
}

/// Stores `value` at a miniport-provided out pointer (ignored if null).
fn write_out<T: IntoBytes + Immutable>(pointer: *mut c_void, value: &T) {
    if pointer.is_null() {
        return;
    }
    let bytes = value.as_bytes();
    // SAFETY: the miniport passed `pointer` as the out parameter of exactly this type (the WDK
    // fixes it); a byte copy needs no alignment.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), pointer.cast::<u8>(), bytes.len());
    }
}

/// Reads a value of type `T` from a miniport-provided pointer.
fn read_in<T: FromBytes + IntoBytes>(pointer: *const c_void) -> Option<T> {
    if pointer.is_null() {
        return None;
    }
    let mut value = T::new_zeroed();
    let bytes = value.as_mut_bytes();
    // SAFETY: the miniport passed `pointer` as an in parameter of type `T` (fixed by the WDK);
    // a byte copy needs no alignment.
    unsafe {
        std::ptr::copy_nonoverlapping(pointer.cast::<u8>(), bytes.as_mut_ptr(), bytes.len());
    }
    Some(value)
}

export! {
    /// `ULONG StorPortInitialize(PVOID, PVOID, PHW_INITIALIZATION_DATA, PVOID)`.
    pub extern "system" fn StorPortInitialize(
        argument1: *mut c_void,
        _argument2: *mut c_void,
        hw_initialization_data: *mut c_void,
        _unused: *mut c_void,
    ) -> u32 {
        let failure = abi::STATUS_INVALID_PARAMETER.cast_unsigned();
        let Some(machine) = current_machine() else {
            return failure;
        };
        // The dump port's DriverEntry gets NULL for the driver object, which the miniport passes on.
        let driver_object: *mut c_void = if machine.options.dump.is_some() {
            std::ptr::null_mut()
        } else {
            machine.driver_object.as_ptr().cast_mut().cast()
        };
        if !machine.require_context("StorPortInitialize", &[CallContext::DriverEntry])
            || argument1 != driver_object
        {
            return failure;
        }
        let Some(size) = read_in::<u32>(hw_initialization_data) else {
            return failure;
        };
        if size < abi::HW_INITIALIZATION_DATA_SIZE_V1 {
            return abi::STATUS_REVISION_MISMATCH.cast_unsigned();
        }
        let mut data = abi::HwInitializationData::new_zeroed();
        let len = (size as usize).min(size_of::<abi::HwInitializationData>());
        // SAFETY: the miniport's structure is `size` bytes long by its own declaration; the copy
        // takes no more than that.
        unsafe {
            std::ptr::copy_nonoverlapping(
                hw_initialization_data.cast::<u8>(),
                data.as_mut_bytes().as_mut_ptr(),
                len,
            );
        }
        let valid = data.adapter_interface_type == abi::PCI_BUS
            && data.hw_find_adapter != 0
            && data.hw_initialize != 0
            && data.hw_start_io != 0
            && (data.srb_type_flags
                & !(abi::SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK | abi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK))
                == 0;
        if !valid {
            return failure;
        }
        let _ = machine.hw.set(data);
        abi::STATUS_SUCCESS.cast_unsigned()
    }
}

export! {
    /// `PVOID StorPortGetDeviceBase(PVOID, INTERFACE_TYPE, ULONG, PHYSICAL_ADDRESS, ULONG, BOOLEAN)`.
    pub extern "system" fn StorPortGetDeviceBase(
        extension: *mut c_void,
        _bus_type: u32,
        _bus: u32,
        io_address: i64,
        len: u32,
        in_io_space: u8,
    ) -> *mut c_void {
        let Some(machine) = machine_for("StorPortGetDeviceBase", extension) else {
            return std::ptr::null_mut();
        };
        machine.require_context("StorPortGetDeviceBase", &[CallContext::FindAdapter]);
        // The dump port maps BARs for a find-adapter it runs at HIGH_LEVEL (vioscsi does so).
        if machine.options.dump.is_none() {
            machine.require_irql_at_most("StorPortGetDeviceBase", super::locks::PASSIVE_LEVEL);
        }
        let physical = io_address.cast_unsigned();
        if let Some(cookie) = machine.device_base(physical, len, in_io_space != 0) {
            std::ptr::with_exposed_provenance_mut(cookie)
        } else {
            machine.violate(Violation::DeviceBaseOutsideBars { physical });
            std::ptr::null_mut()
        }
    }
}

export! {
    /// `VOID StorPortFreeDeviceBase(PVOID, PVOID)`: cookies need no freeing.
    pub extern "system" fn StorPortFreeDeviceBase(extension: *mut c_void, _mapped: *mut c_void) {
        let _ = machine_for("StorPortFreeDeviceBase", extension);
    }
}

export! {
    /// `BOOLEAN StorPortValidateRange(...)`: whether the range lies in one of the device's BARs.
    pub extern "system" fn StorPortValidateRange(
        extension: *mut c_void,
        _bus_type: u32,
        _bus: u32,
        io_address: i64,
        len: u32,
        in_io_space: u8,
    ) -> u8 {
        machine_for("StorPortValidateRange", extension).map_or(0, |machine| {
            u8::from(
                machine
                    .device_base(io_address.cast_unsigned(), len, in_io_space != 0)
                    .is_some(),
            )
        })
    }
}

export! {
    /// `ULONG StorPortGetBusData(PVOID, ULONG, ULONG, ULONG, PVOID, ULONG)`.
    pub extern "system" fn StorPortGetBusData(
        extension: *mut c_void,
        data_type: u32,
        _bus: u32,
        _slot: u32,
        buffer: *mut c_void,
        len: u32,
    ) -> u32 {
        let Some(machine) = machine_for("StorPortGetBusData", extension) else {
            return 0;
        };
        if data_type != abi::PCI_CONFIGURATION || buffer.is_null() {
            return 0;
        }
        let len = len.min(256) as usize;
        let mut bytes = vec![0; len];
        machine.config_read(0, &mut bytes);
        // SAFETY: the miniport's buffer holds `len` bytes (its own argument), and no more than
        // that, capped at the 256-byte configuration space, is written.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), len);
        }
        len as u32
    }
}

export! {
    /// `ULONG StorPortSetBusDataByOffset(PVOID, ULONG, ULONG, ULONG, PVOID, ULONG, ULONG)`.
    pub extern "system" fn StorPortSetBusDataByOffset(
        extension: *mut c_void,
        data_type: u32,
        _bus: u32,
        _slot: u32,
        buffer: *mut c_void,
        offset: u32,
        len: u32,
    ) -> u32 {
        let Some(machine) = machine_for("StorPortSetBusDataByOffset", extension) else {
            return 0;
        };
        if data_type != abi::PCI_CONFIGURATION || buffer.is_null() || offset >= 256 {
            return 0;
        }
        let len = len.min(256 - offset) as usize;
        let mut bytes = vec![0; len];
        // SAFETY: the miniport's buffer holds `len` bytes (its own argument, capped to the end of
        // configuration space).
        unsafe {
            std::ptr::copy_nonoverlapping(buffer.cast::<u8>(), bytes.as_mut_ptr(), len);
        }
        machine.pci.config_write(offset as u16, &bytes);
        len as u32
    }
}

export! {
    /// `PVOID StorPortGetUncachedExtension(PVOID, PPORT_CONFIGURATION_INFORMATION, ULONG)`.
    pub extern "system" fn StorPortGetUncachedExtension(
        extension: *mut c_void,
        _config: *mut c_void,
        len: u32,
    ) -> *mut c_void {
        let Some(machine) = machine_for("StorPortGetUncachedExtension", extension) else {
            return std::ptr::null_mut();
        };
        let dump = machine.options.dump;
        if !machine.require_context("StorPortGetUncachedExtension", &[CallContext::FindAdapter])
            || (dump.is_none()
                && !machine
                    .require_irql_at_most("StorPortGetUncachedExtension", super::locks::PASSIVE_LEVEL))
        {
            return std::ptr::null_mut();
        }
        let mut state = machine.state();
        if state.uncached.is_some() {
            drop(state);
            machine.violate(Violation::UncachedExtensionTwice);
            return std::ptr::null_mut();
        }
        let len = len as usize;
        if let Some(port) = dump
            && len > port.uncached_budget
        {
            drop(state);
            machine.log(format!(
                "dump port: uncached extension of {len} bytes refused (budget {})",
                port.uncached_budget
            ));
            return std::ptr::null_mut();
        }
        let misalignment = if dump.is_some() {
            super::dump::DUMP_UNCACHED_MISALIGNMENT
        } else {
            0
        };
        let Some(base) = machine.memory.alloc(len.max(1) + misalignment, 4096) else {
            return std::ptr::null_mut();
        };
        let address = base + misalignment;
        state.uncached = Some((address, len.max(1)));
        drop(state);
        // Under DMA remapping StorPort maps the common buffer for the adapter's life.
        if !machine.map_uncached(address, len.max(1)) {
            return std::ptr::null_mut();
        }
        std::ptr::with_exposed_provenance_mut(address)
    }
}

/// The registry routines may only be called at PASSIVE_LEVEL, and not at all in dump mode.
fn registry_machine(routine: &'static str, extension: *mut c_void) -> Option<Arc<Machine>> {
    let machine = machine_for(routine, extension)?;
    if machine.forbid_in_dump(routine) {
        return None;
    }
    machine
        .require_irql_at_most(routine, super::locks::PASSIVE_LEVEL)
        .then_some(machine)
}

export! {
    /// `PUCHAR StorPortAllocateRegistryBuffer(PVOID, PULONG)`: one buffer per adapter at a time.
    pub extern "system" fn StorPortAllocateRegistryBuffer(
        extension: *mut c_void,
        length: *mut u32,
    ) -> *mut u8 {
        let Some(machine) = registry_machine("StorPortAllocateRegistryBuffer", extension) else {
            return std::ptr::null_mut();
        };
        let Some(requested) = read_in::<u32>(length.cast()) else {
            return std::ptr::null_mut();
        };
        let mut state = machine.state();
        if state.registry_buffer.is_some() {
            drop(state);
            machine.violate(Violation::RegistryBufferTwice);
            return std::ptr::null_mut();
        }
        let len = (requested as usize).max(1);
        let Some(address) = machine.memory.alloc(len, 8) else {
            return std::ptr::null_mut();
        };
        state.registry_buffer = Some((address, len));
        std::ptr::with_exposed_provenance_mut(address)
    }
}

export! {
    /// `VOID StorPortFreeRegistryBuffer(PVOID, PUCHAR)`.
    pub extern "system" fn StorPortFreeRegistryBuffer(extension: *mut c_void, buffer: *mut u8) {
        const ROUTINE: &str = "StorPortFreeRegistryBuffer";
        let Some(machine) = registry_machine(ROUTINE, extension) else {
            return;
        };
        let mut state = machine.state();
        match state.registry_buffer {
            Some((address, len)) if address == buffer.addr() => {
                state.registry_buffer = None;
                drop(state);
                machine.memory.free(address, len);
            }
            _ => {
                drop(state);
                machine.violate(Violation::ForeignRegistryBuffer { routine: ROUTINE });
            }
        }
    }
}

export! {
    /// `BOOLEAN StorPortRegistryRead(PVOID, PUCHAR, ULONG, ULONG, PUCHAR, PULONG)`: REG_DWORD
    /// values of `Parameters\Device` from [`super::SimOptions::registry`]; per-adapter keys
    /// (`Global` = 0) and other types are absent.
    pub extern "system" fn StorPortRegistryRead(
        extension: *mut c_void,
        value_name: *const u8,
        global: u32,
        value_type: u32,
        buffer: *mut u8,
        buffer_length: *mut u32,
    ) -> u8 {
        const ROUTINE: &str = "StorPortRegistryRead";
        let Some(machine) = registry_machine(ROUTINE, extension) else {
            return 0;
        };
        let Some((address, len)) = machine.state().registry_buffer else {
            machine.violate(Violation::ForeignRegistryBuffer { routine: ROUTINE });
            return 0;
        };
        let Some(capacity) = read_in::<u32>(buffer_length.cast()) else {
            return 0;
        };
        if buffer.addr() != address || capacity as usize > len || value_name.is_null() {
            machine.violate(Violation::ForeignRegistryBuffer { routine: ROUTINE });
            return 0;
        }
        // SAFETY: the miniport passes a NUL-terminated value name (the WDK's contract).
        let name = unsafe { std::ffi::CStr::from_ptr(value_name.cast()) };
        let Some(value) = machine
            .options
            .registry
            .iter()
            .find(|(key, _)| key.as_bytes() == name.to_bytes())
            .map(|&(_, value)| value)
        else {
            return 0;
        };
        if global == 0 || value_type != abi::REG_DWORD || capacity < 4 {
            return 0;
        }
        let _ = machine.memory.write(address, &value.to_le_bytes());
        write_out(buffer_length.cast(), &4u32);
        1
    }
}

/// The value name (and subkey, which must be NULL: the simulator's hardware key has none) of
/// a StorPortRegistryRead/WriteAdapterKey call, after the PASSIVE_LEVEL and dump checks.
fn adapter_key_call(
    routine: &'static str,
    extension: *mut c_void,
    subkey: *const u8,
    name: *const u8,
) -> Option<(Arc<Machine>, String)> {
    let machine = registry_machine(routine, extension)?;
    if !subkey.is_null() || name.is_null() {
        return None;
    }
    // SAFETY: the miniport passes a NUL-terminated ASCII value name (storport.h's contract).
    let name = unsafe { std::ffi::CStr::from_ptr(name.cast()) };
    Some((machine, name.to_str().ok()?.to_owned()))
}

/// StorPortRegistryReadAdapterKey (ExtFunctionRegistryReadAdapterKey: PUCHAR SubKeyName,
/// PUCHAR ValueName, ULONG ValueType, PVOID *ValueData, PULONG ValueDataLength): copies the
/// value of [`super::SimOptions::adapter_key`] into the caller's buffer at `*ValueData`
/// (`*ValueDataLength` bytes on entry, the value's size on return). Absent or of another type:
/// STOR_STATUS_UNSUCCESSFUL; larger than the buffer: STOR_STATUS_BUFFER_TOO_SMALL.
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_registry_read_adapter_key(
    extension: *mut c_void,
    subkey: *const u8,
    name: *const u8,
    value_type: u32,
    data: *mut *mut u8,
    length: *mut u32,
) -> u32 {
    let Some((machine, name)) =
        adapter_key_call("StorPortRegistryReadAdapterKey", extension, subkey, name)
    else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    let (Some(buffer), Some(capacity)) =
        (read_in::<usize>(data.cast()), read_in::<u32>(length.cast()))
    else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    let Some((stored_type, value)) = machine.options.adapter_key.value(&name) else {
        return abi::STOR_STATUS_UNSUCCESSFUL;
    };
    if stored_type != value_type {
        return abi::STOR_STATUS_UNSUCCESSFUL;
    }
    if value.len() > capacity as usize || buffer == 0 {
        return abi::STOR_STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: the miniport's buffer of `capacity` bytes at `*ValueData` (storport.h's
    // contract), of which the value's length is written.
    unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), buffer as *mut u8, value.len()) };
    write_out(
        length.cast(),
        &u32::try_from(value.len()).unwrap_or(u32::MAX),
    );
    abi::STOR_STATUS_SUCCESS
}

/// StorPortRegistryWriteAdapterKey (ExtFunctionRegistryWriteAdapterKey: PUCHAR SubKeyName,
/// PUCHAR ValueName, ULONG ValueType, PVOID ValueData, ULONG ValueDataLength): stores the value
/// in [`super::SimOptions::adapter_key`].
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_registry_write_adapter_key(
    extension: *mut c_void,
    subkey: *const u8,
    name: *const u8,
    value_type: u32,
    data: *const u8,
    length: u32,
) -> u32 {
    let Some((machine, name)) =
        adapter_key_call("StorPortRegistryWriteAdapterKey", extension, subkey, name)
    else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    if data.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the miniport's `ValueDataLength` bytes at `ValueData` (storport.h's contract).
    let value = unsafe { std::slice::from_raw_parts(data, length as usize) };
    machine.options.adapter_key.set(&name, value_type, value);
    abi::STOR_STATUS_SUCCESS
}

export! {
    /// `STOR_PHYSICAL_ADDRESS StorPortGetPhysicalAddress(PVOID, PSCSI_REQUEST_BLOCK, PVOID, ULONG*)`.
    pub extern "system" fn StorPortGetPhysicalAddress(
        extension: *mut c_void,
        srb: *mut c_void,
        virtual_address: *mut c_void,
        length: *mut u32,
    ) -> i64 {
        let Some(machine) = machine_for("StorPortGetPhysicalAddress", extension) else {
            return 0;
        };
        let srb = (!srb.is_null()).then_some(srb.addr());
        if srb.is_none() && machine.in_srb_extension(virtual_address.addr()) {
            machine.violate(Violation::SrbExtensionTranslatedWithoutSrb {
                address: virtual_address.addr(),
            });
            write_out(length.cast(), &0_u32);
            return 0;
        }
        let (physical, contiguous) = machine
            .physical_address(srb, virtual_address.addr())
            .unwrap_or_else(|| {
                machine.violate(Violation::PhysicalAddressOfUnknownMemory {
                    address: virtual_address.addr(),
                });
                (0, 0)
            });
        write_out(length.cast(), &contiguous);
        physical.cast_signed()
    }
}

export! {
    /// `PVOID StorPortGetVirtualAddress(PVOID, STOR_PHYSICAL_ADDRESS)`: the identity mapping, or
    /// the IOMMU's reverse one.
    pub extern "system" fn StorPortGetVirtualAddress(
        extension: *mut c_void,
        physical: i64,
    ) -> *mut c_void {
        let Some(machine) = machine_for("StorPortGetVirtualAddress", extension) else {
            return std::ptr::null_mut();
        };
        let Ok(bus) = u64::try_from(physical) else {
            return std::ptr::null_mut();
        };
        machine
            .virtual_address(bus)
            .map_or(std::ptr::null_mut(), std::ptr::with_exposed_provenance_mut)
    }
}

export! {
    /// `PSTOR_SCATTER_GATHER_LIST StorPortGetScatterGatherList(PVOID, PSCSI_REQUEST_BLOCK)`.
    pub extern "system" fn StorPortGetScatterGatherList(
        extension: *mut c_void,
        srb: *mut c_void,
    ) -> *mut c_void {
        let Some(machine) = machine_for("StorPortGetScatterGatherList", extension) else {
            return std::ptr::null_mut();
        };
        if !machine.state().outstanding.contains_key(&srb.addr()) {
            machine.violate(Violation::ScatterGatherOfUnknownSrb { srb: srb.addr() });
            return std::ptr::null_mut();
        }
        machine
            .scatter_gather_list(srb.addr())
            .map_or(std::ptr::null_mut(), std::ptr::with_exposed_provenance_mut)
    }
}

export! {
    /// `PVOID StorPortGetLogicalUnit(PVOID, UCHAR, UCHAR, UCHAR)`: the LU extension of a unit the
    /// port driver has sent requests to, or NULL.
    pub extern "system" fn StorPortGetLogicalUnit(
        extension: *mut c_void,
        path: u8,
        target: u8,
        lun: u8,
    ) -> *mut c_void {
        let Some(machine) = machine_for("StorPortGetLogicalUnit", extension) else {
            return std::ptr::null_mut();
        };
        machine
            .state()
            .logical_units
            .get(&(path, target, lun))
            .map_or(std::ptr::null_mut(), |unit| unit.as_ptr().cast_mut().cast())
    }
}

export! {
    /// `VOID StorPortCompleteRequest(PVOID, UCHAR, UCHAR, UCHAR, UCHAR)`.
    pub extern "system" fn StorPortCompleteRequest(
        extension: *mut c_void,
        path: u8,
        target: u8,
        lun: u8,
        status: u8,
    ) {
        let Some(machine) = machine_for("StorPortCompleteRequest", extension) else {
            return;
        };
        machine.notify(Notification::CompleteRequest {
            path,
            target,
            lun,
            status,
        });
        machine.complete_matching(path, target, lun, status);
    }
}

export! {
    /// `BOOLEAN StorPortSetDeviceQueueDepth(PVOID, UCHAR, UCHAR, UCHAR, ULONG)`.
    pub extern "system" fn StorPortSetDeviceQueueDepth(
        extension: *mut c_void,
        path: u8,
        target: u8,
        lun: u8,
        depth: u32,
    ) -> u8 {
        let Some(machine) = machine_for("StorPortSetDeviceQueueDepth", extension) else {
            return 0;
        };
        let mut state = machine.state();
        if !state.logical_units.contains_key(&(path, target, lun)) || depth == 0 {
            return 0;
        }
        state.queue_depths.insert((path, target, lun), depth);
        drop(state);
        machine.notify(Notification::QueueDepth { target, lun, depth });
        1
    }
}

export! {
    /// `BOOLEAN StorPortBusy(PVOID, ULONG)`: StorPort sends no request until `requests` of those
    /// the miniport holds complete.
    pub extern "system" fn StorPortBusy(extension: *mut c_void, requests: u32) -> u8 {
        let Some(machine) = machine_for("StorPortBusy", extension) else {
            return 0;
        };
        machine.busy(requests);
        1
    }
}

export! {
    /// `BOOLEAN StorPortReady(PVOID)`: ends a StorPortBusy hold.
    pub extern "system" fn StorPortReady(extension: *mut c_void) -> u8 {
        let Some(machine) = machine_for("StorPortReady", extension) else {
            return 0;
        };
        machine.ready();
        1
    }
}

export! {
    /// `VOID StorPortLogError(PVOID, PSCSI_REQUEST_BLOCK, UCHAR, UCHAR, UCHAR, ULONG, ULONG)`.
    pub extern "system" fn StorPortLogError(
        extension: *mut c_void,
        _srb: *mut c_void,
        _path: u8,
        _target: u8,
        _lun: u8,
        code: u32,
        unique: u32,
    ) {
        if let Some(machine) = machine_for("StorPortLogError", extension) {
            machine.notify(Notification::LogError { code, unique });
        }
    }
}

export! {
    /// `VOID StorPortStallExecution(ULONG)`: busy-waits, as KeStallExecutionProcessor does.
    pub extern "system" fn StorPortStallExecution(microseconds: u32) {
        let stall = Duration::from_micros(u64::from(microseconds));
        let until = Instant::now() + current_machine().map_or(stall, |machine| machine.clock.real(stall));
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

export! {
    /// `VOID StorPortQuerySystemTime(PLARGE_INTEGER)`: 100 ns units since 1601, on the
    /// machine's clock. A dump-mode miniport "must not rely on time checking routines"
    /// (Microsoft, boot-drive restrictions).
    pub extern "system" fn StorPortQuerySystemTime(time: *mut i64) {
        let ticks = match current_machine() {
            Some(machine) => {
                let _ = machine.forbid_in_dump("StorPortQuerySystemTime");
                machine.clock.system_time()
            }
            None => super::clock::SimClock::new(1).system_time(),
        };
        write_out(time.cast(), &ticks.cast_signed());
    }
}

export! {
    /// `VOID StorPortMoveMemory(PVOID, PVOID, ULONG)`.
    pub extern "system" fn StorPortMoveMemory(destination: *mut c_void, source: *mut c_void, len: u32) {
        if destination.is_null() || source.is_null() {
            return;
        }
        // SAFETY: the miniport names two buffers of `len` bytes; `copy` allows overlap (memmove).
        unsafe {
            std::ptr::copy(source.cast::<u8>(), destination.cast::<u8>(), len as usize);
        }
    }
}

export! {
    /// `STOR_PHYSICAL_ADDRESS StorPortConvertUlong64ToPhysicalAddress(ULONG64)`.
    pub extern "system" fn StorPortConvertUlong64ToPhysicalAddress(address: u64) -> i64 {
        address.cast_signed()
    }
}

export! {
    /// `ULONG64 StorPortConvertPhysicalAddressToUlong64(STOR_PHYSICAL_ADDRESS)`.
    pub extern "system" fn StorPortConvertPhysicalAddressToUlong64(address: i64) -> u64 {
        address.cast_unsigned()
    }
}

export! {
    /// `VOID StorPortSynchronizeAccess(PVOID, PSTOR_SYNCHRONIZED_ACCESS, PVOID)`: runs the routine
    /// under the interrupt lock.
    pub extern "system" fn StorPortSynchronizeAccess(
        extension: *mut c_void,
        routine: *mut c_void,
        context: *mut c_void,
    ) {
        let Some(machine) = machine_for("StorPortSynchronizeAccess", extension) else {
            return;
        };
        let Some(routine) = callback!(routine.addr(), super::routine::SynchronizedAccessFn) else {
            return;
        };
        let old = machine.acquire(LockId::Interrupt);
        // SAFETY: the miniport's synchronised routine gets its extension and context.
        unsafe {
            routine.call(extension, context);
        }
        if let Some(old) = old {
            machine.release(LockId::Interrupt, old);
        }
    }
}

macro_rules! register_routines {
    ($read:ident, $write:ident, $read_buffer:ident, $write_buffer:ident, $ty:ty, $width:expr) => {
        export! {
            #[doc = concat!("`", stringify!($read), "`: a device register read through its cookie.")]
            pub extern "system" fn $read(extension: *mut c_void, register: *mut c_void) -> $ty {
                let Some(machine) = machine_for(stringify!($read), extension) else {
                    return <$ty>::MAX;
                };
                match machine.register(register.addr(), $width) {
                    Some((bar, offset)) => machine.pci.mmio_read(bar, offset, $width) as $ty,
                    None => <$ty>::MAX,
                }
            }
        }

        export! {
            #[doc = concat!("`", stringify!($write), "`: a device register write through its cookie.")]
            pub extern "system" fn $write(extension: *mut c_void, register: *mut c_void, value: $ty) {
                let Some(machine) = machine_for(stringify!($write), extension) else {
                    return;
                };
                if let Some((bar, offset)) = machine.register(register.addr(), $width) {
                    machine
                        .pci
                        .mmio_write(bar, offset, $width, u64::from(value));
                }
            }
        }

        export! {
            #[doc = concat!("`", stringify!($read_buffer), "`: repeated reads of one register.")]
            pub extern "system" fn $read_buffer(
                extension: *mut c_void,
                register: *mut c_void,
                buffer: *mut $ty,
                count: u32,
            ) {
                for i in 0..count as usize {
                    let value = $read(extension, register);
                    write_out(buffer.wrapping_add(i).cast(), &value);
                }
            }
        }

        export! {
            #[doc = concat!("`", stringify!($write_buffer), "`: repeated writes of one register.")]
            pub extern "system" fn $write_buffer(
                extension: *mut c_void,
                register: *mut c_void,
                buffer: *mut $ty,
                count: u32,
            ) {
                for i in 0..count as usize {
                    if let Some(value) = read_in::<$ty>(buffer.wrapping_add(i).cast()) {
                        $write(extension, register, value);
                    }
                }
            }
        }
    };
}

register_routines!(
    StorPortReadRegisterUchar,
    StorPortWriteRegisterUchar,
    StorPortReadRegisterBufferUchar,
    StorPortWriteRegisterBufferUchar,
    u8,
    1
);
register_routines!(
    StorPortReadRegisterUshort,
    StorPortWriteRegisterUshort,
    StorPortReadRegisterBufferUshort,
    StorPortWriteRegisterBufferUshort,
    u16,
    2
);
register_routines!(
    StorPortReadRegisterUlong,
    StorPortWriteRegisterUlong,
    StorPortReadRegisterBufferUlong,
    StorPortWriteRegisterBufferUlong,
    u32,
    4
);
register_routines!(
    StorPortReadRegisterUlong64,
    StorPortWriteRegisterUlong64,
    StorPortReadRegisterBufferUlong64,
    StorPortWriteRegisterBufferUlong64,
    u64,
    8
);
register_routines!(
    StorPortReadPortUchar,
    StorPortWritePortUchar,
    StorPortReadPortBufferUchar,
    StorPortWritePortBufferUchar,
    u8,
    1
);
register_routines!(
    StorPortReadPortUshort,
    StorPortWritePortUshort,
    StorPortReadPortBufferUshort,
    StorPortWritePortBufferUshort,
    u16,
    2
);
register_routines!(
    StorPortReadPortUlong,
    StorPortWritePortUlong,
    StorPortReadPortBufferUlong,
    StorPortWritePortBufferUlong,
    u32,
    4
);

// ---- The Rust halves of the variadic routines (called from variadic.c). ----

/// StorPortNotification(RequestComplete, ext, srb).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_request_complete(extension: *mut c_void, srb: *mut c_void) {
    if let Some(machine) = machine_for("RequestComplete", extension) {
        machine.complete(srb.addr());
    }
}

/// StorPortNotification(NextRequest, ext).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_next_request(extension: *mut c_void) {
    if let Some(machine) = machine_for("NextRequest", extension) {
        machine.notify(Notification::NextRequest);
    }
}

/// StorPortNotification(NextLuRequest, ext, path, target, lun).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_next_lu_request(
    extension: *mut c_void,
    path: u8,
    target: u8,
    lun: u8,
) {
    if let Some(machine) = machine_for("NextLuRequest", extension) {
        machine.notify(Notification::NextLuRequest { path, target, lun });
    }
}

/// StorPortNotification(ResetDetected, ext).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_reset_detected(extension: *mut c_void) {
    if let Some(machine) = machine_for("ResetDetected", extension) {
        machine.notify(Notification::ResetDetected);
    }
}

/// StorPortNotification(BusChangeDetected, ext, path): queues a rescan (any IRQL; storport.sys
/// only queues the work too).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_bus_change_detected(extension: *mut c_void, path: u8) {
    if let Some(machine) = machine_for("BusChangeDetected", extension) {
        machine.notify(Notification::BusChangeDetected { path });
        machine.pnp.request_rescan();
    }
}

/// StorPortStateChangeDetected(ext, entity, address, attributes, callback, context) through
/// StorPortNotification(StateChangeDetectedCall, ..., &status): checks the entity and the
/// STOR_ADDR_BTL8 as StorPort does (STOR_STATUS_INVALID_PARAMETER), answers BUSY while another
/// one is active, otherwise queues the re-enumeration (any IRQL).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_state_change_detected(
    extension: *mut c_void,
    entity: u32,
    address: *mut c_void,
    _attributes: u32,
    callback: *mut c_void,
    context: *mut c_void,
    status: *mut u32,
) {
    let Some(machine) = machine_for("StateChangeDetected", extension) else {
        return;
    };
    let known = abi::STATE_CHANGE_LUN | abi::STATE_CHANGE_TARGET | abi::STATE_CHANGE_BUS;
    let snapshot = read_in::<abi::StorAddrBtl8>(address).filter(|snapshot| {
        snapshot.address_type == abi::STOR_ADDRESS_TYPE_BTL8
            && snapshot.address_length == abi::STOR_ADDR_BTL8_ADDRESS_LENGTH
    });
    let result = match snapshot {
        Some(snapshot) if entity != 0 && entity & !known == 0 => machine.pnp.state_change_detected(
            entity,
            address.addr(),
            snapshot,
            callback.addr(),
            context.addr(),
        ),
        _ => {
            machine.violate(Violation::StateChangeInvalid { entity });
            abi::STOR_STATUS_INVALID_PARAMETER
        }
    };
    machine.notify(Notification::StateChangeDetected {
        entity,
        target: snapshot.map_or(0, |snapshot| snapshot.target),
        lun: snapshot.map_or(0, |snapshot| snapshot.lun),
        status: result,
    });
    write_out(status.cast(), &result);
}

/// StorPortNotification(RequestTimerCall, ext, HwTimer, microseconds): one-shot; 0 cancels.
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_request_timer_call(
    extension: *mut c_void,
    routine: *mut c_void,
    microseconds: u32,
) {
    if let Some(machine) = machine_for("RequestTimerCall", extension) {
        if machine.forbid_in_dump("RequestTimerCall") {
            return;
        }
        machine.state().timer = (microseconds != 0 && !routine.is_null()).then(|| {
            (
                routine.addr(),
                Instant::now()
                    + machine
                        .clock
                        .real(Duration::from_micros(u64::from(microseconds))),
            )
        });
    }
}

/// StorPortNotification(QueryTickCount, ext, PLARGE_INTEGER): 100 ns ticks since the machine
/// booted, on its clock (KeQueryTickCount counts clock ticks; the unit is what the miniport asks
/// via KeQueryTimeIncrement, which StorPort does not export, so any monotonic count will do).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_query_tick_count(extension: *mut c_void, count: *mut i64) {
    if let Some(machine) = machine_for("QueryTickCount", extension) {
        write_out(count.cast(), &machine.clock.ticks().cast_signed());
    }
}

/// StorPortNotification(EnablePassiveInitialization, ext, routine, &result). Microsoft: "A
/// miniport must call the StorPortEnablePassiveInitialization routine only from within
/// HwStorInitialize. Otherwise, StorPortEnablePassiveInitialization will return FALSE".
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_enable_passive_initialization(
    extension: *mut c_void,
    routine: *mut c_void,
    result: *mut i32,
) {
    let Some(machine) = machine_for("EnablePassiveInitialization", extension) else {
        return;
    };
    if machine.forbid_in_dump("StorPortEnablePassiveInitialization") {
        write_out(result.cast(), &0_i32);
        return;
    }
    let ok = machine.require_context(
        "StorPortEnablePassiveInitialization",
        &[CallContext::Initialize],
    ) && !routine.is_null()
        && machine.options.passive_initialization;
    if ok {
        machine.state().passive_initialize = Some(routine.addr());
    }
    write_out(result.cast(), &i32::from(ok));
}

/// StorPortNotification(InitializeDpc, ext, dpc, routine).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_initialize_dpc(
    extension: *mut c_void,
    dpc: *mut c_void,
    routine: *mut c_void,
) {
    let Some(machine) = machine_for("InitializeDpc", extension) else {
        return;
    };
    if machine.forbid_in_dump("StorPortInitializeDpc") || dpc.is_null() {
        return;
    }
    let stor_dpc = abi::StorDpc {
        dpc_type: 0x13,
        deferred_routine: routine.addr() as u64,
        deferred_context: extension.addr() as u64,
        ..abi::StorDpc::default()
    };
    write_out(dpc, &stor_dpc);
    machine
        .state()
        .dpcs
        .insert(dpc.addr(), Arc::new(DpcState::default()));
}

/// StorPortNotification(IssueDpc, ext, dpc, argument1, argument2, &result): queues the DPC on
/// the current processor; it runs at DISPATCH_LEVEL when the current routine returns.
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_issue_dpc(
    extension: *mut c_void,
    dpc: *mut c_void,
    argument1: *mut c_void,
    argument2: *mut c_void,
    result: *mut i32,
) {
    let Some(machine) = machine_for("IssueDpc", extension) else {
        return;
    };
    if machine.forbid_in_dump("StorPortIssueDpc") {
        write_out(result.cast(), &0_i32);
        return;
    }
    let Some(state) = machine.state().dpcs.get(&dpc.addr()).cloned() else {
        machine.violate(Violation::DpcNotInitialized { dpc: dpc.addr() });
        write_out(result.cast(), &0_i32);
        return;
    };
    // ORDERING: SeqCst on the queued flag makes "insert once" atomic across processors, as
    // KeInsertQueueDpc's DPC-queue lock does.
    let inserted = !state.queued.swap(true, Ordering::SeqCst);
    if inserted {
        with_cpu(|cpu| {
            cpu.pending_dpcs
                .push((dpc.addr(), argument1.addr() as u64, argument2.addr() as u64));
        });
    }
    write_out(result.cast(), &i32::from(inserted));
}

fn lock_id(kind: u32, context: *mut c_void) -> Option<LockId> {
    match kind {
        abi::START_IO_LOCK => Some(LockId::StartIo),
        abi::INTERRUPT_LOCK => Some(LockId::Interrupt),
        abi::DPC_LOCK if !context.is_null() => Some(LockId::Dpc(context.addr())),
        _ => None,
    }
}

/// StorPortNotification(AcquireSpinLock, ext, lock, context, handle).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_acquire_spin_lock(
    extension: *mut c_void,
    kind: u32,
    context: *mut c_void,
    handle: *mut c_void,
) {
    let Some(machine) = machine_for("StorPortAcquireSpinLock", extension) else {
        return;
    };
    let Some(id) = lock_id(kind, context) else {
        machine.violate(Violation::UnknownNotification {
            notification: 0x1003,
        });
        return;
    };
    if let Some(old) = machine.acquire(id) {
        write_out(
            handle,
            &abi::StorLockHandle {
                lock: kind,
                lock_queue_lock: context.addr() as u64,
                old_irql: old,
                ..abi::StorLockHandle::default()
            },
        );
    }
}

/// StorPortNotification(ReleaseSpinLock, ext, handle).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_release_spin_lock(extension: *mut c_void, handle: *mut c_void) {
    let Some(machine) = machine_for("StorPortReleaseSpinLock", extension) else {
        return;
    };
    let Some(saved) = read_in::<abi::StorLockHandle>(handle) else {
        return;
    };
    let context = std::ptr::with_exposed_provenance_mut(saved.lock_queue_lock as usize);
    match lock_id(saved.lock, context) {
        Some(id) => machine.release(id, saved.old_irql),
        None => machine.violate(Violation::UnknownNotification {
            notification: 0x1004,
        }),
    }
}

/// StorPortNotification with a type the simulator does not know.
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_notification_unknown(notification: u32, extension: *mut c_void) {
    if let Some(machine) = machine_for("StorPortNotification", extension) {
        machine.violate(Violation::UnknownNotification { notification });
    }
}

/// StorPortAcquireMSISpinLock(ext, message, &old_irql).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_acquire_msi_spin_lock(
    extension: *mut c_void,
    message: u32,
    old_irql: *mut u32,
) -> u32 {
    let Some(machine) = machine_for("StorPortAcquireMSISpinLock", extension) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    match machine.acquire(LockId::Message(message)) {
        Some(old) => {
            write_out(old_irql.cast(), &u32::from(old));
            abi::STOR_STATUS_SUCCESS
        }
        None => abi::STOR_STATUS_INVALID_PARAMETER,
    }
}

/// StorPortReleaseMSISpinLock(ext, message, old_irql).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_release_msi_spin_lock(
    extension: *mut c_void,
    message: u32,
    old_irql: u32,
) -> u32 {
    let Some(machine) = machine_for("StorPortReleaseMSISpinLock", extension) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    machine.release(LockId::Message(message), old_irql as u8);
    abi::STOR_STATUS_SUCCESS
}

/// StorPortGetMSIInfo(ext, message, info).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_get_message_interrupt_information(
    extension: *mut c_void,
    message: u32,
    info: *mut c_void,
) -> u32 {
    let Some(machine) = machine_for("StorPortGetMSIInfo", extension) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    if message >= machine.message_count || info.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    write_out(
        info,
        &abi::MessageInterruptInformation {
            message_id: message,
            message_data: 0x4000 + message,
            message_address: 0xFEE0_0000,
            interrupt_vector: 0x80 + message,
            interrupt_level: u32::from(super::locks::DEVICE_LEVEL),
            interrupt_mode: abi::LATCHED,
            padding: 0,
        },
    );
    abi::STOR_STATUS_SUCCESS
}

/// StorPortInitializePerfOpts(ext, query, data).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_initialize_perf_opts(
    extension: *mut c_void,
    query: u8,
    data: *mut c_void,
) -> u32 {
    let Some(machine) = machine_for("StorPortInitializePerfOpts", extension) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    if machine.forbid_in_dump("StorPortInitializePerfOpts") {
        return abi::STOR_STATUS_NOT_IMPLEMENTED;
    }
    if !machine.require_context(
        "StorPortInitializePerfOpts",
        &[
            CallContext::FindAdapter,
            CallContext::Initialize,
            CallContext::PassiveInitialize,
        ],
    ) {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    let Some(mut perf) = read_in::<abi::PerfConfigurationData>(data) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    if perf.version < 2 || (perf.size as usize) < size_of::<abi::PerfConfigurationData>() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    if query != 0 {
        perf.flags = abi::STOR_PERF_SUPPORTED;
        perf.concurrent_channels = machine.options.processors;
        perf.first_redirection_message_number = 0;
        perf.last_redirection_message_number = machine.message_count.saturating_sub(1);
        write_out(data, &perf);
        return abi::STOR_STATUS_SUCCESS;
    }
    if perf.flags & !abi::STOR_PERF_SUPPORTED != 0 {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    if perf.flags & abi::STOR_PERF_INTERRUPT_MESSAGE_RANGES != 0
        && (perf.flags & abi::STOR_PERF_DPC_REDIRECTION == 0
            || perf.first_redirection_message_number > perf.last_redirection_message_number
            || perf.last_redirection_message_number >= machine.message_count)
    {
        // The range must name granted messages, and needs DPC redirection with it.
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    let mut state = machine.state();
    state.perf_flags = perf.flags;
    state.message_range = (perf.flags & abi::STOR_PERF_INTERRUPT_MESSAGE_RANGES != 0).then_some((
        perf.first_redirection_message_number,
        perf.last_redirection_message_number,
    ));
    abi::STOR_STATUS_SUCCESS
}

/// StorPortGetStartIoPerfParams(ext, srb, PSTARTIO_PERFORMANCE_PARAMETERS): the MSI-X message
/// that targets the current processor (see `Machine::message_for_processor`) and the
/// concurrent channel (the processor, with concurrent channels; else 0).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_get_start_io_perf_params(
    extension: *mut c_void,
    srb: *mut c_void,
    params: *mut c_void,
) -> u32 {
    let Some(machine) = machine_for("StorPortGetStartIoPerfParams", extension) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    if srb.is_null() || !machine.state().outstanding.contains_key(&srb.addr()) {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    let Some(mut out) = read_in::<abi::StartioPerformanceParameters>(params) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    if (out.size as usize) < size_of::<abi::StartioPerformanceParameters>() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    let processor = with_cpu(|cpu| cpu.processor);
    out.message_number = machine.message_for_processor(processor);
    out.channel_number = if machine.state().perf_flags & abi::STOR_PERF_CONCURRENT_CHANNELS != 0 {
        processor
    } else {
        0
    };
    write_out(params, &out);
    abi::STOR_STATUS_SUCCESS
}

/// StorPortGetCurrentProcessorNumber(ext, PPROCESSOR_NUMBER).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_get_current_processor_number(
    extension: *mut c_void,
    number: *mut c_void,
) -> u32 {
    if machine_for("StorPortGetCurrentProcessorNumber", extension).is_none() || number.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    let processor = with_cpu(|cpu| cpu.processor);
    write_out(
        number,
        &abi::ProcessorNumber {
            group: 0,
            number: processor as u8,
            reserved: 0,
        },
    );
    abi::STOR_STATUS_SUCCESS
}

/// StorPortGetActiveGroupCount(ext, PUSHORT): one group.
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_get_active_group_count(
    extension: *mut c_void,
    count: *mut u16,
) -> u32 {
    if machine_for("StorPortGetActiveGroupCount", extension).is_none() || count.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    write_out(count.cast(), &1_u16);
    abi::STOR_STATUS_SUCCESS
}

/// StorPortGetGroupAffinity(ext, group, PKAFFINITY).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_get_group_affinity(
    extension: *mut c_void,
    group: u16,
    mask: *mut u64,
) -> u32 {
    let Some(machine) = machine_for("StorPortGetGroupAffinity", extension) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    if group != 0 || mask.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    write_out(mask.cast(), &affinity(machine.options.processors));
    abi::STOR_STATUS_SUCCESS
}

fn affinity(processors: u32) -> u64 {
    if processors >= 64 {
        u64::MAX
    } else {
        (1_u64 << processors) - 1
    }
}

/// StorPortGetActiveNodeCount(ext, PULONG): one NUMA node.
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_get_active_node_count(extension: *mut c_void, count: *mut u32) -> u32 {
    if machine_for("StorPortGetActiveNodeCount", extension).is_none() || count.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    write_out(count.cast(), &1_u32);
    abi::STOR_STATUS_SUCCESS
}

/// StorPortGetNodeAffinity(ext, node, PGROUP_AFFINITY).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_get_node_affinity(
    extension: *mut c_void,
    node: u32,
    group_affinity: *mut c_void,
) -> u32 {
    let Some(machine) = machine_for("StorPortGetNodeAffinity", extension) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    if node != 0 || group_affinity.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    write_out(
        group_affinity,
        &abi::GroupAffinity {
            mask: affinity(machine.options.processors),
            ..abi::GroupAffinity::default()
        },
    );
    abi::STOR_STATUS_SUCCESS
}

/// StorPortGetHighestNodeNumber(ext, PULONG).
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_get_highest_node_number(
    extension: *mut c_void,
    number: *mut u32,
) -> u32 {
    if machine_for("StorPortGetHighestNodeNumber", extension).is_none() || number.is_null() {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    write_out(number.cast(), &0_u32);
    abi::STOR_STATUS_SUCCESS
}

/// StorPortExtendedFunction with a code the simulator does not implement.
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_extended_function_unknown(
    function: u32,
    extension: *mut c_void,
) -> u32 {
    if let Some(machine) = machine_for("StorPortExtendedFunction", extension) {
        machine.violate(Violation::UnknownExtendedFunction { function });
    }
    abi::STOR_STATUS_NOT_IMPLEMENTED
}

/// StorPortDebugPrint, formatted by the C half.
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_debug_print(level: u32, message: *const u8, len: usize) {
    if message.is_null() {
        return;
    }
    // SAFETY: the C half passes its formatting buffer and the length vsnprintf wrote into it.
    let bytes = unsafe { std::slice::from_raw_parts(message, len) };
    let line = format!("[{level}] {}", String::from_utf8_lossy(bytes).trim_end());
    if let Some(machine) = current_machine() {
        machine.log(line);
    }
}
