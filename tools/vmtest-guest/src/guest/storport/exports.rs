//! The StorPort routines the shipped image imports, in the Windows x64 convention, and the
//! resolver the loader binds its imports with.
//!
//! Pointers the image passes are out-parameters or buffers of the routine's storport.h
//! prototype; they are read and written through [`read_in`] and [`write_out`], byte copies
//! that need no alignment.
//!
//! The variadic routines (StorPortNotification, StorPortExtendedFunction, StorPortDebugPrint)
//! are declared with the fixed arguments plus six `usize` slots: in the Windows x64 convention
//! a variadic callee finds its arguments exactly where a fixed-argument callee does (the first
//! four in RCX, RDX, R8, R9, the rest in the caller's outgoing-argument area on the stack, each
//! in an 8-byte slot, integers in the low bits). Each notification or function code then reads
//! only the slots its prototype passes, truncating integers to their declared width; slots
//! beyond those are the caller's stack and are never used. StorPortDebugPrint reads only the
//! format string (formatting it would need the variadic arguments' types, which only the
//! format knows): the line printed is the format itself.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering, compiler_fence};

use vmtest_guest::storport_abi as abi;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::{
    COMPLETIONS_SEEN, Context, DEVICE_LEVEL, DISPATCH_LEVEL, Dpc, Host, LOGICAL_PROCESSORS,
    MAX_SG_ELEMENTS, PASSIVE_LEVEL, Recovery, SlotState, config_read, interrupts_off,
    interrupts_restore, ptr, with,
};
use crate::guest::{interrupts, println};

/// Copies `value` to the image's out-parameter at `pointer`; false if null.
fn write_out<T: IntoBytes + Immutable>(pointer: usize, value: &T) -> bool {
    if pointer == 0 {
        return false;
    }
    let bytes = value.as_bytes();
    // SAFETY: `pointer` is an out-parameter the image passed to a StorPort routine whose
    // prototype makes it point to a `T` (storport.h); the guest identity-maps all its memory,
    // and the copy is bytewise, so alignment does not matter.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr(pointer).cast::<u8>(), bytes.len());
    }
    true
}

/// Reads a `T` from the image's pointer; `None` if null.
fn read_in<T: FromBytes>(pointer: usize) -> Option<T> {
    if pointer == 0 {
        return None;
    }
    // SAFETY: as for `write_out`: the prototype makes `pointer` point to a `T`, every bit
    // pattern of which is valid (`FromBytes`); the read is unaligned.
    Some(unsafe { core::ptr::read_unaligned(ptr(pointer).cast::<T>()) })
}

/// Sets the modelled IRQL and masks or unmasks interrupts to match (see the module header).
fn set_irql(irql: u8) {
    with(|host| host.irql = irql);
    if irql >= DEVICE_LEVEL {
        let _ = interrupts_off();
    } else {
        interrupts_restore(true);
    }
}

/// `ULONG StorPortInitialize(PVOID Argument1, PVOID Argument2, PHW_INITIALIZATION_DATA, PVOID)`.
extern "win64" fn storport_initialize(
    argument1: *mut c_void,
    _argument2: *mut c_void,
    data: *mut c_void,
    _context: *mut c_void,
) -> u32 {
    let failure = abi::STATUS_INVALID_PARAMETER.cast_unsigned();
    with(|host| {
        if !host.require_context("StorPortInitialize", &[Context::DriverEntry])
            || argument1.addr() != host.driver_object
        {
            return failure;
        }
        let Some(size) = read_in::<u32>(data.addr()) else {
            return failure;
        };
        if size < abi::HW_INITIALIZATION_DATA_SIZE_V1 {
            return abi::STATUS_REVISION_MISMATCH.cast_unsigned();
        }
        let Some(mut hw) = read_in::<abi::HwInitializationData>(data.addr()) else {
            return failure;
        };
        // Fields beyond the size the miniport declared are not its.
        let declared = size as usize;
        let bytes = hw.as_mut_bytes();
        if let Some(beyond) = bytes.get_mut(declared..) {
            beyond.fill(0);
        }
        let valid = hw.adapter_interface_type == abi::PCI_BUS
            && hw.hw_find_adapter != 0
            && hw.hw_initialize != 0
            && hw.hw_start_io != 0;
        if !valid {
            return failure;
        }
        host.hw = Some(hw);
        abi::STATUS_SUCCESS.cast_unsigned()
    })
}

/// `PVOID StorPortGetDeviceBase(PVOID, INTERFACE_TYPE, ULONG, PHYSICAL_ADDRESS, ULONG, BOOLEAN)`:
/// the identity mapping of a memory BAR range (mapped uncached before HwFindAdapter).
extern "win64" fn storport_get_device_base(
    extension: *mut c_void,
    _bus_type: u32,
    _bus: u32,
    address: i64,
    len: u32,
    in_io_space: u8,
) -> *mut c_void {
    with(|host| {
        if !host.check_extension("StorPortGetDeviceBase", extension)
            || !host.require_context("StorPortGetDeviceBase", &[Context::FindAdapter])
            || !host.require_irql_at_most("StorPortGetDeviceBase", PASSIVE_LEVEL)
        {
            return core::ptr::null_mut();
        }
        let start = address.cast_unsigned();
        let end = start.saturating_add(u64::from(len));
        let inside = in_io_space == 0
            && host
                .bars
                .iter()
                .any(|&(base, size)| size > 0 && start >= base && end <= base + size);
        if inside {
            ptr(start as usize)
        } else {
            host.violate(format_args!(
                "StorPortGetDeviceBase of {start:#x}+{len:#x} (io {in_io_space}) outside the BARs"
            ));
            core::ptr::null_mut()
        }
    })
}

/// `ULONG StorPortGetBusData(PVOID, ULONG BusDataType, ULONG, ULONG, PVOID Buffer, ULONG Len)`:
/// the function's configuration space through mechanism #1.
extern "win64" fn storport_get_bus_data(
    extension: *mut c_void,
    data_type: u32,
    _bus: u32,
    _slot: u32,
    buffer: *mut c_void,
    len: u32,
) -> u32 {
    let Some(bdf) = with(|host| {
        host.check_extension("StorPortGetBusData", extension)
            .then_some(host.bdf)
            .flatten()
    }) else {
        return 0;
    };
    if data_type != abi::PCI_CONFIGURATION || buffer.is_null() {
        return 0;
    }
    let len = len.min(256) as usize;
    let mut bytes = [0_u8; 256];
    for (index, chunk) in bytes.chunks_exact_mut(4).enumerate().take(len.div_ceil(4)) {
        chunk.copy_from_slice(&config_read(bdf, (index * 4) as u8).to_le_bytes());
    }
    for (offset, byte) in bytes.iter().take(len).enumerate() {
        write_out(buffer.addr() + offset, byte);
    }
    len as u32
}

/// `PVOID StorPortGetUncachedExtension(PVOID, PPORT_CONFIGURATION_INFORMATION, ULONG)`: carved
/// once, from the region the host reserved before HwFindAdapter.
extern "win64" fn storport_get_uncached_extension(
    extension: *mut c_void,
    _config: *mut c_void,
    len: u32,
) -> *mut c_void {
    with(|host| {
        if !host.check_extension("StorPortGetUncachedExtension", extension)
            || !host.require_context("StorPortGetUncachedExtension", &[Context::FindAdapter])
            || !host.require_irql_at_most("StorPortGetUncachedExtension", PASSIVE_LEVEL)
        {
            return core::ptr::null_mut();
        }
        if host.uncached.is_some() {
            host.violate(format_args!("StorPortGetUncachedExtension called twice"));
            return core::ptr::null_mut();
        }
        let (base, budget) = host.uncached_region;
        if len as usize > budget {
            println!("storport: uncached extension of {len} bytes refused (budget {budget})");
            return core::ptr::null_mut();
        }
        host.uncached = Some((base, (len as usize).max(1)));
        ptr(base)
    })
}

/// The registry buffer StorPortAllocateRegistryBuffer hands out (one at a time).
#[repr(C, align(16))]
struct RegistryArea([AtomicU64; REGISTRY_AREA_BYTES / 8]);
/// Bytes of [`RegistryArea`].
const REGISTRY_AREA_BYTES: usize = 4096;
static REGISTRY_AREA: RegistryArea = RegistryArea([const { AtomicU64::new(0) }; 512]);

/// `PVOID StorPortAllocateRegistryBuffer(PVOID, PULONG Length)`.
extern "win64" fn storport_allocate_registry_buffer(
    extension: *mut c_void,
    length: *mut u32,
) -> *mut c_void {
    with(|host| {
        if !host.check_extension("StorPortAllocateRegistryBuffer", extension)
            || !host.require_irql_at_most("StorPortAllocateRegistryBuffer", PASSIVE_LEVEL)
        {
            return core::ptr::null_mut();
        }
        let Some(len) = read_in::<u32>(length.addr()) else {
            return core::ptr::null_mut();
        };
        if host.registry_buffer.is_some() || len as usize > REGISTRY_AREA_BYTES {
            return core::ptr::null_mut();
        }
        let base = core::ptr::from_ref(&REGISTRY_AREA).addr();
        host.registry_buffer = Some((base, len as usize));
        ptr(base)
    })
}

/// `VOID StorPortFreeRegistryBuffer(PVOID, PUCHAR Buffer)`.
extern "win64" fn storport_free_registry_buffer(extension: *mut c_void, buffer: *mut u8) {
    with(|host| {
        if !host.check_extension("StorPortFreeRegistryBuffer", extension) {
            return;
        }
        match host.registry_buffer {
            Some((base, _)) if base == buffer.addr() => host.registry_buffer = None,
            _ => host.violate(format_args!(
                "StorPortFreeRegistryBuffer of {buffer:p}, not the allocated buffer"
            )),
        }
    });
}

/// `BOOLEAN StorPortRegistryRead(PVOID, PUCHAR ValueName, ULONG Global, ULONG Type, PUCHAR
/// Buffer, PULONG Length)`: this host has no registry, so no value is ever found.
extern "win64" fn storport_registry_read(
    extension: *mut c_void,
    _name: *mut u8,
    _global: u32,
    _value_type: u32,
    buffer: *mut u8,
    _length: *mut u32,
) -> u8 {
    with(|host| {
        if host.check_extension("StorPortRegistryRead", extension)
            && host.require_irql_at_most("StorPortRegistryRead", PASSIVE_LEVEL)
            && host
                .registry_buffer
                .is_none_or(|(base, _)| base != buffer.addr())
        {
            host.violate(format_args!(
                "StorPortRegistryRead into {buffer:p}, not a registry buffer"
            ));
        }
    });
    0
}

/// `STOR_PHYSICAL_ADDRESS StorPortGetPhysicalAddress(PVOID, PSCSI_REQUEST_BLOCK, PVOID,
/// ULONG*)`: identity, with the length left in the region (the uncached extension, or the
/// SRB's extension, data or sense buffer).
extern "win64" fn storport_get_physical_address(
    extension: *mut c_void,
    srb: *mut c_void,
    address: *mut c_void,
    length: *mut u32,
) -> i64 {
    let address = address.addr();
    let found = with(|host| {
        if !host.check_extension("StorPortGetPhysicalAddress", extension) {
            return None;
        }
        let within = |(base, len): (usize, usize)| {
            (len > 0 && (base..base + len).contains(&address)).then(|| base + len - address)
        };
        if let Some(left) = host.uncached.and_then(within) {
            return Some(left);
        }
        if srb.is_null() {
            host.violate(format_args!(
                "StorPortGetPhysicalAddress of {address:#x} without an SRB, outside the uncached extension"
            ));
            return None;
        }
        let Some(index) = host.outstanding(srb.addr()) else {
            host.violate(format_args!(
                "StorPortGetPhysicalAddress for SRB {srb:p}, which is not outstanding"
            ));
            return None;
        };
        let left = host.slots[index]
            .regions
            .iter()
            .find_map(|region| within(*region));
        if left.is_none() {
            host.violate(format_args!(
                "StorPortGetPhysicalAddress of {address:#x}, outside SRB {srb:p}'s buffers"
            ));
        }
        left
    });
    let left = found.map_or(0, |left| u32::try_from(left).unwrap_or(u32::MAX));
    write_out(length.addr(), &left);
    if found.is_some() {
        i64::try_from(address).unwrap_or(0)
    } else {
        0
    }
}

/// `PSTOR_SCATTER_GATHER_LIST StorPortGetScatterGatherList(PVOID, PSCSI_REQUEST_BLOCK)`: the
/// data buffer in 4 KiB physical pages (the guest's pages are contiguous, but a Windows buffer's
/// are not, so the image is handed one element per page, as it would be there).
extern "win64" fn storport_get_scatter_gather_list(
    extension: *mut c_void,
    srb: *mut c_void,
) -> *mut c_void {
    let slot = with(|host| {
        if !host.check_extension("StorPortGetScatterGatherList", extension) {
            return None;
        }
        let index = host.outstanding(srb.addr());
        if index.is_none() {
            host.violate(format_args!(
                "StorPortGetScatterGatherList for SRB {srb:p}, which is not outstanding"
            ));
        }
        index.map(|index| host.slots[index])
    });
    let Some(slot) = slot else {
        return core::ptr::null_mut();
    };
    let (data, len) = slot.regions[1];
    if data == 0 || len == 0 {
        return core::ptr::null_mut();
    }
    let mut count = 0_usize;
    let mut cursor = data;
    let end = data + len;
    while cursor < end && count < MAX_SG_ELEMENTS {
        let page_end = (cursor & !0xfff) + 0x1000;
        let piece = page_end.min(end) - cursor;
        let element = abi::StorScatterGatherElement {
            physical_address: cursor as u64,
            length: piece as u32,
            ..abi::StorScatterGatherElement::default()
        };
        write_out(slot.sg + 16 + count * 24, &element);
        count += 1;
        cursor += piece;
    }
    if cursor < end {
        with(|host| host.violate(format_args!("SRB {srb:p}'s buffer needs too many elements")));
        return core::ptr::null_mut();
    }
    write_out(
        slot.sg,
        &abi::StorScatterGatherListHeader {
            number_of_elements: count as u32,
            ..abi::StorScatterGatherListHeader::default()
        },
    );
    ptr(slot.sg)
}

/// `BOOLEAN StorPortBusy(PVOID, ULONG RequestsToComplete)`.
extern "win64" fn storport_busy(extension: *mut c_void, _requests: u32) -> u8 {
    with(|host| {
        if host.check_extension("StorPortBusy", extension) {
            host.counters.busy += 1;
        }
    });
    1
}

/// `VOID StorPortQuerySystemTime(PLARGE_INTEGER)`: 100 ns units since boot (the APIC timer's
/// 100 ms ticks).
extern "win64" fn storport_query_system_time(time: *mut i64) {
    let units = interrupts::ticks().saturating_mul(1_000_000);
    write_out(time.addr(), &units.cast_signed());
}

/// `VOID StorPortDebugPrint(ULONG Level, PCCHAR Format, ...)`: prints the format string (see
/// the module header), the first [`DEBUG_PRINT_LINES`] times.
extern "win64" fn storport_debug_print(level: u32, format: *const u8) {
    let count = with(|host| {
        host.counters.debug_prints += 1;
        host.counters.debug_prints
    });
    if count > DEBUG_PRINT_LINES || format.is_null() {
        return;
    }
    let mut line = [0_u8; 160];
    let mut len = 0;
    while len < line.len() {
        let Some(byte) = read_in::<u8>(format.addr() + len) else {
            break;
        };
        if byte == 0 {
            break;
        }
        line[len] = if byte.is_ascii_graphic() || byte == b' ' {
            byte
        } else {
            b' '
        };
        len += 1;
    }
    let text = core::str::from_utf8(&line[..len]).unwrap_or("");
    println!("image debug print (level {level}): {}", text.trim_end());
}

/// How many debug prints are shown.
const DEBUG_PRINT_LINES: u64 = 24;

/// Which lock a StorPortAcquireSpinLock names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    StartIo,
    Interrupt,
    Dpc(usize),
}

/// The lock of `kind` (STOR_SPINLOCK) with `context` (the DPC, for a DPC lock).
fn lock_of(host: &Host, kind: u32, context: usize) -> Option<Lock> {
    match kind {
        abi::START_IO_LOCK => Some(Lock::StartIo),
        abi::INTERRUPT_LOCK => Some(Lock::Interrupt),
        abi::DPC_LOCK => host
            .dpcs
            .iter()
            .position(|dpc| dpc.is_some_and(|dpc| dpc.address == context))
            .map(Lock::Dpc),
        _ => None,
    }
}

/// Takes `lock` in `host`, returning the IRQL it raises to; a lock already held is a deadlock
/// on one CPU, reported and not taken.
fn acquire(host: &mut Host, lock: Lock) -> Option<u8> {
    let (held, irql) = match lock {
        Lock::StartIo => (&mut host.start_io_held, DISPATCH_LEVEL),
        Lock::Interrupt => (&mut host.interrupt_held, DEVICE_LEVEL),
        Lock::Dpc(index) => {
            let bit = 1_u32 << index;
            if host.dpc_locks_held & bit != 0 {
                host.violate(format_args!("DPC lock {index} acquired twice"));
                return None;
            }
            host.dpc_locks_held |= bit;
            return Some(DISPATCH_LEVEL);
        }
    };
    if *held {
        host.violate(format_args!("spin lock acquired while held"));
        return None;
    }
    *held = true;
    if host.irql > irql {
        host.violate(format_args!("spin lock acquired above its IRQL {irql}"));
    }
    Some(irql.max(host.irql))
}

/// Releases `lock` in `host`.
fn release(host: &mut Host, lock: Lock) {
    let held = match lock {
        Lock::StartIo => core::mem::replace(&mut host.start_io_held, false),
        Lock::Interrupt => core::mem::replace(&mut host.interrupt_held, false),
        Lock::Dpc(index) => {
            let bit = 1_u32 << index;
            let held = host.dpc_locks_held & bit != 0;
            host.dpc_locks_held &= !bit;
            held
        }
    };
    if !held {
        host.violate(format_args!("spin lock released but not held"));
    }
}

/// `VOID StorPortNotification(SCSI_NOTIFICATION_TYPE, PVOID HwDeviceExtension, ...)`.
extern "win64" fn storport_notification(
    notification: u32,
    extension: *mut c_void,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    _a5: usize,
    a6: usize,
) {
    if !with(|host| host.check_extension("StorPortNotification", extension)) {
        return;
    }
    match notification {
        // RequestComplete(srb).
        0 => request_complete(a1),
        // NextRequest, NextLuRequest: this host never holds requests back.
        1 | 2 => {}
        // ResetDetected.
        3 => println!("storport: the image reported a reset"),
        // RequestTimerCall(routine, microseconds): one-shot; 0 cancels.
        6 => with(|host| {
            let microseconds = u64::from(a2 as u32);
            if microseconds != 0 && !host.is_code(a1) {
                host.violate(format_args!("HwTimer {a1:#x} outside the image"));
                return;
            }
            let ticks = microseconds.div_ceil(100_000).max(1);
            host.timer = (microseconds != 0 && a1 != 0).then(|| (a1, interrupts::ticks() + ticks));
        }),
        // BusChangeDetected(path): storport.sys would rescan the bus; the runner does.
        7 => with(|host| host.counters.bus_changes += 1),
        // QueryTickCount(PLARGE_INTEGER): 100 ns units, like StorPortQuerySystemTime.
        12 => {
            let units = interrupts::ticks().saturating_mul(1_000_000);
            write_out(a1, &units.cast_signed());
        }
        // EnablePassiveInitialization(routine, PBOOLEAN result), from HwInitialize only.
        0x1000 => {
            let ok = with(|host| {
                let ok = host.require_context(
                    "StorPortEnablePassiveInitialization",
                    &[Context::Initialize],
                ) && host.is_code(a1);
                if ok {
                    host.passive_routine = a1;
                }
                ok
            });
            write_out(a2, &u8::from(ok));
        }
        // InitializeDpc(dpc, routine).
        0x1001 => initialize_dpc(a1, a2, extension.addr()),
        // IssueDpc(dpc, argument1, argument2, PBOOLEAN result).
        0x1002 => {
            let inserted = with(|host| {
                host.dpc_order += 1;
                let order = host.dpc_order;
                let Some(dpc) = host.dpcs.iter_mut().flatten().find(|dpc| dpc.address == a1) else {
                    host.violate(format_args!("IssueDpc of uninitialised DPC {a1:#x}"));
                    return false;
                };
                if dpc.queued {
                    return false;
                }
                dpc.queued = true;
                dpc.order = order;
                dpc.arguments = (a2, a3);
                true
            });
            write_out(a4, &u8::from(inserted));
        }
        // AcquireSpinLock(STOR_SPINLOCK, context, PSTOR_LOCK_HANDLE).
        0x1003 => {
            // Raise first, then take the lock (see `acquire_msi_lock`); `set_irql` below
            // unmasks again for the locks below DIRQL.
            let enabled = interrupts_off();
            let taken = with(|host| {
                let lock = lock_of(host, a1 as u32, a2)?;
                let old = host.irql;
                acquire(host, lock).map(|irql| (old, irql))
            });
            if let Some((old, irql)) = taken {
                write_out(
                    a3,
                    &abi::StorLockHandle {
                        lock: a1 as u32,
                        lock_queue_lock: a2 as u64,
                        old_irql: old,
                        ..abi::StorLockHandle::default()
                    },
                );
                set_irql(irql);
            } else {
                interrupts_restore(enabled);
                with(|host| host.violate(format_args!("AcquireSpinLock of unknown lock {a1}")));
            }
        }
        // ReleaseSpinLock(PSTOR_LOCK_HANDLE).
        0x1004 => {
            let Some(handle) = read_in::<abi::StorLockHandle>(a1) else {
                return;
            };
            let released = with(|host| {
                let lock = lock_of(host, handle.lock, handle.lock_queue_lock as usize)?;
                release(host, lock);
                Some(handle.old_irql)
            });
            match released {
                Some(old) => set_irql(old),
                None => with(|host| host.violate(format_args!("ReleaseSpinLock of unknown lock"))),
            }
        }
        // StateChangeDetected(entity, address, attributes, callback, context, PULONG status):
        // not served by this host (no PnP rescans here); the image is told so.
        0x1005 => {
            println!("storport: state change detected (entity {a1:#x}); not served by this host");
            write_out(a6, &abi::STOR_STATUS_NOT_IMPLEMENTED);
        }
        other => with(|host| host.violate(format_args!("unknown notification {other:#x}"))),
    }
}

/// RequestComplete: the SRB must be outstanding; each completes exactly once. The planted
/// fault drops the numbered one here, before the host records it.
fn request_complete(srb: usize) {
    let number = u64::from(COMPLETIONS_SEEN.fetch_add(1, Ordering::Relaxed)) + 1;
    let repeat = with(|host| host.repeat_completion == Some(number));
    if repeat {
        println!("storport: planted fault: RequestComplete #{number} of SRB {srb:#x} played twice");
        complete_once(srb, number);
    }
    complete_once(srb, number);
}

/// Records one RequestComplete of `srb` (the `number`th seen).
fn complete_once(srb: usize, number: u64) {
    with(|host| {
        if host.drop_completion == Some(number) {
            host.counters.dropped += 1;
            println!("storport: planted fault: RequestComplete #{number} of SRB {srb:#x} dropped");
            return;
        }
        match host.outstanding(srb) {
            Some(index) => {
                let context = host.context;
                let slot = &mut host.slots[index];
                slot.state = SlotState::Completed;
                slot.completed_in = context;
                host.counters.completions += 1;
                if context == Context::Timer {
                    host.counters.timer_completions += 1;
                }
                if host.recovery == Recovery::Awaiting {
                    host.recovery = Recovery::Completed(context);
                }
            }
            None => host.violate(format_args!(
                "RequestComplete of SRB {srb:#x}, which is not outstanding (completed twice?)"
            )),
        }
    });
}

/// InitializeDpc: fills the STOR_DPC and registers it.
fn initialize_dpc(dpc: usize, routine: usize, extension: usize) {
    let ok = with(|host| {
        if dpc == 0 || !host.is_code(routine) {
            host.violate(format_args!(
                "InitializeDpc of {dpc:#x} with routine {routine:#x}"
            ));
            return false;
        }
        let entry = Dpc {
            address: dpc,
            routine,
            queued: false,
            order: 0,
            arguments: (0, 0),
        };
        if let Some(existing) = host.dpcs.iter_mut().flatten().find(|d| d.address == dpc) {
            *existing = entry;
            return true;
        }
        if let Some(free) = host.dpcs.iter_mut().find(|slot| slot.is_none()) {
            *free = Some(entry);
            return true;
        }
        host.violate(format_args!("more DPCs than this host holds"));
        false
    });
    if ok {
        write_out(
            dpc,
            &abi::StorDpc {
                dpc_type: 0x13,
                deferred_routine: routine as u64,
                deferred_context: extension as u64,
                ..abi::StorDpc::default()
            },
        );
    }
}

/// `ULONG StorPortExtendedFunction(STORPORT_FUNCTION_CODE, PVOID HwDeviceExtension, ...)`.
extern "win64" fn storport_extended_function(
    function: u32,
    extension: *mut c_void,
    a1: usize,
    a2: usize,
    _a3: usize,
    _a4: usize,
    _a5: usize,
    _a6: usize,
) -> u32 {
    if !with(|host| host.check_extension("StorPortExtendedFunction", extension)) {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    match function {
        // AcquireMSISpinLock(message, PULONG old_irql).
        11 => acquire_msi_lock(a1 as u32, a2),
        // ReleaseMSISpinLock(message, old_irql).
        12 => release_msi_lock(a1 as u32, a2 as u8),
        // GetMessageInterruptInformation(message, PMESSAGE_INTERRUPT_INFORMATION).
        13 => {
            let message = a1 as u32;
            if message >= with(|host| host.messages) {
                return abi::STOR_STATUS_INVALID_PARAMETER;
            }
            let vector = u32::from(interrupts::FIRST_VECTOR) + message;
            write_out(
                a2,
                &abi::MessageInterruptInformation {
                    message_id: message,
                    message_data: vector,
                    message_address: 0xfee0_0000,
                    interrupt_vector: vector,
                    interrupt_level: u32::from(DEVICE_LEVEL),
                    interrupt_mode: abi::LATCHED,
                    padding: 0,
                },
            );
            abi::STOR_STATUS_SUCCESS
        }
        // InitializePerformanceOptimizations(BOOLEAN query, PPERF_CONFIGURATION_DATA).
        14 => initialize_perf_opts(a1 as u8 != 0, a2),
        // GetStartIoPerformanceParameters(srb, PSTARTIO_PERFORMANCE_PARAMETERS).
        15 => {
            let Some(mut params) = read_in::<abi::StartioPerformanceParameters>(a2) else {
                return abi::STOR_STATUS_INVALID_PARAMETER;
            };
            let answer = with(|host| {
                if host.outstanding(a1).is_none() {
                    host.violate(format_args!(
                        "StartIo parameters for SRB {a1:#x}, which is not outstanding"
                    ));
                    return None;
                }
                let concurrent = host.perf_flags & abi::STOR_PERF_CONCURRENT_CHANNELS != 0;
                Some((
                    host.message_for_processor(),
                    if concurrent { host.processor } else { 0 },
                ))
            });
            let Some((message, channel)) = answer else {
                return abi::STOR_STATUS_INVALID_PARAMETER;
            };
            if (params.size as usize) < size_of::<abi::StartioPerformanceParameters>() {
                return abi::STOR_STATUS_INVALID_PARAMETER;
            }
            params.message_number = message;
            params.channel_number = channel;
            write_out(a2, &params);
            abi::STOR_STATUS_SUCCESS
        }
        // GetCurrentProcessorNumber(PPROCESSOR_NUMBER).
        17 => {
            let processor = with(|host| host.processor);
            let number = abi::ProcessorNumber {
                group: 0,
                number: processor as u8,
                reserved: 0,
            };
            status(write_out(a1, &number))
        }
        // GetActiveGroupCount(PUSHORT).
        18 => status(write_out(a1, &1_u16)),
        // GetGroupAffinity(group, PKAFFINITY).
        19 if a1 as u16 == 0 => status(write_out(a2, &((1_u64 << LOGICAL_PROCESSORS) - 1))),
        // GetActiveNodeCount(PULONG).
        20 => status(write_out(a1, &1_u32)),
        // GetNodeAffinity(node, PGROUP_AFFINITY).
        21 if a1 as u32 == 0 => status(write_out(
            a2,
            &abi::GroupAffinity {
                mask: (1_u64 << LOGICAL_PROCESSORS) - 1,
                ..abi::GroupAffinity::default()
            },
        )),
        // GetHighestNodeNumber(PULONG).
        22 => status(write_out(a1, &0_u32)),
        // RegistryReadAdapterKey / RegistryWriteAdapterKey: no registry in this host.
        62 | 63 => abi::STOR_STATUS_UNSUCCESSFUL,
        19 | 21 => abi::STOR_STATUS_INVALID_PARAMETER,
        other => {
            with(|host| host.violate(format_args!("unknown extended function {other}")));
            abi::STOR_STATUS_NOT_IMPLEMENTED
        }
    }
}

/// StorPortAcquireMSISpinLock: raises to DIRQL (masking this CPU's interrupts) and holds the
/// message's lock.
fn acquire_msi_lock(message: u32, old_irql: usize) -> u32 {
    // Raise first, then take the lock (as KeAcquireInterruptSpinLock does): the message's
    // interrupt must not arrive between the two and find its lock held.
    let enabled = interrupts_off();
    let old = with(|host| {
        if message >= host.messages || host.messages_held & (1 << message) != 0 {
            host.violate(format_args!("MSI spin lock {message} unknown or held"));
            return None;
        }
        host.messages_held |= 1 << message;
        Some(host.irql)
    });
    let Some(old) = old else {
        interrupts_restore(enabled);
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    write_out(old_irql, &u32::from(old));
    set_irql(DEVICE_LEVEL.max(old));
    abi::STOR_STATUS_SUCCESS
}

/// StorPortReleaseMSISpinLock: releases the message's lock and returns to `old_irql`.
fn release_msi_lock(message: u32, old_irql: u8) -> u32 {
    let held = with(|host| {
        let held = message < 32 && host.messages_held & (1 << message) != 0;
        if held {
            host.messages_held &= !(1 << message);
        } else {
            host.violate(format_args!(
                "MSI spin lock {message} released but not held"
            ));
        }
        held
    });
    if !held {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    }
    set_irql(old_irql);
    abi::STOR_STATUS_SUCCESS
}

/// STOR_STATUS_SUCCESS if the out-parameter was written.
fn status(written: bool) -> u32 {
    if written {
        abi::STOR_STATUS_SUCCESS
    } else {
        abi::STOR_STATUS_INVALID_PARAMETER
    }
}

/// StorPortInitializePerfOpts: a query reports what this host implements; a set is checked
/// and recorded (message ranges need DPC redirection and granted messages).
fn initialize_perf_opts(query: bool, data: usize) -> u32 {
    let Some(mut perf) = read_in::<abi::PerfConfigurationData>(data) else {
        return abi::STOR_STATUS_INVALID_PARAMETER;
    };
    with(|host| {
        if !host.require_context(
            "StorPortInitializePerfOpts",
            &[
                Context::FindAdapter,
                Context::Initialize,
                Context::PassiveInitialize,
            ],
        ) || perf.version < 2
            || (perf.size as usize) < size_of::<abi::PerfConfigurationData>()
        {
            return abi::STOR_STATUS_INVALID_PARAMETER;
        }
        if query {
            perf.flags = abi::STOR_PERF_SUPPORTED;
            perf.concurrent_channels = LOGICAL_PROCESSORS;
            perf.first_redirection_message_number = 0;
            perf.last_redirection_message_number = host.messages.saturating_sub(1);
            write_out(data, &perf);
            return abi::STOR_STATUS_SUCCESS;
        }
        let ranges = perf.flags & abi::STOR_PERF_INTERRUPT_MESSAGE_RANGES != 0;
        if perf.flags & !abi::STOR_PERF_SUPPORTED != 0
            || (ranges
                && (perf.flags & abi::STOR_PERF_DPC_REDIRECTION == 0
                    || perf.first_redirection_message_number
                        > perf.last_redirection_message_number
                    || perf.last_redirection_message_number >= host.messages))
        {
            return abi::STOR_STATUS_INVALID_PARAMETER;
        }
        host.perf_flags = perf.flags;
        host.message_range = ranges.then_some((
            perf.first_redirection_message_number,
            perf.last_redirection_message_number,
        ));
        abi::STOR_STATUS_SUCCESS
    })
}

/// Whether an access of `width` bytes at `address` lies in a memory BAR.
fn in_bars(host: &Host, address: usize, width: usize) -> bool {
    let address = address as u64;
    address.is_multiple_of(width as u64)
        && host
            .bars
            .iter()
            .any(|&(base, len)| len > 0 && address >= base && address + width as u64 <= base + len)
}

/// Generates a register read: a volatile load from a mapped BAR, all ones elsewhere.
macro_rules! register_read {
    ($name:ident, $ty:ty) => {
        #[doc = concat!("`", stringify!($ty), " StorPortReadRegister*(PVOID, PVOID Register)`.")]
        extern "win64" fn $name(extension: *mut c_void, register: *mut c_void) -> $ty {
            let address = register.addr();
            let ok = with(|host| {
                let ok = host.check_extension("StorPortReadRegister", extension)
                    && in_bars(host, address, size_of::<$ty>());
                if !ok {
                    host.violate(format_args!(
                        "register read at {address:#x} outside the BARs"
                    ));
                }
                ok
            });
            if !ok {
                return <$ty>::MAX;
            }
            // SAFETY: `address` is naturally aligned inside a memory BAR of the adapter,
            // identity-mapped uncached before HwFindAdapter; registers are not Rust memory.
            let value = unsafe { core::ptr::read_volatile(address as *const $ty) };
            // ORDERING: DMA-memory loads after this read (a used ring the device filled before
            // the register said so) must not move above it in the compiler; x86 keeps UC loads
            // ordered with later loads. The image's own code orders its side.
            compiler_fence(Ordering::SeqCst);
            value
        }
    };
}

/// Generates a register write: a volatile store to a mapped BAR, dropped elsewhere.
macro_rules! register_write {
    ($name:ident, $ty:ty) => {
        #[doc = concat!("`VOID StorPortWriteRegister*(PVOID, PVOID Register, ", stringify!($ty), ")`.")]
        extern "win64" fn $name(extension: *mut c_void, register: *mut c_void, value: $ty) {
            let address = register.addr();
            let ok = with(|host| {
                let ok = host.check_extension("StorPortWriteRegister", extension)
                    && in_bars(host, address, size_of::<$ty>());
                if !ok {
                    host.violate(format_args!(
                        "register write at {address:#x} outside the BARs"
                    ));
                }
                ok
            });
            if !ok {
                return;
            }
            // ORDERING: the image's stores to DMA memory (ring entries, `avail.idx`) must not
            // sink below this register write in the compiler; x86 does not reorder stores with
            // stores. Pairs with the device's ring reads after a notification.
            compiler_fence(Ordering::SeqCst);
            // SAFETY: as for reads; a register write can make the device DMA, but only to
            // addresses the image published from memory this host gave it.
            unsafe { core::ptr::write_volatile(address as *mut $ty, value) };
        }
    };
}

register_read!(storport_read_register_uchar, u8);
register_read!(storport_read_register_ushort, u16);
register_read!(storport_read_register_ulong, u32);
register_write!(storport_write_register_uchar, u8);
register_write!(storport_write_register_ushort, u16);
register_write!(storport_write_register_ulong, u32);

/// The address of the export named `name`, for binding the image's imports; `None` names an
/// import this host lacks, which fails the load.
pub fn resolve(name: &str) -> Option<u64> {
    let address = match name {
        "StorPortInitialize" => (storport_initialize as *const ()).addr(),
        "StorPortGetDeviceBase" => (storport_get_device_base as *const ()).addr(),
        "StorPortGetBusData" => (storport_get_bus_data as *const ()).addr(),
        "StorPortGetUncachedExtension" => (storport_get_uncached_extension as *const ()).addr(),
        "StorPortAllocateRegistryBuffer" => (storport_allocate_registry_buffer as *const ()).addr(),
        "StorPortFreeRegistryBuffer" => (storport_free_registry_buffer as *const ()).addr(),
        "StorPortRegistryRead" => (storport_registry_read as *const ()).addr(),
        "StorPortGetPhysicalAddress" => (storport_get_physical_address as *const ()).addr(),
        "StorPortGetScatterGatherList" => (storport_get_scatter_gather_list as *const ()).addr(),
        "StorPortBusy" => (storport_busy as *const ()).addr(),
        "StorPortQuerySystemTime" => (storport_query_system_time as *const ()).addr(),
        "StorPortDebugPrint" => (storport_debug_print as *const ()).addr(),
        "StorPortNotification" => (storport_notification as *const ()).addr(),
        "StorPortExtendedFunction" => (storport_extended_function as *const ()).addr(),
        "StorPortReadRegisterUchar" => (storport_read_register_uchar as *const ()).addr(),
        "StorPortReadRegisterUshort" => (storport_read_register_ushort as *const ()).addr(),
        "StorPortReadRegisterUlong" => (storport_read_register_ulong as *const ()).addr(),
        "StorPortWriteRegisterUchar" => (storport_write_register_uchar as *const ()).addr(),
        "StorPortWriteRegisterUshort" => (storport_write_register_ushort as *const ()).addr(),
        "StorPortWriteRegisterUlong" => (storport_write_register_ulong as *const ()).addr(),
        _ => return None,
    };
    Some(address as u64)
}
