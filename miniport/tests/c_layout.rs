//! Cross-checks the StorPort bindings against C: generates `_Static_assert`s from the Rust
//! sizes, offsets and constants and compiles them (`-fsyntax-only`) with the x86-64 Windows
//! cross compiler.
//!
//! Two references:
//! - mingw-w64's own headers (`ddk/srb.h`, `ddk/storport.h`, `ddk/ntddk.h`/`wdm.h`,
//!   `ddk/scsi.h`, `ntddscsi.h`, `ntstatus.h`) for everything they have: the classic SRB and its WMI/power/PnP
//!   variants, `ACCESS_RANGE`, `SCSI_SUPPORTED_CONTROL_TYPE_LIST`, `SRB_IO_CONTROL`,
//!   `STOR_SCATTER_GATHER_*`, `KDPC`/`KLOCK_QUEUE_HANDLE` (the cores of `STOR_DPC` and
//!   `STOR_LOCK_HANDLE`), `PROCESSOR_NUMBER`, `GROUP_AFFINITY` and the constants. mingw's srb.h
//!   has the SCSIport `PORT_CONFIGURATION_INFORMATION` and `HW_INITIALIZATION_DATA`: their common
//!   prefix is checked against it (`Reserved` is StorPort's `MiniportDumpData`, `ReservedUchars`
//!   its `SrbType`/`AddressType`). mingw's storport.h cannot be compiled after srb.h (it
//!   redefines `SCSI_WMI_REQUEST_BLOCK`, without the 64-bit `Reserved6`), so its copy is renamed
//!   away and only its scatter/gather structures are used.
//! - For what mingw-w64 10 lacks — `STORAGE_REQUEST_BLOCK`, `STOR_ADDR_BTL8`, the `SRBEX_DATA_*`
//!   blocks, `PERF_CONFIGURATION_DATA`, `STARTIO_PERFORMANCE_PARAMETERS`,
//!   `MESSAGE_INTERRUPT_INFORMATION`, `MEMORY_REGION`, `STOR_LOCK_HANDLE`, `STOR_DPC`, and the
//!   StorPort-only tails of `PORT_CONFIGURATION_INFORMATION` and `HW_INITIALIZATION_DATA` — the
//!   structures are declared below in C from the field lists of Microsoft's reference pages
//!   (learn.microsoft.com/windows-hardware/drivers/ddi/storport/ and .../ddi/srb/, e.g.
//!   `ns-storport-_port_configuration_information`, `ns-srb-_storage_request_block`,
//!   `ns-srb-_srbex_data_scsi_cdb16`, `ns-storport-_perf_configuration_data`), with the WDK's
//!   `SRB_ALIGN`/`POINTER_ALIGN`/`STOR_ADDRESS_ALIGN` (`__declspec(align(8))` on 64-bit), so the C
//!   compiler computes the layout independently of Rust. The field lists were also compared by
//!   hand with public copies of the WDK 10 storport.h/srb.h. ReactOS's storport.h was not used
//!   as a compiled reference: it predates the extended SRB and would have to be vendored.
//!
//! Only x86_64 is compiled here (no aarch64 mingw compiler on the machine); the aarch64 layout
//! is pinned by the same const asserts in `src/storport/layout.rs`, which
//! `cargo build --target aarch64-pc-windows-msvc` evaluates.
//!
//! Needs `x86_64-w64-mingw32-gcc` (Debian: gcc-mingw-w64-x86-64); `RVSCSI_MINGW_CC` overrides
//! the compiler. Without the compiler the test prints SKIPPED and passes, unless
//! `RVSCSI_REQUIRE_LAYOUT_PROBE` is set (CI), where it fails.

use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};

use rvscsi::storport::*;
use rvscsi_c_probe::{Check, check, compile, compiler, ddk_include_dir, probe_source, scratch_dir};

/// Builds `sizeof`, `_Alignof` and `offsetof` checks for one C type and its Rust mirror.
macro_rules! layout {
    ($out:ident, $c:literal, $rust:ty $(, $cfield:literal => $rfield:ident)* $(,)?) => {
        $out.push(check(concat!("sizeof(", $c, ")"), size_of::<$rust>()));
        $out.push(check(concat!("_Alignof(", $c, ")"), align_of::<$rust>()));
        $(
            $out.push(check(
                concat!("offsetof(", $c, ", ", $cfield, ")"),
                offset_of!($rust, $rfield),
            ));
        )*
    };
}

/// Value checks for constants whose Rust name is the C name, as an array.
macro_rules! constants {
    ($($name:ident),* $(,)?) => {
        [$(check(stringify!($name), u64::from($name))),*]
    };
}

/// Structures of mingw's srb.h and wdm.h, and the common prefix of the SCSIport versions.
#[expect(clippy::too_many_lines, reason = "a table: one line per field")]
fn srb_structure_checks() -> Vec<Check> {
    let mut out = Vec::new();
    layout!(out, "PHYSICAL_ADDRESS", StorPhysicalAddress, "QuadPart" => quad_part);
    layout!(out, "ACCESS_RANGE", AccessRange,
        "RangeStart" => range_start, "RangeLength" => range_length,
        "RangeInMemory" => range_in_memory);
    layout!(out, "SCSI_REQUEST_BLOCK", ScsiRequestBlock,
        "Length" => length, "Function" => function, "SrbStatus" => srb_status,
        "ScsiStatus" => scsi_status, "PathId" => path_id, "TargetId" => target_id, "Lun" => lun,
        "QueueTag" => queue_tag, "QueueAction" => queue_action, "CdbLength" => cdb_length,
        "SenseInfoBufferLength" => sense_info_buffer_length, "SrbFlags" => srb_flags,
        "DataTransferLength" => data_transfer_length, "TimeOutValue" => time_out_value,
        "DataBuffer" => data_buffer, "SenseInfoBuffer" => sense_info_buffer,
        "NextSrb" => next_srb, "OriginalRequest" => original_request,
        "SrbExtension" => srb_extension, "InternalStatus" => internal_status,
        "QueueSortKey" => internal_status, "LinkTimeoutValue" => internal_status,
        "Reserved" => reserved, "Cdb" => cdb);
    layout!(out, "SCSI_WMI_REQUEST_BLOCK", ScsiWmiRequestBlock,
        "Length" => length, "Function" => function, "SrbStatus" => srb_status,
        "WMISubFunction" => wmi_sub_function, "PathId" => path_id, "TargetId" => target_id,
        "Lun" => lun, "Reserved1" => reserved1, "WMIFlags" => wmi_flags,
        "Reserved2" => reserved2, "SrbFlags" => srb_flags,
        "DataTransferLength" => data_transfer_length, "TimeOutValue" => time_out_value,
        "DataBuffer" => data_buffer, "DataPath" => data_path, "Reserved3" => reserved3,
        "OriginalRequest" => original_request, "SrbExtension" => srb_extension,
        "Reserved4" => reserved4, "Reserved6" => reserved6, "Reserved5" => reserved5);
    layout!(out, "SCSI_POWER_REQUEST_BLOCK", ScsiPowerRequestBlock,
        "Length" => length, "Function" => function, "SrbStatus" => srb_status,
        "SrbPowerFlags" => srb_power_flags, "PathId" => path_id, "TargetId" => target_id,
        "Lun" => lun, "DevicePowerState" => device_power_state, "SrbFlags" => srb_flags,
        "DataTransferLength" => data_transfer_length, "TimeOutValue" => time_out_value,
        "DataBuffer" => data_buffer, "SenseInfoBuffer" => sense_info_buffer,
        "NextSrb" => next_srb, "OriginalRequest" => original_request,
        "SrbExtension" => srb_extension, "PowerAction" => power_action,
        "Reserved" => reserved, "Reserved5" => reserved5);
    layout!(out, "SCSI_PNP_REQUEST_BLOCK", ScsiPnpRequestBlock,
        "Length" => length, "Function" => function, "SrbStatus" => srb_status,
        "PnPSubFunction" => pnp_sub_function, "PathId" => path_id, "TargetId" => target_id,
        "Lun" => lun, "PnPAction" => pnp_action, "SrbFlags" => srb_flags,
        "DataTransferLength" => data_transfer_length, "TimeOutValue" => time_out_value,
        "DataBuffer" => data_buffer, "SenseInfoBuffer" => sense_info_buffer,
        "NextSrb" => next_srb, "OriginalRequest" => original_request,
        "SrbExtension" => srb_extension, "SrbPnPFlags" => srb_pnp_flags,
        "Reserved" => reserved, "Reserved4" => reserved4);
    out.push(check(
        "sizeof(SCSI_SUPPORTED_CONTROL_TYPE_LIST)",
        size_of::<ScsiSupportedControlTypeList>(),
    ));
    out.push(check(
        "offsetof(SCSI_SUPPORTED_CONTROL_TYPE_LIST, SupportedTypeList)",
        offset_of!(ScsiSupportedControlTypeList, supported_type_list),
    ));

    // The SCSIport PORT_CONFIGURATION_INFORMATION: StorPort's is the same up to
    // WmiDataProvider, with two reserved slots renamed.
    for (c, rust) in [
        ("Length", offset_of!(PortConfigurationInformation, length)),
        (
            "SystemIoBusNumber",
            offset_of!(PortConfigurationInformation, system_io_bus_number),
        ),
        (
            "AdapterInterfaceType",
            offset_of!(PortConfigurationInformation, adapter_interface_type),
        ),
        (
            "BusInterruptLevel",
            offset_of!(PortConfigurationInformation, bus_interrupt_level),
        ),
        (
            "BusInterruptVector",
            offset_of!(PortConfigurationInformation, bus_interrupt_vector),
        ),
        (
            "InterruptMode",
            offset_of!(PortConfigurationInformation, interrupt_mode),
        ),
        (
            "MaximumTransferLength",
            offset_of!(PortConfigurationInformation, maximum_transfer_length),
        ),
        (
            "NumberOfPhysicalBreaks",
            offset_of!(PortConfigurationInformation, number_of_physical_breaks),
        ),
        (
            "DmaChannel",
            offset_of!(PortConfigurationInformation, dma_channel),
        ),
        (
            "DmaPort",
            offset_of!(PortConfigurationInformation, dma_port),
        ),
        (
            "DmaWidth",
            offset_of!(PortConfigurationInformation, dma_width),
        ),
        (
            "DmaSpeed",
            offset_of!(PortConfigurationInformation, dma_speed),
        ),
        (
            "AlignmentMask",
            offset_of!(PortConfigurationInformation, alignment_mask),
        ),
        (
            "NumberOfAccessRanges",
            offset_of!(PortConfigurationInformation, number_of_access_ranges),
        ),
        (
            "AccessRanges",
            offset_of!(PortConfigurationInformation, access_ranges),
        ),
        (
            "Reserved",
            offset_of!(PortConfigurationInformation, miniport_dump_data),
        ),
        (
            "NumberOfBuses",
            offset_of!(PortConfigurationInformation, number_of_buses),
        ),
        (
            "InitiatorBusId",
            offset_of!(PortConfigurationInformation, initiator_bus_id),
        ),
        (
            "ScatterGather",
            offset_of!(PortConfigurationInformation, scatter_gather),
        ),
        ("Master", offset_of!(PortConfigurationInformation, master)),
        (
            "CachesData",
            offset_of!(PortConfigurationInformation, caches_data),
        ),
        (
            "AdapterScansDown",
            offset_of!(PortConfigurationInformation, adapter_scans_down),
        ),
        (
            "AtdiskPrimaryClaimed",
            offset_of!(PortConfigurationInformation, atdisk_primary_claimed),
        ),
        (
            "AtdiskSecondaryClaimed",
            offset_of!(PortConfigurationInformation, atdisk_secondary_claimed),
        ),
        (
            "Dma32BitAddresses",
            offset_of!(PortConfigurationInformation, dma32_bit_addresses),
        ),
        (
            "DemandMode",
            offset_of!(PortConfigurationInformation, demand_mode),
        ),
        (
            "MapBuffers",
            offset_of!(PortConfigurationInformation, map_buffers),
        ),
        (
            "NeedPhysicalAddresses",
            offset_of!(PortConfigurationInformation, need_physical_addresses),
        ),
        (
            "TaggedQueuing",
            offset_of!(PortConfigurationInformation, tagged_queuing),
        ),
        (
            "AutoRequestSense",
            offset_of!(PortConfigurationInformation, auto_request_sense),
        ),
        (
            "MultipleRequestPerLu",
            offset_of!(PortConfigurationInformation, multiple_request_per_lu),
        ),
        (
            "ReceiveEvent",
            offset_of!(PortConfigurationInformation, receive_event),
        ),
        (
            "RealModeInitialized",
            offset_of!(PortConfigurationInformation, real_mode_initialized),
        ),
        (
            "BufferAccessScsiPortControlled",
            offset_of!(
                PortConfigurationInformation,
                buffer_access_scsi_port_controlled
            ),
        ),
        (
            "MaximumNumberOfTargets",
            offset_of!(PortConfigurationInformation, maximum_number_of_targets),
        ),
        (
            "ReservedUchars[0]",
            offset_of!(PortConfigurationInformation, srb_type),
        ),
        (
            "ReservedUchars[1]",
            offset_of!(PortConfigurationInformation, address_type),
        ),
        (
            "SlotNumber",
            offset_of!(PortConfigurationInformation, slot_number),
        ),
        (
            "BusInterruptLevel2",
            offset_of!(PortConfigurationInformation, bus_interrupt_level2),
        ),
        (
            "BusInterruptVector2",
            offset_of!(PortConfigurationInformation, bus_interrupt_vector2),
        ),
        (
            "InterruptMode2",
            offset_of!(PortConfigurationInformation, interrupt_mode2),
        ),
        (
            "DmaChannel2",
            offset_of!(PortConfigurationInformation, dma_channel2),
        ),
        (
            "DmaPort2",
            offset_of!(PortConfigurationInformation, dma_port2),
        ),
        (
            "DmaWidth2",
            offset_of!(PortConfigurationInformation, dma_width2),
        ),
        (
            "DmaSpeed2",
            offset_of!(PortConfigurationInformation, dma_speed2),
        ),
        (
            "DeviceExtensionSize",
            offset_of!(PortConfigurationInformation, device_extension_size),
        ),
        (
            "SpecificLuExtensionSize",
            offset_of!(PortConfigurationInformation, specific_lu_extension_size),
        ),
        (
            "SrbExtensionSize",
            offset_of!(PortConfigurationInformation, srb_extension_size),
        ),
        (
            "Dma64BitAddresses",
            offset_of!(PortConfigurationInformation, dma64_bit_addresses),
        ),
        (
            "ResetTargetSupported",
            offset_of!(PortConfigurationInformation, reset_target_supported),
        ),
        (
            "MaximumNumberOfLogicalUnits",
            offset_of!(
                PortConfigurationInformation,
                maximum_number_of_logical_units
            ),
        ),
        (
            "WmiDataProvider",
            offset_of!(PortConfigurationInformation, wmi_data_provider),
        ),
    ] {
        out.push(check(
            &format!("offsetof(PORT_CONFIGURATION_INFORMATION, {c})"),
            rust,
        ));
    }
    // The StorPort tail starts right after the SCSIport structure's last field.
    out.push(check(
        "offsetof(PORT_CONFIGURATION_INFORMATION, WmiDataProvider) + 1",
        offset_of!(PortConfigurationInformation, synchronization_model),
    ));

    for (c, rust) in [
        (
            "HwInitializationDataSize",
            offset_of!(HwInitializationData, hw_initialization_data_size),
        ),
        (
            "AdapterInterfaceType",
            offset_of!(HwInitializationData, adapter_interface_type),
        ),
        (
            "HwInitialize",
            offset_of!(HwInitializationData, hw_initialize),
        ),
        ("HwStartIo", offset_of!(HwInitializationData, hw_start_io)),
        (
            "HwInterrupt",
            offset_of!(HwInitializationData, hw_interrupt),
        ),
        (
            "HwFindAdapter",
            offset_of!(HwInitializationData, hw_find_adapter),
        ),
        ("HwResetBus", offset_of!(HwInitializationData, hw_reset_bus)),
        (
            "HwDmaStarted",
            offset_of!(HwInitializationData, hw_dma_started),
        ),
        (
            "HwAdapterState",
            offset_of!(HwInitializationData, hw_adapter_state),
        ),
        (
            "DeviceExtensionSize",
            offset_of!(HwInitializationData, device_extension_size),
        ),
        (
            "SpecificLuExtensionSize",
            offset_of!(HwInitializationData, specific_lu_extension_size),
        ),
        (
            "SrbExtensionSize",
            offset_of!(HwInitializationData, srb_extension_size),
        ),
        (
            "NumberOfAccessRanges",
            offset_of!(HwInitializationData, number_of_access_ranges),
        ),
        ("Reserved", offset_of!(HwInitializationData, reserved)),
        ("MapBuffers", offset_of!(HwInitializationData, map_buffers)),
        (
            "NeedPhysicalAddresses",
            offset_of!(HwInitializationData, need_physical_addresses),
        ),
        (
            "TaggedQueuing",
            offset_of!(HwInitializationData, tagged_queuing),
        ),
        (
            "AutoRequestSense",
            offset_of!(HwInitializationData, auto_request_sense),
        ),
        (
            "MultipleRequestPerLu",
            offset_of!(HwInitializationData, multiple_request_per_lu),
        ),
        (
            "ReceiveEvent",
            offset_of!(HwInitializationData, receive_event),
        ),
        (
            "VendorIdLength",
            offset_of!(HwInitializationData, vendor_id_length),
        ),
        ("VendorId", offset_of!(HwInitializationData, vendor_id)),
        (
            "ReservedUshort",
            offset_of!(HwInitializationData, port_version_flags),
        ),
        (
            "PortVersionFlags",
            offset_of!(HwInitializationData, port_version_flags),
        ),
        (
            "DeviceIdLength",
            offset_of!(HwInitializationData, device_id_length),
        ),
        ("DeviceId", offset_of!(HwInitializationData, device_id)),
        (
            "HwAdapterControl",
            offset_of!(HwInitializationData, hw_adapter_control),
        ),
    ] {
        out.push(check(
            &format!("offsetof(HW_INITIALIZATION_DATA, {c})"),
            rust,
        ));
    }
    out.push(check(
        "sizeof(HW_INITIALIZATION_DATA)",
        offset_of!(HwInitializationData, hw_build_io),
    ));

    // The kernel structures StorPort's opaque ones are built from.
    out.push(check("sizeof(KDPC)", size_of_val(&StorDpc::zeroed().dpc)));
    out.push(check(
        "sizeof(KDPC) + sizeof(ULONG_PTR)",
        size_of::<StorDpc>(),
    ));
    out.push(check("_Alignof(KDPC)", align_of::<StorDpc>()));
    layout!(out, "KSPIN_LOCK_QUEUE", KSpinLockQueue, "Next" => next, "Lock" => lock);
    layout!(out, "KLOCK_QUEUE_HANDLE", KLockQueueHandle,
        "LockQueue" => lock_queue, "OldIrql" => old_irql);
    layout!(out, "PROCESSOR_NUMBER", ProcessorNumber,
        "Group" => group, "Number" => number, "Reserved" => reserved);
    layout!(out, "GROUP_AFFINITY", GroupAffinity,
        "Mask" => mask, "Group" => group, "Reserved" => reserved);
    out
}

/// Constants mingw's srb.h, wdm.h/ntddk.h and ntstatus.h define.
#[expect(clippy::too_many_lines, reason = "a table: one line per constant")]
fn srb_constant_checks() -> Vec<Check> {
    let mut out = constants!(
        SRB_FUNCTION_EXECUTE_SCSI,
        SRB_FUNCTION_CLAIM_DEVICE,
        SRB_FUNCTION_IO_CONTROL,
        SRB_FUNCTION_RECEIVE_EVENT,
        SRB_FUNCTION_RELEASE_QUEUE,
        SRB_FUNCTION_ATTACH_DEVICE,
        SRB_FUNCTION_RELEASE_DEVICE,
        SRB_FUNCTION_SHUTDOWN,
        SRB_FUNCTION_FLUSH,
        SRB_FUNCTION_ABORT_COMMAND,
        SRB_FUNCTION_RELEASE_RECOVERY,
        SRB_FUNCTION_RESET_BUS,
        SRB_FUNCTION_RESET_DEVICE,
        SRB_FUNCTION_TERMINATE_IO,
        SRB_FUNCTION_FLUSH_QUEUE,
        SRB_FUNCTION_REMOVE_DEVICE,
        SRB_FUNCTION_WMI,
        SRB_FUNCTION_LOCK_QUEUE,
        SRB_FUNCTION_UNLOCK_QUEUE,
        SRB_FUNCTION_RESET_LOGICAL_UNIT,
        SRB_FUNCTION_SET_LINK_TIMEOUT,
        SRB_FUNCTION_LINK_TIMEOUT_OCCURRED,
        SRB_FUNCTION_LINK_TIMEOUT_COMPLETE,
        SRB_FUNCTION_POWER,
        SRB_FUNCTION_PNP,
        SRB_FUNCTION_DUMP_POINTERS,
        SRB_STATUS_PENDING,
        SRB_STATUS_SUCCESS,
        SRB_STATUS_ABORTED,
        SRB_STATUS_ABORT_FAILED,
        SRB_STATUS_ERROR,
        SRB_STATUS_BUSY,
        SRB_STATUS_INVALID_REQUEST,
        SRB_STATUS_INVALID_PATH_ID,
        SRB_STATUS_NO_DEVICE,
        SRB_STATUS_TIMEOUT,
        SRB_STATUS_SELECTION_TIMEOUT,
        SRB_STATUS_COMMAND_TIMEOUT,
        SRB_STATUS_MESSAGE_REJECTED,
        SRB_STATUS_BUS_RESET,
        SRB_STATUS_PARITY_ERROR,
        SRB_STATUS_REQUEST_SENSE_FAILED,
        SRB_STATUS_NO_HBA,
        SRB_STATUS_DATA_OVERRUN,
        SRB_STATUS_UNEXPECTED_BUS_FREE,
        SRB_STATUS_PHASE_SEQUENCE_FAILURE,
        SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
        SRB_STATUS_REQUEST_FLUSHED,
        SRB_STATUS_INVALID_LUN,
        SRB_STATUS_INVALID_TARGET_ID,
        SRB_STATUS_BAD_FUNCTION,
        SRB_STATUS_ERROR_RECOVERY,
        SRB_STATUS_NOT_POWERED,
        SRB_STATUS_LINK_DOWN,
        SRB_STATUS_INTERNAL_ERROR,
        SRB_STATUS_QUEUE_FROZEN,
        SRB_STATUS_AUTOSENSE_VALID,
        SRB_FLAGS_QUEUE_ACTION_ENABLE,
        SRB_FLAGS_DISABLE_DISCONNECT,
        SRB_FLAGS_DISABLE_SYNCH_TRANSFER,
        SRB_FLAGS_BYPASS_FROZEN_QUEUE,
        SRB_FLAGS_DISABLE_AUTOSENSE,
        SRB_FLAGS_DATA_IN,
        SRB_FLAGS_DATA_OUT,
        SRB_FLAGS_NO_DATA_TRANSFER,
        SRB_FLAGS_UNSPECIFIED_DIRECTION,
        SRB_FLAGS_NO_QUEUE_FREEZE,
        SRB_FLAGS_ADAPTER_CACHE_ENABLE,
        SRB_FLAGS_FREE_SENSE_BUFFER,
        SRB_FLAGS_IS_ACTIVE,
        SRB_FLAGS_ALLOCATED_FROM_ZONE,
        SRB_FLAGS_SGLIST_FROM_POOL,
        SRB_FLAGS_BYPASS_LOCKED_QUEUE,
        SRB_FLAGS_NO_KEEP_AWAKE,
        SRB_FLAGS_PORT_DRIVER_ALLOCSENSE,
        SRB_FLAGS_PORT_DRIVER_SENSEHASPORT,
        SRB_FLAGS_DONT_START_NEXT_PACKET,
        SRB_FLAGS_PORT_DRIVER_RESERVED,
        SRB_FLAGS_CLASS_DRIVER_RESERVED,
        SRB_SIMPLE_TAG_REQUEST,
        SRB_HEAD_OF_QUEUE_TAG_REQUEST,
        SRB_ORDERED_QUEUE_TAG_REQUEST,
        SRB_WMI_FLAGS_ADAPTER_REQUEST,
        SRB_POWER_FLAGS_ADAPTER_REQUEST,
        SRB_PNP_FLAGS_ADAPTER_REQUEST,
        SP_BUS_PARITY_ERROR,
        SP_UNEXPECTED_DISCONNECT,
        SP_INVALID_RESELECTION,
        SP_BUS_TIME_OUT,
        SP_PROTOCOL_ERROR,
        SP_INTERNAL_ADAPTER_ERROR,
        SP_REQUEST_TIMEOUT,
        SP_IRQ_NOT_RESPONDING,
        SP_BAD_FW_WARNING,
        SP_BAD_FW_ERROR,
        SP_LOST_WMI_MINIPORT_REQUEST,
        SP_RETURN_NOT_FOUND,
        SP_RETURN_FOUND,
        REG_DWORD,
        SP_RETURN_ERROR,
        SP_RETURN_BAD_CONFIG,
        SP_UNINITIALIZED_VALUE,
        SP_UNTAGGED,
        SCSI_DMA64_MINIPORT_SUPPORTED,
        SCSI_DMA64_SYSTEM_SUPPORTED,
        SCSI_DMA64_MINIPORT_FULL64BIT_SUPPORTED,
        SCSI_MAXIMUM_TARGETS_PER_BUS,
        SCSI_MAXIMUM_LUNS_PER_TARGET,
        SCSI_MAXIMUM_BUSES,
        SCSI_MINIMUM_PHYSICAL_BREAKS,
        SCSI_MAXIMUM_PHYSICAL_BREAKS,
        // Enum values.
        RequestComplete,
        NextRequest,
        NextLuRequest,
        ResetDetected,
        RequestTimerCall,
        BusChangeDetected,
        WMIEvent,
        WMIReregister,
        LinkUp,
        LinkDown,
        QueryTickCount,
        BufferOverrunDetected,
        TraceNotification,
        ScsiQuerySupportedControlTypes,
        ScsiStopAdapter,
        ScsiRestartAdapter,
        ScsiSetBootConfig,
        ScsiSetRunningConfig,
        ScsiAdapterControlSuccess,
        ScsiAdapterControlUnsuccessful,
        StorPowerDeviceUnspecified,
        StorPowerDeviceD0,
        StorPowerDeviceD1,
        StorPowerDeviceD2,
        StorPowerDeviceD3,
        StorPowerActionNone,
        StorPowerActionReserved,
        StorPowerActionSleep,
        StorPowerActionHibernate,
        StorPowerActionShutdown,
        StorPowerActionShutdownReset,
        StorPowerActionShutdownOff,
        StorPowerActionWarmEject,
        StorStartDevice,
        StorRemoveDevice,
        StorStopDevice,
        StorQueryCapabilities,
        StorQueryResourceRequirements,
        StorFilterResourceRequirements,
        StorSurpriseRemoval,
        PCIBus,
        PCIConfiguration,
        LevelSensitive,
        Latched,
    )
    .to_vec();
    // mingw keeps SCSIport's names for the two codes StorPort made obsolete.
    out.push(check("CallDisableInterrupts", _obsolete1));
    out.push(check("CallEnableInterrupts", _obsolete2));
    for (name, status) in [
        ("STATUS_SUCCESS", STATUS_SUCCESS),
        ("STATUS_PENDING", STATUS_PENDING),
        ("STATUS_DEVICE_BUSY", STATUS_DEVICE_BUSY),
        ("STATUS_UNSUCCESSFUL", STATUS_UNSUCCESSFUL),
        ("STATUS_NOT_IMPLEMENTED", STATUS_NOT_IMPLEMENTED),
        ("STATUS_INVALID_PARAMETER", STATUS_INVALID_PARAMETER),
        (
            "STATUS_INVALID_DEVICE_REQUEST",
            STATUS_INVALID_DEVICE_REQUEST,
        ),
        ("STATUS_BUFFER_TOO_SMALL", STATUS_BUFFER_TOO_SMALL),
        (
            "STATUS_INSUFFICIENT_RESOURCES",
            STATUS_INSUFFICIENT_RESOURCES,
        ),
        ("STATUS_DEVICE_NOT_READY", STATUS_DEVICE_NOT_READY),
        ("STATUS_IO_TIMEOUT", STATUS_IO_TIMEOUT),
        ("STATUS_NOT_SUPPORTED", STATUS_NOT_SUPPORTED),
    ] {
        out.push(check(name, status.cast_unsigned()));
    }
    out
}

/// The structures of mingw's storport.h and ntddscsi.h.
fn storport_and_ntddscsi_checks() -> (Vec<Check>, Vec<Check>) {
    let mut storport = Vec::new();
    layout!(storport, "STOR_SCATTER_GATHER_ELEMENT", StorScatterGatherElement,
        "PhysicalAddress" => physical_address, "Length" => length, "Reserved" => reserved);
    layout!(storport, "STOR_SCATTER_GATHER_LIST", StorScatterGatherList,
        "NumberOfElements" => number_of_elements, "Reserved" => reserved, "List" => list);
    let mut ntddscsi = Vec::new();
    layout!(ntddscsi, "SRB_IO_CONTROL", SrbIoControl,
        "HeaderLength" => header_length, "Signature" => signature, "Timeout" => timeout,
        "ControlCode" => control_code, "ReturnCode" => return_code, "Length" => length);
    ntddscsi.extend(constants!(IOCTL_SCSI_MINIPORT));
    (storport, ntddscsi)
}

/// The control codes of scsi.h that travel inside `SRB_IO_CONTROL` (the cluster disk stack's
/// "CLUSDISK" probes).
fn scsi_checks() -> Vec<Check> {
    constants!(
        FILE_DEVICE_SCSI,
        IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
        IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE,
    )
    .to_vec()
}

/// The WDK structures mingw-w64 10 lacks, declared from the field lists of Microsoft's
/// reference pages, with the WDK's 64-bit alignment attributes. Names carry a `WDK_` prefix so
/// they cannot collide with anything mingw declares.
const WDK_DECLARATIONS: &str = r"
#define SRB_ALIGN __attribute__((aligned(8)))
#define POINTER_ALIGN __attribute__((aligned(8)))
#define STOR_ADDRESS_ALIGN __attribute__((aligned(8)))
typedef struct { PUCHAR VirtualBase; PHYSICAL_ADDRESS PhysicalBase; ULONG Length; }
  WDK_MEMORY_REGION;
typedef struct SRB_ALIGN {
  USHORT Length; UCHAR Function; UCHAR SrbStatus; ULONG ReservedUlong1; ULONG Signature;
  ULONG Version; ULONG SrbLength; ULONG SrbFunction; ULONG SrbFlags; ULONG ReservedUlong2;
  ULONG RequestTag; USHORT RequestPriority; USHORT RequestAttribute; ULONG TimeOutValue;
  union { ULONG SystemStatus; ULONG RequestTagHigh4Bytes; }; ULONG ZeroGuard1;
  ULONG AddressOffset; ULONG NumSrbExData; ULONG DataTransferLength;
  PVOID POINTER_ALIGN DataBuffer; PVOID POINTER_ALIGN ZeroGuard2;
  PVOID POINTER_ALIGN OriginalRequest; PVOID POINTER_ALIGN ClassContext;
  PVOID POINTER_ALIGN PortContext; PVOID POINTER_ALIGN MiniportContext;
  void * POINTER_ALIGN NextSrb; ULONG SrbExDataOffset[1];
} WDK_STORAGE_REQUEST_BLOCK;
typedef struct STOR_ADDRESS_ALIGN { USHORT Type; USHORT Port; ULONG AddressLength; UCHAR Path;
  UCHAR Target; UCHAR Lun; UCHAR Reserved; } WDK_STOR_ADDR_BTL8;
typedef struct SRB_ALIGN { ULONG Type; ULONG Length; UCHAR Data[1]; } WDK_SRBEX_DATA;
typedef struct SRB_ALIGN { ULONG Type; ULONG Length; UCHAR ScsiStatus;
  UCHAR SenseInfoBufferLength; UCHAR CdbLength; UCHAR Reserved; ULONG Reserved1;
  PVOID POINTER_ALIGN SenseInfoBuffer; UCHAR POINTER_ALIGN Cdb[16]; } WDK_SRBEX_DATA_SCSI_CDB16;
typedef struct SRB_ALIGN { ULONG Type; ULONG Length; UCHAR ScsiStatus;
  UCHAR SenseInfoBufferLength; UCHAR CdbLength; UCHAR Reserved; ULONG Reserved1;
  PVOID POINTER_ALIGN SenseInfoBuffer; UCHAR POINTER_ALIGN Cdb[32]; } WDK_SRBEX_DATA_SCSI_CDB32;
typedef struct SRB_ALIGN { ULONG Type; ULONG Length; UCHAR ScsiStatus;
  UCHAR SenseInfoBufferLength; UCHAR Reserved[2]; ULONG CdbLength; ULONG Reserved1[2];
  PVOID POINTER_ALIGN SenseInfoBuffer; UCHAR POINTER_ALIGN Cdb[1]; } WDK_SRBEX_DATA_SCSI_CDB_VAR;
typedef struct SRB_ALIGN { ULONG Type; ULONG Length; UCHAR WMISubFunction; UCHAR WMIFlags;
  UCHAR Reserved[2]; ULONG Reserved1; PVOID POINTER_ALIGN DataPath; } WDK_SRBEX_DATA_WMI;
typedef struct SRB_ALIGN { ULONG Type; ULONG Length; UCHAR SrbPowerFlags; UCHAR Reserved[3];
  STOR_DEVICE_POWER_STATE DevicePowerState; STOR_POWER_ACTION PowerAction; }
  WDK_SRBEX_DATA_POWER;
typedef struct SRB_ALIGN { ULONG Type; ULONG Length; UCHAR PnPSubFunction; UCHAR Reserved[3];
  STOR_PNP_ACTION PnPAction; ULONG SrbPnPFlags; ULONG Reserved1; } WDK_SRBEX_DATA_PNP;
typedef struct SRB_ALIGN { ULONG Type; ULONG Length; ULONG Flags; ULONG Key; ULONG RWLength;
  BOOLEAN IsWriteRequest; UCHAR CachePriority; UCHAR Reserved[2]; ULONG Reserved1[2]; }
  WDK_SRBEX_DATA_IO_INFO;
#define WDK_SRBEX_DATA_SCSI_CDB16_LENGTH ((20 * sizeof(UCHAR)) + sizeof(ULONG) + sizeof(PVOID))
#define WDK_SRBEX_DATA_SCSI_CDB32_LENGTH ((36 * sizeof(UCHAR)) + sizeof(ULONG) + sizeof(PVOID))
#define WDK_SRBEX_DATA_SCSI_CDB_VAR_LENGTH_MIN \
  ((4 * sizeof(UCHAR)) + (3 * sizeof(ULONG)) + sizeof(PVOID))
#define WDK_SRBEX_DATA_WMI_LENGTH ((4 * sizeof(UCHAR)) + sizeof(ULONG) + sizeof(PVOID))
#define WDK_SRBEX_DATA_POWER_LENGTH ((4 * sizeof(UCHAR)) + 2 * sizeof(ULONG))
#define WDK_SRBEX_DATA_PNP_LENGTH ((4 * sizeof(UCHAR)) + 3 * sizeof(ULONG))
#define WDK_SRBEX_DATA_IO_INFO_LENGTH ((5 * sizeof(ULONG)) + (4 * sizeof(UCHAR)))
typedef struct { ULONG Version; ULONG Size; ULONG Flags; ULONG ConcurrentChannels;
  ULONG FirstRedirectionMessageNumber; ULONG LastRedirectionMessageNumber; ULONG DeviceNode;
  ULONG Reserved; PGROUP_AFFINITY MessageTargets; } WDK_PERF_CONFIGURATION_DATA;
typedef struct { ULONG Version; ULONG Size; ULONG MessageNumber; ULONG ChannelNumber; }
  WDK_STARTIO_PERFORMANCE_PARAMETERS;
typedef struct { ULONG MessageId; ULONG MessageData; PHYSICAL_ADDRESS MessageAddress;
  ULONG InterruptVector; ULONG InterruptLevel; KINTERRUPT_MODE InterruptMode; }
  WDK_MESSAGE_INTERRUPT_INFORMATION;
typedef struct { ULONG Lock; struct { struct { PVOID Next; PVOID Lock; } LockQueue;
  KIRQL OldIrql; } Context; } WDK_STOR_LOCK_HANDLE;
typedef struct { CSHORT Type; UCHAR Number; UCHAR Importance; struct { PVOID F; PVOID B; };
  PVOID DeferredRoutine; PVOID DeferredContext; PVOID SystemArgument1; PVOID SystemArgument2;
  PVOID DpcData; } WDK_DPC_BUFFER;
typedef struct { WDK_DPC_BUFFER Dpc; ULONG_PTR Lock; } WDK_STOR_DPC;
typedef struct {
  ULONG Length; ULONG SystemIoBusNumber; INTERFACE_TYPE AdapterInterfaceType;
  ULONG BusInterruptLevel; ULONG BusInterruptVector; KINTERRUPT_MODE InterruptMode;
  ULONG MaximumTransferLength; ULONG NumberOfPhysicalBreaks; ULONG DmaChannel; ULONG DmaPort;
  DMA_WIDTH DmaWidth; DMA_SPEED DmaSpeed; ULONG AlignmentMask; ULONG NumberOfAccessRanges;
  ACCESS_RANGE (*AccessRanges)[]; PVOID MiniportDumpData; UCHAR NumberOfBuses;
  CCHAR InitiatorBusId[8]; BOOLEAN ScatterGather; BOOLEAN Master; BOOLEAN CachesData;
  BOOLEAN AdapterScansDown; BOOLEAN AtdiskPrimaryClaimed; BOOLEAN AtdiskSecondaryClaimed;
  BOOLEAN Dma32BitAddresses; BOOLEAN DemandMode; UCHAR MapBuffers; BOOLEAN NeedPhysicalAddresses;
  BOOLEAN TaggedQueuing; BOOLEAN AutoRequestSense; BOOLEAN MultipleRequestPerLu;
  BOOLEAN ReceiveEvent; BOOLEAN RealModeInitialized; BOOLEAN BufferAccessScsiPortControlled;
  UCHAR MaximumNumberOfTargets; UCHAR SrbType; UCHAR AddressType; ULONG SlotNumber;
  ULONG BusInterruptLevel2; ULONG BusInterruptVector2; KINTERRUPT_MODE InterruptMode2;
  ULONG DmaChannel2; ULONG DmaPort2; DMA_WIDTH DmaWidth2; DMA_SPEED DmaSpeed2;
  ULONG DeviceExtensionSize; ULONG SpecificLuExtensionSize; ULONG SrbExtensionSize;
  UCHAR Dma64BitAddresses; BOOLEAN ResetTargetSupported; UCHAR MaximumNumberOfLogicalUnits;
  BOOLEAN WmiDataProvider;
  ULONG SynchronizationModel; PVOID HwMSInterruptRoutine; ULONG InterruptSynchronizationMode;
  WDK_MEMORY_REGION DumpRegion; ULONG RequestedDumpBufferSize; BOOLEAN VirtualDevice;
  UCHAR DumpMode; UCHAR DmaAddressWidth; ULONG ExtendedFlags1; ULONG MaxNumberOfIO;
  ULONG MaxIOsPerLun; ULONG InitialLunQueueDepth; ULONG BusResetHoldTime; ULONG FeatureSupport;
} WDK_PORT_CONFIGURATION_INFORMATION;
typedef struct {
  ULONG HwInitializationDataSize; INTERFACE_TYPE AdapterInterfaceType; PVOID HwInitialize;
  PVOID HwStartIo; PVOID HwInterrupt; PVOID HwFindAdapter; PVOID HwResetBus;
  PVOID HwDmaStarted; PVOID HwAdapterState; ULONG DeviceExtensionSize;
  ULONG SpecificLuExtensionSize; ULONG SrbExtensionSize; ULONG NumberOfAccessRanges;
  PVOID Reserved; UCHAR MapBuffers; BOOLEAN NeedPhysicalAddresses; BOOLEAN TaggedQueuing;
  BOOLEAN AutoRequestSense; BOOLEAN MultipleRequestPerLu; BOOLEAN ReceiveEvent;
  USHORT VendorIdLength; PVOID VendorId; union { USHORT ReservedUshort; USHORT PortVersionFlags; };
  USHORT DeviceIdLength; PVOID DeviceId; PVOID HwAdapterControl;
  PVOID HwBuildIo; PVOID HwFreeAdapterResources; PVOID HwProcessServiceRequest;
  PVOID HwCompleteServiceIrp; PVOID HwInitializeTracing; PVOID HwCleanupTracing;
  PVOID HwTracingEnabled; ULONG FeatureSupport; ULONG SrbTypeFlags; ULONG AddressTypeFlags;
  ULONG Reserved1; PVOID HwUnitControl;
} WDK_HW_INITIALIZATION_DATA;
";

/// Checks tying the Rust structures to [`WDK_DECLARATIONS`].
#[expect(clippy::too_many_lines, reason = "a table: one line per field")]
fn wdk_checks() -> Vec<Check> {
    let mut out = Vec::new();
    layout!(out, "WDK_MEMORY_REGION", MemoryRegion,
        "VirtualBase" => virtual_base, "PhysicalBase" => physical_base, "Length" => length);
    layout!(out, "WDK_STORAGE_REQUEST_BLOCK", StorageRequestBlock,
        "Length" => length, "Function" => function, "SrbStatus" => srb_status,
        "ReservedUlong1" => reserved_ulong1, "Signature" => signature, "Version" => version,
        "SrbLength" => srb_length, "SrbFunction" => srb_function, "SrbFlags" => srb_flags,
        "ReservedUlong2" => reserved_ulong2, "RequestTag" => request_tag,
        "RequestPriority" => request_priority, "RequestAttribute" => request_attribute,
        "TimeOutValue" => time_out_value, "SystemStatus" => system_status,
        "RequestTagHigh4Bytes" => system_status, "ZeroGuard1" => zero_guard1,
        "AddressOffset" => address_offset, "NumSrbExData" => num_srb_ex_data,
        "DataTransferLength" => data_transfer_length, "DataBuffer" => data_buffer,
        "ZeroGuard2" => zero_guard2, "OriginalRequest" => original_request,
        "ClassContext" => class_context, "PortContext" => port_context,
        "MiniportContext" => miniport_context, "NextSrb" => next_srb,
        "SrbExDataOffset" => srb_ex_data_offset);
    layout!(out, "WDK_STOR_ADDR_BTL8", StorAddrBtl8,
        "Type" => r#type, "Port" => port, "AddressLength" => address_length, "Path" => path,
        "Target" => target, "Lun" => lun, "Reserved" => reserved);
    layout!(out, "WDK_SRBEX_DATA", SrbExData, "Type" => r#type, "Length" => length, "Data" => data);
    layout!(out, "WDK_SRBEX_DATA_SCSI_CDB16", SrbExDataScsiCdb16,
        "Type" => r#type, "Length" => length, "ScsiStatus" => scsi_status,
        "SenseInfoBufferLength" => sense_info_buffer_length, "CdbLength" => cdb_length,
        "Reserved" => reserved, "Reserved1" => reserved1, "SenseInfoBuffer" => sense_info_buffer,
        "Cdb" => cdb);
    layout!(out, "WDK_SRBEX_DATA_SCSI_CDB32", SrbExDataScsiCdb32,
        "Type" => r#type, "Length" => length, "ScsiStatus" => scsi_status,
        "SenseInfoBufferLength" => sense_info_buffer_length, "CdbLength" => cdb_length,
        "Reserved" => reserved, "Reserved1" => reserved1, "SenseInfoBuffer" => sense_info_buffer,
        "Cdb" => cdb);
    layout!(out, "WDK_SRBEX_DATA_SCSI_CDB_VAR", SrbExDataScsiCdbVar,
        "Type" => r#type, "Length" => length, "ScsiStatus" => scsi_status,
        "SenseInfoBufferLength" => sense_info_buffer_length, "Reserved" => reserved,
        "CdbLength" => cdb_length, "Reserved1" => reserved1,
        "SenseInfoBuffer" => sense_info_buffer, "Cdb" => cdb);
    layout!(out, "WDK_SRBEX_DATA_WMI", SrbExDataWmi,
        "Type" => r#type, "Length" => length, "WMISubFunction" => wmi_sub_function,
        "WMIFlags" => wmi_flags, "Reserved" => reserved, "Reserved1" => reserved1,
        "DataPath" => data_path);
    layout!(out, "WDK_SRBEX_DATA_POWER", SrbExDataPower,
        "Type" => r#type, "Length" => length, "SrbPowerFlags" => srb_power_flags,
        "Reserved" => reserved, "DevicePowerState" => device_power_state,
        "PowerAction" => power_action);
    layout!(out, "WDK_SRBEX_DATA_PNP", SrbExDataPnp,
        "Type" => r#type, "Length" => length, "PnPSubFunction" => pnp_sub_function,
        "Reserved" => reserved, "PnPAction" => pnp_action, "SrbPnPFlags" => srb_pnp_flags,
        "Reserved1" => reserved1);
    layout!(out, "WDK_SRBEX_DATA_IO_INFO", SrbExDataIoInfo,
        "Type" => r#type, "Length" => length, "Flags" => flags, "Key" => key,
        "RWLength" => rw_length, "IsWriteRequest" => is_write_request,
        "CachePriority" => cache_priority, "Reserved" => reserved, "Reserved1" => reserved1);
    for (name, value) in [
        (
            "WDK_SRBEX_DATA_SCSI_CDB16_LENGTH",
            SRBEX_DATA_SCSI_CDB16_LENGTH,
        ),
        (
            "WDK_SRBEX_DATA_SCSI_CDB32_LENGTH",
            SRBEX_DATA_SCSI_CDB32_LENGTH,
        ),
        (
            "WDK_SRBEX_DATA_SCSI_CDB_VAR_LENGTH_MIN",
            SRBEX_DATA_SCSI_CDB_VAR_LENGTH_MIN,
        ),
        ("WDK_SRBEX_DATA_WMI_LENGTH", SRBEX_DATA_WMI_LENGTH),
        ("WDK_SRBEX_DATA_POWER_LENGTH", SRBEX_DATA_POWER_LENGTH),
        ("WDK_SRBEX_DATA_PNP_LENGTH", SRBEX_DATA_PNP_LENGTH),
        ("WDK_SRBEX_DATA_IO_INFO_LENGTH", SRBEX_DATA_IO_INFO_LENGTH),
    ] {
        out.push(check(name, value));
    }
    layout!(out, "WDK_PERF_CONFIGURATION_DATA", PerfConfigurationData,
        "Version" => version, "Size" => size, "Flags" => flags,
        "ConcurrentChannels" => concurrent_channels,
        "FirstRedirectionMessageNumber" => first_redirection_message_number,
        "LastRedirectionMessageNumber" => last_redirection_message_number,
        "DeviceNode" => device_node, "Reserved" => reserved,
        "MessageTargets" => message_targets);
    layout!(out, "WDK_STARTIO_PERFORMANCE_PARAMETERS", StartioPerformanceParameters,
        "Version" => version, "Size" => size, "MessageNumber" => message_number,
        "ChannelNumber" => channel_number);
    layout!(out, "WDK_MESSAGE_INTERRUPT_INFORMATION", MessageInterruptInformation,
        "MessageId" => message_id, "MessageData" => message_data,
        "MessageAddress" => message_address, "InterruptVector" => interrupt_vector,
        "InterruptLevel" => interrupt_level, "InterruptMode" => interrupt_mode);
    layout!(out, "WDK_STOR_LOCK_HANDLE", StorLockHandle, "Lock" => lock, "Context" => context);
    out.push(check(
        "offsetof(WDK_STOR_LOCK_HANDLE, Context.OldIrql)",
        offset_of!(StorLockHandle, context) + offset_of!(KLockQueueHandle, old_irql),
    ));
    layout!(out, "WDK_STOR_DPC", StorDpc, "Dpc" => dpc, "Lock" => lock);
    layout!(out, "WDK_PORT_CONFIGURATION_INFORMATION", PortConfigurationInformation,
        "Length" => length, "SystemIoBusNumber" => system_io_bus_number,
        "AdapterInterfaceType" => adapter_interface_type,
        "BusInterruptLevel" => bus_interrupt_level, "BusInterruptVector" => bus_interrupt_vector,
        "InterruptMode" => interrupt_mode, "MaximumTransferLength" => maximum_transfer_length,
        "NumberOfPhysicalBreaks" => number_of_physical_breaks, "DmaChannel" => dma_channel,
        "DmaPort" => dma_port, "DmaWidth" => dma_width, "DmaSpeed" => dma_speed,
        "AlignmentMask" => alignment_mask, "NumberOfAccessRanges" => number_of_access_ranges,
        "AccessRanges" => access_ranges, "MiniportDumpData" => miniport_dump_data,
        "NumberOfBuses" => number_of_buses, "InitiatorBusId" => initiator_bus_id,
        "ScatterGather" => scatter_gather, "Master" => master, "CachesData" => caches_data,
        "AdapterScansDown" => adapter_scans_down,
        "AtdiskPrimaryClaimed" => atdisk_primary_claimed,
        "AtdiskSecondaryClaimed" => atdisk_secondary_claimed,
        "Dma32BitAddresses" => dma32_bit_addresses, "DemandMode" => demand_mode,
        "MapBuffers" => map_buffers, "NeedPhysicalAddresses" => need_physical_addresses,
        "TaggedQueuing" => tagged_queuing, "AutoRequestSense" => auto_request_sense,
        "MultipleRequestPerLu" => multiple_request_per_lu, "ReceiveEvent" => receive_event,
        "RealModeInitialized" => real_mode_initialized,
        "BufferAccessScsiPortControlled" => buffer_access_scsi_port_controlled,
        "MaximumNumberOfTargets" => maximum_number_of_targets, "SrbType" => srb_type,
        "AddressType" => address_type, "SlotNumber" => slot_number,
        "BusInterruptLevel2" => bus_interrupt_level2,
        "BusInterruptVector2" => bus_interrupt_vector2, "InterruptMode2" => interrupt_mode2,
        "DmaChannel2" => dma_channel2, "DmaPort2" => dma_port2, "DmaWidth2" => dma_width2,
        "DmaSpeed2" => dma_speed2, "DeviceExtensionSize" => device_extension_size,
        "SpecificLuExtensionSize" => specific_lu_extension_size,
        "SrbExtensionSize" => srb_extension_size, "Dma64BitAddresses" => dma64_bit_addresses,
        "ResetTargetSupported" => reset_target_supported,
        "MaximumNumberOfLogicalUnits" => maximum_number_of_logical_units,
        "WmiDataProvider" => wmi_data_provider,
        "SynchronizationModel" => synchronization_model,
        "HwMSInterruptRoutine" => hw_ms_interrupt_routine,
        "InterruptSynchronizationMode" => interrupt_synchronization_mode,
        "DumpRegion" => dump_region, "RequestedDumpBufferSize" => requested_dump_buffer_size,
        "VirtualDevice" => virtual_device, "DumpMode" => dump_mode,
        "DmaAddressWidth" => dma_address_width, "ExtendedFlags1" => extended_flags1,
        "MaxNumberOfIO" => max_number_of_io, "MaxIOsPerLun" => max_ios_per_lun,
        "InitialLunQueueDepth" => initial_lun_queue_depth,
        "BusResetHoldTime" => bus_reset_hold_time, "FeatureSupport" => feature_support);
    layout!(out, "WDK_HW_INITIALIZATION_DATA", HwInitializationData,
        "HwInitializationDataSize" => hw_initialization_data_size,
        "AdapterInterfaceType" => adapter_interface_type, "HwInitialize" => hw_initialize,
        "HwStartIo" => hw_start_io, "HwInterrupt" => hw_interrupt,
        "HwFindAdapter" => hw_find_adapter, "HwResetBus" => hw_reset_bus,
        "HwDmaStarted" => hw_dma_started, "HwAdapterState" => hw_adapter_state,
        "DeviceExtensionSize" => device_extension_size,
        "SpecificLuExtensionSize" => specific_lu_extension_size,
        "SrbExtensionSize" => srb_extension_size,
        "NumberOfAccessRanges" => number_of_access_ranges, "Reserved" => reserved,
        "MapBuffers" => map_buffers, "NeedPhysicalAddresses" => need_physical_addresses,
        "TaggedQueuing" => tagged_queuing, "AutoRequestSense" => auto_request_sense,
        "MultipleRequestPerLu" => multiple_request_per_lu, "ReceiveEvent" => receive_event,
        "VendorIdLength" => vendor_id_length, "VendorId" => vendor_id,
        "PortVersionFlags" => port_version_flags, "DeviceIdLength" => device_id_length,
        "DeviceId" => device_id, "HwAdapterControl" => hw_adapter_control,
        "HwBuildIo" => hw_build_io, "HwFreeAdapterResources" => hw_free_adapter_resources,
        "HwProcessServiceRequest" => hw_process_service_request,
        "HwCompleteServiceIrp" => hw_complete_service_irp,
        "HwInitializeTracing" => hw_initialize_tracing,
        "HwCleanupTracing" => hw_cleanup_tracing, "HwTracingEnabled" => hw_tracing_enabled,
        "FeatureSupport" => feature_support, "SrbTypeFlags" => srb_type_flags,
        "AddressTypeFlags" => address_type_flags, "Reserved1" => reserved1,
        "HwUnitControl" => hw_unit_control);
    out
}

/// Kernel-mode headers: mingw's ntddk.h includes `<wdm.h>`, so the ddk directory goes on the
/// include path (see `compile`).
const SRB_PRELUDE: &str = "#include <stddef.h>\n#include <ntddk.h>\n#include <srb.h>\n";

/// mingw's storport.h redefines srb.h's `SCSI_WMI_REQUEST_BLOCK`; its copy is renamed away.
const STORPORT_PRELUDE: &str = "#include <stddef.h>
#include <ntddk.h>
#include <srb.h>
#define _SCSI_WMI_REQUEST_BLOCK _MINGW_STORPORT_SCSI_WMI_REQUEST_BLOCK
#define SCSI_WMI_REQUEST_BLOCK MINGW_STORPORT_SCSI_WMI_REQUEST_BLOCK
#define PSCSI_WMI_REQUEST_BLOCK PMINGW_STORPORT_SCSI_WMI_REQUEST_BLOCK
#include <storport.h>
";

/// scsi.h needs srb.h's types before it.
const SCSI_PRELUDE: &str =
    "#include <stddef.h>\n#include <ntddk.h>\n#include <srb.h>\n#include <scsi.h>\n";

const NTDDSCSI_PRELUDE: &str = "#include <stddef.h>\n#include <windows.h>\n#include <ntddscsi.h>\n";

fn wdk_prelude() -> String {
    format!("{SRB_PRELUDE}{WDK_DECLARATIONS}")
}

fn units() -> Vec<(&'static str, String)> {
    let (storport, ntddscsi) = storport_and_ntddscsi_checks();
    let mut srb = srb_structure_checks();
    srb.extend(srb_constant_checks());
    vec![
        ("srb_probe.c", probe_source(SRB_PRELUDE, &srb)),
        (
            "storport_probe.c",
            probe_source(STORPORT_PRELUDE, &storport),
        ),
        (
            "ntddscsi_probe.c",
            probe_source(NTDDSCSI_PRELUDE, &ntddscsi),
        ),
        ("scsi_probe.c", probe_source(SCSI_PRELUDE, &scsi_checks())),
        ("wdk_probe.c", probe_source(&wdk_prelude(), &wdk_checks())),
    ]
}

#[test]
fn rust_layouts_and_constants_match_c() {
    let Some(cc) = compiler() else {
        eprintln!(
            "SKIPPED rust_layouts_and_constants_match_c: x86_64-w64-mingw32-gcc not found \
             (install gcc-mingw-w64-x86-64, or set RVSCSI_MINGW_CC)"
        );
        return;
    };
    let ddk = ddk_include_dir(&cc);
    let dir = scratch_dir("storport-match");
    let mut failures = String::new();
    let mut checked = 0;
    for (name, source) in units() {
        checked += source.matches("_Static_assert").count();
        if let Err(diagnostics) = compile(&cc, &[&ddk], &dir, name, &source) {
            writeln!(failures, "--- {name}:\n{diagnostics}").unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "layout mismatches:\n{failures}");
    // A guard against a table that silently shrinks.
    assert!(checked > 500, "only {checked} assertions generated");
    eprintln!("{checked} C assertions passed");
}

#[test]
fn a_wrong_value_fails_each_probe() {
    // The control: the same machinery must reject a value that differs, in every unit, or the
    // test above could pass by checking nothing.
    let Some(cc) = compiler() else {
        eprintln!("SKIPPED a_wrong_value_fails_each_probe: x86_64-w64-mingw32-gcc not found");
        return;
    };
    let ddk = ddk_include_dir(&cc);
    let dir = scratch_dir("storport-control");
    let wrong: [(&str, String, Check); 5] = [
        (
            "srb",
            SRB_PRELUDE.to_string(),
            check("offsetof(SCSI_REQUEST_BLOCK, Cdb)", 64_u32),
        ),
        (
            "storport",
            STORPORT_PRELUDE.to_string(),
            check("sizeof(STOR_SCATTER_GATHER_ELEMENT)", 16_u32),
        ),
        (
            "ntddscsi",
            NTDDSCSI_PRELUDE.to_string(),
            check("IOCTL_SCSI_MINIPORT", 0x0004_D009_u32),
        ),
        (
            "scsi",
            SCSI_PRELUDE.to_string(),
            check("IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE", 0x001B_0521_u32),
        ),
        (
            "wdk",
            wdk_prelude(),
            check(
                "offsetof(WDK_STORAGE_REQUEST_BLOCK, SrbExDataOffset)",
                124_u32,
            ),
        ),
    ];
    let mut results = Vec::new();
    for (name, prelude, bad) in &wrong {
        let result = compile(
            &cc,
            &[&ddk],
            &dir,
            &format!("wrong_{name}.c"),
            &probe_source(prelude, std::slice::from_ref(bad)),
        );
        results.push((name, bad.0.clone(), result));
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (name, expr, result) in results {
        let diagnostics = result.expect_err(&format!("{name}: a wrong value must not compile"));
        assert!(diagnostics.contains(&expr), "{name}: {diagnostics}");
    }
}
