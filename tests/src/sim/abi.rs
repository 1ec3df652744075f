//! The simulator's own view of the StorPort C layouts (x64), derived independently from the WDK
//! headers (storport.h, srb.h) so that a layout error in the miniport's bindings shows up as a
//! disagreement instead of being shared by both sides.
//!
//! Pointers are `u64` here: the simulator only moves them around as addresses, and plain integers
//! keep these types `zerocopy`-serialisable, so building and parsing SRBs needs no `unsafe`.
#![forbid(unsafe_code)]
#![expect(
    missing_docs,
    reason = "fields keep the WDK member names (snake_cased); the WDK documents each of them"
)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `NTSTATUS` STATUS_SUCCESS.
pub const STATUS_SUCCESS: i32 = 0;
/// `NTSTATUS` STATUS_REVISION_MISMATCH, returned by StorPortInitialize for a bad structure size.
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are defined as bit patterns"
)]
pub const STATUS_REVISION_MISMATCH: i32 = 0xC000_0059_u32 as i32;
/// `REG_DWORD` (winnt.h).
pub const REG_DWORD: u32 = 4;
/// `NTSTATUS` STATUS_INVALID_PARAMETER.
#[expect(
    clippy::cast_possible_wrap,
    reason = "NTSTATUS values are defined as bit patterns"
)]
pub const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;

/// STOR_STATUS_SUCCESS (StorPortExtendedFunction result).
pub const STOR_STATUS_SUCCESS: u32 = 0;
/// STOR_STATUS_UNSUCCESSFUL.
pub const STOR_STATUS_UNSUCCESSFUL: u32 = 0xC100_0001;
/// STOR_STATUS_NOT_IMPLEMENTED.
pub const STOR_STATUS_NOT_IMPLEMENTED: u32 = 0xC100_0002;
/// STOR_STATUS_BUFFER_TOO_SMALL.
pub const STOR_STATUS_BUFFER_TOO_SMALL: u32 = 0xC100_0004;
/// STOR_STATUS_INVALID_PARAMETER.
pub const STOR_STATUS_INVALID_PARAMETER: u32 = 0xC100_0006;
/// STOR_STATUS_BUSY (a previous StorPortStateChangeDetected is still being processed).
pub const STOR_STATUS_BUSY: u32 = 0xC100_000C;
/// StorPortStateChangeDetected ChangedEntity: a logical unit.
pub const STATE_CHANGE_LUN: u32 = 0x1;
/// StorPortStateChangeDetected ChangedEntity: a target.
pub const STATE_CHANGE_TARGET: u32 = 0x2;
/// StorPortStateChangeDetected ChangedEntity: the bus.
pub const STATE_CHANGE_BUS: u32 = 0x4;

/// INTERFACE_TYPE PCIBus.
pub const PCI_BUS: u32 = 5;
/// BUS_DATA_TYPE PCIConfiguration.
pub const PCI_CONFIGURATION: u32 = 4;
/// KINTERRUPT_MODE Latched (message-signalled interrupts are edge/latched).
pub const LATCHED: u32 = 1;
/// KINTERRUPT_MODE LevelSensitive (INTx).
pub const LEVEL_SENSITIVE: u32 = 0;
/// SP_UNINITIALIZED_VALUE.
pub const SP_UNINITIALIZED_VALUE: u32 = u32::MAX;
/// SP_UNTAGGED, the wildcard for StorPortCompleteRequest's target and LUN.
pub const SP_UNTAGGED: u8 = 0xFF;
/// SCSI_DMA64_SYSTEM_SUPPORTED.
pub const SCSI_DMA64_SYSTEM_SUPPORTED: u8 = 0x80;
/// SCSI_DMA64_MINIPORT_SUPPORTED.
pub const SCSI_DMA64_MINIPORT_SUPPORTED: u8 = 0x01;
/// SP_RETURN_FOUND.
pub const SP_RETURN_FOUND: u32 = 1;
/// SP_RETURN_ERROR.
pub const SP_RETURN_ERROR: u32 = 2;
/// `PORT_CONFIGURATION_INFORMATION.DumpMode` DUMP_MODE_CRASH.
pub const DUMP_MODE_CRASH: u8 = 1;
/// DUMP_MODE_HIBER.
pub const DUMP_MODE_HIBER: u8 = 2;

/// INTERRUPT_SYNCHRONIZATION_MODE InterruptSupportNone.
pub const INTERRUPT_SUPPORT_NONE: u32 = 0;
/// INTERRUPT_SYNCHRONIZATION_MODE InterruptSynchronizeAll.
pub const INTERRUPT_SYNCHRONIZE_ALL: u32 = 1;
/// INTERRUPT_SYNCHRONIZATION_MODE InterruptSynchronizePerMessage.
pub const INTERRUPT_SYNCHRONIZE_PER_MESSAGE: u32 = 2;

/// SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK.
pub const SRB_TYPE_FLAG_SCSI_REQUEST_BLOCK: u32 = 0x1;
/// SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK.
pub const SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK: u32 = 0x2;
/// SRB_TYPE_SCSI_REQUEST_BLOCK (PORT_CONFIGURATION_INFORMATION.SrbType).
pub const SRB_TYPE_SCSI_REQUEST_BLOCK: u8 = 0;
/// SRB_TYPE_STORAGE_REQUEST_BLOCK.
pub const SRB_TYPE_STORAGE_REQUEST_BLOCK: u8 = 1;
/// STORAGE_ADDRESS_TYPE_BTL8 (PORT_CONFIGURATION_INFORMATION.AddressType).
pub const STORAGE_ADDRESS_TYPE_BTL8: u8 = 0;
/// STOR_ADDRESS_TYPE_BTL8 (STOR_ADDR_BTL8.Type).
pub const STOR_ADDRESS_TYPE_BTL8: u16 = 1;
/// STOR_ADDR_BTL8_ADDRESS_LENGTH.
pub const STOR_ADDR_BTL8_ADDRESS_LENGTH: u32 = 4;
/// SRB_SIGNATURE ("SRBX").
pub const SRB_SIGNATURE: u32 = 0x5352_4258;
/// STORAGE_REQUEST_BLOCK_VERSION_1.
pub const STORAGE_REQUEST_BLOCK_VERSION_1: u32 = 1;
/// SrbExDataTypeScsiCdb16.
pub const SRBEX_DATA_TYPE_SCSI_CDB16: u32 = 0x40;
/// SrbExDataTypeScsiCdb32.
pub const SRBEX_DATA_TYPE_SCSI_CDB32: u32 = 0x41;

/// SRB_FUNCTION_EXECUTE_SCSI.
pub const SRB_FUNCTION_EXECUTE_SCSI: u8 = 0x00;
/// SRB_FUNCTION_STORAGE_REQUEST_BLOCK.
pub const SRB_FUNCTION_STORAGE_REQUEST_BLOCK: u8 = 0x28;
/// `SRB_FUNCTION_ABORT_COMMAND`: abort the request NextSrb points to.
pub const SRB_FUNCTION_ABORT_COMMAND: u8 = 0x10;
/// `SRB_FUNCTION_RESET_BUS`.
pub const SRB_FUNCTION_RESET_BUS: u8 = 0x12;
/// `SRB_FUNCTION_RESET_DEVICE`: reset the target (every LUN).
pub const SRB_FUNCTION_RESET_DEVICE: u8 = 0x13;
/// `SRB_FUNCTION_RESET_LOGICAL_UNIT`.
pub const SRB_FUNCTION_RESET_LOGICAL_UNIT: u8 = 0x20;

/// SRB_STATUS_PENDING.
pub const SRB_STATUS_PENDING: u8 = 0x00;
/// SRB_STATUS_SUCCESS.
pub const SRB_STATUS_SUCCESS: u8 = 0x01;
/// SRB_STATUS_BUSY: StorPort sends the request again.
pub const SRB_STATUS_BUSY: u8 = 0x05;
/// SRB_STATUS_BUS_RESET.
pub const SRB_STATUS_BUS_RESET: u8 = 0x0E;
/// SRB_STATUS_DATA_OVERRUN (also an underrun: data valid up to DataTransferLength).
pub const SRB_STATUS_DATA_OVERRUN: u8 = 0x12;
/// SRB_STATUS_AUTOSENSE_VALID.
pub const SRB_STATUS_AUTOSENSE_VALID: u8 = 0x80;
/// SRB_STATUS_QUEUE_FROZEN.
pub const SRB_STATUS_QUEUE_FROZEN: u8 = 0x40;

/// SRB_FLAGS_QUEUE_ACTION_ENABLE.
pub const SRB_FLAGS_QUEUE_ACTION_ENABLE: u32 = 0x0000_0002;
/// SRB_FLAGS_DISABLE_AUTOSENSE.
pub const SRB_FLAGS_DISABLE_AUTOSENSE: u32 = 0x0000_0020;
/// SRB_FLAGS_DATA_IN.
pub const SRB_FLAGS_DATA_IN: u32 = 0x0000_0040;
/// SRB_FLAGS_DATA_OUT.
pub const SRB_FLAGS_DATA_OUT: u32 = 0x0000_0080;
/// SRB_SIMPLE_TAG_REQUEST.
pub const SRB_SIMPLE_TAG_REQUEST: u8 = 0x20;

/// STOR_SPINLOCK DpcLock.
pub const DPC_LOCK: u32 = 1;
/// STOR_SPINLOCK StartIoLock.
pub const START_IO_LOCK: u32 = 2;
/// STOR_SPINLOCK InterruptLock.
pub const INTERRUPT_LOCK: u32 = 3;

/// STOR_PERF_DPC_REDIRECTION.
pub const STOR_PERF_DPC_REDIRECTION: u32 = 0x01;
/// STOR_PERF_CONCURRENT_CHANNELS.
pub const STOR_PERF_CONCURRENT_CHANNELS: u32 = 0x02;
/// STOR_PERF_INTERRUPT_MESSAGE_RANGES.
pub const STOR_PERF_INTERRUPT_MESSAGE_RANGES: u32 = 0x04;
/// STOR_PERF_ADV_CONFIG_LOCALITY.
pub const STOR_PERF_ADV_CONFIG_LOCALITY: u32 = 0x08;
/// STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO.
pub const STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO: u32 = 0x10;
/// STOR_PERF_DPC_REDIRECTION_CURRENT_CPU.
pub const STOR_PERF_DPC_REDIRECTION_CURRENT_CPU: u32 = 0x20;
/// The optimisations this simulator implements and reports on a query.
pub const STOR_PERF_SUPPORTED: u32 = STOR_PERF_DPC_REDIRECTION
    | STOR_PERF_CONCURRENT_CHANNELS
    | STOR_PERF_INTERRUPT_MESSAGE_RANGES
    | STOR_PERF_ADV_CONFIG_LOCALITY
    | STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO
    | STOR_PERF_DPC_REDIRECTION_CURRENT_CPU;

/// SCSI_ADAPTER_CONTROL_TYPE ScsiQuerySupportedControlTypes.
pub const SCSI_QUERY_SUPPORTED_CONTROL_TYPES: u32 = 0;
/// ScsiStopAdapter.
pub const SCSI_STOP_ADAPTER: u32 = 1;
/// ScsiRestartAdapter.
pub const SCSI_RESTART_ADAPTER: u32 = 2;
/// ScsiAdapterControlMax as the simulator offers it (the types up to ScsiSetRunningConfig).
pub const SCSI_ADAPTER_CONTROL_MAX: u32 = 5;
/// ScsiAdapterControlSuccess.
pub const SCSI_ADAPTER_CONTROL_SUCCESS: u32 = 0;

/// SCSI_UNIT_CONTROL_TYPE ScsiQuerySupportedUnitControlTypes.
pub const SCSI_QUERY_SUPPORTED_UNIT_CONTROL_TYPES: u32 = 0;
/// ScsiUnitStart: Parameters is the unit's STOR_ADDR_BTL8.
pub const SCSI_UNIT_START: u32 = 2;
/// ScsiUnitPower.
pub const SCSI_UNIT_POWER: u32 = 3;
/// ScsiUnitRemove: Parameters is the unit's STOR_ADDR_BTL8.
pub const SCSI_UNIT_REMOVE: u32 = 9;
/// ScsiUnitSurpriseRemoval: Parameters is the unit's STOR_ADDR_BTL8.
pub const SCSI_UNIT_SURPRISE_REMOVAL: u32 = 10;
/// ScsiUnitControlMax as a current storport.h has it (after ScsiUnitKsrPowerDown, 15): the
/// `MaxControlType` the simulator's query passes, larger than what older miniports know.
pub const SCSI_UNIT_CONTROL_MAX: u32 = 16;
/// ScsiUnitControlSuccess.
pub const SCSI_UNIT_CONTROL_SUCCESS: u32 = 0;
/// ScsiUnitControlUnsuccessful.
pub const SCSI_UNIT_CONTROL_UNSUCCESSFUL: u32 = 1;

/// HW_INITIALIZATION_DATA up to and including HwBuildIo (the Windows Server 2003 size).
pub const HW_INITIALIZATION_DATA_SIZE_V1: u32 = 136;

/// HW_INITIALIZATION_DATA (storport.h), x64, with every callback as an address.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HwInitializationData {
    pub hw_initialization_data_size: u32,
    pub adapter_interface_type: u32,
    pub hw_initialize: u64,
    pub hw_start_io: u64,
    pub hw_interrupt: u64,
    pub hw_find_adapter: u64,
    pub hw_reset_bus: u64,
    pub hw_dma_started: u64,
    pub hw_adapter_state: u64,
    pub device_extension_size: u32,
    pub specific_lu_extension_size: u32,
    pub srb_extension_size: u32,
    pub number_of_access_ranges: u32,
    pub reserved: u64,
    pub map_buffers: u8,
    pub need_physical_addresses: u8,
    pub tagged_queuing: u8,
    pub auto_request_sense: u8,
    pub multiple_request_per_lu: u8,
    pub receive_event: u8,
    pub vendor_id_length: u16,
    pub vendor_id: u64,
    pub reserved_ushort: u16,
    pub device_id_length: u16,
    pub padding: u32,
    pub device_id: u64,
    pub hw_adapter_control: u64,
    pub hw_build_io: u64,
    pub hw_free_adapter_resources: u64,
    pub hw_process_service_request: u64,
    pub hw_complete_service_irp: u64,
    pub hw_initialize_tracing: u64,
    pub hw_cleanup_tracing: u64,
    pub hw_tracing_enabled: u64,
    pub feature_support: u32,
    pub srb_type_flags: u32,
    pub address_type_flags: u32,
    pub reserved1: u32,
    pub hw_unit_control: u64,
}
const _: () = assert!(size_of::<HwInitializationData>() == 208);
const _: () = assert!(core::mem::offset_of!(HwInitializationData, hw_build_io) + 8 == 136);

/// ACCESS_RANGE, x64.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AccessRange {
    pub range_start: u64,
    pub range_length: u32,
    pub range_in_memory: u8,
    pub padding: [u8; 3],
}
const _: () = assert!(size_of::<AccessRange>() == 16);

/// PORT_CONFIGURATION_INFORMATION (Windows 10 layout), x64.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PortConfigurationInformation {
    pub length: u32,
    pub system_io_bus_number: u32,
    pub adapter_interface_type: u32,
    pub bus_interrupt_level: u32,
    pub bus_interrupt_vector: u32,
    pub interrupt_mode: u32,
    pub maximum_transfer_length: u32,
    pub number_of_physical_breaks: u32,
    pub dma_channel: u32,
    pub dma_port: u32,
    pub dma_width: u32,
    pub dma_speed: u32,
    pub alignment_mask: u32,
    pub number_of_access_ranges: u32,
    pub access_ranges: u64,
    pub reserved: u64,
    pub number_of_buses: u8,
    pub initiator_bus_id: [u8; 8],
    pub scatter_gather: u8,
    pub master: u8,
    pub caches_data: u8,
    pub adapter_scans_down: u8,
    pub atdisk_primary_claimed: u8,
    pub atdisk_secondary_claimed: u8,
    pub dma32_bit_addresses: u8,
    pub demand_mode: u8,
    pub map_buffers: u8,
    pub need_physical_addresses: u8,
    pub tagged_queuing: u8,
    pub auto_request_sense: u8,
    pub multiple_request_per_lu: u8,
    pub receive_event: u8,
    pub real_mode_initialized: u8,
    pub buffer_access_scsi_port_controlled: u8,
    pub maximum_number_of_targets: u8,
    pub srb_type: u8,
    pub address_type: u8,
    pub slot_number: u32,
    pub bus_interrupt_level2: u32,
    pub bus_interrupt_vector2: u32,
    pub interrupt_mode2: u32,
    pub dma_channel2: u32,
    pub dma_port2: u32,
    pub dma_width2: u32,
    pub dma_speed2: u32,
    pub device_extension_size: u32,
    pub specific_lu_extension_size: u32,
    pub srb_extension_size: u32,
    pub dma64_bit_addresses: u8,
    pub reset_target_supported: u8,
    pub maximum_number_of_logical_units: u8,
    pub wmi_data_provider: u8,
    pub synchronization_model: u32,
    pub hw_ms_interrupt_routine: u64,
    pub interrupt_synchronization_mode: u32,
    pub padding1: u32,
    pub dump_region_virtual_base: u64,
    pub dump_region_physical_base: u64,
    pub dump_region_length: u32,
    pub padding_dump_region: u32,
    pub requested_dump_buffer_size: u32,
    pub virtual_device: u8,
    pub dump_mode: u8,
    pub dma_address_width: u8,
    pub padding2: u8,
    pub extended_flags1: u32,
    pub max_number_of_io: u32,
    pub max_ios_per_lun: u32,
    pub initial_lun_queue_depth: u32,
    pub bus_reset_hold_time: u32,
    pub feature_support: u32,
}
const _: () = assert!(size_of::<PortConfigurationInformation>() == 224);
const _: () =
    assert!(core::mem::offset_of!(PortConfigurationInformation, hw_ms_interrupt_routine) == 152);
const _: () = assert!(core::mem::offset_of!(PortConfigurationInformation, feature_support) == 220);

/// The C `sizeof(PORT_CONFIGURATION_INFORMATION)` (Windows 10 layout, x64).
pub const PORT_CONFIGURATION_INFORMATION_SIZE: u32 = 224;

/// SCSI_REQUEST_BLOCK, x64.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ScsiRequestBlock {
    pub length: u16,
    pub function: u8,
    pub srb_status: u8,
    pub scsi_status: u8,
    pub path_id: u8,
    pub target_id: u8,
    pub lun: u8,
    pub queue_tag: u8,
    pub queue_action: u8,
    pub cdb_length: u8,
    pub sense_info_buffer_length: u8,
    pub srb_flags: u32,
    pub data_transfer_length: u32,
    pub time_out_value: u32,
    pub data_buffer: u64,
    pub sense_info_buffer: u64,
    pub next_srb: u64,
    pub original_request: u64,
    pub srb_extension: u64,
    pub internal_status: u32,
    pub reserved: u32,
    pub cdb: [u8; 16],
}
const _: () = assert!(size_of::<ScsiRequestBlock>() == 0x58);

/// STORAGE_REQUEST_BLOCK (srb.h, Windows 8+), x64, with one SrbExDataOffset entry.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StorageRequestBlock {
    pub length: u16,
    pub function: u8,
    pub srb_status: u8,
    pub reserved_ulong1: u32,
    pub signature: u32,
    pub version: u32,
    pub srb_length: u32,
    pub srb_function: u32,
    pub srb_flags: u32,
    pub reserved_ulong2: u32,
    pub request_tag: u32,
    pub request_priority: u16,
    pub request_attribute: u16,
    pub time_out_value: u32,
    pub system_status: u32,
    pub zero_guard1: u32,
    pub address_offset: u32,
    pub num_srb_ex_data: u32,
    pub data_transfer_length: u32,
    pub data_buffer: u64,
    pub zero_guard2: u64,
    pub original_request: u64,
    pub class_context: u64,
    pub port_context: u64,
    pub miniport_context: u64,
    pub next_srb: u64,
    pub srb_ex_data_offset: [u32; 1],
    pub padding: u32,
}
const _: () = assert!(size_of::<StorageRequestBlock>() == 128);
const _: () = assert!(core::mem::offset_of!(StorageRequestBlock, srb_ex_data_offset) == 120);

impl StorageRequestBlock {
    /// The header of an SRB_EX of `srb_length` bytes for `srb_function`, with the fields that
    /// make it one (Length, Function, Signature, Version) as the class driver sets them, and
    /// every other field zero.
    #[must_use]
    pub fn new(srb_length: usize, srb_function: u8) -> Self {
        Self {
            length: STORAGE_REQUEST_BLOCK_HEADER_LENGTH,
            function: SRB_FUNCTION_STORAGE_REQUEST_BLOCK,
            signature: SRB_SIGNATURE,
            version: STORAGE_REQUEST_BLOCK_VERSION_1,
            srb_length: srb_length as u32,
            srb_function: u32::from(srb_function),
            ..Self::default()
        }
    }
}

/// FIELD_OFFSET(STORAGE_REQUEST_BLOCK, Signature): what the class driver stores in `Length`.
pub const STORAGE_REQUEST_BLOCK_HEADER_LENGTH: u16 = 8;

/// STOR_ADDR_BTL8 (8-byte aligned on x64, so it occupies 16 bytes in an SRB).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StorAddrBtl8 {
    pub address_type: u16,
    pub port: u16,
    pub address_length: u32,
    pub path: u8,
    pub target: u8,
    pub lun: u8,
    pub reserved: u8,
    pub padding: u32,
}
const _: () = assert!(size_of::<StorAddrBtl8>() == 16);

impl StorAddrBtl8 {
    /// The address of `path`/`target`/`lun`.
    #[must_use]
    pub fn new(path: u8, target: u8, lun: u8) -> Self {
        Self {
            address_type: STOR_ADDRESS_TYPE_BTL8,
            address_length: STOR_ADDR_BTL8_ADDRESS_LENGTH,
            path,
            target,
            lun,
            ..Self::default()
        }
    }
}

macro_rules! srbex_data_scsi_cdb {
    ($(#[$doc:meta])* $name:ident, $cdb:literal, $size:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
        #[repr(C)]
        pub struct $name {
            pub data_type: u32,
            pub length: u32,
            pub scsi_status: u8,
            pub sense_info_buffer_length: u8,
            pub cdb_length: u8,
            pub reserved: u8,
            pub reserved1: u32,
            pub sense_info_buffer: u64,
            pub cdb: [u8; $cdb],
        }
        const _: () = assert!(size_of::<$name>() == $size);
    };
}
srbex_data_scsi_cdb!(
    /// SRBEX_DATA_SCSI_CDB16, x64.
    SrbExDataScsiCdb16,
    16,
    40
);
srbex_data_scsi_cdb!(
    /// SRBEX_DATA_SCSI_CDB32, x64.
    SrbExDataScsiCdb32,
    32,
    56
);

/// SRBEX_DATA_SCSI_CDB16_LENGTH: the block's size less its Type and Length fields.
pub const SRBEX_DATA_SCSI_CDB16_LENGTH: u32 = 32;
/// SRBEX_DATA_SCSI_CDB32_LENGTH.
pub const SRBEX_DATA_SCSI_CDB32_LENGTH: u32 = 48;

/// SRB_FUNCTION_WMI.
pub const SRB_FUNCTION_WMI: u8 = 0x17;
/// SRB_WMI_FLAGS_ADAPTER_REQUEST (WMIFlags: the request is for the adapter, not a LUN).
pub const SRB_WMI_FLAGS_ADAPTER_REQUEST: u8 = 0x01;
/// SrbExDataTypeWmi.
pub const SRBEX_DATA_TYPE_WMI: u32 = 0x60;
/// SRBEX_DATA_WMI_LENGTH: the block's size less its Type and Length fields (x64).
pub const SRBEX_DATA_WMI_LENGTH: u32 = 16;

/// SCSI_WMI_REQUEST_BLOCK (srb.h), x64: the classic SRB of SRB_FUNCTION_WMI.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ScsiWmiRequestBlock {
    pub length: u16,
    pub function: u8,
    pub srb_status: u8,
    pub wmi_sub_function: u8,
    pub path_id: u8,
    pub target_id: u8,
    pub lun: u8,
    pub reserved1: u8,
    pub wmi_flags: u8,
    pub reserved2: [u8; 2],
    pub srb_flags: u32,
    pub data_transfer_length: u32,
    pub time_out_value: u32,
    pub data_buffer: u64,
    pub data_path: u64,
    pub reserved3: u64,
    pub original_request: u64,
    pub srb_extension: u64,
    pub reserved4: u32,
    pub reserved6: u32,
    pub reserved5: [u8; 16],
}
const _: () = assert!(size_of::<ScsiWmiRequestBlock>() == 0x58);
const _: () = assert!(core::mem::offset_of!(ScsiWmiRequestBlock, data_path) == 32);

/// SRBEX_DATA_WMI (srb.h), x64.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SrbExDataWmi {
    pub data_type: u32,
    pub length: u32,
    pub wmi_sub_function: u8,
    pub wmi_flags: u8,
    pub reserved: [u8; 2],
    pub reserved1: u32,
    pub data_path: u64,
}
const _: () = assert!(size_of::<SrbExDataWmi>() == 24);

/// SRB_FUNCTION_IO_CONTROL: IOCTL_SCSI_MINIPORT, DataBuffer holds SRB_IO_CONTROL + payload.
pub const SRB_FUNCTION_IO_CONTROL: u8 = 0x02;
/// SRB_FLAGS_NO_QUEUE_FREEZE.
pub const SRB_FLAGS_NO_QUEUE_FREEZE: u32 = 0x0000_0100;

/// SRB_IO_CONTROL (ntddscsi.h): the header of an IOCTL_SCSI_MINIPORT buffer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SrbIoControl {
    pub header_length: u32,
    pub signature: [u8; 8],
    pub timeout: u32,
    pub control_code: u32,
    pub return_code: u32,
    pub length: u32,
}
const _: () = assert!(size_of::<SrbIoControl>() == 28);

/// The first two fields of any SRBEX_DATA block.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SrbExDataHeader {
    pub data_type: u32,
    pub length: u32,
}

/// STOR_SCATTER_GATHER_LIST header, x64.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StorScatterGatherListHeader {
    pub number_of_elements: u32,
    pub padding: u32,
    pub reserved: u64,
}
const _: () = assert!(size_of::<StorScatterGatherListHeader>() == 16);

/// STOR_SCATTER_GATHER_ELEMENT, x64.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StorScatterGatherElement {
    pub physical_address: u64,
    pub length: u32,
    pub padding: u32,
    pub reserved: u64,
}
const _: () = assert!(size_of::<StorScatterGatherElement>() == 24);

/// MESSAGE_INTERRUPT_INFORMATION, x64.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MessageInterruptInformation {
    pub message_id: u32,
    pub message_data: u32,
    pub message_address: u64,
    pub interrupt_vector: u32,
    pub interrupt_level: u32,
    pub interrupt_mode: u32,
    pub padding: u32,
}
const _: () = assert!(size_of::<MessageInterruptInformation>() == 32);

/// STARTIO_PERFORMANCE_PARAMETERS (storport.h).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartioPerformanceParameters {
    pub version: u32,
    pub size: u32,
    pub message_number: u32,
    pub channel_number: u32,
}
const _: () = assert!(size_of::<StartioPerformanceParameters>() == 16);

/// PERF_CONFIGURATION_DATA up to MessageTargets (STOR_PERF_VERSION_2..4), x64.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PerfConfigurationData {
    pub version: u32,
    pub size: u32,
    pub flags: u32,
    pub concurrent_channels: u32,
    pub first_redirection_message_number: u32,
    pub last_redirection_message_number: u32,
    pub device_node: u32,
    pub reserved: u32,
    pub message_targets: u64,
}
const _: () = assert!(size_of::<PerfConfigurationData>() == 40);

/// STOR_LOCK_HANDLE, x64. The simulator keeps the lock's identity in `lock_queue_lock`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StorLockHandle {
    pub lock: u32,
    pub padding: u32,
    pub lock_queue_next: u64,
    pub lock_queue_lock: u64,
    pub old_irql: u8,
    pub padding2: [u8; 7],
}
const _: () = assert!(size_of::<StorLockHandle>() == 32);

/// STOR_DPC (a KDPC-sized buffer plus the DPC's spin lock), x64.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StorDpc {
    pub dpc_type: i16,
    pub number: u8,
    pub importance: u8,
    pub padding: u32,
    pub list_f: u64,
    pub list_b: u64,
    pub deferred_routine: u64,
    pub deferred_context: u64,
    pub system_argument1: u64,
    pub system_argument2: u64,
    pub dpc_data: u64,
    pub lock: u64,
}
const _: () = assert!(size_of::<StorDpc>() == 72);

/// PROCESSOR_NUMBER.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ProcessorNumber {
    pub group: u16,
    pub number: u8,
    pub reserved: u8,
}

/// GROUP_AFFINITY, x64.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GroupAffinity {
    pub mask: u64,
    pub group: u16,
    pub reserved: [u16; 3],
}
const _: () = assert!(size_of::<GroupAffinity>() == 16);
