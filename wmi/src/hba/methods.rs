//! The methods of `MS_SM_PortInformationMethods`, `MS_SM_TargetInformationMethods` and
//! `MS_SM_ScsiInformationMethods`, answered from an [`HbaInfo`] and the targets of a
//! [`TargetSource`], each target and logical unit read when a method needs it.
//!
//! Each method reads its `*_IN` structure (a short input is `STATUS_INVALID_PARAMETER`), then
//! writes its `*_OUT` structure field by field with the data-block rules. Problems the HBA API
//! defines a status for (a bad port index, an unknown WWN, an unsupported protocol) are an
//! `HBAStatus` in a successful reply, with the rest of the output zero, as SM-HBA specifies;
//! an unknown method id is `STATUS_WMI_ITEMID_NOT_FOUND`.
//!
//! The SCSI pass-through methods answer from the responses the miniport cached ([`LunInfo`]);
//! they never invent data, so a page or command with no cached response is
//! `HBA_STATUS_ERROR_NOT_SUPPORTED`.

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

use super::sm::{
    GetAdapterPortAttributesIn, GetDiscoveredPortAttributesIn, GetLunStatisticsIn,
    GetPhyStatisticsIn, GetPortAttributesByWwnIn, GetProtocolStatisticsIn, HBA_PORTTYPE_SASDEVICE,
    HBA_PORTTYPE_SASEXPANDER, HBA_SASPORTPROTOCOL_SMP, HBA_SASPORTPROTOCOL_SSP, LONG_STRING_CHARS,
    PhyIn, PortIndexIn, PortState, SAS_PHY_COUNTERS, ScsiInquiryIn, ScsiReadCapacityIn,
    ScsiReportLunsIn, SmhbaFcPhy, SmhbaPortLun, SmhbaProtocolStatistics, SmhbaSasPhy, SmhbaSasPort,
    WwnPairCountIn, WwnPairIn, hba_status, port_method, scsi_method, target_method,
};
use super::{HbaInfo, LunInfo, TargetPort, TargetSource};
use crate::dispatch::MethodIo;
use crate::encode::Encoder;
use crate::sas::SasAddress;
use crate::status::WmiError;
use crate::vpd::DeviceIdentification;

/// Bytes of `MS_SMHBA_SCSIENTRY.LUID`.
const LUID_BYTES: usize = 256;

/// `MS_SM_PortInformationMethods`.
///
/// # Errors
/// [`WmiError::MethodInputTooShort`], [`WmiError::MethodNotFound`].
// Not inlined into the provider: each method class keeps a frame of its own size on the
// miniport's BuildIo stack instead of one frame as large as the largest arm of all three.
#[inline(never)]
pub fn port_information(
    info: &HbaInfo<'_>,
    targets: &dyn TargetSource,
    io: &mut MethodIo<'_>,
) -> Result<(), WmiError> {
    match io.method_id() {
        port_method::GET_PORT_TYPE => {
            let input: PortIndexIn = io.read_input()?;
            let out = io.output();
            if port_ok(input.port_index.get()) {
                out.u32(hba_status::OK);
                out.u32(HBA_PORTTYPE_SASDEVICE);
            } else {
                out.u32(hba_status::ERROR_ILLEGAL_INDEX);
                out.u32(0);
            }
        }
        port_method::GET_ADAPTER_PORT_ATTRIBUTES => {
            let input: GetAdapterPortAttributesIn = io.read_input()?;
            let port = port_ok(input.port_index.get()).then(|| adapter_port(info, targets));
            port_attributes(
                io.output(),
                port,
                input.port_specific_attributes_max_size.get(),
            );
        }
        port_method::GET_DISCOVERED_PORT_ATTRIBUTES => {
            let input: GetDiscoveredPortAttributesIn = io.read_input()?;
            let port = port_ok(input.port_index.get())
                .then(|| discovered_port(info, targets, input.discovered_port_index.get() as usize))
                .flatten();
            port_attributes(
                io.output(),
                port,
                input.port_specific_attributes_max_size.get(),
            );
        }
        port_method::GET_PORT_ATTRIBUTES_BY_WWN => {
            let input: GetPortAttributesByWwnIn = io.read_input()?;
            let wanted = SasAddress(input.port_wwn);
            let port = if wanted == info.port.local_sas_address {
                Some(adapter_port(info, targets))
            } else {
                (0..discovered_port_count(targets))
                    .filter_map(|index| discovered_port(info, targets, index))
                    .find(|port| port.sas.local_sas_address == wanted.0)
            };
            let out = io.output();
            match port {
                Some(port) => {
                    port_attributes(
                        out,
                        Some(port),
                        input.port_specific_attributes_max_size.get(),
                    );
                }
                None => port_attributes_with_status(out, hba_status::ERROR_ILLEGAL_WWN, None),
            }
        }
        port_method::GET_PROTOCOL_STATISTICS
        | port_method::GET_PHY_STATISTICS
        | port_method::GET_FC_PHY_ATTRIBUTES
        | port_method::GET_SAS_PHY_ATTRIBUTES => return port_statistics(info, io),
        // Nothing is cached that a refresh would renew: the miniport rebuilds HbaInfo on
        // every request. No input, no output.
        port_method::REFRESH_INFORMATION => {}
        other => return Err(WmiError::MethodNotFound(other)),
    }
    Ok(())
}

/// The statistics and phy methods of `MS_SM_PortInformationMethods`.
fn port_statistics(info: &HbaInfo<'_>, io: &mut MethodIo<'_>) -> Result<(), WmiError> {
    match io.method_id() {
        port_method::GET_PROTOCOL_STATISTICS => {
            let input: GetProtocolStatisticsIn = io.read_input()?;
            let (status, statistics) = if !port_ok(input.port_index.get()) {
                (
                    hba_status::ERROR_ILLEGAL_INDEX,
                    SmhbaProtocolStatistics::default(),
                )
            } else if input.protocol_type.get() != HBA_SASPORTPROTOCOL_SSP {
                (
                    hba_status::ERROR_INVALID_PROTOCOL_TYPE,
                    SmhbaProtocolStatistics::default(),
                )
            } else {
                (hba_status::OK, info.port.protocol_statistics.to_wire())
            };
            let out = io.output();
            out.u32(status);
            out.class(&statistics);
        }
        port_method::GET_PHY_STATISTICS => {
            let input: GetPhyStatisticsIn = io.read_input()?;
            let out = io.output();
            if !phy_ok(input.port_index.get(), input.phy_index.get()) {
                out.u32(hba_status::ERROR_ILLEGAL_INDEX);
                out.u32(0);
                out.u32(0);
                return Ok(());
            }
            let counters = info.port.phy_statistics.counters();
            let room = input.in_num_of_phy_counters.get() as usize;
            let returned = room.min(SAS_PHY_COUNTERS);
            out.u32(if room < SAS_PHY_COUNTERS {
                hba_status::ERROR_MORE_DATA
            } else {
                hba_status::OK
            });
            out.u32(SAS_PHY_COUNTERS as u32);
            out.u32(returned as u32);
            out.i64_array(counters.get(..returned).unwrap_or(&[]));
        }
        port_method::GET_FC_PHY_ATTRIBUTES => {
            let _: PhyIn = io.read_input()?;
            let out = io.output();
            // The port is SAS: there is no FC phy to describe.
            out.u32(hba_status::ERROR_NOT_SUPPORTED);
            out.class(&SmhbaFcPhy {
                phy_support_speed: U32::new(0),
                phy_speed: U32::new(0),
                phy_type: 0,
                padding: [0; 3],
                max_frame_size: U32::new(0),
            });
        }
        port_method::GET_SAS_PHY_ATTRIBUTES => {
            let input: PhyIn = io.read_input()?;
            let ok = phy_ok(input.port_index.get(), input.phy_index.get());
            let phy = &info.port.phy;
            let value = |rate: u32| U32::new(if ok { rate } else { 0 });
            let attributes = SmhbaSasPhy {
                phy_identifier: 0,
                padding: [0; 3],
                negotiated_link_rate: value(phy.negotiated_link_rate),
                programmed_min_link_rate: value(phy.programmed_min_link_rate),
                hardware_min_link_rate: value(phy.hardware_min_link_rate),
                programmed_max_link_rate: value(phy.programmed_max_link_rate),
                hardware_max_link_rate: value(phy.hardware_max_link_rate),
                domain_port_wwn: if ok {
                    info.port.local_sas_address.0
                } else {
                    [0; 8]
                },
            };
            let out = io.output();
            out.u32(if ok {
                hba_status::OK
            } else {
                hba_status::ERROR_ILLEGAL_INDEX
            });
            out.class(&attributes);
        }
        other => return Err(WmiError::MethodNotFound(other)),
    }
    Ok(())
}

/// `MS_SM_TargetInformationMethods`.
///
/// # Errors
/// [`WmiError::MethodInputTooShort`], [`WmiError::MethodNotFound`].
// Not inlined into the provider: each method class keeps a frame of its own size on the
// miniport's BuildIo stack instead of one frame as large as the largest arm of all three.
#[inline(never)]
pub fn target_information(
    info: &HbaInfo<'_>,
    targets: &dyn TargetSource,
    io: &mut MethodIo<'_>,
) -> Result<(), WmiError> {
    match io.method_id() {
        target_method::GET_TARGET_MAPPING => {
            let input: WwnPairCountIn = io.read_input()?;
            let out = io.output();
            if SasAddress(input.hba_port_wwn) != info.port.local_sas_address {
                out.u32(hba_status::ERROR_ILLEGAL_WWN);
                out.u32(0);
                out.u32(0);
                return Ok(());
            }
            let total: usize = (0..targets.target_count())
                .map(|target| targets.lun_count(target))
                .sum();
            let room = input.entry_count.get() as usize;
            let returned = room.min(total);
            out.u32(if room < total {
                hba_status::ERROR_MORE_DATA
            } else {
                hba_status::OK
            });
            out.u32(u32::try_from(total).unwrap_or(u32::MAX));
            out.u32(returned as u32);
            let mut left = returned;
            for (index, port) in ports(targets) {
                for lun in luns_of(targets, index, EntryLun::of) {
                    if left == 0 {
                        return Ok(());
                    }
                    scsi_entry(out, info, &port, &lun);
                    left -= 1;
                }
            }
        }
        target_method::GET_BINDING_CAPABILITY | target_method::GET_BINDING_SUPPORT => {
            let _: WwnPairIn = io.read_input()?;
            let out = io.output();
            // Persistent binding is for FC; a virtio target's address never changes.
            out.u32(hba_status::ERROR_NOT_SUPPORTED);
            out.u32(0);
        }
        target_method::SET_BINDING_SUPPORT | target_method::REMOVE_PERSISTENT_BINDING => {
            let _: WwnPairCountIn = io.read_input()?;
            io.output().u32(hba_status::ERROR_NOT_SUPPORTED);
        }
        target_method::GET_PERSISTENT_BINDING => {
            let _: WwnPairCountIn = io.read_input()?;
            let out = io.output();
            out.u32(hba_status::ERROR_NOT_SUPPORTED);
            out.u32(0);
            out.u32(0);
        }
        target_method::SET_PERSISTENT_BINDING => {
            let _: WwnPairCountIn = io.read_input()?;
            let out = io.output();
            out.u32(hba_status::ERROR_NOT_SUPPORTED);
            out.u32(0);
        }
        target_method::GET_LUN_STATISTICS => return lun_statistics(targets, io),
        other => return Err(WmiError::MethodNotFound(other)),
    }
    Ok(())
}

/// `SM_GetLUNStatistics`. Not inlined: its input holds an `HBAScsiID` (over 500 bytes), which
/// would otherwise sit in the frame of every target method, the target mapping's included,
/// on the BuildIo stack.
#[inline(never)]
fn lun_statistics(targets: &dyn TargetSource, io: &mut MethodIo<'_>) -> Result<(), WmiError> {
    let input: GetLunStatisticsIn = io.read_input_items(GetLunStatisticsIn::ITEMS_SIZE)?;
    let id = input.lunit;
    let found = ports(targets)
        .filter(|(_, port)| {
            u32::from(port.bus) == id.scsi_bus_number.get()
                && u32::from(port.target) == id.scsi_target_number.get()
        })
        .flat_map(|(index, _)| luns_of(targets, index, |lun| (lun.lun, lun.statistics)))
        .find(|(lun, _)| u32::from(*lun) == id.scsi_os_lun.get());
    let out = io.output();
    out.u32(if found.is_some() {
        hba_status::OK
    } else {
        hba_status::ERROR_INVALID_LUN
    });
    out.class(
        &found
            .map(|(_, statistics)| statistics.to_wire())
            .unwrap_or_default(),
    );
    Ok(())
}

/// `MS_SM_ScsiInformationMethods`, from the cached responses.
///
/// # Errors
/// [`WmiError::MethodInputTooShort`], [`WmiError::MethodNotFound`].
// Not inlined into the provider: each method class keeps a frame of its own size on the
// miniport's BuildIo stack instead of one frame as large as the largest arm of all three.
#[inline(never)]
pub fn scsi_information(
    info: &HbaInfo<'_>,
    targets: &dyn TargetSource,
    io: &mut MethodIo<'_>,
) -> Result<(), WmiError> {
    match io.method_id() {
        scsi_method::SCSI_INQUIRY => {
            let input: ScsiInquiryIn = io.read_input()?;
            let lun = find_lun(
                info,
                targets,
                input.hba_port_wwn,
                input.discovered_port_wwn,
                input.smhba_lun,
                |lun| Pages {
                    inquiry: lun.inquiry,
                    unit_serial_number: lun.unit_serial_number,
                    device_identification: lun.device_identification,
                },
            );
            let cdb = input.cdb;
            let answer = lun.and_then(|lun| {
                if cdb[0] != INQUIRY {
                    return Err(hba_status::ERROR_ARG);
                }
                let evpd = cdb[1] & 0x01 != 0;
                let page = match (evpd, cdb[2]) {
                    (false, 0) => lun.inquiry,
                    (false, _) => return Err(hba_status::ERROR_ARG),
                    (true, 0x80) => lun.unit_serial_number,
                    (true, 0x83) => lun.device_identification,
                    (true, _) => None,
                };
                let allocation = usize::from(u16::from_be_bytes([cdb[3], cdb[4]]));
                page.map(|data| (data, allocation))
                    .ok_or(hba_status::ERROR_NOT_SUPPORTED)
            });
            let limit = input.in_resp_buffer_max_size.get() as usize;
            let out = io.output();
            match answer {
                Ok((data, allocation)) => {
                    let data = truncate(data, allocation.min(limit));
                    scsi_reply(out, hba_status::OK, None, data);
                }
                Err(status) => scsi_reply(out, status, None, &[]),
            }
        }
        scsi_method::SCSI_REPORT_LUNS => {
            let input: ScsiReportLunsIn = io.read_input()?;
            let target = find_target(info, targets, input.hba_port_wwn, input.discovered_port_wwn);
            let cdb = input.cdb;
            let out = io.output();
            match target {
                Ok(_) if cdb[0] != REPORT_LUNS => {
                    scsi_reply(out, hba_status::ERROR_ARG, Some(0), &[]);
                }
                Ok(target) => report_luns(
                    out,
                    targets,
                    target,
                    &cdb,
                    input.in_resp_buffer_max_size.get(),
                ),
                Err(status) => scsi_reply(out, status, Some(0), &[]),
            }
        }
        scsi_method::SCSI_READ_CAPACITY => {
            let input: ScsiReadCapacityIn = io.read_input()?;
            let lun = find_lun(
                info,
                targets,
                input.hba_port_wwn,
                input.discovered_port_wwn,
                input.smhba_lun,
                |lun| (lun.read_capacity_10, lun.read_capacity_16),
            );
            let cdb = input.cdb;
            let answer = lun.and_then(|(read_capacity_10, read_capacity_16)| {
                match cdb[0] {
                    READ_CAPACITY_10 => read_capacity_10.map(|data| (data, data.len())),
                    SERVICE_ACTION_IN_16 if cdb[1] & 0x1F == READ_CAPACITY_16_SERVICE_ACTION => {
                        let allocation = u32::from_be_bytes([cdb[10], cdb[11], cdb[12], cdb[13]]);
                        read_capacity_16.map(|data| (data, allocation as usize))
                    }
                    _ => return Err(hba_status::ERROR_ARG),
                }
                .ok_or(hba_status::ERROR_NOT_SUPPORTED)
            });
            let limit = input.in_resp_buffer_max_size.get() as usize;
            let out = io.output();
            match answer {
                Ok((data, allocation)) => {
                    scsi_reply(
                        out,
                        hba_status::OK,
                        None,
                        truncate(data, allocation.min(limit)),
                    );
                }
                Err(status) => scsi_reply(out, status, None, &[]),
            }
        }
        other => return Err(WmiError::MethodNotFound(other)),
    }
    Ok(())
}

/// INQUIRY operation code.
const INQUIRY: u8 = 0x12;
/// REPORT LUNS operation code.
const REPORT_LUNS: u8 = 0xA0;
/// READ CAPACITY (10) operation code.
const READ_CAPACITY_10: u8 = 0x25;
/// SERVICE ACTION IN (16) operation code.
const SERVICE_ACTION_IN_16: u8 = 0x9E;
/// READ CAPACITY (16) service action.
const READ_CAPACITY_16_SERVICE_ACTION: u8 = 0x10;

fn port_ok(port_index: u32) -> bool {
    port_index < HbaInfo::NUMBER_OF_PORTS
}

fn phy_ok(port_index: u32, phy_index: u32) -> bool {
    port_ok(port_index) && phy_index < HbaInfo::NUMBER_OF_PHYS
}

fn truncate(data: &[u8], limit: usize) -> &[u8] {
    data.get(..limit).unwrap_or(data)
}

/// The generic and SAS-specific attributes of one port.
struct PortAttributes<'a> {
    port_type: u32,
    state: PortState,
    os_device_name: &'a str,
    sas: SmhbaSasPort,
}

/// How the adapter's port reaches its targets, as the port attributes report it (each port's
/// `AttachedSASAddress` is a port the caller can also look up):
/// - no target: nothing attached (`AttachedSASAddress` zero, no discovered port);
/// - one target: attached directly, port to port;
/// - more: through one virtual expander (address [`crate::hba::PortInfo::attached_sas_address`])
///   that every target attaches to and that is itself a discovered port, listed after the
///   targets, so the targets keep their indices whatever the topology.
#[derive(Clone, Copy)]
enum Topology {
    Empty,
    Direct,
    Expander,
}

fn topology(targets: &dyn TargetSource) -> Topology {
    match targets.target_count() {
        0 => Topology::Empty,
        1 => Topology::Direct,
        _ => Topology::Expander,
    }
}

/// Number of discovered ports: the targets, and the expander if there is one.
fn discovered_port_count(targets: &dyn TargetSource) -> usize {
    match topology(targets) {
        Topology::Empty | Topology::Direct => targets.target_count(),
        Topology::Expander => targets.target_count() + 1,
    }
}

/// The targets of `targets` with their indices, in order.
fn ports(targets: &dyn TargetSource) -> impl Iterator<Item = (usize, TargetPort)> + '_ {
    (0..targets.target_count()).filter_map(|index| targets.target(index).map(|port| (index, port)))
}

/// Logical unit `index` of target `target` of `targets`, reduced by `field` to what the
/// caller needs. Never inlined: the [`LunInfo`] (152 bytes) lives in this frame only, not in
/// the frames of the methods, which go on to encode (a miniport answers WMI on its BuildIo
/// stack).
#[inline(never)]
fn lun_field<'a, T>(
    targets: &'a dyn TargetSource,
    target: usize,
    index: usize,
    field: impl FnOnce(LunInfo<'a>) -> T,
) -> Option<T> {
    targets.lun(target, index).map(field)
}

/// The logical units of target `target` of `targets`, in order, each reduced by `field`.
fn luns_of<'a, T>(
    targets: &'a dyn TargetSource,
    target: usize,
    field: impl Fn(LunInfo<'a>) -> T + Copy + 'a,
) -> impl Iterator<Item = T> + 'a {
    (0..targets.lun_count(target)).filter_map(move |index| lun_field(targets, target, index, field))
}

/// What a target mapping entry reports of a logical unit.
struct EntryLun<'a> {
    lun: u16,
    os_device_name: &'a str,
    device_identification: Option<&'a [u8]>,
}

impl<'a> EntryLun<'a> {
    fn of(lun: LunInfo<'a>) -> Self {
        Self {
            lun: lun.lun,
            os_device_name: lun.os_device_name,
            device_identification: lun.device_identification,
        }
    }
}

/// The pages of a logical unit the SCSI INQUIRY method serves.
struct Pages<'a> {
    inquiry: Option<&'a [u8]>,
    unit_serial_number: Option<&'a [u8]>,
    device_identification: Option<&'a [u8]>,
}

fn adapter_port<'a>(info: &HbaInfo<'a>, targets: &dyn TargetSource) -> PortAttributes<'a> {
    let attached = match (topology(targets), targets.target(0)) {
        (Topology::Direct, Some(target)) => target.sas_address.0,
        (Topology::Expander, _) => info.port.attached_sas_address.0,
        _ => [0; 8],
    };
    PortAttributes {
        port_type: HBA_PORTTYPE_SASDEVICE,
        state: info.port.state,
        os_device_name: info.port.os_device_name,
        sas: SmhbaSasPort {
            port_protocol: U32::new(HBA_SASPORTPROTOCOL_SSP),
            local_sas_address: info.port.local_sas_address.0,
            attached_sas_address: attached,
            number_of_discovered_ports: U32::new(
                u32::try_from(discovered_port_count(targets)).unwrap_or(u32::MAX),
            ),
            number_of_phys: U32::new(HbaInfo::NUMBER_OF_PHYS),
        },
    }
}

/// Discovered port `index`: a target (an online SAS end device, attached to the adapter's
/// port or to the expander), or, after the targets, the expander (attached to the adapter's
/// port, one phy towards it and one per target).
fn discovered_port<'a>(
    info: &HbaInfo<'a>,
    targets: &dyn TargetSource,
    index: usize,
) -> Option<PortAttributes<'a>> {
    let topology = topology(targets);
    if let Some(target) = targets.target(index) {
        let attached = match topology {
            Topology::Expander => info.port.attached_sas_address.0,
            Topology::Empty | Topology::Direct => info.port.local_sas_address.0,
        };
        return Some(PortAttributes {
            port_type: HBA_PORTTYPE_SASDEVICE,
            state: PortState::Online,
            os_device_name: "",
            sas: SmhbaSasPort {
                port_protocol: U32::new(HBA_SASPORTPROTOCOL_SSP),
                local_sas_address: target.sas_address.0,
                attached_sas_address: attached,
                number_of_discovered_ports: U32::new(0),
                number_of_phys: U32::new(1),
            },
        });
    }
    match topology {
        Topology::Expander if index == targets.target_count() => Some(PortAttributes {
            port_type: HBA_PORTTYPE_SASEXPANDER,
            state: PortState::Online,
            os_device_name: "",
            sas: SmhbaSasPort {
                port_protocol: U32::new(HBA_SASPORTPROTOCOL_SMP),
                local_sas_address: info.port.attached_sas_address.0,
                attached_sas_address: info.port.local_sas_address.0,
                number_of_discovered_ports: U32::new(0),
                number_of_phys: U32::new(
                    u32::try_from(targets.target_count() + 1).unwrap_or(u32::MAX),
                ),
            },
        }),
        _ => None,
    }
}

/// `HBAStatus` and `MS_SMHBA_PORTATTRIBUTES` for one port, or `HBA_STATUS_ERROR_ILLEGAL_INDEX`
/// and zeros. If the caller's room for port-specific attributes is smaller than
/// `MS_SMHBA_SAS_Port`, the status is `HBA_STATUS_ERROR_MORE_DATA` and none are included.
fn port_attributes(out: &mut Encoder<'_>, port: Option<PortAttributes<'_>>, room: u32) {
    match port {
        None => port_attributes_with_status(out, hba_status::ERROR_ILLEGAL_INDEX, None),
        Some(port) if (room as usize) < size_of::<SmhbaSasPort>() => {
            port_attributes_with_status(out, hba_status::ERROR_MORE_DATA, Some(&port));
        }
        Some(port) => port_attributes_with_status(out, hba_status::OK, Some(&port)),
    }
}

fn port_attributes_with_status(
    out: &mut Encoder<'_>,
    status: u32,
    port: Option<&PortAttributes<'_>>,
) {
    out.u32(status);
    // MS_SMHBA_PORTATTRIBUTES has a uint64 member: as an embedded class it is 8-aligned.
    out.align(8);
    let include_sas = status == hba_status::OK;
    out.u32(port.map_or(0, |port| port.port_type));
    out.u32(port.map_or(0, |port| port.state as u32));
    out.u32(if include_sas {
        size_of::<SmhbaSasPort>() as u32
    } else {
        0
    });
    out.string_max(
        port.map_or("", |port| port.os_device_name),
        LONG_STRING_CHARS,
    );
    out.u64(0); // Reserved
    if let (true, Some(port)) = (include_sas, port) {
        // PortSpecificAttributes is a uint8 array (WmiSizeIs PortSpecificAttributesSize)
        // holding an MS_SMHBA_SAS_Port.
        out.bytes(port.sas.as_bytes());
    }
}

/// The 8-byte SAM-5 LUN for a virtio LUN: peripheral device addressing below 256, flat space
/// addressing above (as QEMU's REPORT LUNS does), byte 0 first.
#[must_use]
pub fn sam_lun(lun: u16) -> [u8; 8] {
    let [high, low] = lun.to_be_bytes();
    if lun < 256 {
        [0, low, 0, 0, 0, 0, 0, 0]
    } else {
        [0x40 | (high & 0x3F), low, 0, 0, 0, 0, 0, 0]
    }
}

/// The virtio LUN a SAM-5 LUN designates: single level, peripheral (bus 0) or flat space
/// addressing; anything else designates no virtio LUN.
#[must_use]
pub fn lun_from_sam(lun: [u8; 8]) -> Option<u16> {
    if lun.iter().skip(2).any(|byte| *byte != 0) {
        return None;
    }
    match lun[0] >> 6 {
        0b00 if lun[0] == 0 => Some(u16::from(lun[1])),
        0b01 => Some((u16::from(lun[0] & 0x3F) << 8) | u16::from(lun[1])),
        _ => None,
    }
}

/// One `MS_SMHBA_SCSIENTRY` (808 bytes, 8-aligned).
fn scsi_entry(out: &mut Encoder<'_>, info: &HbaInfo<'_>, target: &TargetPort, lun: &EntryLun<'_>) {
    out.align(8);
    out.class(&SmhbaPortLun {
        port_wwn: target.sas_address.0,
        domain_port_wwn: info.port.local_sas_address.0,
        target_lun: U64::new(u64::from_le_bytes(sam_lun(lun.lun))),
    });
    // LUID: the logical unit's best designation descriptor from VPD 0x83, zero-padded.
    let luid = lun
        .device_identification
        .and_then(|page| DeviceIdentification::parse(page).ok())
        .and_then(|page| page.logical_unit_descriptor())
        .unwrap_or(&[]);
    let luid = truncate(luid, LUID_BYTES);
    out.bytes(luid);
    out.zeros(LUID_BYTES - luid.len());
    // ScsiId (HBAScsiID): bus, target, LUN, then OSDeviceName as a uint16[257] string.
    out.u32(u32::from(target.bus));
    out.u32(u32::from(target.target));
    out.u32(u32::from(lun.lun));
    out.string_in_array(lun.os_device_name, LONG_STRING_CHARS);
    out.align(8);
}

/// The index in `targets` of the first target whose address is `discovered_port_wwn`.
fn find_target(
    info: &HbaInfo<'_>,
    targets: &dyn TargetSource,
    hba_port_wwn: [u8; 8],
    discovered_port_wwn: [u8; 8],
) -> Result<usize, u32> {
    if SasAddress(hba_port_wwn) != info.port.local_sas_address {
        return Err(hba_status::ERROR_ILLEGAL_WWN);
    }
    ports(targets)
        .find(|(_, port)| port.sas_address == SasAddress(discovered_port_wwn))
        .map(|(index, _)| index)
        .ok_or(hba_status::ERROR_ILLEGAL_WWN)
}

/// The logical unit `smhba_lun` of the target `discovered_port_wwn`, reduced by `field`.
fn find_lun<'a, T>(
    info: &HbaInfo<'_>,
    targets: &'a dyn TargetSource,
    hba_port_wwn: [u8; 8],
    discovered_port_wwn: [u8; 8],
    smhba_lun: U64,
    field: impl FnOnce(LunInfo<'a>) -> T,
) -> Result<T, u32> {
    let target = find_target(info, targets, hba_port_wwn, discovered_port_wwn)?;
    let wanted =
        lun_from_sam(smhba_lun.get().to_le_bytes()).ok_or(hba_status::ERROR_INVALID_LUN)?;
    let index = (0..targets.lun_count(target))
        .find(|&index| lun_field(targets, target, index, |lun| lun.lun) == Some(wanted))
        .ok_or(hba_status::ERROR_INVALID_LUN)?;
    lun_field(targets, target, index, field).ok_or(hba_status::ERROR_INVALID_LUN)
}

/// The `*_OUT` of a SCSI pass-through method: `HBAStatus`, `ScsiStatus` (GOOD: every answer
/// comes from a response the device completed with GOOD), the optional `TotalRespBufferSize`
/// (REPORT LUNS only), `OutRespBufferSize`, `OutSenseBufferSize` (0), then the response.
fn scsi_reply(out: &mut Encoder<'_>, status: u32, total: Option<u32>, response: &[u8]) {
    out.u32(status);
    out.u8(0);
    if let Some(total) = total {
        out.u32(total);
    }
    out.u32(response.len() as u32);
    out.u32(0);
    out.bytes(response);
}

/// REPORT LUNS parameter data for target `target` of `targets`, built from its LUN list
/// (SPC-4 6.33): LUN LIST LENGTH, 4 reserved bytes, then one 8-byte LUN per logical unit; cut
/// to the CDB's ALLOCATION LENGTH and the caller's buffer.
fn report_luns(
    out: &mut Encoder<'_>,
    targets: &dyn TargetSource,
    target: usize,
    cdb: &[u8; 12],
    room: u32,
) {
    let list_length = targets.lun_count(target).saturating_mul(8);
    let total = list_length.saturating_add(8);
    let allocation = u32::from_be_bytes([cdb[6], cdb[7], cdb[8], cdb[9]]) as usize;
    let returned = total.min(allocation).min(room as usize);
    out.u32(hba_status::OK);
    out.u8(0);
    out.u32(u32::try_from(total).unwrap_or(u32::MAX));
    out.u32(returned as u32);
    out.u32(0);
    let mut header = [0u8; 8];
    if let Some(length) = header.first_chunk_mut::<4>() {
        *length = u32::try_from(list_length).unwrap_or(u32::MAX).to_be_bytes();
    }
    let chunks = core::iter::once(header).chain(luns_of(targets, target, |lun| sam_lun(lun.lun)));
    let mut left = returned;
    for chunk in chunks {
        if left == 0 {
            break;
        }
        let take = left.min(chunk.len());
        out.bytes(chunk.get(..take).unwrap_or(&chunk));
        left -= take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sam_lun_round_trips_and_rejects_other_formats() {
        assert_eq!(sam_lun(5), [0, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sam_lun(0x1234), [0x52, 0x34, 0, 0, 0, 0, 0, 0]);
        for lun in [0u16, 1, 255, 256, 0x1234, 0x3FFF] {
            assert_eq!(lun_from_sam(sam_lun(lun)), Some(lun));
        }
        // Peripheral addressing on another bus, logical unit addressing, extended, two levels.
        for bad in [
            [0x01, 0, 0, 0, 0, 0, 0, 0],
            [0x80, 1, 0, 0, 0, 0, 0, 0],
            [0xC0, 1, 0, 0, 0, 0, 0, 0],
            [0x00, 1, 0x00, 0x02, 0, 0, 0, 0],
        ] {
            assert_eq!(lun_from_sam(bad), None, "{bad:?}");
        }
    }
}
