//! WMI wire formats (wmistr.h): `WNODE_*` request/reply structures, `WMIREGINFO`, their flags,
//! and the WMI minor function codes (wdm.h `IRP_MN_*`).
//!
//! Every structure is the fixed part of its C counterpart on 64-bit Windows, little-endian,
//! byte-aligned (`Unaligned`), so it can be read from and written to any offset of a request
//! buffer without alignment assumptions. Where C inserts padding, the padding is an explicit
//! field. `tests/c_layout.rs` compiles `_Static_assert`s generated from these sizes and offsets
//! against mingw-w64's `wmistr.h` with the x86-64 Windows cross compiler. Where mingw-w64's
//! declaration differs from Microsoft's (the WDK's `wmistr.h`, documented on learn.microsoft.com),
//! the values follow Microsoft's, and the layout test says which source each value follows.

use core::mem::offset_of;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::guid::Guid;

/// `WNODE_HEADER` (wmistr.h): common to every `WNODE_*`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WnodeHeader {
    /// `BufferSize`: size of the whole WNODE, including data.
    pub buffer_size: U32,
    /// `ProviderId`.
    pub provider_id: U32,
    /// `HistoricalContext` (a union with `Version` and `Linkage`).
    pub historical_context: U64,
    /// `TimeStamp` (a union with `CountLost` and `KernelHandle`).
    pub timestamp: U64,
    /// `Guid`: the data block the request is about.
    pub guid: Guid,
    /// `ClientContext`.
    pub client_context: U32,
    /// `Flags`: `WNODE_FLAG_*`.
    pub flags: U32,
}

const _: () = assert!(size_of::<WnodeHeader>() == 48);
const _: () = assert!(offset_of!(WnodeHeader, buffer_size) == 0);
const _: () = assert!(offset_of!(WnodeHeader, provider_id) == 4);
const _: () = assert!(offset_of!(WnodeHeader, historical_context) == 8);
const _: () = assert!(offset_of!(WnodeHeader, timestamp) == 16);
const _: () = assert!(offset_of!(WnodeHeader, guid) == 24);
const _: () = assert!(offset_of!(WnodeHeader, client_context) == 40);
const _: () = assert!(offset_of!(WnodeHeader, flags) == 44);

/// The fixed part of `WNODE_ALL_DATA` (wmistr.h), up to the union at offset 60 that holds
/// either `FixedInstanceSize` or the `OffsetInstanceDataAndLength[]` table.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WnodeAllData {
    /// `WnodeHeader`.
    pub header: WnodeHeader,
    /// `DataBlockOffset`: where instance data starts (fixed instance size only).
    pub data_block_offset: U32,
    /// `InstanceCount`.
    pub instance_count: U32,
    /// `OffsetInstanceNameOffsets`: offset of the `ULONG` table of dynamic instance name
    /// offsets, or 0.
    pub offset_instance_name_offsets: U32,
}

const _: () = assert!(size_of::<WnodeAllData>() == 60);
const _: () = assert!(offset_of!(WnodeAllData, data_block_offset) == 48);
const _: () = assert!(offset_of!(WnodeAllData, instance_count) == 52);
const _: () = assert!(offset_of!(WnodeAllData, offset_instance_name_offsets) == 56);

/// Offset of the `WNODE_ALL_DATA` union: `FixedInstanceSize` (a `ULONG`) when
/// `WNODE_FLAG_FIXED_INSTANCE_SIZE` is set, else the `OffsetInstanceDataAndLength[]` table.
pub const WNODE_ALL_DATA_UNION_OFFSET: usize = size_of::<WnodeAllData>();

/// `sizeof(WNODE_ALL_DATA)` as Windows computes it: the smallest buffer WMI sends with
/// `IRP_MN_QUERY_ALL_DATA`, and the smallest `BufferSize` this crate replies with.
///
/// Microsoft's `wmistr.h` (the WDK's, which Windows and WMI are built with) declares
/// `OffsetInstanceDataAndLength[]` open-ended, so the union is one `ULONG` and the size is the
/// fixed part (60) + 4, padded to the header's 8-byte alignment: 64. mingw-w64 declares the
/// array with one element, which makes its `sizeof` 72; a dispatcher that used 72 would refuse
/// the 64–71-byte buffers WMI sizes as enough.
pub const WNODE_ALL_DATA_C_SIZE: usize = 64;

/// `OFFSETINSTANCEDATAANDLENGTH` (wmistr.h): one entry of the variable-size instance table.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct OffsetInstanceDataAndLength {
    /// `OffsetInstanceData`: from the start of the `WNODE_ALL_DATA`.
    pub offset_instance_data: U32,
    /// `LengthInstanceData`.
    pub length_instance_data: U32,
}

const _: () = assert!(size_of::<OffsetInstanceDataAndLength>() == 8);

/// The fixed part of `WNODE_SINGLE_INSTANCE` (wmistr.h); `VariableData` follows at 64.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WnodeSingleInstance {
    /// `WnodeHeader`.
    pub header: WnodeHeader,
    /// `OffsetInstanceName` (valid without `WNODE_FLAG_STATIC_INSTANCE_NAMES`).
    pub offset_instance_name: U32,
    /// `InstanceIndex` (valid with `WNODE_FLAG_STATIC_INSTANCE_NAMES`).
    pub instance_index: U32,
    /// `DataBlockOffset`.
    pub data_block_offset: U32,
    /// `SizeDataBlock`.
    pub size_data_block: U32,
}

const _: () = assert!(size_of::<WnodeSingleInstance>() == 64);
const _: () = assert!(offset_of!(WnodeSingleInstance, offset_instance_name) == 48);
const _: () = assert!(offset_of!(WnodeSingleInstance, instance_index) == 52);
const _: () = assert!(offset_of!(WnodeSingleInstance, data_block_offset) == 56);
const _: () = assert!(offset_of!(WnodeSingleInstance, size_data_block) == 60);

/// The fixed part of `WNODE_SINGLE_ITEM` (wmistr.h); `VariableData` follows at 68.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WnodeSingleItem {
    /// `WnodeHeader`.
    pub header: WnodeHeader,
    /// `OffsetInstanceName`.
    pub offset_instance_name: U32,
    /// `InstanceIndex`.
    pub instance_index: U32,
    /// `ItemId`: the `WmiDataId` of the item.
    pub item_id: U32,
    /// `DataBlockOffset`.
    pub data_block_offset: U32,
    /// `SizeDataItem`.
    pub size_data_item: U32,
}

const _: () = assert!(size_of::<WnodeSingleItem>() == 68);
const _: () = assert!(offset_of!(WnodeSingleItem, item_id) == 56);
const _: () = assert!(offset_of!(WnodeSingleItem, data_block_offset) == 60);
const _: () = assert!(offset_of!(WnodeSingleItem, size_data_item) == 64);

/// The fixed part of `WNODE_METHOD_ITEM` (wmistr.h); `VariableData` follows at 68.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WnodeMethodItem {
    /// `WnodeHeader`.
    pub header: WnodeHeader,
    /// `OffsetInstanceName`.
    pub offset_instance_name: U32,
    /// `InstanceIndex`.
    pub instance_index: U32,
    /// `MethodId`.
    pub method_id: U32,
    /// `DataBlockOffset`: input data on the way in, output data on the way out (unchanged).
    pub data_block_offset: U32,
    /// `SizeDataBlock`: input size on the way in, output size on the way out.
    pub size_data_block: U32,
}

const _: () = assert!(size_of::<WnodeMethodItem>() == 68);
const _: () = assert!(offset_of!(WnodeMethodItem, method_id) == 56);
const _: () = assert!(offset_of!(WnodeMethodItem, data_block_offset) == 60);
const _: () = assert!(offset_of!(WnodeMethodItem, size_data_block) == 64);

/// `WNODE_TOO_SMALL` (wmistr.h), including the 4 bytes of tail padding C gives it, so
/// `size_of` is `sizeof(WNODE_TOO_SMALL)`: the byte count a too-small reply returns.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WnodeTooSmall {
    /// `WnodeHeader`, with `WNODE_FLAG_TOO_SMALL` set and `BufferSize` = 56.
    pub header: WnodeHeader,
    /// `SizeNeeded`.
    pub size_needed: U32,
    /// Tail padding (the structure is 8-aligned because of the header's 64-bit fields).
    pub padding: [u8; 4],
}

const _: () = assert!(size_of::<WnodeTooSmall>() == 56);
const _: () = assert!(offset_of!(WnodeTooSmall, size_needed) == 48);

/// The fixed part of `WMIREGINFOW` (wmistr.h) on 64-bit Windows: the `WmiRegGuid[]` array
/// starts at 24 because `WMIREGGUIDW` contains a `ULONG_PTR` and is 8-aligned.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WmiRegInfo {
    /// `BufferSize`: the whole registration, strings included.
    pub buffer_size: U32,
    /// `NextWmiRegInfo`: 0 (a miniport registers for itself only).
    pub next_wmi_reg_info: U32,
    /// `RegistryPath`: offset of a counted string, or 0.
    pub registry_path: U32,
    /// `MofResourceName`: offset of a counted string, or 0.
    pub mof_resource_name: U32,
    /// `GuidCount`.
    pub guid_count: U32,
    /// Padding before the 8-aligned `WmiRegGuid[]` array.
    pub padding: [u8; 4],
}

const _: () = assert!(size_of::<WmiRegInfo>() == 24);
const _: () = assert!(offset_of!(WmiRegInfo, guid_count) == 16);

/// `WMIREGGUIDW` (wmistr.h) on 64-bit Windows.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WmiRegGuid {
    /// `Guid`.
    pub guid: Guid,
    /// `Flags`: `WMIREG_FLAG_*`.
    pub flags: U32,
    /// `InstanceCount`.
    pub instance_count: U32,
    /// The union `InstanceNameList` / `BaseNameOffset` / `Pdo` / `InstanceInfo` (a
    /// `ULONG_PTR`); 0 here, the port driver fills in the PDO.
    pub instance_info: U64,
}

const _: () = assert!(size_of::<WmiRegGuid>() == 32);
const _: () = assert!(offset_of!(WmiRegGuid, flags) == 16);
const _: () = assert!(offset_of!(WmiRegGuid, instance_count) == 20);
const _: () = assert!(offset_of!(WmiRegGuid, instance_info) == 24);

/// `WNODE_FLAG_ALL_DATA`.
pub const WNODE_FLAG_ALL_DATA: u32 = 0x0000_0001;
/// `WNODE_FLAG_SINGLE_INSTANCE`.
pub const WNODE_FLAG_SINGLE_INSTANCE: u32 = 0x0000_0002;
/// `WNODE_FLAG_SINGLE_ITEM`.
pub const WNODE_FLAG_SINGLE_ITEM: u32 = 0x0000_0004;
/// `WNODE_FLAG_EVENT_ITEM`.
pub const WNODE_FLAG_EVENT_ITEM: u32 = 0x0000_0008;
/// `WNODE_FLAG_FIXED_INSTANCE_SIZE`: `WNODE_ALL_DATA` uses `FixedInstanceSize`.
pub const WNODE_FLAG_FIXED_INSTANCE_SIZE: u32 = 0x0000_0010;
/// `WNODE_FLAG_TOO_SMALL`: the reply is a `WNODE_TOO_SMALL`.
pub const WNODE_FLAG_TOO_SMALL: u32 = 0x0000_0020;
/// `WNODE_FLAG_INSTANCES_SAME`.
pub const WNODE_FLAG_INSTANCES_SAME: u32 = 0x0000_0040;
/// `WNODE_FLAG_STATIC_INSTANCE_NAMES`: requests address instances by `InstanceIndex`.
pub const WNODE_FLAG_STATIC_INSTANCE_NAMES: u32 = 0x0000_0080;
/// `WNODE_FLAG_METHOD_ITEM`.
pub const WNODE_FLAG_METHOD_ITEM: u32 = 0x0000_8000;
/// `WNODE_FLAG_PDO_INSTANCE_NAMES`.
pub const WNODE_FLAG_PDO_INSTANCE_NAMES: u32 = 0x0001_0000;

/// `WMIREG_FLAG_EXPENSIVE`: collection must be enabled before queries.
pub const WMIREG_FLAG_EXPENSIVE: u32 = 0x0000_0001;
/// `WMIREG_FLAG_INSTANCE_LIST`.
pub const WMIREG_FLAG_INSTANCE_LIST: u32 = 0x0000_0004;
/// `WMIREG_FLAG_INSTANCE_BASENAME`.
pub const WMIREG_FLAG_INSTANCE_BASENAME: u32 = 0x0000_0008;
/// `WMIREG_FLAG_INSTANCE_PDO`: static instance names from the PDO's device instance path.
pub const WMIREG_FLAG_INSTANCE_PDO: u32 = 0x0000_0020;
/// `WMIREG_FLAG_EVENT_ONLY_GUID`.
pub const WMIREG_FLAG_EVENT_ONLY_GUID: u32 = 0x0000_0040;
/// `WMIREG_FLAG_REMOVE_GUID`.
pub const WMIREG_FLAG_REMOVE_GUID: u32 = 0x0001_0000;

/// The WMI minor function codes (wdm.h `IRP_MN_*`), the `WMISubFunction` of an
/// `SRB_FUNCTION_WMI` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MinorFunction {
    /// `IRP_MN_QUERY_ALL_DATA` (0): every instance, as a `WNODE_ALL_DATA`.
    QueryAllData = 0,
    /// `IRP_MN_QUERY_SINGLE_INSTANCE` (1): one instance, as a `WNODE_SINGLE_INSTANCE`.
    QuerySingleInstance = 1,
    /// `IRP_MN_CHANGE_SINGLE_INSTANCE` (2): set one instance.
    ChangeSingleInstance = 2,
    /// `IRP_MN_CHANGE_SINGLE_ITEM` (3): set one data item.
    ChangeSingleItem = 3,
    /// `IRP_MN_ENABLE_EVENTS` (4).
    EnableEvents = 4,
    /// `IRP_MN_DISABLE_EVENTS` (5).
    DisableEvents = 5,
    /// `IRP_MN_ENABLE_COLLECTION` (6).
    EnableCollection = 6,
    /// `IRP_MN_DISABLE_COLLECTION` (7).
    DisableCollection = 7,
    /// `IRP_MN_REGINFO` (8): the `WMIREGINFO` registration.
    RegInfo = 8,
    /// `IRP_MN_EXECUTE_METHOD` (9).
    ExecuteMethod = 9,
    /// `IRP_MN_REGINFO_EX` (0x0B): the registration WMI asks for on Windows XP and later, in the
    /// same `WMIREGINFO` format as `IRP_MN_REGINFO`, which it replaces.
    RegInfoEx = 0x0B,
}

impl TryFrom<u8> for MinorFunction {
    type Error = u8;

    fn try_from(value: u8) -> Result<Self, u8> {
        Ok(match value {
            0 => Self::QueryAllData,
            1 => Self::QuerySingleInstance,
            2 => Self::ChangeSingleInstance,
            3 => Self::ChangeSingleItem,
            4 => Self::EnableEvents,
            5 => Self::DisableEvents,
            6 => Self::EnableCollection,
            7 => Self::DisableCollection,
            8 => Self::RegInfo,
            9 => Self::ExecuteMethod,
            0x0B => Self::RegInfoEx,
            other => return Err(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_function_round_trips_and_rejects_the_rest() {
        for code in (0..=9u8).chain([0x0B]) {
            let minor = MinorFunction::try_from(code).unwrap();
            assert_eq!(minor as u8, code);
        }
        // 0x0A is no WMI minor function; IRP_MN_REGINFO_EX (0x0B) is the last one.
        for code in [0x0A].into_iter().chain(0x0C..=255u8) {
            assert_eq!(MinorFunction::try_from(code), Err(code));
        }
    }

    #[test]
    fn header_serialises_little_endian_at_c_offsets() {
        let header = WnodeHeader {
            buffer_size: U32::new(0x0102_0304),
            provider_id: U32::new(0),
            historical_context: U64::new(0),
            timestamp: U64::new(0x1122_3344_5566_7788),
            guid: Guid::from_fields(0xaabb_ccdd, 0xeeff, 0x0011, [1, 2, 3, 4, 5, 6, 7, 8]),
            client_context: U32::new(0),
            flags: U32::new(WNODE_FLAG_STATIC_INSTANCE_NAMES),
        };
        let bytes = header.as_bytes();
        assert_eq!(&bytes[0..4], &[0x04, 0x03, 0x02, 0x01]);
        assert_eq!(
            &bytes[16..24],
            &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(&bytes[24..28], &[0xdd, 0xcc, 0xbb, 0xaa]);
        assert_eq!(&bytes[44..48], &[0x80, 0, 0, 0]);
    }
}
