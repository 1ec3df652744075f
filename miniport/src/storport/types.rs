//! The `#[repr(C)]` StorPort structures and HW callback types a virtio-scsi miniport touches.
//!
//! Every structure mirrors the WDK declaration for 64-bit Windows (x86_64 and aarch64, LLP64:
//! `ULONG` is `u32`, pointers and `ULONG_PTR` are 8 bytes, `LARGE_INTEGER` is 8-aligned). Field
//! names are the snake_case of the C names. C unions whose members are all the same integer
//! are declared as the one member the miniport uses, with the other names in the doc comment;
//! the layout is identical. The extended-SRB structures carry the WDK's `SRB_ALIGN` /
//! `STOR_ADDRESS_ALIGN` (`DECLSPEC_ALIGN(8)` on 64-bit Windows) as `align(8)`, which rounds
//! their sizes up to a multiple of 8. `layout.rs` pins every size and offset, and
//! `tests/c_layout.rs` checks them against mingw-w64's headers where those have the structure.
//!
//! These structures are filled by storport.sys (or the Linux simulator) and read by the
//! miniport, or the other way round; neither side trusts the other's values beyond the layout.

use core::ffi::{c_char, c_void};

/// `BOOLEAN`: a `UCHAR` that is 0 (FALSE) or 1 (TRUE). Kept as `u8`, not `bool`, because a
/// value other than 0 or 1 written by the other side must not be undefined behaviour.
pub type Boolean = u8;

/// `TRUE` as a `BOOLEAN`.
pub const TRUE: Boolean = 1;
/// `FALSE` as a `BOOLEAN`.
pub const FALSE: Boolean = 0;

/// `NTSTATUS`: a signed 32-bit status (negative = error).
pub type NtStatus = i32;

/// `STOR_PHYSICAL_ADDRESS` (= `PHYSICAL_ADDRESS` = `LARGE_INTEGER`): a bus address, 8 bytes,
/// 8-aligned, passed and returned by value in one register on x64 and arm64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StorPhysicalAddress {
    /// `QuadPart`: the whole address (the C union's `LowPart`/`HighPart` halves overlay it).
    pub quad_part: i64,
}

impl StorPhysicalAddress {
    /// The address `value` (a bus address is unsigned; `LARGE_INTEGER` stores its bits).
    #[must_use]
    pub const fn from_u64(value: u64) -> Self {
        Self {
            quad_part: value.cast_signed(),
        }
    }

    /// The address as the unsigned bus address it denotes.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.quad_part.cast_unsigned()
    }
}

/// `ACCESS_RANGE`: one bus-relative register range the adapter decodes (BAR), filled in by
/// StorPort in `PORT_CONFIGURATION_INFORMATION.AccessRanges`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessRange {
    /// `RangeStart`: bus-relative base address.
    pub range_start: StorPhysicalAddress,
    /// `RangeLength`: length in bytes.
    pub range_length: u32,
    /// `RangeInMemory`: TRUE for memory space, FALSE for I/O port space.
    pub range_in_memory: Boolean,
}

/// `MEMORY_REGION`: a virtual/physical buffer pair (the dump region StorPort gives in dump mode).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MemoryRegion {
    /// `VirtualBase`.
    pub virtual_base: *mut u8,
    /// `PhysicalBase`.
    pub physical_base: StorPhysicalAddress,
    /// `Length` in bytes.
    pub length: u32,
}

/// `SCSI_REQUEST_BLOCK`: the classic SRB (storport.h / srb.h), 88 bytes on 64-bit Windows.
///
/// HwStorStartIo and HwStorBuildIo receive a `PSCSI_REQUEST_BLOCK`; when `function` is
/// `SRB_FUNCTION_STORAGE_REQUEST_BLOCK` the pointer is really a [`StorageRequestBlock`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScsiRequestBlock {
    /// `Length`: `sizeof(SCSI_REQUEST_BLOCK)`.
    pub length: u16,
    /// `Function`: an `SRB_FUNCTION_*` code.
    pub function: u8,
    /// `SrbStatus`: an `SRB_STATUS_*` code, set by the miniport on completion.
    pub srb_status: u8,
    /// `ScsiStatus`: the SCSI status byte from the target.
    pub scsi_status: u8,
    /// `PathId`: the bus.
    pub path_id: u8,
    /// `TargetId`.
    pub target_id: u8,
    /// `Lun`.
    pub lun: u8,
    /// `QueueTag`.
    pub queue_tag: u8,
    /// `QueueAction`: `SRB_*_TAG_REQUEST`.
    pub queue_action: u8,
    /// `CdbLength`: valid bytes in `cdb`.
    pub cdb_length: u8,
    /// `SenseInfoBufferLength`: capacity of `sense_info_buffer`; the miniport lowers it to the
    /// bytes it wrote.
    pub sense_info_buffer_length: u8,
    /// `SrbFlags`: `SRB_FLAGS_*`.
    pub srb_flags: u32,
    /// `DataTransferLength`: bytes to transfer; the miniport lowers it to the bytes moved.
    pub data_transfer_length: u32,
    /// `TimeOutValue` in seconds.
    pub time_out_value: u32,
    /// `DataBuffer`: the data buffer's virtual address (mapped only if the miniport asked).
    pub data_buffer: *mut c_void,
    /// `SenseInfoBuffer`: where auto-sense data goes.
    pub sense_info_buffer: *mut c_void,
    /// `NextSrb`: reserved for the port driver's queueing.
    pub next_srb: *mut ScsiRequestBlock,
    /// `OriginalRequest`: the IRP.
    pub original_request: *mut c_void,
    /// `SrbExtension`: the per-request miniport scratch area (`SrbExtensionSize` bytes).
    pub srb_extension: *mut c_void,
    /// The C union `InternalStatus` / `QueueSortKey` / `LinkTimeoutValue` (all `ULONG`).
    pub internal_status: u32,
    /// `Reserved`: padding present only on 64-bit Windows (`_WIN64`).
    pub reserved: u32,
    /// `Cdb`: the command descriptor block.
    pub cdb: [u8; 16],
}

/// `SCSI_WMI_REQUEST_BLOCK`: the SRB shape of `SRB_FUNCTION_WMI` requests.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScsiWmiRequestBlock {
    /// `Length`.
    pub length: u16,
    /// `Function`: `SRB_FUNCTION_WMI`.
    pub function: u8,
    /// `SrbStatus`.
    pub srb_status: u8,
    /// `WMISubFunction`: the `IRP_MN_*` WMI minor code.
    pub wmi_sub_function: u8,
    /// `PathId`.
    pub path_id: u8,
    /// `TargetId`.
    pub target_id: u8,
    /// `Lun`.
    pub lun: u8,
    /// `Reserved1`.
    pub reserved1: u8,
    /// `WMIFlags`: `SRB_WMI_FLAGS_ADAPTER_REQUEST` for adapter-level requests.
    pub wmi_flags: u8,
    /// `Reserved2`.
    pub reserved2: [u8; 2],
    /// `SrbFlags`.
    pub srb_flags: u32,
    /// `DataTransferLength`.
    pub data_transfer_length: u32,
    /// `TimeOutValue`.
    pub time_out_value: u32,
    /// `DataBuffer`: the WNODE buffer.
    pub data_buffer: *mut c_void,
    /// `DataPath`: the GUID (or instance) the request addresses.
    pub data_path: *mut c_void,
    /// `Reserved3`.
    pub reserved3: *mut c_void,
    /// `OriginalRequest`.
    pub original_request: *mut c_void,
    /// `SrbExtension`.
    pub srb_extension: *mut c_void,
    /// `Reserved4`.
    pub reserved4: u32,
    /// `Reserved6`: present on 64-bit Windows (`NTDDI_WS03SP1` and later).
    pub reserved6: u32,
    /// `Reserved5`.
    pub reserved5: [u8; 16],
}

/// `SCSI_POWER_REQUEST_BLOCK`: the SRB shape of `SRB_FUNCTION_POWER` requests.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScsiPowerRequestBlock {
    /// `Length`.
    pub length: u16,
    /// `Function`: `SRB_FUNCTION_POWER`.
    pub function: u8,
    /// `SrbStatus`.
    pub srb_status: u8,
    /// `SrbPowerFlags`: `SRB_POWER_FLAGS_ADAPTER_REQUEST` for the adapter.
    pub srb_power_flags: u8,
    /// `PathId`.
    pub path_id: u8,
    /// `TargetId`.
    pub target_id: u8,
    /// `Lun`.
    pub lun: u8,
    /// `DevicePowerState`: a `STOR_DEVICE_POWER_STATE`.
    pub device_power_state: u32,
    /// `SrbFlags`.
    pub srb_flags: u32,
    /// `DataTransferLength`.
    pub data_transfer_length: u32,
    /// `TimeOutValue`.
    pub time_out_value: u32,
    /// `DataBuffer`.
    pub data_buffer: *mut c_void,
    /// `SenseInfoBuffer`.
    pub sense_info_buffer: *mut c_void,
    /// `NextSrb`.
    pub next_srb: *mut ScsiRequestBlock,
    /// `OriginalRequest`.
    pub original_request: *mut c_void,
    /// `SrbExtension`.
    pub srb_extension: *mut c_void,
    /// `PowerAction`: a `STOR_POWER_ACTION`.
    pub power_action: u32,
    /// `Reserved` (64-bit only).
    pub reserved: u32,
    /// `Reserved5`.
    pub reserved5: [u8; 16],
}

/// `SCSI_PNP_REQUEST_BLOCK`: the SRB shape of `SRB_FUNCTION_PNP` requests.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScsiPnpRequestBlock {
    /// `Length`.
    pub length: u16,
    /// `Function`: `SRB_FUNCTION_PNP`.
    pub function: u8,
    /// `SrbStatus`.
    pub srb_status: u8,
    /// `PnPSubFunction`.
    pub pnp_sub_function: u8,
    /// `PathId`.
    pub path_id: u8,
    /// `TargetId`.
    pub target_id: u8,
    /// `Lun`.
    pub lun: u8,
    /// `PnPAction`: a `STOR_PNP_ACTION`.
    pub pnp_action: u32,
    /// `SrbFlags`.
    pub srb_flags: u32,
    /// `DataTransferLength`.
    pub data_transfer_length: u32,
    /// `TimeOutValue`.
    pub time_out_value: u32,
    /// `DataBuffer`.
    pub data_buffer: *mut c_void,
    /// `SenseInfoBuffer`.
    pub sense_info_buffer: *mut c_void,
    /// `NextSrb`.
    pub next_srb: *mut ScsiRequestBlock,
    /// `OriginalRequest`.
    pub original_request: *mut c_void,
    /// `SrbExtension`.
    pub srb_extension: *mut c_void,
    /// `SrbPnPFlags`: `SRB_PNP_FLAGS_ADAPTER_REQUEST` for the adapter.
    pub srb_pnp_flags: u32,
    /// `Reserved` (64-bit only).
    pub reserved: u32,
    /// `Reserved4`.
    pub reserved4: [u8; 16],
}

/// `STORAGE_REQUEST_BLOCK`: the extended SRB (Windows 8+), selected by
/// `SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK`. Its header overlays `SCSI_REQUEST_BLOCK`'s first four
/// bytes with `Function == SRB_FUNCTION_STORAGE_REQUEST_BLOCK`; the real function is
/// `srb_function`. Pointers are `POINTER_ALIGN` (8-aligned). The address (`AddressOffset`) and
/// the extended data blocks (`SrbExDataOffset[]`) are byte offsets from the SRB's start.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StorageRequestBlock {
    /// `Length`: `FIELD_OFFSET(STORAGE_REQUEST_BLOCK, Signature)` (= 8), for SRB compatibility.
    pub length: u16,
    /// `Function`: always `SRB_FUNCTION_STORAGE_REQUEST_BLOCK`.
    pub function: u8,
    /// `SrbStatus`.
    pub srb_status: u8,
    /// `ReservedUlong1`.
    pub reserved_ulong1: u32,
    /// `Signature`: `SRB_SIGNATURE` ("SRBX").
    pub signature: u32,
    /// `Version`: `STORAGE_REQUEST_BLOCK_VERSION_1`.
    pub version: u32,
    /// `SrbLength`: total bytes including the address and extended data blocks.
    pub srb_length: u32,
    /// `SrbFunction`: the `SRB_FUNCTION_*` code.
    pub srb_function: u32,
    /// `SrbFlags`.
    pub srb_flags: u32,
    /// `ReservedUlong2`.
    pub reserved_ulong2: u32,
    /// `RequestTag`.
    pub request_tag: u32,
    /// `RequestPriority`.
    pub request_priority: u16,
    /// `RequestAttribute`.
    pub request_attribute: u16,
    /// `TimeOutValue` in seconds.
    pub time_out_value: u32,
    /// The C union `SystemStatus` / `RequestTagHigh4Bytes`.
    pub system_status: u32,
    /// `ZeroGuard1`.
    pub zero_guard1: u32,
    /// `AddressOffset`: offset of the `STOR_ADDRESS` (a [`StorAddrBtl8`]).
    pub address_offset: u32,
    /// `NumSrbExData`: entries in `srb_ex_data_offset`.
    pub num_srb_ex_data: u32,
    /// `DataTransferLength`.
    pub data_transfer_length: u32,
    /// `DataBuffer`.
    pub data_buffer: *mut c_void,
    /// `ZeroGuard2`.
    pub zero_guard2: *mut c_void,
    /// `OriginalRequest`.
    pub original_request: *mut c_void,
    /// `ClassContext`.
    pub class_context: *mut c_void,
    /// `PortContext`.
    pub port_context: *mut c_void,
    /// `MiniportContext`: the SRB extension.
    pub miniport_context: *mut c_void,
    /// `NextSrb`.
    pub next_srb: *mut StorageRequestBlock,
    /// `SrbExDataOffset[ANYSIZE_ARRAY]`: the first of `num_srb_ex_data` offsets (the rest follow
    /// in memory and are read through a pointer bounded by `srb_length`).
    pub srb_ex_data_offset: [u32; 1],
}

/// `STOR_ADDR_BTL8`: the bus/target/LUN address of an extended SRB
/// (`Type == STOR_ADDRESS_TYPE_BTL8`); `STOR_ADDRESS_ALIGN` makes it 8-aligned (16 bytes) on
/// 64-bit Windows.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorAddrBtl8 {
    /// `Type`: `STOR_ADDRESS_TYPE_BTL8`.
    pub r#type: u16,
    /// `Port`.
    pub port: u16,
    /// `AddressLength`: `STOR_ADDR_BTL8_ADDRESS_LENGTH` (4).
    pub address_length: u32,
    /// `Path`.
    pub path: u8,
    /// `Target`.
    pub target: u8,
    /// `Lun`.
    pub lun: u8,
    /// `Reserved`.
    pub reserved: u8,
}

/// `SRBEX_DATA`: the header every extended data block starts with (`SRB_ALIGN`: 8-aligned on
/// 64-bit Windows, so every block in an extended SRB starts on an 8-byte boundary).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrbExData {
    /// `Type`: an `SRBEXDATATYPE` (`SrbExDataType*`).
    pub r#type: u32,
    /// `Length`: bytes of the block after `Type` and `Length`.
    pub length: u32,
    /// `Data[ANYSIZE_ARRAY]`: the first byte of the block's data.
    pub data: [u8; 1],
}

/// `SRBEX_DATA_SCSI_CDB16`: a SCSI command of up to 16 CDB bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct SrbExDataScsiCdb16 {
    /// `Type`: `SrbExDataTypeScsiCdb16`.
    pub r#type: u32,
    /// `Length`: `SRBEX_DATA_SCSI_CDB16_LENGTH`.
    pub length: u32,
    /// `ScsiStatus`.
    pub scsi_status: u8,
    /// `SenseInfoBufferLength`.
    pub sense_info_buffer_length: u8,
    /// `CdbLength`.
    pub cdb_length: u8,
    /// `Reserved`.
    pub reserved: u8,
    /// `Reserved1`.
    pub reserved1: u32,
    /// `SenseInfoBuffer`.
    pub sense_info_buffer: *mut c_void,
    /// `Cdb`.
    pub cdb: [u8; 16],
}

/// `SRBEX_DATA_SCSI_CDB32`: a SCSI command of up to 32 CDB bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct SrbExDataScsiCdb32 {
    /// `Type`: `SrbExDataTypeScsiCdb32`.
    pub r#type: u32,
    /// `Length`: `SRBEX_DATA_SCSI_CDB32_LENGTH`.
    pub length: u32,
    /// `ScsiStatus`.
    pub scsi_status: u8,
    /// `SenseInfoBufferLength`.
    pub sense_info_buffer_length: u8,
    /// `CdbLength`.
    pub cdb_length: u8,
    /// `Reserved`.
    pub reserved: u8,
    /// `Reserved1`.
    pub reserved1: u32,
    /// `SenseInfoBuffer`.
    pub sense_info_buffer: *mut c_void,
    /// `Cdb`.
    pub cdb: [u8; 32],
}

/// `SRBEX_DATA_SCSI_CDB_VAR`: a SCSI command with a variable-length CDB (`cdb_length` bytes
/// from `cdb`, bounded by the block's `length`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct SrbExDataScsiCdbVar {
    /// `Type`: `SrbExDataTypeScsiCdbVar`.
    pub r#type: u32,
    /// `Length`: `SRBEX_DATA_SCSI_CDB_VAR_LENGTH_MIN` + CDB bytes.
    pub length: u32,
    /// `ScsiStatus`.
    pub scsi_status: u8,
    /// `SenseInfoBufferLength`.
    pub sense_info_buffer_length: u8,
    /// `Reserved`.
    pub reserved: [u8; 2],
    /// `CdbLength`.
    pub cdb_length: u32,
    /// `Reserved1`.
    pub reserved1: [u32; 2],
    /// `SenseInfoBuffer`.
    pub sense_info_buffer: *mut c_void,
    /// `Cdb[ANYSIZE_ARRAY]`: the first CDB byte.
    pub cdb: [u8; 1],
}

/// `SRBEX_DATA_WMI`: the WMI parameters of an extended `SRB_FUNCTION_WMI` request.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct SrbExDataWmi {
    /// `Type`: `SrbExDataTypeWmi`.
    pub r#type: u32,
    /// `Length`: `SRBEX_DATA_WMI_LENGTH`.
    pub length: u32,
    /// `WMISubFunction`.
    pub wmi_sub_function: u8,
    /// `WMIFlags`.
    pub wmi_flags: u8,
    /// `Reserved`.
    pub reserved: [u8; 2],
    /// `Reserved1`.
    pub reserved1: u32,
    /// `DataPath`.
    pub data_path: *mut c_void,
}

/// `SRBEX_DATA_POWER`: the power parameters of an extended `SRB_FUNCTION_POWER` request.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrbExDataPower {
    /// `Type`: `SrbExDataTypePower`.
    pub r#type: u32,
    /// `Length`: `SRBEX_DATA_POWER_LENGTH`.
    pub length: u32,
    /// `SrbPowerFlags`.
    pub srb_power_flags: u8,
    /// `Reserved`.
    pub reserved: [u8; 3],
    /// `DevicePowerState`: a `STOR_DEVICE_POWER_STATE`.
    pub device_power_state: u32,
    /// `PowerAction`: a `STOR_POWER_ACTION`.
    pub power_action: u32,
}

/// `SRBEX_DATA_PNP`: the PnP parameters of an extended `SRB_FUNCTION_PNP` request.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrbExDataPnp {
    /// `Type`: `SrbExDataTypePnP`.
    pub r#type: u32,
    /// `Length`: `SRBEX_DATA_PNP_LENGTH`.
    pub length: u32,
    /// `PnPSubFunction`.
    pub pnp_sub_function: u8,
    /// `Reserved`.
    pub reserved: [u8; 3],
    /// `PnPAction`: a `STOR_PNP_ACTION`.
    pub pnp_action: u32,
    /// `SrbPnPFlags`.
    pub srb_pnp_flags: u32,
    /// `Reserved1`.
    pub reserved1: u32,
}

/// `SRBEX_DATA_IO_INFO`: extra information about a read or write.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrbExDataIoInfo {
    /// `Type`: `SrbExDataTypeIoInfo`.
    pub r#type: u32,
    /// `Length`: `SRBEX_DATA_IO_INFO_LENGTH`.
    pub length: u32,
    /// `Flags`.
    pub flags: u32,
    /// `Key`.
    pub key: u32,
    /// `RWLength`.
    pub rw_length: u32,
    /// `IsWriteRequest`.
    pub is_write_request: Boolean,
    /// `CachePriority`.
    pub cache_priority: u8,
    /// `Reserved`.
    pub reserved: [u8; 2],
    /// `Reserved1`.
    pub reserved1: [u32; 2],
}

/// `SRB_IO_CONTROL` (ntddscsi.h): the header of an `IOCTL_SCSI_MINIPORT` buffer
/// (`SRB_FUNCTION_IO_CONTROL`); the payload follows at `header_length`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrbIoControl {
    /// `HeaderLength`: `sizeof(SRB_IO_CONTROL)`.
    pub header_length: u32,
    /// `Signature`: eight bytes naming the miniport the request is for.
    pub signature: [u8; 8],
    /// `Timeout` in seconds.
    pub timeout: u32,
    /// `ControlCode`: the miniport-defined operation.
    pub control_code: u32,
    /// `ReturnCode`: the miniport-defined result.
    pub return_code: u32,
    /// `Length`: payload bytes after the header.
    pub length: u32,
}

/// `STOR_SCATTER_GATHER_ELEMENT`: one physically contiguous piece of a data buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorScatterGatherElement {
    /// `PhysicalAddress`.
    pub physical_address: StorPhysicalAddress,
    /// `Length` in bytes.
    pub length: u32,
    /// `Reserved` (`ULONG_PTR`).
    pub reserved: usize,
}

/// `STOR_SCATTER_GATHER_LIST`: the header of the list `StorPortGetScatterGatherList` returns;
/// `number_of_elements` entries follow at `list`.
#[repr(C)]
#[derive(Debug)]
pub struct StorScatterGatherList {
    /// `NumberOfElements`.
    pub number_of_elements: u32,
    /// `Reserved` (`ULONG_PTR`).
    #[cfg(not(feature = "planted-c-ulong"))]
    pub reserved: usize,
    /// `Reserved`, declared wrongly on purpose by the `planted-c-ulong` feature (a test's
    /// planted fault): `c_ulong` is 64 bits on Linux but 32 on Windows.
    #[cfg(feature = "planted-c-ulong")]
    pub reserved: core::ffi::c_ulong,
    /// `List[]`: the elements (a C flexible array member).
    pub list: [StorScatterGatherElement; 0],
}

/// `SCSI_SUPPORTED_CONTROL_TYPE_LIST`: the `ScsiQuerySupportedControlTypes` parameter;
/// `max_control_type` `BOOLEAN`s follow at `supported_type_list`.
#[repr(C)]
#[derive(Debug)]
pub struct ScsiSupportedControlTypeList {
    /// `MaxControlType`: entries in `supported_type_list`.
    pub max_control_type: u32,
    /// `SupportedTypeList[]`: TRUE at each supported `SCSI_ADAPTER_CONTROL_TYPE` index.
    pub supported_type_list: [Boolean; 0],
}

/// `GROUP_AFFINITY`: a processor group and a mask within it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupAffinity {
    /// `Mask` (`KAFFINITY`, pointer-sized).
    pub mask: usize,
    /// `Group`.
    pub group: u16,
    /// `Reserved`.
    pub reserved: [u16; 3],
}

/// `PROCESSOR_NUMBER`: a processor as group and number within the group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessorNumber {
    /// `Group`.
    pub group: u16,
    /// `Number`.
    pub number: u8,
    /// `Reserved`.
    pub reserved: u8,
}

/// `PERF_CONFIGURATION_DATA`: the in/out parameter of `StorPortInitializePerfOpts`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PerfConfigurationData {
    /// `Version`: `STOR_PERF_VERSION*`.
    pub version: u32,
    /// `Size`: `sizeof(PERF_CONFIGURATION_DATA)`.
    pub size: u32,
    /// `Flags`: `STOR_PERF_*`.
    pub flags: u32,
    /// `ConcurrentChannels`: concurrent HwStorStartIo calls supported.
    pub concurrent_channels: u32,
    /// `FirstRedirectionMessageNumber`.
    pub first_redirection_message_number: u32,
    /// `LastRedirectionMessageNumber`.
    pub last_redirection_message_number: u32,
    /// `DeviceNode`.
    pub device_node: u32,
    /// `Reserved`.
    pub reserved: u32,
    /// `MessageTargets`: an array of one `GROUP_AFFINITY` per message, owned by the miniport.
    pub message_targets: *mut GroupAffinity,
}

/// `STARTIO_PERFORMANCE_PARAMETERS`: the out parameter of `StorPortGetStartIoPerfParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartioPerformanceParameters {
    /// `Version`.
    pub version: u32,
    /// `Size`.
    pub size: u32,
    /// `MessageNumber`: the MSI message the request's completion should use.
    pub message_number: u32,
    /// `ChannelNumber`.
    pub channel_number: u32,
}

/// `MESSAGE_INTERRUPT_INFORMATION`: the out parameter of `StorPortGetMSIInfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageInterruptInformation {
    /// `MessageId`.
    pub message_id: u32,
    /// `MessageData`.
    pub message_data: u32,
    /// `MessageAddress`.
    pub message_address: StorPhysicalAddress,
    /// `InterruptVector`.
    pub interrupt_vector: u32,
    /// `InterruptLevel`.
    pub interrupt_level: u32,
    /// `InterruptMode`: a `KINTERRUPT_MODE`.
    pub interrupt_mode: u32,
}

/// `KSPIN_LOCK_QUEUE`: one in-stack queued spin lock entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KSpinLockQueue {
    /// `Next`.
    pub next: *mut c_void,
    /// `Lock`.
    pub lock: *mut c_void,
}

/// `KLOCK_QUEUE_HANDLE`: the context of an in-stack queued spin lock.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KLockQueueHandle {
    /// `LockQueue`.
    pub lock_queue: KSpinLockQueue,
    /// `OldIrql`: the IRQL to return to on release.
    pub old_irql: u8,
}

/// `STOR_LOCK_HANDLE`: the caller-owned handle `StorPortAcquireSpinLock` fills and
/// `StorPortReleaseSpinLock` consumes. It lives on the caller's stack and must not move
/// between the two calls.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StorLockHandle {
    /// `Lock`: the `STOR_SPINLOCK` held.
    pub lock: u32,
    /// `Context`: StorPort's lock state (a `KLOCK_QUEUE_HANDLE`, or just the old IRQL).
    pub context: KLockQueueHandle,
}

/// `STOR_DPC`: a StorPort DPC object, opaque to the miniport (`StorPortInitializeDpc`
/// initialises it, `StorPortIssueDpc` queues it). WDK layout: a `KDPC`-sized `DPC_BUFFER`
/// (64 bytes on 64-bit Windows) followed by a `ULONG_PTR` lock, 8-aligned. It must stay at a
/// fixed address (normally in the device extension) from initialisation until unload.
#[repr(C, align(8))]
#[derive(Debug)]
pub struct StorDpc {
    /// `Dpc` (`DPC_BUFFER`): the kernel DPC, never touched by the miniport.
    pub dpc: [u8; 64],
    /// `Lock` (`ULONG_PTR`): StorPort's private lock word.
    pub lock: usize,
}

/// `PHW_INITIALIZE`: HwStorInitialize, called at DIRQL (with the interrupt lock) after
/// HwStorFindAdapter; returns TRUE when the adapter is ready.
pub type HwInitialize = Option<unsafe extern "system" fn(device_extension: *mut c_void) -> Boolean>;

/// `PHW_PASSIVE_INITIALIZE_ROUTINE`: HwStorPassiveInitializeRoutine, called at PASSIVE_LEVEL
/// after HwStorInitialize when enabled with `StorPortEnablePassiveInitialization`.
pub type HwPassiveInitializeRoutine =
    Option<unsafe extern "system" fn(device_extension: *mut c_void) -> Boolean>;

/// `PHW_BUILDIO`: HwStorBuildIo, called at DISPATCH_LEVEL without locks before HwStorStartIo;
/// returns FALSE after completing the SRB itself.
pub type HwBuildIo = Option<
    unsafe extern "system" fn(device_extension: *mut c_void, srb: *mut ScsiRequestBlock) -> Boolean,
>;

/// `PHW_STARTIO`: HwStorStartIo, called at DISPATCH_LEVEL (with the StartIo lock in half-duplex
/// mode, without it under `STOR_PERF_CONCURRENT_CHANNELS`); must return TRUE.
pub type HwStartIo = Option<
    unsafe extern "system" fn(device_extension: *mut c_void, srb: *mut ScsiRequestBlock) -> Boolean,
>;

/// `PHW_INTERRUPT`: HwStorInterrupt, the line-based ISR at DIRQL; returns TRUE if the adapter
/// interrupted.
pub type HwInterrupt = Option<unsafe extern "system" fn(device_extension: *mut c_void) -> Boolean>;

/// `PHW_MESSAGE_SIGNALED_INTERRUPT_ROUTINE`: HwMSInterruptRoutine, the MSI/MSI-X ISR at DIRQL
/// for message `message_id`.
pub type HwMessageSignaledInterruptRoutine =
    Option<unsafe extern "system" fn(device_extension: *mut c_void, message_id: u32) -> Boolean>;

/// `PHW_FIND_ADAPTER`: HwStorFindAdapter, called at PASSIVE_LEVEL to claim the adapter and fill
/// `config_info`; returns an `SP_RETURN_*` code. The last parameter (SCSIport's `Again`) is
/// `Reserved3` for StorPort and must be ignored. (WDK 10 declares the registration's slot as
/// `PVOID` because virtual miniports use another signature; the layout is the same.)
pub type HwFindAdapter = Option<
    unsafe extern "system" fn(
        device_extension: *mut c_void,
        hw_context: *mut c_void,
        bus_information: *mut c_void,
        argument_string: *mut c_char,
        config_info: *mut PortConfigurationInformation,
        reserved3: *mut Boolean,
    ) -> u32,
>;

/// `PHW_RESET_BUS`: HwStorResetBus, called at DISPATCH_LEVEL (StartIo lock held) to reset bus
/// `path_id`; returns TRUE on success.
pub type HwResetBus =
    Option<unsafe extern "system" fn(device_extension: *mut c_void, path_id: u32) -> Boolean>;

/// `PHW_DMA_STARTED`: SCSIport-era callback, unused by StorPort (leave `None`).
pub type HwDmaStarted = Option<unsafe extern "system" fn(device_extension: *mut c_void)>;

/// `PHW_ADAPTER_STATE`: SCSIport-era callback, unused by StorPort (leave `None`).
pub type HwAdapterState = Option<
    unsafe extern "system" fn(
        device_extension: *mut c_void,
        context: *mut c_void,
        save_state: Boolean,
    ) -> Boolean,
>;

/// `PHW_ADAPTER_CONTROL`: HwStorAdapterControl; `control_type` is a `SCSI_ADAPTER_CONTROL_TYPE`,
/// the result a `SCSI_ADAPTER_CONTROL_STATUS`. IRQL depends on the control type
/// (`ScsiStopAdapter` at DIRQL, `ScsiRestartAdapter` at DISPATCH_LEVEL or lower).
pub type HwAdapterControl = Option<
    unsafe extern "system" fn(
        device_extension: *mut c_void,
        control_type: u32,
        parameters: *mut c_void,
    ) -> u32,
>;

/// `PHW_UNIT_CONTROL`: HwStorUnitControl; `control_type` is a `SCSI_UNIT_CONTROL_TYPE`, the
/// result a `SCSI_UNIT_CONTROL_STATUS`.
pub type HwUnitControl = Option<
    unsafe extern "system" fn(
        device_extension: *mut c_void,
        control_type: u32,
        parameters: *mut c_void,
    ) -> u32,
>;

/// `PHW_DPC_ROUTINE`: HwStorDpcRoutine, run at DISPATCH_LEVEL for a DPC queued with
/// `StorPortIssueDpc`; the two system arguments are the ones given there.
pub type HwDpcRoutine = Option<
    unsafe extern "system" fn(
        dpc: *mut StorDpc,
        hw_device_extension: *mut c_void,
        system_argument1: *mut c_void,
        system_argument2: *mut c_void,
    ),
>;

/// `PHW_TIMER`: HwStorTimer, the `RequestTimerCall` callback, at DISPATCH_LEVEL with the
/// StartIo lock.
pub type HwTimer = Option<unsafe extern "system" fn(device_extension: *mut c_void)>;

/// `PHW_TIMER_EX`: the callback of a timer from `StorPortInitializeTimer`, at DISPATCH_LEVEL,
/// with the context given to `StorPortRequestTimer`.
pub type HwTimerEx =
    Option<unsafe extern "system" fn(device_extension: *mut c_void, context: *mut c_void)>;

/// `PHW_STATE_CHANGE`: HwStorStateChange, called at DISPATCH_LEVEL with the StartIo lock held
/// once StorPort has processed a `StorPortStateChangeDetected` notification; `address` is the
/// `STOR_ADDRESS` the notification named and `status` is below 0x8000_0000 on success.
pub type HwStateChange = Option<
    unsafe extern "system" fn(
        hw_device_extension: *mut c_void,
        context: *mut c_void,
        address_type: i16,
        address: *mut c_void,
        status: u32,
    ),
>;

/// `PHW_FREE_ADAPTER_RESOURCES`: virtual miniports only (leave `None`).
pub type HwFreeAdapterResources = Option<unsafe extern "system" fn(device_extension: *mut c_void)>;

/// `PHW_PROCESS_SERVICE_REQUEST`: virtual miniports only (leave `None`).
pub type HwProcessServiceRequest =
    Option<unsafe extern "system" fn(device_extension: *mut c_void, irp: *mut c_void)>;

/// `PHW_COMPLETE_SERVICE_IRP`: virtual miniports only (leave `None`).
pub type HwCompleteServiceIrp = Option<unsafe extern "system" fn(device_extension: *mut c_void)>;

/// `PHW_INITIALIZE_TRACING`: WPP tracing setup hook (optional).
pub type HwInitializeTracing =
    Option<unsafe extern "system" fn(argument1: *mut c_void, argument2: *mut c_void)>;

/// `PHW_CLEANUP_TRACING`: WPP tracing teardown hook (optional).
pub type HwCleanupTracing = Option<unsafe extern "system" fn(argument1: *mut c_void)>;

/// `PHW_TRACING_ENABLED`: WPP tracing state hook (optional).
pub type HwTracingEnabled =
    Option<unsafe extern "system" fn(hw_device_extension: *mut c_void, enable_tracing: Boolean)>;

/// `PSTOR_SYNCHRONIZED_ACCESS`: the routine `StorPortSynchronizeAccess` runs with the interrupt
/// lock held.
pub type StorSynchronizedAccess = Option<
    unsafe extern "system" fn(hw_device_extension: *mut c_void, context: *mut c_void) -> Boolean,
>;

/// `PORT_CONFIGURATION_INFORMATION` (storport.h): what StorPort knows about the adapter, passed
/// to HwStorFindAdapter, which completes it. 224 bytes on 64-bit Windows (WDK 10 layout; the
/// fields from `hw_ms_interrupt_routine` on are StorPort-only, absent from srb.h's SCSIport
/// version).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PortConfigurationInformation {
    /// `Length`: `sizeof(PORT_CONFIGURATION_INFORMATION)` as StorPort knows it (its version).
    pub length: u32,
    /// `SystemIoBusNumber`.
    pub system_io_bus_number: u32,
    /// `AdapterInterfaceType`: an `INTERFACE_TYPE` (`PCIBus`).
    pub adapter_interface_type: u32,
    /// `BusInterruptLevel`.
    pub bus_interrupt_level: u32,
    /// `BusInterruptVector`.
    pub bus_interrupt_vector: u32,
    /// `InterruptMode`: a `KINTERRUPT_MODE`.
    pub interrupt_mode: u32,
    /// `MaximumTransferLength`: largest transfer in bytes (set by the miniport).
    pub maximum_transfer_length: u32,
    /// `NumberOfPhysicalBreaks`: scatter/gather elements minus one (set by the miniport).
    pub number_of_physical_breaks: u32,
    /// `DmaChannel`.
    pub dma_channel: u32,
    /// `DmaPort`.
    pub dma_port: u32,
    /// `DmaWidth`: a `DMA_WIDTH`.
    pub dma_width: u32,
    /// `DmaSpeed`: a `DMA_SPEED`.
    pub dma_speed: u32,
    /// `AlignmentMask`: buffer alignment the adapter needs, minus one.
    pub alignment_mask: u32,
    /// `NumberOfAccessRanges`: entries at `access_ranges`.
    pub number_of_access_ranges: u32,
    /// `AccessRanges`: pointer to the array of the adapter's ranges (BARs).
    pub access_ranges: *mut AccessRange,
    /// `MiniportDumpData` (`Reserved` before Windows 8): data handed to the dump-mode instance.
    pub miniport_dump_data: *mut c_void,
    /// `NumberOfBuses`.
    pub number_of_buses: u8,
    /// `InitiatorBusId`.
    pub initiator_bus_id: [i8; 8],
    /// `ScatterGather`.
    pub scatter_gather: Boolean,
    /// `Master`: bus master.
    pub master: Boolean,
    /// `CachesData`.
    pub caches_data: Boolean,
    /// `AdapterScansDown`.
    pub adapter_scans_down: Boolean,
    /// `AtdiskPrimaryClaimed`.
    pub atdisk_primary_claimed: Boolean,
    /// `AtdiskSecondaryClaimed`.
    pub atdisk_secondary_claimed: Boolean,
    /// `Dma32BitAddresses`.
    pub dma32_bit_addresses: Boolean,
    /// `DemandMode`.
    pub demand_mode: Boolean,
    /// `MapBuffers`: a `STOR_MAP_*` value.
    pub map_buffers: u8,
    /// `NeedPhysicalAddresses`.
    pub need_physical_addresses: Boolean,
    /// `TaggedQueuing`.
    pub tagged_queuing: Boolean,
    /// `AutoRequestSense`.
    pub auto_request_sense: Boolean,
    /// `MultipleRequestPerLu`.
    pub multiple_request_per_lu: Boolean,
    /// `ReceiveEvent`.
    pub receive_event: Boolean,
    /// `RealModeInitialized`.
    pub real_mode_initialized: Boolean,
    /// `BufferAccessScsiPortControlled`.
    pub buffer_access_scsi_port_controlled: Boolean,
    /// `MaximumNumberOfTargets`.
    pub maximum_number_of_targets: u8,
    /// `SrbType` (`ReservedUchars[0]` before Windows 8): `SRB_TYPE_*` the miniport uses.
    pub srb_type: u8,
    /// `AddressType` (`ReservedUchars[1]` before Windows 8): `STORAGE_ADDRESS_TYPE_BTL8`.
    pub address_type: u8,
    /// `SlotNumber`.
    pub slot_number: u32,
    /// `BusInterruptLevel2`.
    pub bus_interrupt_level2: u32,
    /// `BusInterruptVector2`.
    pub bus_interrupt_vector2: u32,
    /// `InterruptMode2`.
    pub interrupt_mode2: u32,
    /// `DmaChannel2`.
    pub dma_channel2: u32,
    /// `DmaPort2`.
    pub dma_port2: u32,
    /// `DmaWidth2`.
    pub dma_width2: u32,
    /// `DmaSpeed2`.
    pub dma_speed2: u32,
    /// `DeviceExtensionSize`.
    pub device_extension_size: u32,
    /// `SpecificLuExtensionSize`.
    pub specific_lu_extension_size: u32,
    /// `SrbExtensionSize`.
    pub srb_extension_size: u32,
    /// `Dma64BitAddresses`: `SCSI_DMA64_*`.
    pub dma64_bit_addresses: u8,
    /// `ResetTargetSupported`.
    pub reset_target_supported: Boolean,
    /// `MaximumNumberOfLogicalUnits`.
    pub maximum_number_of_logical_units: u8,
    /// `WmiDataProvider`.
    pub wmi_data_provider: Boolean,
    /// `SynchronizationModel`: a `STOR_SYNCHRONIZATION_MODEL`.
    pub synchronization_model: u32,
    /// `HwMSInterruptRoutine`: the MSI ISR.
    pub hw_ms_interrupt_routine: HwMessageSignaledInterruptRoutine,
    /// `InterruptSynchronizationMode`: an `INTERRUPT_SYNCHRONIZATION_MODE`.
    pub interrupt_synchronization_mode: u32,
    /// `DumpRegion`: the buffer StorPort gives a dump-mode instance.
    pub dump_region: MemoryRegion,
    /// `RequestedDumpBufferSize`.
    pub requested_dump_buffer_size: u32,
    /// `VirtualDevice`.
    pub virtual_device: Boolean,
    /// `DumpMode`: nonzero in the crash-dump / hibernation instance.
    pub dump_mode: u8,
    /// `DmaAddressWidth`: DMA address bits (0 = 64 when `Dma64BitAddresses` says so).
    pub dma_address_width: u8,
    /// `ExtendedFlags1`.
    pub extended_flags1: u32,
    /// `MaxNumberOfIO`: outstanding requests per adapter.
    pub max_number_of_io: u32,
    /// `MaxIOsPerLun`.
    pub max_ios_per_lun: u32,
    /// `InitialLunQueueDepth`.
    pub initial_lun_queue_depth: u32,
    /// `BusResetHoldTime` in microseconds.
    pub bus_reset_hold_time: u32,
    /// `FeatureSupport`: `STOR_ADAPTER_FEATURE_*`.
    pub feature_support: u32,
}

/// `HW_INITIALIZATION_DATA` (storport.h): the miniport's registration, passed to
/// `StorPortInitialize` from DriverEntry. 208 bytes on 64-bit Windows (WDK 10 layout; the
/// fields from `hw_build_io` on are StorPort-only).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HwInitializationData {
    /// `HwInitializationDataSize`: `sizeof(HW_INITIALIZATION_DATA)`.
    pub hw_initialization_data_size: u32,
    /// `AdapterInterfaceType`: `PCIBus`.
    pub adapter_interface_type: u32,
    /// `HwInitialize`.
    pub hw_initialize: HwInitialize,
    /// `HwStartIo`.
    pub hw_start_io: HwStartIo,
    /// `HwInterrupt`.
    pub hw_interrupt: HwInterrupt,
    /// `HwFindAdapter`.
    pub hw_find_adapter: HwFindAdapter,
    /// `HwResetBus`.
    pub hw_reset_bus: HwResetBus,
    /// `HwDmaStarted`: unused by StorPort.
    pub hw_dma_started: HwDmaStarted,
    /// `HwAdapterState`: unused by StorPort.
    pub hw_adapter_state: HwAdapterState,
    /// `DeviceExtensionSize`.
    pub device_extension_size: u32,
    /// `SpecificLuExtensionSize`.
    pub specific_lu_extension_size: u32,
    /// `SrbExtensionSize`.
    pub srb_extension_size: u32,
    /// `NumberOfAccessRanges`.
    pub number_of_access_ranges: u32,
    /// `Reserved`.
    pub reserved: *mut c_void,
    /// `MapBuffers`: a `STOR_MAP_*` value.
    pub map_buffers: u8,
    /// `NeedPhysicalAddresses`: must be TRUE for StorPort.
    pub need_physical_addresses: Boolean,
    /// `TaggedQueuing`: must be TRUE for StorPort.
    pub tagged_queuing: Boolean,
    /// `AutoRequestSense`: must be TRUE for StorPort.
    pub auto_request_sense: Boolean,
    /// `MultipleRequestPerLu`: must be TRUE for StorPort.
    pub multiple_request_per_lu: Boolean,
    /// `ReceiveEvent`.
    pub receive_event: Boolean,
    /// `VendorIdLength`.
    pub vendor_id_length: u16,
    /// `VendorId`.
    pub vendor_id: *mut c_void,
    /// The C union `ReservedUshort` / `PortVersionFlags`.
    pub port_version_flags: u16,
    /// `DeviceIdLength`.
    pub device_id_length: u16,
    /// `DeviceId`.
    pub device_id: *mut c_void,
    /// `HwAdapterControl`.
    pub hw_adapter_control: HwAdapterControl,
    /// `HwBuildIo`.
    pub hw_build_io: HwBuildIo,
    /// `HwFreeAdapterResources`.
    pub hw_free_adapter_resources: HwFreeAdapterResources,
    /// `HwProcessServiceRequest`.
    pub hw_process_service_request: HwProcessServiceRequest,
    /// `HwCompleteServiceIrp`.
    pub hw_complete_service_irp: HwCompleteServiceIrp,
    /// `HwInitializeTracing`.
    pub hw_initialize_tracing: HwInitializeTracing,
    /// `HwCleanupTracing`.
    pub hw_cleanup_tracing: HwCleanupTracing,
    /// `HwTracingEnabled`.
    pub hw_tracing_enabled: HwTracingEnabled,
    /// `FeatureSupport`: `STOR_FEATURE_*`.
    pub feature_support: u32,
    /// `SrbTypeFlags`: `SRB_TYPE_FLAG_*`.
    pub srb_type_flags: u32,
    /// `AddressTypeFlags`: `ADDRESS_TYPE_FLAG_*`.
    pub address_type_flags: u32,
    /// `Reserved1`.
    pub reserved1: u32,
    /// `HwUnitControl`.
    pub hw_unit_control: HwUnitControl,
}

/// The all-zero value of a structure whose fields are integers, raw pointers, `Option`s of
/// function pointers and arrays of those: for each of them all-zero bytes are a valid value
/// (0, null, `None`).
macro_rules! zeroed_constructor {
    ($($ty:ty),* $(,)?) => {$(
        impl $ty {
            /// The all-zero value (integers 0, pointers null, callbacks `None`), the starting
            /// point C code gets from `RtlZeroMemory`.
            #[must_use]
            pub const fn zeroed() -> Self {
                // SAFETY: every field of this type is an integer, a raw pointer, an
                // `Option<fn>` or an array or `repr(C)` struct of those, and all-zero bytes are
                // a valid value for each (0, null, None).
                unsafe { core::mem::zeroed() }
            }
        }
    )*};
}

zeroed_constructor!(
    MemoryRegion,
    ScsiRequestBlock,
    ScsiWmiRequestBlock,
    ScsiPowerRequestBlock,
    ScsiPnpRequestBlock,
    StorageRequestBlock,
    SrbExDataScsiCdb16,
    SrbExDataScsiCdb32,
    SrbExDataScsiCdbVar,
    SrbExDataWmi,
    StorScatterGatherList,
    ScsiSupportedControlTypeList,
    PerfConfigurationData,
    KSpinLockQueue,
    KLockQueueHandle,
    StorLockHandle,
    StorDpc,
    PortConfigurationInformation,
    HwInitializationData,
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn physical_address_round_trips_every_bus_address(address: u64) {
            let physical = StorPhysicalAddress::from_u64(address);
            prop_assert_eq!(physical.as_u64(), address);
            // LARGE_INTEGER keeps the bits: the low and high halves are the address's.
            prop_assert_eq!(physical.quad_part.to_le_bytes(), address.to_le_bytes());
        }
    }

    #[test]
    fn addresses_above_2_63_stay_unsigned() {
        let top = StorPhysicalAddress::from_u64(u64::MAX);
        assert_eq!(top.quad_part, -1);
        assert_eq!(top.as_u64(), u64::MAX);
    }

    #[test]
    fn zeroed_registration_has_no_callbacks_and_null_pointers() {
        let init = HwInitializationData::zeroed();
        assert!(init.hw_initialize.is_none());
        assert!(init.hw_start_io.is_none());
        assert!(init.hw_find_adapter.is_none());
        assert!(init.hw_build_io.is_none());
        assert!(init.hw_unit_control.is_none());
        assert!(init.vendor_id.is_null() && init.device_id.is_null() && init.reserved.is_null());
        assert_eq!(init.hw_initialization_data_size, 0);
        let config = PortConfigurationInformation::zeroed();
        assert!(config.hw_ms_interrupt_routine.is_none());
        assert!(config.access_ranges.is_null());
        assert!(config.dump_region.virtual_base.is_null());
        let srb = StorageRequestBlock::zeroed();
        assert!(srb.data_buffer.is_null() && srb.next_srb.is_null());
        assert_eq!(srb.srb_ex_data_offset, [0]);
    }

    #[test]
    fn a_callback_survives_the_option_niche() {
        unsafe extern "system" fn interrupt(_device_extension: *mut c_void) -> Boolean {
            TRUE
        }
        let mut init = HwInitializationData::zeroed();
        init.hw_interrupt = Some(interrupt);
        let stored = init.hw_interrupt.expect("set above");
        // SAFETY: `interrupt` ignores its argument.
        assert_eq!(unsafe { stored(core::ptr::null_mut()) }, TRUE);
        // `Option<fn>` is pointer-sized, so the C slot is a plain function pointer.
        assert_eq!(size_of::<HwInterrupt>(), size_of::<*const c_void>());
    }
}
