//! The request blocks: `SCSI_REQUEST_BLOCK`, its WMI/power/PnP variants, the extended
//! `STORAGE_REQUEST_BLOCK` (SRB_EX) with its address and data blocks, and `SRB_IO_CONTROL`.

use super::Boolean;
use core::ffi::c_void;

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
