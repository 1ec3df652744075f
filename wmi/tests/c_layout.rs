//! Cross-checks the crate's wire layouts against C: generates `_Static_assert`s from the Rust
//! sizes, offsets and constants, and compiles them (`-fsyntax-only`) with the x86-64 Windows
//! cross compiler against mingw-w64's `wmistr.h`, `ntstatus.h` and `ddk/wdm.h`.
//!
//! A Windows executable cannot run here, so the values are checked at compile time: a probe
//! that fails to compile names the assertion that differs. mingw-w64 has no `hbapiwmi.h`; when
//! the compiler cannot find one, the hbapiwmi structures are declared below from the field
//! lists of the WDK's hbapiwmi.h, and the hand-computed offsets in `layout/mod.rs` (the ones
//! the golden tests use) are checked against them.
//!
//! Needs `x86_64-w64-mingw32-gcc` (Debian: gcc-mingw-w64-x86-64); `RVSCSI_MINGW_CC` overrides
//! the compiler. Without the compiler the test prints why and passes; CI installs it.

#[path = "layout/mod.rs"]
mod layout;

use std::fmt::Write as _;
use std::mem::offset_of;

use rvscsi_c_probe::{compile, compiler, probe_source, scratch_dir};
use rvscsi_wmi::guid::Guid;
use rvscsi_wmi::hba::sm::{
    GetAdapterPortAttributesIn, GetDiscoveredPortAttributesIn, GetPhyStatisticsIn,
    GetPortAttributesByWwnIn, GetProtocolStatisticsIn, HbaScsiId, PhyIn, PortIndexIn,
    ScsiInquiryIn, ScsiReadCapacityIn, ScsiReportLunsIn, SmhbaFcPhy, SmhbaPortLun,
    SmhbaProtocolStatistics, SmhbaSasPhy, SmhbaSasPhyStatistics, SmhbaSasPort, WwnPairCountIn,
    WwnPairIn,
};
use rvscsi_wmi::status::WmiStatus;
use rvscsi_wmi::wnode::{self, MinorFunction};
use rvscsi_wmi::wnode::{
    OffsetInstanceDataAndLength, WmiRegGuid, WmiRegInfo, WnodeAllData, WnodeHeader,
    WnodeMethodItem, WnodeSingleInstance, WnodeSingleItem, WnodeTooSmall,
};

/// hbapiwmi.h structures (`MS_SM_HBA_API` part), declared from the WDK header's field lists for
/// toolchains without it. Strings with `MaxLen(n)` are `WCHAR[n + 1]`, as wmimofck emits them.
const HBAPIWMI_DECLARATIONS: &str = r"
typedef struct { ULONG PortProtocol; UCHAR LocalSASAddress[8]; UCHAR AttachedSASAddress[8];
  ULONG NumberofDiscoveredPorts; ULONG NumberofPhys; } MS_SMHBA_SAS_Port;
typedef struct { UCHAR PhyIdentifier; ULONG NegotiatedLinkRate; ULONG ProgrammedMinLinkRate;
  ULONG HardwareMinLinkRate; ULONG ProgrammedMaxLinkRate; ULONG HardwareMaxLinkRate;
  UCHAR domainPortWWN[8]; } MS_SMHBA_SAS_PHY;
typedef struct { ULONG PhySupportSpeed; ULONG PhySpeed; UCHAR PhyType; ULONG MaxFrameSize; }
  MS_SMHBA_FC_PHY;
typedef struct { LONGLONG SecondsSinceLastReset; LONGLONG InputRequests;
  LONGLONG OutputRequests; LONGLONG ControlRequests; LONGLONG InputMegabytes;
  LONGLONG OutputMegabytes; } MS_SMHBA_PROTOCOLSTATISTICS;
typedef struct { LONGLONG SecondsSinceLastReset; LONGLONG TxFrames; LONGLONG TxWords;
  LONGLONG RxFrames; LONGLONG RxWords; LONGLONG InvalidDwordCount;
  LONGLONG RunningDisparityErrorCount; LONGLONG LossofDwordSyncCount;
  LONGLONG PhyResetProblemCount; } MS_SMHBA_SASPHYSTATISTICS;
typedef struct { UCHAR PortWWN[8]; UCHAR domainPortWWN[8]; ULONGLONG TargetLun; }
  MS_SMHBA_PORTLUN;
typedef struct { ULONG ScsiBusNumber; ULONG ScsiTargetNumber; ULONG ScsiOSLun;
  USHORT OSDeviceName[257]; } HBAScsiID;
typedef struct { MS_SMHBA_PORTLUN PortLun; UCHAR LUID[256]; HBAScsiID ScsiId; }
  MS_SMHBA_SCSIENTRY;
typedef struct { ULONG type; MS_SMHBA_PORTLUN PortLun; UCHAR LUID[256]; ULONG Status;
  HBAScsiID ScsiId; } MS_SMHBA_BINDINGENTRY;
typedef struct { ULONG PortType; ULONG PortState; ULONG PortSpecificAttributesSize;
  WCHAR OSDeviceName[256 + 1]; ULONGLONG Reserved; UCHAR PortSpecificAttributes[1]; }
  MS_SMHBA_PORTATTRIBUTES;
typedef struct { ULONGLONG UniqueAdapterId; ULONG HBAStatus; ULONG NumberOfPorts;
  ULONG VendorSpecificID; WCHAR Manufacturer[64 + 1]; WCHAR SerialNumber[64 + 1];
  WCHAR Model[256 + 1]; WCHAR ModelDescription[256 + 1]; WCHAR HardwareVersion[256 + 1];
  WCHAR DriverVersion[256 + 1]; WCHAR OptionROMVersion[256 + 1];
  WCHAR FirmwareVersion[256 + 1]; WCHAR DriverName[256 + 1]; WCHAR HBASymbolicName[256 + 1];
  WCHAR RedundantOptionROMVersion[256 + 1]; WCHAR RedundantFirmwareVersion[256 + 1];
  WCHAR MfgDomain[256 + 1]; } MS_SM_AdapterInformationQuery;
typedef struct { ULONG PortIndex; } SM_GetPortType_IN;
typedef struct { ULONG HBAStatus; ULONG PortType; } SM_GetPortType_OUT;
typedef struct { ULONG PortIndex; ULONG PortSpecificAttributesMaxSize; }
  SM_GetAdapterPortAttributes_IN;
typedef struct { ULONG HBAStatus; MS_SMHBA_PORTATTRIBUTES PortAttributes; }
  SM_GetAdapterPortAttributes_OUT;
typedef struct { ULONG PortIndex; ULONG DiscoveredPortIndex;
  ULONG PortSpecificAttributesMaxSize; } SM_GetDiscoveredPortAttributes_IN;
typedef struct { ULONG HBAStatus; MS_SMHBA_PORTATTRIBUTES PortAttributes; }
  SM_GetDiscoveredPortAttributes_OUT;
typedef struct { UCHAR PortWWN[8]; UCHAR DomainPortWWN[8]; ULONG PortSpecificAttributesMaxSize; }
  SM_GetPortAttributesByWWN_IN;
typedef struct { ULONG HBAStatus; MS_SMHBA_PORTATTRIBUTES PortAttributes; }
  SM_GetPortAttributesByWWN_OUT;
typedef struct { ULONG PortIndex; ULONG ProtocolType; } SM_GetProtocolStatistics_IN;
typedef struct { ULONG HBAStatus; MS_SMHBA_PROTOCOLSTATISTICS ProtocolStatistics; }
  SM_GetProtocolStatistics_OUT;
typedef struct { ULONG PortIndex; ULONG PhyIndex; ULONG InNumOfPhyCounters; }
  SM_GetPhyStatistics_IN;
typedef struct { ULONG HBAStatus; ULONG TotalNumOfPhyCounters; ULONG OutNumOfPhyCounters;
  LONGLONG PhyCounter[1]; } SM_GetPhyStatistics_OUT;
typedef struct { ULONG PortIndex; ULONG PhyIndex; } SM_GetFCPhyAttributes_IN;
typedef struct { ULONG HBAStatus; MS_SMHBA_FC_PHY PhyType; } SM_GetFCPhyAttributes_OUT;
typedef struct { ULONG PortIndex; ULONG PhyIndex; } SM_GetSASPhyAttributes_IN;
typedef struct { ULONG HBAStatus; MS_SMHBA_SAS_PHY PhyType; } SM_GetSASPhyAttributes_OUT;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DomainPortWWN[8]; ULONG InEntryCount; }
  SM_GetTargetMapping_IN;
typedef struct { ULONG HBAStatus; ULONG TotalEntryCount; ULONG OutEntryCount;
  MS_SMHBA_SCSIENTRY Entry[1]; } SM_GetTargetMapping_OUT;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DomainPortWWN[8]; } SM_GetBindingCapability_IN;
typedef struct { ULONG HBAStatus; ULONG Flags; } SM_GetBindingCapability_OUT;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DomainPortWWN[8]; } SM_GetBindingSupport_IN;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DomainPortWWN[8]; ULONG Flags; }
  SM_SetBindingSupport_IN;
typedef struct { ULONG HBAStatus; } SM_SetBindingSupport_OUT;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DomainPortWWN[8]; ULONG InEntryCount; }
  SM_GetPersistentBinding_IN;
typedef struct { ULONG HBAStatus; ULONG TotalEntryCount; ULONG OutEntryCount;
  MS_SMHBA_BINDINGENTRY Entry[1]; } SM_GetPersistentBinding_OUT;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DomainPortWWN[8]; ULONG InEntryCount;
  MS_SMHBA_BINDINGENTRY Entry[1]; } SM_SetPersistentBinding_IN;
typedef struct { ULONG HBAStatus; ULONG OutStatusCount; ULONG EntryStatus[1]; }
  SM_SetPersistentBinding_OUT;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DomainPortWWN[8]; ULONG EntryCount;
  MS_SMHBA_BINDINGENTRY Entry[1]; } SM_RemovePersistentBinding_IN;
typedef struct { ULONG HBAStatus; } SM_RemovePersistentBinding_OUT;
typedef struct { HBAScsiID Lunit; } SM_GetLUNStatistics_IN;
typedef struct { ULONG HBAStatus; MS_SMHBA_PROTOCOLSTATISTICS ProtocolStatistics; }
  SM_GetLUNStatistics_OUT;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DiscoveredPortWWN[8]; UCHAR DomainPortWWN[8];
  ULONGLONG SmhbaLUN; UCHAR Cdb[6]; ULONG InRespBufferMaxSize; ULONG InSenseBufferMaxSize; }
  SM_ScsiInquiry_IN;
typedef struct { ULONG HBAStatus; UCHAR ScsiStatus; ULONG OutRespBufferSize;
  ULONG OutSenseBufferSize; UCHAR RespBuffer[1]; } SM_ScsiInquiry_OUT;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DiscoveredPortWWN[8]; UCHAR DomainPortWWN[8];
  UCHAR Cdb[12]; ULONG InRespBufferMaxSize; ULONG InSenseBufferMaxSize; } SM_ScsiReportLuns_IN;
typedef struct { ULONG HBAStatus; UCHAR ScsiStatus; ULONG TotalRespBufferSize;
  ULONG OutRespBufferSize; ULONG OutSenseBufferSize; UCHAR RespBuffer[1]; }
  SM_ScsiReportLuns_OUT;
typedef struct { UCHAR HbaPortWWN[8]; UCHAR DiscoveredPortWWN[8]; UCHAR DomainPortWWN[8];
  ULONGLONG SmhbaLUN; UCHAR Cdb[16]; ULONG InRespBufferMaxSize; ULONG InSenseBufferMaxSize; }
  SM_ScsiReadCapacity_IN;
typedef struct { ULONG HBAStatus; UCHAR ScsiStatus; ULONG OutRespBufferSize;
  ULONG OutSenseBufferSize; UCHAR RespBuffer[1]; } SM_ScsiReadCapacity_OUT;
";

/// `(C expression, Rust value)` pairs for the wmistr.h structures, flags and the statuses.
///
/// Which header each value follows: mingw-w64's `wmistr.h` and Microsoft's (the WDK's, as
/// documented on learn.microsoft.com) agree on every offset and flag here, so those are checked
/// against mingw-w64's declarations directly. They differ in one size: Microsoft declares
/// `WNODE_ALL_DATA.OffsetInstanceDataAndLength[]` open-ended, mingw-w64 with one element. The
/// crate follows Microsoft, checked against `WDK_WNODE_ALL_DATA`, Microsoft's field list
/// re-declared in [`WMISTR_PRELUDE`].
#[expect(
    clippy::too_many_lines,
    reason = "a table: one line per field, flag and status"
)]
fn wmistr_checks() -> Vec<(String, u64)> {
    let mut checks: Vec<(&str, usize)> = vec![
        ("sizeof(GUID)", size_of::<Guid>()),
        ("offsetof(GUID, Data2)", offset_of!(Guid, data2)),
        ("offsetof(GUID, Data3)", offset_of!(Guid, data3)),
        ("offsetof(GUID, Data4)", offset_of!(Guid, data4)),
        ("sizeof(WNODE_HEADER)", size_of::<WnodeHeader>()),
        (
            "offsetof(WNODE_HEADER, BufferSize)",
            offset_of!(WnodeHeader, buffer_size),
        ),
        (
            "offsetof(WNODE_HEADER, ProviderId)",
            offset_of!(WnodeHeader, provider_id),
        ),
        (
            "offsetof(WNODE_HEADER, HistoricalContext)",
            offset_of!(WnodeHeader, historical_context),
        ),
        (
            "offsetof(WNODE_HEADER, Version)",
            offset_of!(WnodeHeader, historical_context),
        ),
        (
            "offsetof(WNODE_HEADER, TimeStamp)",
            offset_of!(WnodeHeader, timestamp),
        ),
        (
            "offsetof(WNODE_HEADER, CountLost)",
            offset_of!(WnodeHeader, timestamp),
        ),
        (
            "offsetof(WNODE_HEADER, Guid)",
            offset_of!(WnodeHeader, guid),
        ),
        (
            "offsetof(WNODE_HEADER, ClientContext)",
            offset_of!(WnodeHeader, client_context),
        ),
        (
            "offsetof(WNODE_HEADER, Flags)",
            offset_of!(WnodeHeader, flags),
        ),
        (
            "offsetof(WNODE_ALL_DATA, DataBlockOffset)",
            offset_of!(WnodeAllData, data_block_offset),
        ),
        (
            "offsetof(WNODE_ALL_DATA, InstanceCount)",
            offset_of!(WnodeAllData, instance_count),
        ),
        (
            "offsetof(WNODE_ALL_DATA, OffsetInstanceNameOffsets)",
            offset_of!(WnodeAllData, offset_instance_name_offsets),
        ),
        (
            "offsetof(WNODE_ALL_DATA, FixedInstanceSize)",
            wnode::WNODE_ALL_DATA_UNION_OFFSET,
        ),
        (
            "offsetof(WNODE_ALL_DATA, OffsetInstanceDataAndLength)",
            wnode::WNODE_ALL_DATA_UNION_OFFSET,
        ),
        // Microsoft's declaration (WDK_WNODE_ALL_DATA, see WMISTR_PRELUDE): the open-ended
        // table makes the C size 64, the size Windows sizes query-all-data buffers with.
        ("sizeof(WDK_WNODE_ALL_DATA)", wnode::WNODE_ALL_DATA_C_SIZE),
        (
            "offsetof(WDK_WNODE_ALL_DATA, OffsetInstanceDataAndLength)",
            wnode::WNODE_ALL_DATA_UNION_OFFSET,
        ),
        // mingw-w64's one-element table pads its sizeof to 72: the value the crate does not
        // use, checked so that the difference stays visible.
        (
            "sizeof(WNODE_ALL_DATA)",
            wnode::WNODE_ALL_DATA_C_SIZE + size_of::<OffsetInstanceDataAndLength>(),
        ),
        (
            "sizeof(OFFSETINSTANCEDATAANDLENGTH)",
            size_of::<OffsetInstanceDataAndLength>(),
        ),
        (
            "offsetof(OFFSETINSTANCEDATAANDLENGTH, LengthInstanceData)",
            offset_of!(OffsetInstanceDataAndLength, length_instance_data),
        ),
        (
            "offsetof(WNODE_SINGLE_INSTANCE, OffsetInstanceName)",
            offset_of!(WnodeSingleInstance, offset_instance_name),
        ),
        (
            "offsetof(WNODE_SINGLE_INSTANCE, InstanceIndex)",
            offset_of!(WnodeSingleInstance, instance_index),
        ),
        (
            "offsetof(WNODE_SINGLE_INSTANCE, DataBlockOffset)",
            offset_of!(WnodeSingleInstance, data_block_offset),
        ),
        (
            "offsetof(WNODE_SINGLE_INSTANCE, SizeDataBlock)",
            offset_of!(WnodeSingleInstance, size_data_block),
        ),
        (
            "offsetof(WNODE_SINGLE_INSTANCE, VariableData)",
            size_of::<WnodeSingleInstance>(),
        ),
        (
            "offsetof(WNODE_SINGLE_ITEM, OffsetInstanceName)",
            offset_of!(WnodeSingleItem, offset_instance_name),
        ),
        (
            "offsetof(WNODE_SINGLE_ITEM, InstanceIndex)",
            offset_of!(WnodeSingleItem, instance_index),
        ),
        (
            "offsetof(WNODE_SINGLE_ITEM, ItemId)",
            offset_of!(WnodeSingleItem, item_id),
        ),
        (
            "offsetof(WNODE_SINGLE_ITEM, DataBlockOffset)",
            offset_of!(WnodeSingleItem, data_block_offset),
        ),
        (
            "offsetof(WNODE_SINGLE_ITEM, SizeDataItem)",
            offset_of!(WnodeSingleItem, size_data_item),
        ),
        (
            "offsetof(WNODE_SINGLE_ITEM, VariableData)",
            size_of::<WnodeSingleItem>(),
        ),
        (
            "offsetof(WNODE_METHOD_ITEM, OffsetInstanceName)",
            offset_of!(WnodeMethodItem, offset_instance_name),
        ),
        (
            "offsetof(WNODE_METHOD_ITEM, InstanceIndex)",
            offset_of!(WnodeMethodItem, instance_index),
        ),
        (
            "offsetof(WNODE_METHOD_ITEM, MethodId)",
            offset_of!(WnodeMethodItem, method_id),
        ),
        (
            "offsetof(WNODE_METHOD_ITEM, DataBlockOffset)",
            offset_of!(WnodeMethodItem, data_block_offset),
        ),
        (
            "offsetof(WNODE_METHOD_ITEM, SizeDataBlock)",
            offset_of!(WnodeMethodItem, size_data_block),
        ),
        (
            "offsetof(WNODE_METHOD_ITEM, VariableData)",
            size_of::<WnodeMethodItem>(),
        ),
        ("sizeof(WNODE_TOO_SMALL)", size_of::<WnodeTooSmall>()),
        (
            "offsetof(WNODE_TOO_SMALL, SizeNeeded)",
            offset_of!(WnodeTooSmall, size_needed),
        ),
        (
            "offsetof(WMIREGINFOW, BufferSize)",
            offset_of!(WmiRegInfo, buffer_size),
        ),
        (
            "offsetof(WMIREGINFOW, NextWmiRegInfo)",
            offset_of!(WmiRegInfo, next_wmi_reg_info),
        ),
        (
            "offsetof(WMIREGINFOW, RegistryPath)",
            offset_of!(WmiRegInfo, registry_path),
        ),
        (
            "offsetof(WMIREGINFOW, MofResourceName)",
            offset_of!(WmiRegInfo, mof_resource_name),
        ),
        (
            "offsetof(WMIREGINFOW, GuidCount)",
            offset_of!(WmiRegInfo, guid_count),
        ),
        ("offsetof(WMIREGINFOW, WmiRegGuid)", size_of::<WmiRegInfo>()),
        ("sizeof(WMIREGGUIDW)", size_of::<WmiRegGuid>()),
        (
            "offsetof(WMIREGGUIDW, Flags)",
            offset_of!(WmiRegGuid, flags),
        ),
        (
            "offsetof(WMIREGGUIDW, InstanceCount)",
            offset_of!(WmiRegGuid, instance_count),
        ),
        (
            "offsetof(WMIREGGUIDW, InstanceInfo)",
            offset_of!(WmiRegGuid, instance_info),
        ),
        (
            "offsetof(WMIREGGUIDW, Pdo)",
            offset_of!(WmiRegGuid, instance_info),
        ),
    ];
    let as_usize = |value: u32| value as usize;
    checks.extend([
        ("WNODE_FLAG_ALL_DATA", as_usize(wnode::WNODE_FLAG_ALL_DATA)),
        (
            "WNODE_FLAG_SINGLE_INSTANCE",
            as_usize(wnode::WNODE_FLAG_SINGLE_INSTANCE),
        ),
        (
            "WNODE_FLAG_SINGLE_ITEM",
            as_usize(wnode::WNODE_FLAG_SINGLE_ITEM),
        ),
        (
            "WNODE_FLAG_EVENT_ITEM",
            as_usize(wnode::WNODE_FLAG_EVENT_ITEM),
        ),
        (
            "WNODE_FLAG_FIXED_INSTANCE_SIZE",
            as_usize(wnode::WNODE_FLAG_FIXED_INSTANCE_SIZE),
        ),
        (
            "WNODE_FLAG_TOO_SMALL",
            as_usize(wnode::WNODE_FLAG_TOO_SMALL),
        ),
        (
            "WNODE_FLAG_INSTANCES_SAME",
            as_usize(wnode::WNODE_FLAG_INSTANCES_SAME),
        ),
        (
            "WNODE_FLAG_STATIC_INSTANCE_NAMES",
            as_usize(wnode::WNODE_FLAG_STATIC_INSTANCE_NAMES),
        ),
        (
            "WNODE_FLAG_METHOD_ITEM",
            as_usize(wnode::WNODE_FLAG_METHOD_ITEM),
        ),
        (
            "WNODE_FLAG_PDO_INSTANCE_NAMES",
            as_usize(wnode::WNODE_FLAG_PDO_INSTANCE_NAMES),
        ),
        (
            "WMIREG_FLAG_EXPENSIVE",
            as_usize(wnode::WMIREG_FLAG_EXPENSIVE),
        ),
        (
            "WMIREG_FLAG_INSTANCE_LIST",
            as_usize(wnode::WMIREG_FLAG_INSTANCE_LIST),
        ),
        (
            "WMIREG_FLAG_INSTANCE_BASENAME",
            as_usize(wnode::WMIREG_FLAG_INSTANCE_BASENAME),
        ),
        (
            "WMIREG_FLAG_INSTANCE_PDO",
            as_usize(wnode::WMIREG_FLAG_INSTANCE_PDO),
        ),
        (
            "WMIREG_FLAG_EVENT_ONLY_GUID",
            as_usize(wnode::WMIREG_FLAG_EVENT_ONLY_GUID),
        ),
        (
            "WMIREG_FLAG_REMOVE_GUID",
            as_usize(wnode::WMIREG_FLAG_REMOVE_GUID),
        ),
        ("WMI_GET_ALL_DATA", MinorFunction::QueryAllData as usize),
        (
            "WMI_GET_SINGLE_INSTANCE",
            MinorFunction::QuerySingleInstance as usize,
        ),
        (
            "WMI_SET_SINGLE_INSTANCE",
            MinorFunction::ChangeSingleInstance as usize,
        ),
        (
            "WMI_SET_SINGLE_ITEM",
            MinorFunction::ChangeSingleItem as usize,
        ),
        ("WMI_ENABLE_EVENTS", MinorFunction::EnableEvents as usize),
        ("WMI_DISABLE_EVENTS", MinorFunction::DisableEvents as usize),
        (
            "WMI_ENABLE_COLLECTION",
            MinorFunction::EnableCollection as usize,
        ),
        (
            "WMI_DISABLE_COLLECTION",
            MinorFunction::DisableCollection as usize,
        ),
        ("WMI_REGINFO", MinorFunction::RegInfo as usize),
        ("WMI_EXECUTE_METHOD", MinorFunction::ExecuteMethod as usize),
    ]);
    let statuses = [
        ("STATUS_SUCCESS", WmiStatus::Success),
        ("STATUS_BUFFER_TOO_SMALL", WmiStatus::BufferTooSmall),
        ("STATUS_WMI_GUID_NOT_FOUND", WmiStatus::GuidNotFound),
        ("STATUS_WMI_INSTANCE_NOT_FOUND", WmiStatus::InstanceNotFound),
        ("STATUS_WMI_ITEMID_NOT_FOUND", WmiStatus::ItemIdNotFound),
        ("STATUS_WMI_READ_ONLY", WmiStatus::ReadOnly),
        (
            "STATUS_INVALID_DEVICE_REQUEST",
            WmiStatus::InvalidDeviceRequest,
        ),
        ("STATUS_INVALID_PARAMETER", WmiStatus::InvalidParameter),
        ("STATUS_UNSUCCESSFUL", WmiStatus::Unsuccessful),
    ];
    let mut out: Vec<(String, u64)> = checks
        .into_iter()
        .map(|(expr, value)| (expr.to_string(), value as u64))
        .collect();
    out.extend(statuses.map(|(name, status)| (name.to_string(), u64::from(status.ntstatus()))));
    out
}

/// `(C expression, value)` pairs tying the Rust zerocopy types to the hbapiwmi structures,
/// plus the hand-computed layout table the golden tests use.
#[expect(clippy::too_many_lines, reason = "a table: one line per field")]
fn hbapiwmi_checks() -> Vec<(String, u64)> {
    let rust: Vec<(&str, usize)> = vec![
        ("sizeof(MS_SMHBA_SAS_Port)", size_of::<SmhbaSasPort>()),
        (
            "offsetof(MS_SMHBA_SAS_Port, LocalSASAddress)",
            offset_of!(SmhbaSasPort, local_sas_address),
        ),
        (
            "offsetof(MS_SMHBA_SAS_Port, AttachedSASAddress)",
            offset_of!(SmhbaSasPort, attached_sas_address),
        ),
        (
            "offsetof(MS_SMHBA_SAS_Port, NumberofDiscoveredPorts)",
            offset_of!(SmhbaSasPort, number_of_discovered_ports),
        ),
        (
            "offsetof(MS_SMHBA_SAS_Port, NumberofPhys)",
            offset_of!(SmhbaSasPort, number_of_phys),
        ),
        ("sizeof(MS_SMHBA_SAS_PHY)", size_of::<SmhbaSasPhy>()),
        (
            "offsetof(MS_SMHBA_SAS_PHY, NegotiatedLinkRate)",
            offset_of!(SmhbaSasPhy, negotiated_link_rate),
        ),
        (
            "offsetof(MS_SMHBA_SAS_PHY, ProgrammedMinLinkRate)",
            offset_of!(SmhbaSasPhy, programmed_min_link_rate),
        ),
        (
            "offsetof(MS_SMHBA_SAS_PHY, HardwareMinLinkRate)",
            offset_of!(SmhbaSasPhy, hardware_min_link_rate),
        ),
        (
            "offsetof(MS_SMHBA_SAS_PHY, ProgrammedMaxLinkRate)",
            offset_of!(SmhbaSasPhy, programmed_max_link_rate),
        ),
        (
            "offsetof(MS_SMHBA_SAS_PHY, HardwareMaxLinkRate)",
            offset_of!(SmhbaSasPhy, hardware_max_link_rate),
        ),
        (
            "offsetof(MS_SMHBA_SAS_PHY, domainPortWWN)",
            offset_of!(SmhbaSasPhy, domain_port_wwn),
        ),
        ("sizeof(MS_SMHBA_FC_PHY)", size_of::<SmhbaFcPhy>()),
        (
            "offsetof(MS_SMHBA_FC_PHY, PhyType)",
            offset_of!(SmhbaFcPhy, phy_type),
        ),
        (
            "offsetof(MS_SMHBA_FC_PHY, MaxFrameSize)",
            offset_of!(SmhbaFcPhy, max_frame_size),
        ),
        (
            "sizeof(MS_SMHBA_PROTOCOLSTATISTICS)",
            size_of::<SmhbaProtocolStatistics>(),
        ),
        (
            "offsetof(MS_SMHBA_PROTOCOLSTATISTICS, ControlRequests)",
            offset_of!(SmhbaProtocolStatistics, control_requests),
        ),
        (
            "sizeof(MS_SMHBA_SASPHYSTATISTICS)",
            size_of::<SmhbaSasPhyStatistics>(),
        ),
        (
            "offsetof(MS_SMHBA_SASPHYSTATISTICS, InvalidDwordCount)",
            offset_of!(SmhbaSasPhyStatistics, invalid_dword_count),
        ),
        ("sizeof(MS_SMHBA_PORTLUN)", size_of::<SmhbaPortLun>()),
        (
            "offsetof(MS_SMHBA_PORTLUN, TargetLun)",
            offset_of!(SmhbaPortLun, target_lun),
        ),
        ("sizeof(HBAScsiID)", size_of::<HbaScsiId>()),
        (
            "offsetof(HBAScsiID, OSDeviceName)",
            offset_of!(HbaScsiId, os_device_name),
        ),
        ("sizeof(SM_GetPortType_IN)", size_of::<PortIndexIn>()),
        (
            "sizeof(SM_GetAdapterPortAttributes_IN)",
            size_of::<GetAdapterPortAttributesIn>(),
        ),
        (
            "sizeof(SM_GetDiscoveredPortAttributes_IN)",
            size_of::<GetDiscoveredPortAttributesIn>(),
        ),
        (
            "sizeof(SM_GetPortAttributesByWWN_IN)",
            size_of::<GetPortAttributesByWwnIn>(),
        ),
        (
            "offsetof(SM_GetPortAttributesByWWN_IN, PortSpecificAttributesMaxSize)",
            offset_of!(GetPortAttributesByWwnIn, port_specific_attributes_max_size),
        ),
        (
            "sizeof(SM_GetProtocolStatistics_IN)",
            size_of::<GetProtocolStatisticsIn>(),
        ),
        (
            "sizeof(SM_GetPhyStatistics_IN)",
            size_of::<GetPhyStatisticsIn>(),
        ),
        ("sizeof(SM_GetSASPhyAttributes_IN)", size_of::<PhyIn>()),
        ("sizeof(SM_GetFCPhyAttributes_IN)", size_of::<PhyIn>()),
        (
            "sizeof(SM_GetTargetMapping_IN)",
            size_of::<WwnPairCountIn>(),
        ),
        (
            "sizeof(SM_SetBindingSupport_IN)",
            size_of::<WwnPairCountIn>(),
        ),
        (
            "offsetof(SM_RemovePersistentBinding_IN, EntryCount)",
            offset_of!(WwnPairCountIn, entry_count),
        ),
        ("sizeof(SM_GetBindingCapability_IN)", size_of::<WwnPairIn>()),
        ("sizeof(SM_GetLUNStatistics_IN)", size_of::<HbaScsiId>()),
        ("sizeof(SM_ScsiInquiry_IN)", size_of::<ScsiInquiryIn>()),
        (
            "offsetof(SM_ScsiInquiry_IN, SmhbaLUN)",
            offset_of!(ScsiInquiryIn, smhba_lun),
        ),
        (
            "offsetof(SM_ScsiInquiry_IN, Cdb)",
            offset_of!(ScsiInquiryIn, cdb),
        ),
        (
            "offsetof(SM_ScsiInquiry_IN, InRespBufferMaxSize)",
            offset_of!(ScsiInquiryIn, in_resp_buffer_max_size),
        ),
        (
            "offsetof(SM_ScsiInquiry_IN, InSenseBufferMaxSize)",
            offset_of!(ScsiInquiryIn, in_sense_buffer_max_size),
        ),
        (
            "sizeof(SM_ScsiReportLuns_IN)",
            size_of::<ScsiReportLunsIn>(),
        ),
        (
            "offsetof(SM_ScsiReportLuns_IN, Cdb)",
            offset_of!(ScsiReportLunsIn, cdb),
        ),
        (
            "offsetof(SM_ScsiReportLuns_IN, InRespBufferMaxSize)",
            offset_of!(ScsiReportLunsIn, in_resp_buffer_max_size),
        ),
        (
            "sizeof(SM_ScsiReadCapacity_IN)",
            size_of::<ScsiReadCapacityIn>(),
        ),
        (
            "offsetof(SM_ScsiReadCapacity_IN, Cdb)",
            offset_of!(ScsiReadCapacityIn, cdb),
        ),
        (
            "offsetof(SM_ScsiReadCapacity_IN, InRespBufferMaxSize)",
            offset_of!(ScsiReadCapacityIn, in_resp_buffer_max_size),
        ),
        (
            "offsetof(MS_SMHBA_PORTATTRIBUTES, PortSpecificAttributes)",
            rvscsi_wmi::hba::sm::PORT_ATTRIBUTES_FIXED_SIZE,
        ),
        (
            "offsetof(MS_SMHBA_PORTATTRIBUTES, OSDeviceName)",
            rvscsi_wmi::hba::sm::PORT_ATTRIBUTES_OS_DEVICE_NAME_OFFSET,
        ),
        (
            "offsetof(MS_SMHBA_PORTATTRIBUTES, Reserved)",
            rvscsi_wmi::hba::sm::PORT_ATTRIBUTES_RESERVED_OFFSET,
        ),
        (
            "sizeof(MS_SMHBA_SCSIENTRY)",
            rvscsi_wmi::hba::sm::SCSI_ENTRY_SIZE,
        ),
        (
            "offsetof(MS_SMHBA_SCSIENTRY, LUID)",
            rvscsi_wmi::hba::sm::SCSI_ENTRY_LUID_OFFSET,
        ),
        (
            "offsetof(MS_SMHBA_SCSIENTRY, ScsiId)",
            rvscsi_wmi::hba::sm::SCSI_ENTRY_SCSI_ID_OFFSET,
        ),
        (
            "offsetof(MS_SM_AdapterInformationQuery, MfgDomain) + sizeof(WCHAR[257])",
            rvscsi_wmi::hba::sm::ADAPTER_INFORMATION_SIZE,
        ),
    ];
    rust.into_iter()
        .chain(layout::HBA_LAYOUT.iter().copied())
        .map(|(expr, value)| (expr.to_string(), value as u64))
        .collect()
}

const WMISTR_PRELUDE: &str = "#include <stddef.h>
#define WIN32_NO_STATUS
#include <windows.h>
#undef WIN32_NO_STATUS
#include <ntstatus.h>
#include <wmistr.h>
/* WNODE_ALL_DATA as Microsoft's wmistr.h declares it: the table is open-ended (a flexible
   array in MSVC; in a GCC union, a zero-length array), so the union is one ULONG. */
typedef struct {
  WNODE_HEADER WnodeHeader;
  ULONG DataBlockOffset;
  ULONG InstanceCount;
  ULONG OffsetInstanceNameOffsets;
  union {
    ULONG FixedInstanceSize;
    OFFSETINSTANCEDATAANDLENGTH OffsetInstanceDataAndLength[0];
  };
} WDK_WNODE_ALL_DATA;
";

fn hbapiwmi_prelude() -> String {
    format!(
        "#include <stddef.h>
#include <windows.h>
#if __has_include(<hbapiwmi.h>)
#define MS_SM_HBA_API
#include <hbapiwmi.h>
#else
{HBAPIWMI_DECLARATIONS}
#endif
"
    )
}

/// The `IRP_MN_*` codes come from the DDK's wdm.h, which cannot share a unit with windows.h.
fn minor_function_checks() -> Vec<(String, u64)> {
    [
        ("IRP_MN_QUERY_ALL_DATA", MinorFunction::QueryAllData),
        (
            "IRP_MN_QUERY_SINGLE_INSTANCE",
            MinorFunction::QuerySingleInstance,
        ),
        (
            "IRP_MN_CHANGE_SINGLE_INSTANCE",
            MinorFunction::ChangeSingleInstance,
        ),
        ("IRP_MN_CHANGE_SINGLE_ITEM", MinorFunction::ChangeSingleItem),
        ("IRP_MN_ENABLE_EVENTS", MinorFunction::EnableEvents),
        ("IRP_MN_DISABLE_EVENTS", MinorFunction::DisableEvents),
        ("IRP_MN_ENABLE_COLLECTION", MinorFunction::EnableCollection),
        (
            "IRP_MN_DISABLE_COLLECTION",
            MinorFunction::DisableCollection,
        ),
        ("IRP_MN_REGINFO", MinorFunction::RegInfo),
        ("IRP_MN_REGINFO_EX", MinorFunction::RegInfoEx),
        ("IRP_MN_EXECUTE_METHOD", MinorFunction::ExecuteMethod),
    ]
    .into_iter()
    .map(|(name, minor)| (name.to_string(), minor as u64))
    .collect()
}

#[test]
fn rust_layouts_match_the_windows_headers() {
    let Some(cc) = compiler() else {
        eprintln!(
            "SKIPPED rust_layouts_match_the_windows_headers: x86_64-w64-mingw32-gcc not found \
             (install gcc-mingw-w64-x86-64, or set RVSCSI_MINGW_CC)"
        );
        return;
    };
    let dir = scratch_dir("wmi-match");
    let units = [
        (
            "wmistr_probe.c",
            probe_source(WMISTR_PRELUDE, &wmistr_checks()),
        ),
        (
            "hbapiwmi_probe.c",
            probe_source(&hbapiwmi_prelude(), &hbapiwmi_checks()),
        ),
        (
            "wdm_probe.c",
            probe_source("#include <ddk/wdm.h>\n", &minor_function_checks()),
        ),
    ];
    let mut failures = String::new();
    for (name, source) in &units {
        if let Err(diagnostics) = compile(&cc, &[], &dir, name, source) {
            writeln!(failures, "--- {name}:\n{diagnostics}").unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "layout mismatches:\n{failures}");
}

#[test]
fn a_wrong_value_fails_the_probe() {
    // The control: the same machinery must reject a value that differs, or the test above
    // could pass by checking nothing.
    let Some(cc) = compiler() else {
        eprintln!("SKIPPED a_wrong_value_fails_the_probe: x86_64-w64-mingw32-gcc not found");
        return;
    };
    let dir = scratch_dir("wmi-control");
    let mut checks = wmistr_checks();
    let last = checks.len() - 1;
    checks[last].1 += 1;
    let bad_hba = vec![("sizeof(MS_SMHBA_SCSIENTRY)".to_string(), 800)];
    let wmistr = compile(
        &cc,
        &[],
        &dir,
        "wrong_wmistr.c",
        &probe_source(WMISTR_PRELUDE, &checks),
    );
    let hba = compile(
        &cc,
        &[],
        &dir,
        "wrong_hba.c",
        &probe_source(&hbapiwmi_prelude(), &bad_hba),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let wmistr = wmistr.expect_err("an off-by-one NTSTATUS must not compile");
    assert!(wmistr.contains(&checks[last].0), "{wmistr}");
    let hba = hba.expect_err("a wrong structure size must not compile");
    assert!(hba.contains("sizeof(MS_SMHBA_SCSIENTRY) == 800"), "{hba}");
}
