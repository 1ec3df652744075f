//! The `#define` constants of storport.h, srb.h, ntddscsi.h and ntstatus.h, with their WDK
//! names and the integer type of the field they go in.
//!
//! `tests/c_layout.rs` compares every one mingw-w64 defines with its header; the others are
//! checked against Microsoft's documentation in the unit tests below.

use super::types::NtStatus;

// --- SRB_FUNCTION_* (SCSI_REQUEST_BLOCK.Function; STORAGE_REQUEST_BLOCK.SrbFunction widens) ---

/// Execute a SCSI command (the I/O path).
pub const SRB_FUNCTION_EXECUTE_SCSI: u8 = 0x00;
/// Claim the device (class driver; never reaches the miniport).
pub const SRB_FUNCTION_CLAIM_DEVICE: u8 = 0x01;
/// `IOCTL_SCSI_MINIPORT` pass-through; the data buffer starts with `SRB_IO_CONTROL`.
pub const SRB_FUNCTION_IO_CONTROL: u8 = 0x02;
/// Receive an asynchronous event.
pub const SRB_FUNCTION_RECEIVE_EVENT: u8 = 0x03;
/// Release a frozen queue.
pub const SRB_FUNCTION_RELEASE_QUEUE: u8 = 0x04;
/// Attach the device.
pub const SRB_FUNCTION_ATTACH_DEVICE: u8 = 0x05;
/// Release the device.
pub const SRB_FUNCTION_RELEASE_DEVICE: u8 = 0x06;
/// System shutdown: flush caches.
pub const SRB_FUNCTION_SHUTDOWN: u8 = 0x07;
/// Flush the adapter cache.
pub const SRB_FUNCTION_FLUSH: u8 = 0x08;
/// Abort a command.
pub const SRB_FUNCTION_ABORT_COMMAND: u8 = 0x10;
/// Release recovery.
pub const SRB_FUNCTION_RELEASE_RECOVERY: u8 = 0x11;
/// Reset the bus.
pub const SRB_FUNCTION_RESET_BUS: u8 = 0x12;
/// Reset a target.
pub const SRB_FUNCTION_RESET_DEVICE: u8 = 0x13;
/// Terminate an I/O.
pub const SRB_FUNCTION_TERMINATE_IO: u8 = 0x14;
/// Flush the queue.
pub const SRB_FUNCTION_FLUSH_QUEUE: u8 = 0x15;
/// Remove the device.
pub const SRB_FUNCTION_REMOVE_DEVICE: u8 = 0x16;
/// A WMI request (`SCSI_WMI_REQUEST_BLOCK`).
pub const SRB_FUNCTION_WMI: u8 = 0x17;
/// Lock the queue.
pub const SRB_FUNCTION_LOCK_QUEUE: u8 = 0x18;
/// Unlock the queue.
pub const SRB_FUNCTION_UNLOCK_QUEUE: u8 = 0x19;
/// Reset a logical unit.
pub const SRB_FUNCTION_RESET_LOGICAL_UNIT: u8 = 0x20;
/// Set the link timeout.
pub const SRB_FUNCTION_SET_LINK_TIMEOUT: u8 = 0x21;
/// Link timeout occurred.
pub const SRB_FUNCTION_LINK_TIMEOUT_OCCURRED: u8 = 0x22;
/// Link timeout complete.
pub const SRB_FUNCTION_LINK_TIMEOUT_COMPLETE: u8 = 0x23;
/// A power request (`SCSI_POWER_REQUEST_BLOCK`).
pub const SRB_FUNCTION_POWER: u8 = 0x24;
/// A PnP request (`SCSI_PNP_REQUEST_BLOCK`).
pub const SRB_FUNCTION_PNP: u8 = 0x25;
/// Dump pointers (crash dump setup).
pub const SRB_FUNCTION_DUMP_POINTERS: u8 = 0x26;
/// Free dump pointers.
pub const SRB_FUNCTION_FREE_DUMP_POINTERS: u8 = 0x27;
/// The SRB is a `STORAGE_REQUEST_BLOCK`; its real function is in `SrbFunction`.
pub const SRB_FUNCTION_STORAGE_REQUEST_BLOCK: u8 = 0x28;

// --- SRB_STATUS_* (SrbStatus) ---

/// The request is in progress.
pub const SRB_STATUS_PENDING: u8 = 0x00;
/// Completed successfully.
pub const SRB_STATUS_SUCCESS: u8 = 0x01;
/// Aborted as requested.
pub const SRB_STATUS_ABORTED: u8 = 0x02;
/// The abort failed.
pub const SRB_STATUS_ABORT_FAILED: u8 = 0x03;
/// Completed with an error (see `ScsiStatus` / sense data).
pub const SRB_STATUS_ERROR: u8 = 0x04;
/// The device is busy; StorPort retries.
pub const SRB_STATUS_BUSY: u8 = 0x05;
/// The request is invalid for this device.
pub const SRB_STATUS_INVALID_REQUEST: u8 = 0x06;
/// The path id is invalid.
pub const SRB_STATUS_INVALID_PATH_ID: u8 = 0x07;
/// No device at this address.
pub const SRB_STATUS_NO_DEVICE: u8 = 0x08;
/// Timed out.
pub const SRB_STATUS_TIMEOUT: u8 = 0x09;
/// Selection timed out (no target answers).
pub const SRB_STATUS_SELECTION_TIMEOUT: u8 = 0x0A;
/// The command timed out.
pub const SRB_STATUS_COMMAND_TIMEOUT: u8 = 0x0B;
/// Message rejected.
pub const SRB_STATUS_MESSAGE_REJECTED: u8 = 0x0D;
/// A bus reset ended the request.
pub const SRB_STATUS_BUS_RESET: u8 = 0x0E;
/// Parity error.
pub const SRB_STATUS_PARITY_ERROR: u8 = 0x0F;
/// The automatic REQUEST SENSE failed.
pub const SRB_STATUS_REQUEST_SENSE_FAILED: u8 = 0x10;
/// No host bus adapter.
pub const SRB_STATUS_NO_HBA: u8 = 0x11;
/// Data overrun or underrun (the miniport sets `DataTransferLength` to what moved).
pub const SRB_STATUS_DATA_OVERRUN: u8 = 0x12;
/// Unexpected bus free.
pub const SRB_STATUS_UNEXPECTED_BUS_FREE: u8 = 0x13;
/// Phase sequence failure.
pub const SRB_STATUS_PHASE_SEQUENCE_FAILURE: u8 = 0x14;
/// Bad SRB block length.
pub const SRB_STATUS_BAD_SRB_BLOCK_LENGTH: u8 = 0x15;
/// Flushed from the queue.
pub const SRB_STATUS_REQUEST_FLUSHED: u8 = 0x16;
/// The LUN is invalid.
pub const SRB_STATUS_INVALID_LUN: u8 = 0x20;
/// The target id is invalid.
pub const SRB_STATUS_INVALID_TARGET_ID: u8 = 0x21;
/// The function is not supported.
pub const SRB_STATUS_BAD_FUNCTION: u8 = 0x22;
/// Error recovery in progress.
pub const SRB_STATUS_ERROR_RECOVERY: u8 = 0x23;
/// The device is not powered.
pub const SRB_STATUS_NOT_POWERED: u8 = 0x24;
/// The link is down.
pub const SRB_STATUS_LINK_DOWN: u8 = 0x25;
/// An internal error.
pub const SRB_STATUS_INTERNAL_ERROR: u8 = 0x30;
/// Flag: the LU queue is frozen (only with `SRB_FLAGS_NO_QUEUE_FREEZE` clear).
pub const SRB_STATUS_QUEUE_FROZEN: u8 = 0x40;
/// Flag: sense data is valid in `SenseInfoBuffer`.
pub const SRB_STATUS_AUTOSENSE_VALID: u8 = 0x80;

/// `SRB_STATUS(Status)`: the status code without the `QUEUE_FROZEN` and `AUTOSENSE_VALID` flags.
#[must_use]
pub const fn srb_status(status: u8) -> u8 {
    status & !(SRB_STATUS_AUTOSENSE_VALID | SRB_STATUS_QUEUE_FROZEN)
}

// --- SRB_FLAGS_* (SrbFlags) ---

/// Use `QueueTag`/`QueueAction`.
pub const SRB_FLAGS_QUEUE_ACTION_ENABLE: u32 = 0x0000_0002;
/// Disable disconnect.
pub const SRB_FLAGS_DISABLE_DISCONNECT: u32 = 0x0000_0004;
/// Disable synchronous transfer.
pub const SRB_FLAGS_DISABLE_SYNCH_TRANSFER: u32 = 0x0000_0008;
/// Bypass a frozen queue.
pub const SRB_FLAGS_BYPASS_FROZEN_QUEUE: u32 = 0x0000_0010;
/// Do not return sense data.
pub const SRB_FLAGS_DISABLE_AUTOSENSE: u32 = 0x0000_0020;
/// Data moves from the device to memory.
pub const SRB_FLAGS_DATA_IN: u32 = 0x0000_0040;
/// Data moves from memory to the device.
pub const SRB_FLAGS_DATA_OUT: u32 = 0x0000_0080;
/// No data transfer (neither direction bit).
pub const SRB_FLAGS_NO_DATA_TRANSFER: u32 = 0x0000_0000;
/// Both direction bits: the direction is unspecified.
pub const SRB_FLAGS_UNSPECIFIED_DIRECTION: u32 = SRB_FLAGS_DATA_IN | SRB_FLAGS_DATA_OUT;
/// Do not freeze the queue on error.
pub const SRB_FLAGS_NO_QUEUE_FREEZE: u32 = 0x0000_0100;
/// The adapter may cache the data.
pub const SRB_FLAGS_ADAPTER_CACHE_ENABLE: u32 = 0x0000_0200;
/// The port driver frees the sense buffer.
pub const SRB_FLAGS_FREE_SENSE_BUFFER: u32 = 0x0000_0400;
/// The request is active (port driver).
pub const SRB_FLAGS_IS_ACTIVE: u32 = 0x0001_0000;
/// Allocated from a zone (port driver).
pub const SRB_FLAGS_ALLOCATED_FROM_ZONE: u32 = 0x0002_0000;
/// The SG list came from pool (port driver).
pub const SRB_FLAGS_SGLIST_FROM_POOL: u32 = 0x0004_0000;
/// Bypass a locked queue.
pub const SRB_FLAGS_BYPASS_LOCKED_QUEUE: u32 = 0x0008_0000;
/// Do not keep the device awake.
pub const SRB_FLAGS_NO_KEEP_AWAKE: u32 = 0x0010_0000;
/// The port driver allocated the sense buffer.
pub const SRB_FLAGS_PORT_DRIVER_ALLOCSENSE: u32 = 0x0020_0000;
/// The sense buffer has the port number.
pub const SRB_FLAGS_PORT_DRIVER_SENSEHASPORT: u32 = 0x0040_0000;
/// Do not start the next packet.
pub const SRB_FLAGS_DONT_START_NEXT_PACKET: u32 = 0x0080_0000;
/// Bits reserved for the port driver.
pub const SRB_FLAGS_PORT_DRIVER_RESERVED: u32 = 0x0F00_0000;
/// Bits reserved for the class driver.
pub const SRB_FLAGS_CLASS_DRIVER_RESERVED: u32 = 0xF000_0000;

// --- Queue actions, per-function flags ---

/// `QueueAction`: SIMPLE QUEUE TAG.
pub const SRB_SIMPLE_TAG_REQUEST: u8 = 0x20;
/// `QueueAction`: HEAD OF QUEUE TAG.
pub const SRB_HEAD_OF_QUEUE_TAG_REQUEST: u8 = 0x21;
/// `QueueAction`: ORDERED QUEUE TAG.
pub const SRB_ORDERED_QUEUE_TAG_REQUEST: u8 = 0x22;
/// `WMIFlags`: the WMI request is for the adapter, not a LUN.
pub const SRB_WMI_FLAGS_ADAPTER_REQUEST: u8 = 0x01;
/// `SrbPowerFlags`: the power request is for the adapter.
pub const SRB_POWER_FLAGS_ADAPTER_REQUEST: u8 = 0x01;
/// `SrbPnPFlags`: the PnP request is for the adapter.
pub const SRB_PNP_FLAGS_ADAPTER_REQUEST: u32 = 0x01;
/// `SRB_IO_CONTROL` requests: the I/O control is for the adapter.
pub const SRB_IOCTL_FLAGS_ADAPTER_REQUEST: u32 = 0x01;

// --- Extended SRB ---

/// `PORT_CONFIGURATION_INFORMATION.SrbType`: classic `SCSI_REQUEST_BLOCK`s.
pub const SRB_TYPE_SCSI_REQUEST_BLOCK: u8 = 0;
/// `PORT_CONFIGURATION_INFORMATION.SrbType`: extended `STORAGE_REQUEST_BLOCK`s.
pub const SRB_TYPE_STORAGE_REQUEST_BLOCK: u8 = 1;
/// `HW_INITIALIZATION_DATA.SrbTypeFlags`: the miniport accepts `SCSI_REQUEST_BLOCK`s.
pub const SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK: u32 = 0x1;
/// `HW_INITIALIZATION_DATA.SrbTypeFlags`: the miniport accepts `STORAGE_REQUEST_BLOCK`s.
pub const SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK: u32 = 0x2;
/// `PORT_CONFIGURATION_INFORMATION.AddressType`: bus/target/LUN addressing.
pub const STORAGE_ADDRESS_TYPE_BTL8: u8 = 0;
/// `HW_INITIALIZATION_DATA.AddressTypeFlags`: the miniport accepts BTL8 addresses.
pub const ADDRESS_TYPE_FLAG_BTL8: u32 = 0x1;
/// `STOR_ADDRESS.Type`: unknown.
pub const STOR_ADDRESS_TYPE_UNKNOWN: u16 = 0x0;
/// `STOR_ADDRESS.Type`: a `STOR_ADDR_BTL8`.
pub const STOR_ADDRESS_TYPE_BTL8: u16 = 0x1;
/// `STOR_ADDR_BTL8.AddressLength`: the four address bytes.
pub const STOR_ADDR_BTL8_ADDRESS_LENGTH: u32 = 4;
/// `StorPortStateChangeDetected` `ChangedEntity`: a logical unit's state changed.
pub const STATE_CHANGE_LUN: u32 = 0x1;
/// `StorPortStateChangeDetected` `ChangedEntity`: a target's state changed.
pub const STATE_CHANGE_TARGET: u32 = 0x2;
/// `StorPortStateChangeDetected` `ChangedEntity`: the bus (port) state changed.
pub const STATE_CHANGE_BUS: u32 = 0x4;
/// `STORAGE_REQUEST_BLOCK.Signature`: "SRBX".
pub const SRB_SIGNATURE: u32 = 0x5352_4258;
/// `STORAGE_REQUEST_BLOCK.Version`.
pub const STORAGE_REQUEST_BLOCK_VERSION_1: u32 = 0x1;
/// `SRBEX_DATA_SCSI_CDB16.Length`: the bytes after the `Type`/`Length` header (64-bit).
pub const SRBEX_DATA_SCSI_CDB16_LENGTH: u32 = 32;
/// `SRBEX_DATA_SCSI_CDB32.Length` (64-bit).
pub const SRBEX_DATA_SCSI_CDB32_LENGTH: u32 = 48;
/// The smallest `SRBEX_DATA_SCSI_CDB_VAR.Length`, without CDB bytes (64-bit).
pub const SRBEX_DATA_SCSI_CDB_VAR_LENGTH_MIN: u32 = 24;
/// `SRBEX_DATA_WMI.Length` (64-bit).
pub const SRBEX_DATA_WMI_LENGTH: u32 = 16;
/// `SRBEX_DATA_POWER.Length`.
pub const SRBEX_DATA_POWER_LENGTH: u32 = 12;
/// `SRBEX_DATA_PNP.Length`.
pub const SRBEX_DATA_PNP_LENGTH: u32 = 16;
/// `SRBEX_DATA_IO_INFO.Length`.
pub const SRBEX_DATA_IO_INFO_LENGTH: u32 = 24;

// --- Map buffers, DMA, miscellany ---

/// `MapBuffers`: never map data buffers.
pub const STOR_MAP_NO_BUFFERS: u8 = 0;
/// `MapBuffers`: map all data buffers to system virtual addresses.
pub const STOR_MAP_ALL_BUFFERS: u8 = 1;
/// `MapBuffers`: map buffers of requests other than reads and writes.
pub const STOR_MAP_NON_READ_WRITE_BUFFERS: u8 = 2;
/// `MapBuffers`: map all buffers, reads and writes included (Windows 8+).
pub const STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE: u8 = 3;
/// `Dma64BitAddresses`: the miniport supports 64-bit DMA addresses.
pub const SCSI_DMA64_MINIPORT_SUPPORTED: u8 = 0x01;
/// `Dma64BitAddresses`: the miniport supports full 64-bit addressing.
pub const SCSI_DMA64_MINIPORT_FULL64BIT_SUPPORTED: u8 = 0x02;
/// `Dma64BitAddresses`: full 64-bit addressing without a 4 GiB boundary requirement (Windows
/// 8+).
pub const SCSI_DMA64_MINIPORT_FULL64BIT_NO_BOUNDARY_REQ_SUPPORTED: u8 = 0x03;
/// `Dma64BitAddresses`: the system supports 64-bit DMA (set by the port driver).
pub const SCSI_DMA64_SYSTEM_SUPPORTED: u8 = 0x80;
/// The "not set" value of `PORT_CONFIGURATION_INFORMATION` counters.
pub const SP_UNINITIALIZED_VALUE: u32 = !0;
/// `QueueTag` of an untagged request.
pub const SP_UNTAGGED: u8 = 0xFF;
/// Maximum targets per bus (SCSIport compatibility value).
pub const SCSI_MAXIMUM_TARGETS_PER_BUS: u32 = 128;
/// Maximum LUNs per target.
pub const SCSI_MAXIMUM_LUNS_PER_TARGET: u32 = 255;
/// Maximum buses (SCSIport compatibility value).
pub const SCSI_MAXIMUM_BUSES: u32 = 8;
/// Minimum physical breaks.
pub const SCSI_MINIMUM_PHYSICAL_BREAKS: u32 = 16;
/// Maximum physical breaks (SCSIport compatibility value).
pub const SCSI_MAXIMUM_PHYSICAL_BREAKS: u32 = 255;

// --- HwStorFindAdapter results ---

/// `REG_DWORD` (winnt.h): a 32-bit little-endian registry value.
pub const REG_DWORD: u32 = 4;
/// `REG_BINARY` (winnt.h): registry bytes, stored as written.
pub const REG_BINARY: u32 = 3;

/// No adapter found.
pub const SP_RETURN_NOT_FOUND: u32 = 0;
/// Adapter found and configured.
pub const SP_RETURN_FOUND: u32 = 1;
/// Adapter found but failed.
pub const SP_RETURN_ERROR: u32 = 2;
/// Adapter found but its configuration is bad.
pub const SP_RETURN_BAD_CONFIG: u32 = 3;

// --- StorPortLogError error codes ---

/// Bus parity error.
pub const SP_BUS_PARITY_ERROR: u32 = 0x0001;
/// Unexpected disconnect.
pub const SP_UNEXPECTED_DISCONNECT: u32 = 0x0002;
/// Invalid reselection.
pub const SP_INVALID_RESELECTION: u32 = 0x0003;
/// Bus timeout.
pub const SP_BUS_TIME_OUT: u32 = 0x0004;
/// Protocol error.
pub const SP_PROTOCOL_ERROR: u32 = 0x0005;
/// Internal adapter error.
pub const SP_INTERNAL_ADAPTER_ERROR: u32 = 0x0006;
/// Request timeout.
pub const SP_REQUEST_TIMEOUT: u32 = 0x0007;
/// Interrupt not responding.
pub const SP_IRQ_NOT_RESPONDING: u32 = 0x0008;
/// Bad firmware warning.
pub const SP_BAD_FW_WARNING: u32 = 0x0009;
/// Bad firmware error.
pub const SP_BAD_FW_ERROR: u32 = 0x000a;
/// Lost WMI miniport request.
pub const SP_LOST_WMI_MINIPORT_REQUEST: u32 = 0x000b;

// --- StorPortInitializePerfOpts ---

/// `PERF_CONFIGURATION_DATA.Version` 2 (Windows 7).
pub const STOR_PERF_VERSION_2: u32 = 0x2;
/// Version 3 (Windows 8): adds the locality and completion-during-StartIo flags.
pub const STOR_PERF_VERSION_3: u32 = 0x3;
/// Version 4: adds `STOR_PERF_DPC_REDIRECTION_CURRENT_CPU`.
pub const STOR_PERF_VERSION_4: u32 = 0x4;
/// Version 5: adds `STOR_PERF_NO_SGL`.
pub const STOR_PERF_VERSION_5: u32 = 0x5;
/// Version 6.
pub const STOR_PERF_VERSION_6: u32 = 0x6;
/// Version 7.
pub const STOR_PERF_VERSION_7: u32 = 0x7;
/// Version 8.
pub const STOR_PERF_VERSION_8: u32 = 0x8;
/// `STOR_PERF_VERSION`: the current WDK's version (8). An older storport.sys rejects a version
/// it does not know (`STOR_STATUS_UNSUPPORTED_VERSION`), so a miniport that must run on older
/// Windows asks for the oldest version that has the flags it uses.
pub const STOR_PERF_VERSION: u32 = STOR_PERF_VERSION_8;
/// Spread DPC processing over the CPUs that issued the I/O.
pub const STOR_PERF_DPC_REDIRECTION: u32 = 0x0000_0001;
/// Concurrent HwStorStartIo calls (no StartIo lock), Windows 8+.
pub const STOR_PERF_CONCURRENT_CHANNELS: u32 = 0x0000_0002;
/// Interrupt redirection over a message range.
pub const STOR_PERF_INTERRUPT_MESSAGE_RANGES: u32 = 0x0000_0004;
/// Use the group/mask of the message's affinity (version 3).
pub const STOR_PERF_ADV_CONFIG_LOCALITY: u32 = 0x0000_0008;
/// The miniport completes I/O from HwStorStartIo (version 3).
pub const STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO: u32 = 0x0000_0010;
/// Redirect the DPC to the CPU that requested it (version 4).
pub const STOR_PERF_DPC_REDIRECTION_CURRENT_CPU: u32 = 0x0000_0020;
/// StorPort need not build SG lists (version 5).
pub const STOR_PERF_NO_SGL: u32 = 0x0000_0040;
/// Soft-NUMA aware redirection.
pub const STOR_PERF_SOFT_NUMA: u32 = 0x0000_0080;
/// Heterogeneous-CPU aware redirection.
pub const STOR_PERF_HETEROGENEOUS_CPU: u32 = 0x0000_0100;

// --- HW_INITIALIZATION_DATA.FeatureSupport ---

/// A virtual miniport.
pub const STOR_FEATURE_VIRTUAL_MINIPORT: u32 = 0x0000_0001;
/// ATA pass-through supported.
pub const STOR_FEATURE_ATA_PASS_THROUGH: u32 = 0x0000_0002;
/// The miniport fills the full PnP device capabilities.
pub const STOR_FEATURE_FULL_PNP_DEVICE_CAPABILITIES: u32 = 0x0000_0004;
/// The miniport handles `SRB_FUNCTION_DUMP_POINTERS`.
pub const STOR_FEATURE_DUMP_POINTERS: u32 = 0x0000_0008;
/// No device-name suffix.
pub const STOR_FEATURE_DEVICE_NAME_NO_SUFFIX: u32 = 0x0000_0010;
/// The dump miniport can resume.
pub const STOR_FEATURE_DUMP_RESUME_CAPABLE: u32 = 0x0000_0020;
/// Device descriptor from the ATA information VPD page.
pub const STOR_FEATURE_DEVICE_DESCRIPTOR_FROM_ATA_INFO_VPD: u32 = 0x0000_0040;
/// The miniport handles `SRBEX_DATA_IO_INFO`.
pub const STOR_FEATURE_EXTRA_IO_INFORMATION: u32 = 0x0000_0080;
/// HwStorAdapterControl may be called before HwStorFindAdapter.
pub const STOR_FEATURE_ADAPTER_CONTROL_PRE_FINDADAPTER: u32 = 0x0000_0100;
/// The adapter needs no I/O port resources.
pub const STOR_FEATURE_ADAPTER_NOT_REQUIRE_IO_PORT: u32 = 0x0000_0200;
/// The miniport may set the adapter interface type.
pub const STOR_FEATURE_SET_ADAPTER_INTERFACE_TYPE: u32 = 0x0000_0800;
/// The miniport handles `SRB_FUNCTION_GET_DUMP_INFO`.
pub const STOR_FEATURE_DUMP_INFO: u32 = 0x0000_1000;
/// An NVMe adapter.
pub const STOR_FEATURE_SUPPORTS_NVME_ADAPTER: u32 = 0x0000_4000;

// --- PORT_CONFIGURATION_INFORMATION.FeatureSupport and DumpMode ---

/// The adapter supports device telemetry.
pub const STOR_ADAPTER_FEATURE_DEVICE_TELEMETRY: u32 = 0x0000_0001;
/// Send STOP UNIT during power down.
pub const STOR_ADAPTER_FEATURE_STOP_UNIT_DURING_POWER_DOWN: u32 = 0x0000_0002;
/// DMA v3 preferred.
pub const STOR_ADAPTER_DMA_V3_PREFERRED: u32 = 0x0000_0008;
/// Rich temperature thresholds.
pub const STOR_ADAPTER_FEATURE_RICH_TEMPERATURE_THRESHOLD: u32 = 0x0000_0020;
/// `DumpMode`: the crash-dump instance.
pub const DUMP_MODE_CRASH: u8 = 0x01;
/// `DumpMode`: the hibernation instance.
pub const DUMP_MODE_HIBER: u8 = 0x02;
/// `DumpMode`: marking dump memory.
pub const DUMP_MODE_MARK_MEMORY: u8 = 0x03;
/// `DumpMode`: resume from hibernation.
pub const DUMP_MODE_RESUME: u8 = 0x04;

// --- IOCTL, NTSTATUS, STOR_STATUS ---

/// `IOCTL_SCSI_MINIPORT`: `CTL_CODE(IOCTL_SCSI_BASE, 0x0402, METHOD_BUFFERED,
/// FILE_READ_ACCESS | FILE_WRITE_ACCESS)`.
pub const IOCTL_SCSI_MINIPORT: u32 = 0x0004_D008;
/// `FILE_DEVICE_SCSI` (scsi.h): the device type in the `IOCTL_SCSI_MINIPORT_*` control codes
/// that travel in `SRB_IO_CONTROL.ControlCode`.
pub const FILE_DEVICE_SCSI: u32 = 0x0000_001B;
/// `IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE` (scsi.h, "CLUSTER support"):
/// `(FILE_DEVICE_SCSI << 16) + 0x0520`, sent with signature "CLUSDISK" by the cluster disk
/// stack; a miniport that *succeeds* it declares its disks unfit for the quorum.
pub const IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE: u32 = (FILE_DEVICE_SCSI << 16) + 0x0520;
/// `IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE` (scsi.h): `(FILE_DEVICE_SCSI << 16) + 0x0521`; a
/// miniport that *succeeds* it declares its disks unfit for a cluster.
pub const IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE: u32 = (FILE_DEVICE_SCSI << 16) + 0x0521;

/// Success.
pub const STATUS_SUCCESS: NtStatus = 0;
/// The operation is pending.
pub const STATUS_PENDING: NtStatus = 0x0000_0103;
/// The device is busy (a warning status).
pub const STATUS_DEVICE_BUSY: NtStatus = 0x8000_0011_u32.cast_signed();
/// Unsuccessful.
pub const STATUS_UNSUCCESSFUL: NtStatus = 0xC000_0001_u32.cast_signed();
/// Not implemented.
pub const STATUS_NOT_IMPLEMENTED: NtStatus = 0xC000_0002_u32.cast_signed();
/// An invalid parameter.
pub const STATUS_INVALID_PARAMETER: NtStatus = 0xC000_000D_u32.cast_signed();
/// The request is invalid for this device.
pub const STATUS_INVALID_DEVICE_REQUEST: NtStatus = 0xC000_0010_u32.cast_signed();
/// The buffer is too small.
pub const STATUS_BUFFER_TOO_SMALL: NtStatus = 0xC000_0023_u32.cast_signed();
/// Insufficient resources.
pub const STATUS_INSUFFICIENT_RESOURCES: NtStatus = 0xC000_009A_u32.cast_signed();
/// The device is not ready.
pub const STATUS_DEVICE_NOT_READY: NtStatus = 0xC000_00A3_u32.cast_signed();
/// An I/O timed out.
pub const STATUS_IO_TIMEOUT: NtStatus = 0xC000_00B5_u32.cast_signed();
/// Not supported.
pub const STATUS_NOT_SUPPORTED: NtStatus = 0xC000_00BB_u32.cast_signed();

/// `StorPortExtendedFunction` result: success.
pub const STOR_STATUS_SUCCESS: u32 = 0x0000_0000;
/// Unsuccessful.
pub const STOR_STATUS_UNSUCCESSFUL: u32 = 0xC100_0001;
/// The function is not implemented (an older storport.sys).
pub const STOR_STATUS_NOT_IMPLEMENTED: u32 = 0xC100_0002;
/// Insufficient resources.
pub const STOR_STATUS_INSUFFICIENT_RESOURCES: u32 = 0xC100_0003;
/// The buffer is too small.
pub const STOR_STATUS_BUFFER_TOO_SMALL: u32 = 0xC100_0004;
/// Access denied.
pub const STOR_STATUS_ACCESS_DENIED: u32 = 0xC100_0005;
/// An invalid parameter.
pub const STOR_STATUS_INVALID_PARAMETER: u32 = 0xC100_0006;
/// The request is invalid for the device.
pub const STOR_STATUS_INVALID_DEVICE_REQUEST: u32 = 0xC100_0007;
/// Called at the wrong IRQL.
pub const STOR_STATUS_INVALID_IRQL: u32 = 0xC100_0008;
/// The device is in the wrong state.
pub const STOR_STATUS_INVALID_DEVICE_STATE: u32 = 0xC100_0009;
/// The buffer size is invalid.
pub const STOR_STATUS_INVALID_BUFFER_SIZE: u32 = 0xC100_000A;
/// The structure version is not supported.
pub const STOR_STATUS_UNSUPPORTED_VERSION: u32 = 0xC100_000B;
/// Busy.
pub const STOR_STATUS_BUSY: u32 = 0xC100_000C;
/// The request was throttled.
pub const STOR_STATUS_THROTTLED_REQUEST: u32 = 0xC100_000D;
/// Timed out.
pub const STOR_STATUS_TIMEOUT: u32 = 0xC100_000E;
/// Invalid data.
pub const STOR_STATUS_INVALID_DATA: u32 = 0xC100_000F;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srb_status_strips_exactly_the_two_flag_bits() {
        for status in 0..=u8::MAX {
            let stripped = srb_status(status);
            assert_eq!(stripped, status & 0x3F, "{status:#x}");
            assert_eq!(
                stripped | (status & (SRB_STATUS_AUTOSENSE_VALID | SRB_STATUS_QUEUE_FROZEN)),
                status
            );
        }
        assert_eq!(
            srb_status(SRB_STATUS_ERROR | SRB_STATUS_AUTOSENSE_VALID),
            SRB_STATUS_ERROR
        );
        assert_eq!(
            srb_status(SRB_STATUS_BUSY | SRB_STATUS_QUEUE_FROZEN),
            SRB_STATUS_BUSY
        );
    }

    #[test]
    fn documented_values_that_mingw_does_not_define() {
        // Values from Microsoft's storport.h/srb.h reference pages (not in mingw-w64 10).
        let table: &[(&str, u64, u64)] = &[
            (
                "SRB_FUNCTION_STORAGE_REQUEST_BLOCK",
                SRB_FUNCTION_STORAGE_REQUEST_BLOCK.into(),
                0x28,
            ),
            (
                "SRB_SIGNATURE",
                SRB_SIGNATURE.into(),
                u32::from_be_bytes(*b"SRBX").into(),
            ),
            (
                "STORAGE_REQUEST_BLOCK_VERSION_1",
                STORAGE_REQUEST_BLOCK_VERSION_1.into(),
                1,
            ),
            (
                "SRB_TYPE_STORAGE_REQUEST_BLOCK",
                SRB_TYPE_STORAGE_REQUEST_BLOCK.into(),
                1,
            ),
            (
                "SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK",
                SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK.into(),
                2,
            ),
            ("STOR_ADDRESS_TYPE_BTL8", STOR_ADDRESS_TYPE_BTL8.into(), 1),
            (
                "STORAGE_ADDRESS_TYPE_BTL8",
                STORAGE_ADDRESS_TYPE_BTL8.into(),
                0,
            ),
            ("STOR_MAP_ALL_BUFFERS", STOR_MAP_ALL_BUFFERS.into(), 1),
            (
                "STOR_MAP_NON_READ_WRITE_BUFFERS",
                STOR_MAP_NON_READ_WRITE_BUFFERS.into(),
                2,
            ),
            (
                "STOR_PERF_DPC_REDIRECTION",
                STOR_PERF_DPC_REDIRECTION.into(),
                1,
            ),
            (
                "STOR_PERF_CONCURRENT_CHANNELS",
                STOR_PERF_CONCURRENT_CHANNELS.into(),
                2,
            ),
            (
                "STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO",
                STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO.into(),
                0x10,
            ),
            (
                "STOR_STATUS_NOT_IMPLEMENTED",
                STOR_STATUS_NOT_IMPLEMENTED.into(),
                0xC100_0002,
            ),
            (
                "IOCTL_SCSI_MINIPORT",
                IOCTL_SCSI_MINIPORT.into(),
                (4 << 16) | (3 << 14) | (0x402 << 2),
            ),
        ];
        for (name, actual, documented) in table {
            assert_eq!(actual, documented, "{name}");
        }
    }

    #[test]
    fn direction_flags_partition_the_two_bits() {
        assert_eq!(
            SRB_FLAGS_UNSPECIFIED_DIRECTION,
            SRB_FLAGS_DATA_IN | SRB_FLAGS_DATA_OUT
        );
        assert_eq!(SRB_FLAGS_DATA_IN & SRB_FLAGS_DATA_OUT, 0);
        assert_eq!(
            SRB_FLAGS_NO_DATA_TRANSFER & SRB_FLAGS_UNSPECIFIED_DIRECTION,
            0
        );
    }

    #[test]
    fn ntstatus_errors_are_negative_and_warnings_too() {
        for status in [
            STATUS_UNSUCCESSFUL,
            STATUS_INVALID_PARAMETER,
            STATUS_INSUFFICIENT_RESOURCES,
            STATUS_DEVICE_BUSY,
        ] {
            assert!(status < 0, "{status:#x}");
        }
        assert_eq!(STATUS_UNSUCCESSFUL.cast_unsigned(), 0xC000_0001);
        const { assert!(STATUS_PENDING > 0) };
    }
}
