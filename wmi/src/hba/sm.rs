//! The `MS_SM` HBA API classes (hbapiwmi.h with `MS_SM_HBA_API`, SM-HBA 1.0): GUIDs, method ids,
//! the fixed-layout structures as zerocopy types, and the HBA API constants (hbaapi.h).
//!
//! Sources: the WDK's generated `hbapiwmi.h` (class GUIDs, field order, `MaxLen` of strings,
//! method ids, in/out parameter structures) and `hbaapi.h` (`HBA_STATUS_*`, `HBA_PORTTYPE_*`,
//! `HBA_PORTSTATE_*`, `HBA_SASPORTPROTOCOL_*`, `HBA_SASSPEED_*`), read through the public
//! copies the search index holds; SNIA SM-HBA for the meaning of each field. mingw-w64 ships
//! neither header, so `tests/c_layout.rs` checks these layouts against C structures written
//! from the same field lists, compiled by the Windows cross compiler.

use core::mem::offset_of;

use zerocopy::little_endian::{I64, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::encode::WmiClass;
use crate::guid::Guid;

/// `MS_SM_AdapterInformationQuery`: the adapter's attributes (a data block, no methods).
pub const MS_SM_ADAPTER_INFORMATION_QUERY_GUID: Guid = Guid::from_fields(
    0xbdc6_7efa,
    0xe5e7,
    0x4777,
    [0xb1, 0x3c, 0x62, 0x14, 0x59, 0x65, 0x70, 0x99],
);
/// `MS_SM_PortInformationMethods`: per-port methods.
pub const MS_SM_PORT_INFORMATION_METHODS_GUID: Guid = Guid::from_fields(
    0x5b6a_8b86,
    0x708d,
    0x4ec6,
    [0x82, 0xa6, 0x39, 0xad, 0xcf, 0x6f, 0x64, 0x33],
);
/// `MS_SM_TargetInformationMethods`: target mapping, bindings, LUN statistics.
pub const MS_SM_TARGET_INFORMATION_METHODS_GUID: Guid = Guid::from_fields(
    0x9354_5055,
    0xab4c,
    0x4e80,
    [0x84, 0xae, 0x6a, 0x86, 0xa2, 0xdc, 0x4b, 0x84],
);
/// `MS_SM_ScsiInformationMethods`: INQUIRY, REPORT LUNS, READ CAPACITY pass-through.
pub const MS_SM_SCSI_INFORMATION_METHODS_GUID: Guid = Guid::from_fields(
    0xb666_1e6f,
    0x075e,
    0x4209,
    [0xae, 0x20, 0xfe, 0x81, 0xdb, 0x03, 0xd9, 0x79],
);
/// `MS_SMHBA_SAS_Port` (an embedded class: port-specific attributes of a SAS port).
pub const MS_SMHBA_SAS_PORT_GUID: Guid = Guid::from_fields(
    0xb914_e34f,
    0x7b80,
    0x46b0,
    [0x80, 0x34, 0x6d, 0x9b, 0x68, 0x9e, 0x1d, 0xdd],
);
/// `MS_SMHBA_PORTATTRIBUTES` (embedded class).
pub const MS_SMHBA_PORTATTRIBUTES_GUID: Guid = Guid::from_fields(
    0x50a9_7b2d,
    0x99ad,
    0x4cf9,
    [0x84, 0x37, 0xb4, 0xea, 0x0c, 0x07, 0xbe, 0x4c],
);
/// `MS_SMHBA_PROTOCOLSTATISTICS` (embedded class).
pub const MS_SMHBA_PROTOCOLSTATISTICS_GUID: Guid = Guid::from_fields(
    0xb557_bd86,
    0x4128,
    0x4d5c,
    [0xb6, 0xe6, 0xb6, 0x5f, 0x9b, 0xd6, 0x87, 0x22],
);
/// `MS_SMHBA_SASPHYSTATISTICS` (embedded class).
pub const MS_SMHBA_SASPHYSTATISTICS_GUID: Guid = Guid::from_fields(
    0xbd45_8e7d,
    0xc40a,
    0x4401,
    [0xa1, 0x79, 0x11, 0x91, 0x9c, 0xbc, 0xc5, 0xc6],
);
/// `MS_SMHBA_SAS_PHY` (embedded class).
pub const MS_SMHBA_SAS_PHY_GUID: Guid = Guid::from_fields(
    0xdde0_a090,
    0x96bc,
    0x452b,
    [0x9a, 0x64, 0x6f, 0xbb, 0x6a, 0x19, 0xc4, 0x7d],
);

/// Method ids of `MS_SM_PortInformationMethods`.
pub mod port_method {
    /// `SM_GetPortType`.
    pub const GET_PORT_TYPE: u32 = 1;
    /// `SM_GetAdapterPortAttributes`.
    pub const GET_ADAPTER_PORT_ATTRIBUTES: u32 = 2;
    /// `SM_GetDiscoveredPortAttributes`.
    pub const GET_DISCOVERED_PORT_ATTRIBUTES: u32 = 3;
    /// `SM_GetPortAttributesByWWN`.
    pub const GET_PORT_ATTRIBUTES_BY_WWN: u32 = 4;
    /// `SM_GetProtocolStatistics`.
    pub const GET_PROTOCOL_STATISTICS: u32 = 5;
    /// `SM_GetPhyStatistics`.
    pub const GET_PHY_STATISTICS: u32 = 6;
    /// `SM_GetFCPhyAttributes`.
    pub const GET_FC_PHY_ATTRIBUTES: u32 = 7;
    /// `SM_GetSASPhyAttributes`.
    pub const GET_SAS_PHY_ATTRIBUTES: u32 = 8;
    /// `SM_RefreshInformation` (no parameters).
    pub const REFRESH_INFORMATION: u32 = 10;
}

/// Method ids of `MS_SM_TargetInformationMethods`.
pub mod target_method {
    /// `SM_GetTargetMapping`.
    pub const GET_TARGET_MAPPING: u32 = 1;
    /// `SM_GetBindingCapability`.
    pub const GET_BINDING_CAPABILITY: u32 = 2;
    /// `SM_GetBindingSupport`.
    pub const GET_BINDING_SUPPORT: u32 = 3;
    /// `SM_SetBindingSupport`.
    pub const SET_BINDING_SUPPORT: u32 = 4;
    /// `SM_GetPersistentBinding`.
    pub const GET_PERSISTENT_BINDING: u32 = 5;
    /// `SM_SetPersistentBinding`.
    pub const SET_PERSISTENT_BINDING: u32 = 6;
    /// `SM_RemovePersistentBinding`.
    pub const REMOVE_PERSISTENT_BINDING: u32 = 7;
    /// `SM_GetLUNStatistics`.
    pub const GET_LUN_STATISTICS: u32 = 8;
}

/// Method ids of `MS_SM_ScsiInformationMethods`.
pub mod scsi_method {
    /// `SM_ScsiInquiry`.
    pub const SCSI_INQUIRY: u32 = 1;
    /// `SM_ScsiReportLuns`.
    pub const SCSI_REPORT_LUNS: u32 = 2;
    /// `SM_ScsiReadCapacity`.
    pub const SCSI_READ_CAPACITY: u32 = 3;
}

/// `HBA_STATUS_*` (hbaapi.h): the first field of every method's output.
pub mod hba_status {
    /// `HBA_STATUS_OK`.
    pub const OK: u32 = 0;
    /// `HBA_STATUS_ERROR`.
    pub const ERROR: u32 = 1;
    /// `HBA_STATUS_ERROR_NOT_SUPPORTED`.
    pub const ERROR_NOT_SUPPORTED: u32 = 2;
    /// `HBA_STATUS_ERROR_ARG`.
    pub const ERROR_ARG: u32 = 4;
    /// `HBA_STATUS_ERROR_ILLEGAL_WWN`.
    pub const ERROR_ILLEGAL_WWN: u32 = 5;
    /// `HBA_STATUS_ERROR_ILLEGAL_INDEX`.
    pub const ERROR_ILLEGAL_INDEX: u32 = 6;
    /// `HBA_STATUS_ERROR_MORE_DATA`.
    pub const ERROR_MORE_DATA: u32 = 7;
    /// `HBA_STATUS_ERROR_INVALID_LUN`.
    pub const ERROR_INVALID_LUN: u32 = 14;
    /// `HBA_STATUS_ERROR_INVALID_PROTOCOL_TYPE`.
    pub const ERROR_INVALID_PROTOCOL_TYPE: u32 = 35;
}

/// `HBA_PORTTYPE_SASDEVICE`: a SAS (SSP or STP) port.
pub const HBA_PORTTYPE_SASDEVICE: u32 = 30;
/// `HBA_PORTTYPE_SASEXPANDER`: a SAS expander's port.
pub const HBA_PORTTYPE_SASEXPANDER: u32 = 32;

/// `HBA_PORTSTATE_*` (hbaapi.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum PortState {
    /// `HBA_PORTSTATE_UNKNOWN`.
    Unknown = 1,
    /// `HBA_PORTSTATE_ONLINE`: operational.
    Online = 2,
    /// `HBA_PORTSTATE_OFFLINE`.
    Offline = 3,
    /// `HBA_PORTSTATE_LINKDOWN`.
    LinkDown = 6,
    /// `HBA_PORTSTATE_ERROR`.
    Error = 7,
    /// `HBA_PORTSTATE_DEGRADED`: degraded but operational.
    Degraded = 9,
}

/// `HBA_SASPORTPROTOCOL_SSP`: the SCSI protocol over SAS, the only one a virtio-scsi port has.
pub const HBA_SASPORTPROTOCOL_SSP: u32 = 1;
/// `HBA_SASPORTPROTOCOL_SMP`: the Serial Management Protocol, which an expander's port
/// speaks.
pub const HBA_SASPORTPROTOCOL_SMP: u32 = 4;

/// `HBA_SASSPEED_*` / `HBA_SASSTATE_*`: SAS phy link rates (hbaapi.h, SM-HBA 6.5.4).
pub mod sas_speed {
    /// `HBA_SASSTATE_UNKNOWN`: enabled, rate unknown.
    pub const UNKNOWN: u32 = 0x00;
    /// `HBA_SASSPEED_1_5GBIT`.
    pub const GBIT_1_5: u32 = 0x08;
    /// `HBA_SASSPEED_3GBIT`.
    pub const GBIT_3: u32 = 0x09;
    /// `HBA_SASSPEED_6GBIT`.
    pub const GBIT_6: u32 = 0x0a;
    /// `HBA_SASSPEED_12GBIT`.
    pub const GBIT_12: u32 = 0x0b;
}

/// `MaxLen` of `Manufacturer` and `SerialNumber` in `MS_SM_AdapterInformationQuery`.
pub const ADAPTER_SHORT_STRING_CHARS: usize = 64;
/// `MaxLen` of the other strings of the HBA classes (and `OSDeviceName`).
pub const LONG_STRING_CHARS: usize = 256;
/// Bytes of one encoded `MaxLen(256)` string: the `USHORT` count plus 256 code units.
pub const LONG_STRING_BYTES: usize = 2 + 2 * LONG_STRING_CHARS;

/// `MS_SMHBA_SAS_Port`: the port-specific attributes of a SAS port.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct SmhbaSasPort {
    /// `PortProtocol`: `HBA_SASPORTPROTOCOL_*` bits.
    pub port_protocol: U32,
    /// `LocalSASAddress`.
    pub local_sas_address: [u8; 8],
    /// `AttachedSASAddress`.
    pub attached_sas_address: [u8; 8],
    /// `NumberofDiscoveredPorts`.
    pub number_of_discovered_ports: U32,
    /// `NumberofPhys`.
    pub number_of_phys: U32,
}

const _: () = assert!(size_of::<SmhbaSasPort>() == 28);
const _: () = assert!(offset_of!(SmhbaSasPort, local_sas_address) == 4);
const _: () = assert!(offset_of!(SmhbaSasPort, attached_sas_address) == 12);
const _: () = assert!(offset_of!(SmhbaSasPort, number_of_discovered_ports) == 20);
const _: () = assert!(offset_of!(SmhbaSasPort, number_of_phys) == 24);

impl WmiClass for SmhbaSasPort {
    const ALIGN: usize = 4;
}

/// `MS_SMHBA_SAS_PHY`: one SAS phy's attributes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct SmhbaSasPhy {
    /// `PhyIdentifier`.
    pub phy_identifier: u8,
    /// Padding before the 4-aligned rates.
    pub padding: [u8; 3],
    /// `NegotiatedLinkRate`.
    pub negotiated_link_rate: U32,
    /// `ProgrammedMinLinkRate`.
    pub programmed_min_link_rate: U32,
    /// `HardwareMinLinkRate`.
    pub hardware_min_link_rate: U32,
    /// `ProgrammedMaxLinkRate`.
    pub programmed_max_link_rate: U32,
    /// `HardwareMaxLinkRate`.
    pub hardware_max_link_rate: U32,
    /// `domainPortWWN`.
    pub domain_port_wwn: [u8; 8],
}

const _: () = assert!(size_of::<SmhbaSasPhy>() == 32);
const _: () = assert!(offset_of!(SmhbaSasPhy, negotiated_link_rate) == 4);
const _: () = assert!(offset_of!(SmhbaSasPhy, hardware_max_link_rate) == 20);
const _: () = assert!(offset_of!(SmhbaSasPhy, domain_port_wwn) == 24);

impl WmiClass for SmhbaSasPhy {
    const ALIGN: usize = 4;
}

/// `MS_SMHBA_FC_PHY`: an FC phy's attributes (only ever zero here: the port is SAS).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct SmhbaFcPhy {
    /// `PhySupportSpeed`.
    pub phy_support_speed: U32,
    /// `PhySpeed`.
    pub phy_speed: U32,
    /// `PhyType`.
    pub phy_type: u8,
    /// Padding before `MaxFrameSize`.
    pub padding: [u8; 3],
    /// `MaxFrameSize`.
    pub max_frame_size: U32,
}

const _: () = assert!(size_of::<SmhbaFcPhy>() == 16);
const _: () = assert!(offset_of!(SmhbaFcPhy, max_frame_size) == 12);

impl WmiClass for SmhbaFcPhy {
    const ALIGN: usize = 4;
}

/// `MS_SMHBA_PROTOCOLSTATISTICS`: per-protocol counters (SM-HBA 6.6.1.1).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct SmhbaProtocolStatistics {
    /// `SecondsSinceLastReset`.
    pub seconds_since_last_reset: I64,
    /// `InputRequests`: reads.
    pub input_requests: I64,
    /// `OutputRequests`: writes.
    pub output_requests: I64,
    /// `ControlRequests`: commands without data.
    pub control_requests: I64,
    /// `InputMegabytes`.
    pub input_megabytes: I64,
    /// `OutputMegabytes`.
    pub output_megabytes: I64,
}

const _: () = assert!(size_of::<SmhbaProtocolStatistics>() == 48);
const _: () = assert!(offset_of!(SmhbaProtocolStatistics, output_megabytes) == 40);

impl WmiClass for SmhbaProtocolStatistics {
    const ALIGN: usize = 8;
}

/// `MS_SMHBA_SASPHYSTATISTICS`: per-phy counters (SM-HBA 6.6.2.2). `SM_GetPhyStatistics`
/// returns them as a `sint64` array in this field order.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct SmhbaSasPhyStatistics {
    /// `SecondsSinceLastReset`.
    pub seconds_since_last_reset: I64,
    /// `TxFrames`.
    pub tx_frames: I64,
    /// `TxWords`.
    pub tx_words: I64,
    /// `RxFrames`.
    pub rx_frames: I64,
    /// `RxWords`.
    pub rx_words: I64,
    /// `InvalidDwordCount`.
    pub invalid_dword_count: I64,
    /// `RunningDisparityErrorCount`.
    pub running_disparity_error_count: I64,
    /// `LossofDwordSyncCount`.
    pub loss_of_dword_sync_count: I64,
    /// `PhyResetProblemCount`.
    pub phy_reset_problem_count: I64,
}

const _: () = assert!(size_of::<SmhbaSasPhyStatistics>() == 72);

/// Number of counters in [`SmhbaSasPhyStatistics`].
pub const SAS_PHY_COUNTERS: usize = size_of::<SmhbaSasPhyStatistics>() / 8;

/// `MS_SMHBA_PORTLUN`: a logical unit behind a discovered port.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct SmhbaPortLun {
    /// `PortWWN`: the target port.
    pub port_wwn: [u8; 8],
    /// `domainPortWWN`.
    pub domain_port_wwn: [u8; 8],
    /// `TargetLun`: the 8-byte SAM LUN, byte 0 at the lowest address.
    pub target_lun: U64,
}

const _: () = assert!(size_of::<SmhbaPortLun>() == 24);

impl WmiClass for SmhbaPortLun {
    const ALIGN: usize = 8;
}

/// `HBAScsiID`: the OS address of a logical unit. `OSDeviceName` is a `uint16[257]` array
/// holding a string: element 0 is its byte length.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct HbaScsiId {
    /// `ScsiBusNumber`.
    pub scsi_bus_number: U32,
    /// `ScsiTargetNumber`.
    pub scsi_target_number: U32,
    /// `ScsiOSLun`.
    pub scsi_os_lun: U32,
    /// `OSDeviceName` (`USHORT[257]`).
    pub os_device_name: [u8; 514],
    /// Tail padding to the 4-byte alignment.
    pub padding: [u8; 2],
}

const _: () = assert!(size_of::<HbaScsiId>() == 528);
const _: () = assert!(offset_of!(HbaScsiId, os_device_name) == 12);

/// Size of `MS_SMHBA_SCSIENTRY` (`PortLun`, `LUID[256]`, `ScsiId`), 8-aligned.
pub const SCSI_ENTRY_SIZE: usize = 808;
/// Offset of `LUID` in `MS_SMHBA_SCSIENTRY`.
pub const SCSI_ENTRY_LUID_OFFSET: usize = 24;
/// Offset of `ScsiId` in `MS_SMHBA_SCSIENTRY`.
pub const SCSI_ENTRY_SCSI_ID_OFFSET: usize = 280;

/// Size of `MS_SMHBA_PORTATTRIBUTES` up to `PortSpecificAttributes` (the 8-aligned offset of
/// the port-specific bytes).
pub const PORT_ATTRIBUTES_FIXED_SIZE: usize = 536;
/// Offset of `OSDeviceName` in `MS_SMHBA_PORTATTRIBUTES`.
pub const PORT_ATTRIBUTES_OS_DEVICE_NAME_OFFSET: usize = 12;
/// Offset of `Reserved` in `MS_SMHBA_PORTATTRIBUTES`.
pub const PORT_ATTRIBUTES_RESERVED_OFFSET: usize = 528;

/// Bytes of `MS_SM_AdapterInformationQuery` as this crate encodes it (every string in its
/// `MaxLen` buffer), the C structure's size without its 2 bytes of tail padding.
pub const ADAPTER_INFORMATION_SIZE: usize = 5934;

/// `SM_GetPortType_IN`, and any input that is just a `PortIndex`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct PortIndexIn {
    /// `PortIndex`.
    pub port_index: U32,
}

/// `SM_GetAdapterPortAttributes_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct GetAdapterPortAttributesIn {
    /// `PortIndex`.
    pub port_index: U32,
    /// `PortSpecificAttributesMaxSize`.
    pub port_specific_attributes_max_size: U32,
}

/// `SM_GetDiscoveredPortAttributes_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct GetDiscoveredPortAttributesIn {
    /// `PortIndex`.
    pub port_index: U32,
    /// `DiscoveredPortIndex`.
    pub discovered_port_index: U32,
    /// `PortSpecificAttributesMaxSize`.
    pub port_specific_attributes_max_size: U32,
}

/// `SM_GetPortAttributesByWWN_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct GetPortAttributesByWwnIn {
    /// `PortWWN`.
    pub port_wwn: [u8; 8],
    /// `DomainPortWWN`.
    pub domain_port_wwn: [u8; 8],
    /// `PortSpecificAttributesMaxSize`.
    pub port_specific_attributes_max_size: U32,
}

const _: () = assert!(size_of::<GetPortAttributesByWwnIn>() == 20);

/// `SM_GetProtocolStatistics_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct GetProtocolStatisticsIn {
    /// `PortIndex`.
    pub port_index: U32,
    /// `ProtocolType`: an `HBA_SASPORTPROTOCOL_*` value for a SAS port.
    pub protocol_type: U32,
}

/// `SM_GetPhyStatistics_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct GetPhyStatisticsIn {
    /// `PortIndex`.
    pub port_index: U32,
    /// `PhyIndex`.
    pub phy_index: U32,
    /// `InNumOfPhyCounters`: room in the output.
    pub in_num_of_phy_counters: U32,
}

/// `SM_GetFCPhyAttributes_IN` / `SM_GetSASPhyAttributes_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct PhyIn {
    /// `PortIndex`.
    pub port_index: U32,
    /// `PhyIndex`.
    pub phy_index: U32,
}

/// `SM_GetTargetMapping_IN`, and the fixed part of the persistent binding inputs (whose third
/// field is `InEntryCount` or `EntryCount`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WwnPairCountIn {
    /// `HbaPortWWN`.
    pub hba_port_wwn: [u8; 8],
    /// `DomainPortWWN`.
    pub domain_port_wwn: [u8; 8],
    /// `InEntryCount` / `EntryCount`.
    pub entry_count: U32,
}

const _: () = assert!(size_of::<WwnPairCountIn>() == 20);

/// `SM_GetBindingCapability_IN` / `SM_GetBindingSupport_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct WwnPairIn {
    /// `HbaPortWWN`.
    pub hba_port_wwn: [u8; 8],
    /// `DomainPortWWN`.
    pub domain_port_wwn: [u8; 8],
}

/// `SM_GetLUNStatistics_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct GetLunStatisticsIn {
    /// `Lunit`.
    pub lunit: HbaScsiId,
}

impl GetLunStatisticsIn {
    /// Bytes of the MOF's items: `Lunit` up to the end of `OSDeviceName` (526), without the 2
    /// bytes of tail padding C adds to `HBAScsiID` (528). A client calling through WMI's COM
    /// layer sends 526.
    pub const ITEMS_SIZE: usize = offset_of!(HbaScsiId, padding);
}

const _: () = assert!(GetLunStatisticsIn::ITEMS_SIZE == 526);

/// `SM_ScsiInquiry_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct ScsiInquiryIn {
    /// `HbaPortWWN`.
    pub hba_port_wwn: [u8; 8],
    /// `DiscoveredPortWWN`: the target port.
    pub discovered_port_wwn: [u8; 8],
    /// `DomainPortWWN`.
    pub domain_port_wwn: [u8; 8],
    /// `SmhbaLUN`: the 8-byte SAM LUN, byte 0 at the lowest address.
    pub smhba_lun: U64,
    /// `Cdb`: the INQUIRY CDB.
    pub cdb: [u8; 6],
    /// Padding before the 4-aligned sizes.
    pub padding: [u8; 2],
    /// `InRespBufferMaxSize`.
    pub in_resp_buffer_max_size: U32,
    /// `InSenseBufferMaxSize`.
    pub in_sense_buffer_max_size: U32,
}

const _: () = assert!(size_of::<ScsiInquiryIn>() == 48);
const _: () = assert!(offset_of!(ScsiInquiryIn, smhba_lun) == 24);
const _: () = assert!(offset_of!(ScsiInquiryIn, cdb) == 32);
const _: () = assert!(offset_of!(ScsiInquiryIn, in_resp_buffer_max_size) == 40);

/// `SM_ScsiReportLuns_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct ScsiReportLunsIn {
    /// `HbaPortWWN`.
    pub hba_port_wwn: [u8; 8],
    /// `DiscoveredPortWWN`.
    pub discovered_port_wwn: [u8; 8],
    /// `DomainPortWWN`.
    pub domain_port_wwn: [u8; 8],
    /// `Cdb`: the REPORT LUNS CDB.
    pub cdb: [u8; 12],
    /// `InRespBufferMaxSize`.
    pub in_resp_buffer_max_size: U32,
    /// `InSenseBufferMaxSize`.
    pub in_sense_buffer_max_size: U32,
}

const _: () = assert!(size_of::<ScsiReportLunsIn>() == 44);
const _: () = assert!(offset_of!(ScsiReportLunsIn, in_resp_buffer_max_size) == 36);

/// `SM_ScsiReadCapacity_IN`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct ScsiReadCapacityIn {
    /// `HbaPortWWN`.
    pub hba_port_wwn: [u8; 8],
    /// `DiscoveredPortWWN`.
    pub discovered_port_wwn: [u8; 8],
    /// `DomainPortWWN`.
    pub domain_port_wwn: [u8; 8],
    /// `SmhbaLUN`.
    pub smhba_lun: U64,
    /// `Cdb`: READ CAPACITY (10) or (16).
    pub cdb: [u8; 16],
    /// `InRespBufferMaxSize`.
    pub in_resp_buffer_max_size: U32,
    /// `InSenseBufferMaxSize`.
    pub in_sense_buffer_max_size: U32,
}

const _: () = assert!(size_of::<ScsiReadCapacityIn>() == 56);
const _: () = assert!(offset_of!(ScsiReadCapacityIn, in_resp_buffer_max_size) == 48);
