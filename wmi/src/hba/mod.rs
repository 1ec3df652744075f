//! The WMI data rvscsi serves: the `MS_SM` HBA API classes ([`sm`]) and rvscsi's own statistics
//! classes ([`rvscsi`]), encoded from a plain [`HbaInfo`] the miniport fills, behind one
//! [`Provider`] ([`HbaProvider`]).
//!
//! The adapter is modelled as one SAS port with one phy; every virtio-scsi target is a
//! discovered SAS port (a SAS end device) and its logical units are the target mapping.
//!
//! Strings with a `MaxLen` qualifier are encoded in their fixed-size buffers (the byte count
//! covers the zero padding, as the WMI data-item rules allow), so the data blocks have the
//! exact layout of the hbapiwmi.h C structures: WMI's provider reads them as MOF strings and a
//! C consumer compiled against hbapiwmi.h reads them at fixed offsets. Longer strings are cut.

pub mod methods;
pub mod rvscsi;
pub mod sm;

use crate::dispatch::{Control, GuidRegistration, InstanceNames, MethodIo, Provider, RegInfo};
use crate::encode::Encoder;
use crate::sas::SasAddress;
use crate::status::WmiError;

pub use self::rvscsi::{AdapterLimits, QueueStatistics};

/// The name of the binary MOF resource in the image (`wmi/mof/rvscsi.mof` compiled, linked as a
/// `MOFDATA` resource by `cargo xtask package`), registered as `MofResourceName`.
pub const MOF_RESOURCE_NAME: &str = "MofResource";
use self::sm::{
    ADAPTER_SHORT_STRING_CHARS, LONG_STRING_CHARS, MS_SM_ADAPTER_INFORMATION_QUERY_GUID,
    MS_SM_PORT_INFORMATION_METHODS_GUID, MS_SM_SCSI_INFORMATION_METHODS_GUID,
    MS_SM_TARGET_INFORMATION_METHODS_GUID, PortState, SmhbaProtocolStatistics,
    SmhbaSasPhyStatistics, hba_status,
};

/// Row of `MS_SM_AdapterInformationQuery` in [`HbaProvider`]'s registration table.
pub const ADAPTER_INFORMATION_INDEX: usize = 0;
/// Row of `MS_SM_PortInformationMethods`.
pub const PORT_INFORMATION_INDEX: usize = 1;
/// Row of `MS_SM_TargetInformationMethods`.
pub const TARGET_INFORMATION_INDEX: usize = 2;
/// Row of `MS_SM_ScsiInformationMethods`.
pub const SCSI_INFORMATION_INDEX: usize = 3;
/// Row of `Rvscsi_QueueStatistics` (one instance per request queue).
pub const QUEUE_STATISTICS_INDEX: usize = 4;
/// Row of `Rvscsi_AdapterLimits`.
pub const ADAPTER_LIMITS_INDEX: usize = 5;
/// Rows in the registration table.
pub const GUID_COUNT: usize = 6;

/// Per-protocol counters of a port or logical unit (SM-HBA protocol statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolStatistics {
    /// Seconds since the counters were reset.
    pub seconds_since_last_reset: i64,
    /// Read requests.
    pub input_requests: i64,
    /// Write requests.
    pub output_requests: i64,
    /// Requests without data.
    pub control_requests: i64,
    /// Megabytes read.
    pub input_megabytes: i64,
    /// Megabytes written.
    pub output_megabytes: i64,
}

impl ProtocolStatistics {
    /// The `MS_SMHBA_PROTOCOLSTATISTICS` encoding.
    #[must_use]
    pub fn to_wire(&self) -> SmhbaProtocolStatistics {
        use zerocopy::little_endian::I64;
        SmhbaProtocolStatistics {
            seconds_since_last_reset: I64::new(self.seconds_since_last_reset),
            input_requests: I64::new(self.input_requests),
            output_requests: I64::new(self.output_requests),
            control_requests: I64::new(self.control_requests),
            input_megabytes: I64::new(self.input_megabytes),
            output_megabytes: I64::new(self.output_megabytes),
        }
    }
}

/// Per-phy counters (SM-HBA SAS phy statistics). A virtual phy has no link errors, so the
/// error counters are normally zero; the frame counters may count requests and responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhyStatistics {
    /// Seconds since the counters were reset.
    pub seconds_since_last_reset: i64,
    /// Frames sent.
    pub tx_frames: i64,
    /// Dwords sent.
    pub tx_words: i64,
    /// Frames received.
    pub rx_frames: i64,
    /// Dwords received.
    pub rx_words: i64,
    /// Invalid dwords.
    pub invalid_dword_count: i64,
    /// Running disparity errors.
    pub running_disparity_error_count: i64,
    /// Losses of dword synchronisation.
    pub loss_of_dword_sync_count: i64,
    /// Phy reset problems.
    pub phy_reset_problem_count: i64,
}

impl PhyStatistics {
    /// The counters in `MS_SMHBA_SASPHYSTATISTICS` order, as `SM_GetPhyStatistics` returns them.
    #[must_use]
    pub const fn counters(&self) -> [i64; sm::SAS_PHY_COUNTERS] {
        [
            self.seconds_since_last_reset,
            self.tx_frames,
            self.tx_words,
            self.rx_frames,
            self.rx_words,
            self.invalid_dword_count,
            self.running_disparity_error_count,
            self.loss_of_dword_sync_count,
            self.phy_reset_problem_count,
        ]
    }

    /// The `MS_SMHBA_SASPHYSTATISTICS` encoding.
    #[must_use]
    pub fn to_wire(&self) -> SmhbaSasPhyStatistics {
        use zerocopy::little_endian::I64;
        SmhbaSasPhyStatistics {
            seconds_since_last_reset: I64::new(self.seconds_since_last_reset),
            tx_frames: I64::new(self.tx_frames),
            tx_words: I64::new(self.tx_words),
            rx_frames: I64::new(self.rx_frames),
            rx_words: I64::new(self.rx_words),
            invalid_dword_count: I64::new(self.invalid_dword_count),
            running_disparity_error_count: I64::new(self.running_disparity_error_count),
            loss_of_dword_sync_count: I64::new(self.loss_of_dword_sync_count),
            phy_reset_problem_count: I64::new(self.phy_reset_problem_count),
        }
    }
}

/// Link rates of the adapter's phy, as `HBA_SASSPEED_*` values ([`sm::sas_speed`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhyInfo {
    /// `NegotiatedLinkRate`.
    pub negotiated_link_rate: u32,
    /// `ProgrammedMinLinkRate`.
    pub programmed_min_link_rate: u32,
    /// `HardwareMinLinkRate`.
    pub hardware_min_link_rate: u32,
    /// `ProgrammedMaxLinkRate`.
    pub programmed_max_link_rate: u32,
    /// `HardwareMaxLinkRate`.
    pub hardware_max_link_rate: u32,
}

/// The adapter's SAS port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo<'a> {
    /// `OSDeviceName` of the port.
    pub os_device_name: &'a str,
    /// `PortState`.
    pub state: PortState,
    /// The port's own SAS address (usually [`SasAddress::for_adapter`]).
    pub local_sas_address: SasAddress,
    /// The SAS address of the virtual expander the port attaches through when it has more
    /// than one target (with one target the port attaches to it directly, with none to
    /// nothing; see the port methods).
    pub attached_sas_address: SasAddress,
    /// The port's single phy.
    pub phy: PhyInfo,
    /// SSP protocol counters of the port.
    pub protocol_statistics: ProtocolStatistics,
    /// Counters of the phy.
    pub phy_statistics: PhyStatistics,
}

/// A logical unit, with whatever the miniport has cached of its identification.
///
/// The cached responses are served as the device returned them; the SCSI pass-through methods
/// answer only from these, and report `HBA_STATUS_ERROR_NOT_SUPPORTED` for anything absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LunInfo<'a> {
    /// The LUN (0..16384).
    pub lun: u16,
    /// The OS device name of the logical unit, if the miniport knows it (else empty).
    pub os_device_name: &'a str,
    /// Counters of this logical unit.
    pub statistics: ProtocolStatistics,
    /// Standard INQUIRY data.
    pub inquiry: Option<&'a [u8]>,
    /// VPD page 0x80, Unit Serial Number.
    pub unit_serial_number: Option<&'a [u8]>,
    /// VPD page 0x83, Device Identification.
    pub device_identification: Option<&'a [u8]>,
    /// READ CAPACITY (10) parameter data.
    pub read_capacity_10: Option<&'a [u8]>,
    /// READ CAPACITY (16) parameter data.
    pub read_capacity_16: Option<&'a [u8]>,
}

/// A virtio-scsi target: a discovered SAS port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetInfo<'a> {
    /// Its SAS address ([`SasAddress::for_target`]).
    pub sas_address: SasAddress,
    /// The `StorPort` bus (path id) it is on.
    pub bus: u8,
    /// The `StorPort` target id.
    pub target: u8,
    /// Its logical units.
    pub luns: &'a [LunInfo<'a>],
}

impl TargetInfo<'_> {
    /// Where the target sits, without its logical units.
    #[must_use]
    pub const fn port(&self) -> TargetPort {
        TargetPort {
            sas_address: self.sas_address,
            bus: self.bus,
            target: self.target,
        }
    }
}

/// Where a target sits: a [`TargetInfo`] without its logical units, as a [`TargetSource`]
/// builds it when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetPort {
    /// Its SAS address ([`SasAddress::for_target`]).
    pub sas_address: SasAddress,
    /// The `StorPort` bus (path id) it is on.
    pub bus: u8,
    /// The `StorPort` target id.
    pub target: u8,
}

/// The targets an adapter reports and their logical units, read one at a time by index, so a
/// miniport can build each from its own copies when the provider asks instead of keeping a
/// table of views that borrow them. A slice of [`TargetInfo`] is one (what
/// [`HbaProvider::new`] reads from [`HbaInfo::targets`]).
///
/// Targets are numbered `0..target_count()` in the order the discovered ports and the target
/// mapping list them; the logical units of target `t` are numbered `0..lun_count(t)` in the
/// order the target mapping and REPORT LUNS list them. [`Self::target`] and [`Self::lun`] are
/// `Some` for every index below the counts.
pub trait TargetSource {
    /// Number of targets.
    fn target_count(&self) -> usize;

    /// Target `index`.
    fn target(&self, index: usize) -> Option<TargetPort>;

    /// Number of logical units of target `target` (0 if there is no such target).
    fn lun_count(&self, target: usize) -> usize;

    /// Logical unit `index` of target `target`.
    fn lun(&self, target: usize, index: usize) -> Option<LunInfo<'_>>;
}

impl TargetSource for [TargetInfo<'_>] {
    fn target_count(&self) -> usize {
        self.len()
    }

    fn target(&self, index: usize) -> Option<TargetPort> {
        self.get(index).map(TargetInfo::port)
    }

    fn lun_count(&self, target: usize) -> usize {
        self.get(target).map_or(0, |target| target.luns.len())
    }

    fn lun(&self, target: usize, index: usize) -> Option<LunInfo<'_>> {
        self.get(target)?.luns.get(index).copied()
    }
}

/// A reference to a source is one (so a slice, unsized, becomes a `&dyn TargetSource` as
/// `&slice`).
impl<T: TargetSource + ?Sized> TargetSource for &T {
    fn target_count(&self) -> usize {
        (**self).target_count()
    }

    fn target(&self, index: usize) -> Option<TargetPort> {
        (**self).target(index)
    }

    fn lun_count(&self, target: usize) -> usize {
        (**self).lun_count(target)
    }

    fn lun(&self, target: usize, index: usize) -> Option<LunInfo<'_>> {
        (**self).lun(target, index)
    }
}

/// Everything the WMI classes report about one adapter. The miniport fills it; this crate
/// only encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HbaInfo<'a> {
    /// `UniqueAdapterId`: different for every adapter ([`crate::sas::unique_adapter_id`]).
    pub unique_adapter_id: u64,
    /// `VendorSpecificID`: `(device id << 16) | vendor id` of the PCI function.
    pub vendor_specific_id: u32,
    /// `Manufacturer` (`MaxLen` 64).
    pub manufacturer: &'a str,
    /// `SerialNumber` (`MaxLen` 64).
    pub serial_number: &'a str,
    /// `Model`.
    pub model: &'a str,
    /// `ModelDescription`.
    pub model_description: &'a str,
    /// `HardwareVersion`.
    pub hardware_version: &'a str,
    /// `DriverVersion`.
    pub driver_version: &'a str,
    /// `OptionROMVersion`.
    pub option_rom_version: &'a str,
    /// `FirmwareVersion`.
    pub firmware_version: &'a str,
    /// `DriverName`.
    pub driver_name: &'a str,
    /// `HBASymbolicName`.
    pub hba_symbolic_name: &'a str,
    /// `RedundantOptionROMVersion`.
    pub redundant_option_rom_version: &'a str,
    /// `RedundantFirmwareVersion`.
    pub redundant_firmware_version: &'a str,
    /// `MfgDomain`.
    pub mfg_domain: &'a str,
    /// The adapter's port.
    pub port: PortInfo<'a>,
    /// The targets found on the bus, as [`HbaProvider::new`] reports them
    /// ([`HbaProvider::with_targets`] reads them from another [`TargetSource`] and ignores
    /// this).
    pub targets: &'a [TargetInfo<'a>],
    /// Per-request-queue counters (`Rvscsi_QueueStatistics` instances).
    pub queues: &'a [QueueStatistics],
    /// Negotiated limits (`Rvscsi_AdapterLimits`).
    pub limits: AdapterLimits,
}

impl HbaInfo<'_> {
    /// Number of ports: one.
    pub const NUMBER_OF_PORTS: u32 = 1;
    /// Number of phys of the port: one.
    pub const NUMBER_OF_PHYS: u32 = 1;
}

/// The [`Provider`] for one adapter: the registration table and the encoders of each class.
#[derive(Clone, Copy)]
pub struct HbaProvider<'a> {
    info: &'a HbaInfo<'a>,
    targets: &'a dyn TargetSource,
    guids: [GuidRegistration; GUID_COUNT],
}

impl core::fmt::Debug for HbaProvider<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HbaProvider")
            .field("info", self.info)
            .field("target_count", &self.targets.target_count())
            .field("guids", &self.guids)
            .finish()
    }
}

impl<'a> HbaProvider<'a> {
    /// The provider for `info`, with the targets of [`HbaInfo::targets`]; the queue statistics
    /// class gets one instance per queue.
    #[must_use]
    pub fn new(info: &'a HbaInfo<'a>) -> Self {
        Self::with_targets(info, &info.targets)
    }

    /// The provider for `info` with the targets and logical units of `targets` (`info`'s own
    /// [`HbaInfo::targets`] is not read).
    #[must_use]
    pub fn with_targets(info: &'a HbaInfo<'a>, targets: &'a dyn TargetSource) -> Self {
        let row = |guid, instance_count| GuidRegistration {
            guid,
            instance_count,
            flags: 0,
            instance_names: InstanceNames::Static,
        };
        let queues = u32::try_from(info.queues.len()).unwrap_or(u32::MAX);
        Self {
            info,
            targets,
            guids: [
                row(MS_SM_ADAPTER_INFORMATION_QUERY_GUID, 1),
                row(MS_SM_PORT_INFORMATION_METHODS_GUID, 1),
                row(MS_SM_TARGET_INFORMATION_METHODS_GUID, 1),
                row(MS_SM_SCSI_INFORMATION_METHODS_GUID, 1),
                row(rvscsi::RVSCSI_QUEUE_STATISTICS_GUID, queues),
                row(rvscsi::RVSCSI_ADAPTER_LIMITS_GUID, 1),
            ],
        }
    }

    /// The adapter this provider reports.
    #[must_use]
    pub fn info(&self) -> &'a HbaInfo<'a> {
        self.info
    }

    /// The targets this provider reports.
    #[must_use]
    pub fn targets(&self) -> &'a dyn TargetSource {
        self.targets
    }
}

/// Number of data items (`WmiDataId` 1..=n) of the class at `guid_index` in the table.
fn data_item_count(guid_index: usize) -> u32 {
    match guid_index {
        ADAPTER_INFORMATION_INDEX => 17,
        QUEUE_STATISTICS_INDEX => rvscsi::QUEUE_STATISTICS_ITEMS,
        ADAPTER_LIMITS_INDEX => rvscsi::ADAPTER_LIMITS_ITEMS,
        _ => 0,
    }
}

/// Writes `MS_SM_AdapterInformationQuery`.
pub fn encode_adapter_information(info: &HbaInfo<'_>, out: &mut Encoder<'_>) {
    out.u64(info.unique_adapter_id);
    out.u32(hba_status::OK);
    out.u32(HbaInfo::NUMBER_OF_PORTS);
    out.u32(info.vendor_specific_id);
    out.string_max(info.manufacturer, ADAPTER_SHORT_STRING_CHARS);
    out.string_max(info.serial_number, ADAPTER_SHORT_STRING_CHARS);
    for value in [
        info.model,
        info.model_description,
        info.hardware_version,
        info.driver_version,
        info.option_rom_version,
        info.firmware_version,
        info.driver_name,
        info.hba_symbolic_name,
        info.redundant_option_rom_version,
        info.redundant_firmware_version,
        info.mfg_domain,
    ] {
        out.string_max(value, LONG_STRING_CHARS);
    }
}

impl Provider for HbaProvider<'_> {
    fn guids(&self) -> &[GuidRegistration] {
        &self.guids
    }

    fn query_reginfo(&self) -> RegInfo<'_> {
        RegInfo {
            // The image's binary MOF defines Rvscsi_QueueStatistics and Rvscsi_AdapterLimits
            // (the MS_SM_* classes come with Windows' own MOF); the PE check fails a package
            // whose image lacks it.
            mof_resource_name: Some(MOF_RESOURCE_NAME),
            registry_path: None,
        }
    }

    fn query_data_block(
        &mut self,
        guid_index: usize,
        instance_index: u32,
        out: &mut Encoder<'_>,
    ) -> Result<(), WmiError> {
        match guid_index {
            ADAPTER_INFORMATION_INDEX => encode_adapter_information(self.info, out),
            // The method classes have no data items: their instances are empty.
            PORT_INFORMATION_INDEX | TARGET_INFORMATION_INDEX | SCSI_INFORMATION_INDEX => {}
            QUEUE_STATISTICS_INDEX => {
                let queue = self.info.queues.get(instance_index as usize).ok_or(
                    WmiError::InstanceNotFound {
                        guid_index: guid_index as u32,
                        instance_index,
                    },
                )?;
                queue.encode(out);
            }
            ADAPTER_LIMITS_INDEX => self.info.limits.encode(out),
            _ => return Err(WmiError::NotImplemented),
        }
        Ok(())
    }

    fn set_data_block(&mut self, guid_index: usize, _: u32, _: &[u8]) -> Result<(), WmiError> {
        Err(WmiError::ReadOnly {
            guid_index: guid_index as u32,
        })
    }

    fn set_data_item(
        &mut self,
        guid_index: usize,
        _: u32,
        item_id: u32,
        _: &[u8],
    ) -> Result<(), WmiError> {
        // Item ids are the MOF WmiDataId values, 1-based; every item of every class is
        // read-only.
        if item_id == 0 || item_id > data_item_count(guid_index) {
            return Err(WmiError::ItemIdNotFound(item_id));
        }
        Err(WmiError::ReadOnly {
            guid_index: guid_index as u32,
        })
    }

    fn execute_method(
        &mut self,
        guid_index: usize,
        _: u32,
        io: &mut MethodIo<'_>,
    ) -> Result<(), WmiError> {
        match guid_index {
            PORT_INFORMATION_INDEX => methods::port_information(self.info, self.targets, io),
            TARGET_INFORMATION_INDEX => methods::target_information(self.info, self.targets, io),
            SCSI_INFORMATION_INDEX => methods::scsi_information(self.info, self.targets, io),
            _ => Err(WmiError::MethodNotFound(io.method_id())),
        }
    }

    fn function_control(&mut self, _: usize, control: Control, _: bool) -> Result<(), WmiError> {
        match control {
            // The data is always collected; turning collection on or off changes nothing.
            Control::Collection => Ok(()),
            // No event GUIDs are registered, so WMI has no reason to send these.
            Control::Events => Err(WmiError::NotImplemented),
        }
    }
}
