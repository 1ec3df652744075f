//! A memory-backed virtio PCI device for tests: configuration space with a capability list, and
//! a register model of the common configuration, notification, ISR and device configuration
//! structures with the spec's semantics (virtio 1.x section 4.1).
//!
//! [`FakeVirtioPci`] implements both [`PciConfig`] and [`RegisterIo`]. It is a cheap handle
//! (`Clone` shares the device), so a test gives one clone to the transport and keeps another to
//! inspect what the driver did (status writes, queue registers, notifications) and to play the
//! device (raise ISR bits, change the configuration, refuse features or vectors). Accesses the
//! spec forbids (wrong width, writes to read-only fields, clearing status bits, writes outside a
//! BAR) are served as harmlessly as hardware would and recorded as [`Violation`]s, so a test can
//! assert the driver made none.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::vec;
use std::vec::Vec;

use crate::features::Features;
use crate::hal::{PciConfig, RegisterIo};
use crate::pci::{
    DeviceStatus, Isr, PCI_CAP_ID_MSIX, PCI_CAP_ID_VNDR, PCI_CAPABILITY_LIST, PCI_DEVICE_ID,
    PCI_STATUS, PCI_STATUS_CAP_LIST, PCI_VENDOR_ID, Region, VIRTIO_DEVICE_TYPE_SCSI,
    VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG,
    VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_CAP_PCI_CFG,
    VIRTIO_PCI_MODERN_DEVICE_ID_BASE, VIRTIO_PCI_VENDOR_ID, VirtioPciCommonCfg as Common,
};

/// Size of the fake's configuration space (conventional PCI).
pub const CONFIG_SPACE_SIZE: usize = 256;
/// The BAR QEMU puts the virtio structures in.
pub const QEMU_VIRTIO_BAR: u8 = 4;
/// The BAR QEMU puts the MSI-X table and PBA in.
pub const QEMU_MSIX_BAR: u8 = 1;
/// Length of each virtio structure's slot in QEMU's BAR 4.
const QEMU_REGION_LEN: u32 = 0x1000;

/// One capability in the fake's configuration space: its PCI capability ID and the bytes that
/// follow the two header bytes (ID and next pointer, which the builder fills in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeCapability {
    /// PCI capability ID (`cap_vndr` for virtio structures).
    pub cap_id: u8,
    /// Bytes from offset 2 on (for virtio: `cap_len`, `cfg_type`, `bar`, `id`, ...).
    pub body: Vec<u8>,
}

impl FakeCapability {
    /// A `struct virtio_pci_cap` (16 bytes) for `cfg_type`.
    #[must_use]
    pub fn virtio(cfg_type: u8, bar: u8, offset: u32, length: u32) -> Self {
        let mut body = vec![16, cfg_type, bar, 0, 0, 0];
        body.extend_from_slice(&offset.to_le_bytes());
        body.extend_from_slice(&length.to_le_bytes());
        Self {
            cap_id: PCI_CAP_ID_VNDR,
            body,
        }
    }

    /// A `struct virtio_pci_notify_cap` (20 bytes).
    #[must_use]
    pub fn notify(bar: u8, offset: u32, length: u32, notify_off_multiplier: u32) -> Self {
        let mut cap = Self::virtio(VIRTIO_PCI_CAP_NOTIFY_CFG, bar, offset, length);
        cap.body[0] = 20;
        cap.body
            .extend_from_slice(&notify_off_multiplier.to_le_bytes());
        cap
    }

    /// A `struct virtio_pci_cfg_cap` (20 bytes), as QEMU presents it (no window selected).
    #[must_use]
    pub fn pci_cfg() -> Self {
        let mut cap = Self::virtio(VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0);
        cap.body[0] = 20;
        cap.body.extend_from_slice(&[0; 4]);
        cap
    }

    /// An MSI-X capability with `table_size` entries, table and PBA in `bar`.
    #[must_use]
    pub fn msix(table_size: u16, bar: u8) -> Self {
        let control = table_size.saturating_sub(1) & 0x7FF;
        let mut body = control.to_le_bytes().to_vec();
        body.extend_from_slice(&u32::from(bar).to_le_bytes());
        body.extend_from_slice(&(0x800 | u32::from(bar)).to_le_bytes());
        Self {
            cap_id: PCI_CAP_ID_MSIX,
            body,
        }
    }

    /// The same capability with a different `cap_len` byte (for malformed-capability tests).
    #[must_use]
    pub fn with_cap_len(mut self, cap_len: u8) -> Self {
        if let Some(byte) = self.body.first_mut() {
            *byte = cap_len;
        }
        self
    }

    /// The same capability with a different `id` byte.
    #[must_use]
    pub fn with_id(mut self, id: u8) -> Self {
        if let Some(byte) = self.body.get_mut(3) {
            *byte = id;
        }
        self
    }

    /// Bytes the capability occupies, rounded up to a dword.
    fn footprint(&self) -> usize {
        (2 + self.body.len()).div_ceil(4) * 4
    }
}

/// Where the fake's register model serves each structure (independent of what the capability
/// list advertises, so tests can advertise broken capabilities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeRegions {
    /// Common configuration.
    pub common: Region,
    /// Notification structure.
    pub notify: Region,
    /// `notify_off_multiplier`.
    pub notify_off_multiplier: u32,
    /// ISR status.
    pub isr: Region,
    /// Device-specific configuration.
    pub device: Region,
}

impl FakeRegions {
    /// QEMU's layout: BAR 4 with common at 0x0000, ISR at 0x1000, device at 0x2000 and notify at
    /// 0x3000 (each 4 KiB), `notify_off_multiplier` 4.
    #[must_use]
    pub const fn qemu() -> Self {
        const fn region(offset: u32) -> Region {
            Region {
                bar: QEMU_VIRTIO_BAR,
                offset,
                length: QEMU_REGION_LEN,
            }
        }
        Self {
            common: region(0),
            isr: region(0x1000),
            device: region(0x2000),
            notify: region(0x3000),
            notify_off_multiplier: 4,
        }
    }

    /// The capability list QEMU builds for these regions, in list (preference) order: MSI-X (if
    /// `msix_table_size`), `PCI_CFG`, notify, device, ISR, common.
    #[must_use]
    pub fn capabilities(&self, msix_table_size: Option<u16>) -> Vec<FakeCapability> {
        let cap = |cfg_type, r: Region| FakeCapability::virtio(cfg_type, r.bar, r.offset, r.length);
        let mut caps = Vec::new();
        if let Some(size) = msix_table_size {
            caps.push(FakeCapability::msix(size, QEMU_MSIX_BAR));
        }
        caps.push(FakeCapability::pci_cfg());
        let n = self.notify;
        caps.push(FakeCapability::notify(
            n.bar,
            n.offset,
            n.length,
            self.notify_off_multiplier,
        ));
        caps.push(cap(VIRTIO_PCI_CAP_DEVICE_CFG, self.device));
        caps.push(cap(VIRTIO_PCI_CAP_ISR_CFG, self.isr));
        caps.push(cap(VIRTIO_PCI_CAP_COMMON_CFG, self.common));
        caps
    }
}

/// The registers of one queue, as the device sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeQueue {
    /// Maximum size (what `queue_size` reads after reset; 0 = unavailable).
    pub max_size: u16,
    /// Current `queue_size`.
    pub size: u16,
    /// `queue_msix_vector`.
    pub msix_vector: u16,
    /// Whether the driver wrote 1 to `queue_enable`.
    pub enabled: bool,
    /// `queue_notify_off`.
    pub notify_off: u16,
    /// `queue_desc`.
    pub desc: u64,
    /// `queue_driver`.
    pub driver: u64,
    /// `queue_device`.
    pub device: u64,
}

impl FakeQueue {
    fn new(max_size: u16, notify_off: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            msix_vector: VIRTIO_MSI_NO_VECTOR,
            enabled: false,
            notify_off,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }

    fn reset(&mut self) {
        *self = Self::new(self.max_size, self.notify_off);
    }
}

/// One write into the notification structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifyWrite {
    /// Offset relative to the start of the notification structure.
    pub offset: u64,
    /// Access width in bytes.
    pub width: u8,
    /// Value written.
    pub value: u64,
}

/// [`Violation::what`] of a device configuration access that is not one field at its natural
/// width (section 4.1.3.1).
pub const MIXED_WIDTH_DEVICE_CONFIG: &str =
    "device configuration access not of one field at its natural width (4.1.3.1)";

/// An access the spec forbids the driver, recorded by the fake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// BAR accessed (or 0xFF for configuration space).
    pub bar: u8,
    /// Offset in the BAR (or configuration space).
    pub offset: u64,
    /// Access width in bytes.
    pub width: u8,
    /// What was wrong.
    pub what: &'static str,
}

/// The fields of `struct virtio_scsi_config` (section 5.6.4) as byte ranges: seven 32-bit
/// fields, `max_channel` and `max_target` (16-bit), `max_lun` (32-bit).
pub const SCSI_CONFIG_FIELDS: [Range<u32>; 10] = [
    0..4,
    4..8,
    8..12,
    12..16,
    16..20,
    20..24,
    24..28,
    28..30,
    30..32,
    32..36,
];

/// Builds a [`FakeVirtioPci`]; starts from a QEMU-like device.
#[derive(Clone, Debug)]
pub struct FakeVirtioPciBuilder {
    vendor_id: u16,
    device_id: u16,
    device_features: Features,
    required_features: Features,
    queue_max_sizes: Vec<u16>,
    queue_notify_offs: Option<Vec<u16>>,
    regions: FakeRegions,
    capabilities: Option<Vec<FakeCapability>>,
    bar_lens: [Option<u64>; 6],
    msix_table_size: Option<u16>,
    device_config: Vec<u8>,
    device_config_writable: Vec<Range<u32>>,
    device_config_fields: Vec<Range<u32>>,
}

impl FakeVirtioPciBuilder {
    /// Vendor ID (default 0x1AF4).
    #[must_use]
    pub fn vendor_id(mut self, id: u16) -> Self {
        self.vendor_id = id;
        self
    }

    /// Device ID (default 0x1040 + device type).
    #[must_use]
    pub fn device_id(mut self, id: u16) -> Self {
        self.device_id = id;
        self
    }

    /// Offered features (default `VERSION_1` only for a generic device).
    #[must_use]
    pub fn device_features(mut self, features: Features) -> Self {
        self.device_features = features;
        self
    }

    /// Features the device insists on: it refuses `FEATURES_OK` without them (default `VERSION_1`,
    /// as QEMU does for a modern-only device).
    #[must_use]
    pub fn required_features(mut self, features: Features) -> Self {
        self.required_features = features;
        self
    }

    /// One entry per queue: its maximum size (0 = unavailable). Sets `num_queues`.
    #[must_use]
    pub fn queues(mut self, max_sizes: &[u16]) -> Self {
        self.queue_max_sizes = max_sizes.to_vec();
        self
    }

    /// `queue_notify_off` per queue (default: the queue index).
    #[must_use]
    pub fn queue_notify_offs(mut self, offs: &[u16]) -> Self {
        self.queue_notify_offs = Some(offs.to_vec());
        self
    }

    /// Where the register model serves the structures (default [`FakeRegions::qemu`]).
    #[must_use]
    pub fn regions(mut self, regions: FakeRegions) -> Self {
        self.regions = regions;
        self
    }

    /// The advertised capability list, in list order (default: QEMU's list for the regions).
    #[must_use]
    pub fn capabilities(mut self, caps: Vec<FakeCapability>) -> Self {
        self.capabilities = Some(caps);
        self
    }

    /// Length of BAR `bar` as mapped, `None` for unmapped (default: BAR 1 4 KiB, BAR 4 16 KiB).
    /// Out-of-range BAR numbers are ignored.
    #[must_use]
    pub fn bar_len(mut self, bar: u8, len: Option<u64>) -> Self {
        if let Some(slot) = self.bar_lens.get_mut(usize::from(bar)) {
            *slot = len;
        }
        self
    }

    /// MSI-X table size, or `None` for no MSI-X capability (then every vector is refused).
    #[must_use]
    pub fn msix_table_size(mut self, size: Option<u16>) -> Self {
        self.msix_table_size = size;
        self
    }

    /// Device configuration contents after reset, and the byte ranges the driver may write.
    #[must_use]
    pub fn device_config(mut self, bytes: &[u8], writable: &[Range<u32>]) -> Self {
        self.device_config = bytes.to_vec();
        self.device_config_writable = writable.to_vec();
        self
    }

    /// The fields of the device configuration, as byte ranges. Each access must then cover
    /// exactly one field at its natural width (section 4.1.3.1: 8-bit fields with 8-bit
    /// accesses, 16-bit with 16-bit, 32-bit with 32-bit, 64-bit with two 32-bit accesses);
    /// any other access, such as one 32-bit read spanning two 16-bit fields, is served as the
    /// device would serve it and recorded as a [`Violation`]. Empty (the default): unchecked.
    #[must_use]
    pub fn device_config_fields(mut self, fields: &[Range<u32>]) -> Self {
        self.device_config_fields = fields.to_vec();
        self
    }

    /// Builds the device.
    ///
    /// # Panics
    /// If the capabilities do not fit in configuration space (a test-authoring error).
    #[must_use]
    pub fn build(self) -> FakeVirtioPci {
        let capabilities = self
            .capabilities
            .clone()
            .unwrap_or_else(|| self.regions.capabilities(self.msix_table_size));
        let mut config = [0u8; CONFIG_SPACE_SIZE];
        let put = |config: &mut [u8; CONFIG_SPACE_SIZE], at: usize, bytes: &[u8]| {
            config[at..at + bytes.len()].copy_from_slice(bytes);
        };
        put(
            &mut config,
            usize::from(PCI_VENDOR_ID),
            &self.vendor_id.to_le_bytes(),
        );
        put(
            &mut config,
            usize::from(PCI_DEVICE_ID),
            &self.device_id.to_le_bytes(),
        );
        put(&mut config, 0x08, &[1, 0x00, 0x00, 0x01]); // revision 1, class 01 00 00 (SCSI)
        put(&mut config, 0x14, &0xFEB0_0000u32.to_le_bytes()); // BAR 1: 32-bit memory
        put(&mut config, 0x20, &0xFE00_000Cu32.to_le_bytes()); // BAR 4: 64-bit prefetchable
        put(&mut config, 0x2C, &VIRTIO_PCI_VENDOR_ID.to_le_bytes());
        put(&mut config, 0x2E, &0x1100u16.to_le_bytes());
        config[0x3D] = 1; // INTA#

        // Allocate addresses upwards from 0x40 in reverse list order, as QEMU's prepending
        // `pci_add_capability` does, so the default list is byte-for-byte QEMU's.
        let mut offsets = vec![0u8; capabilities.len()];
        let mut next_free = 0x40usize;
        for (index, cap) in capabilities.iter().enumerate().rev() {
            assert!(
                next_free + cap.footprint() <= CONFIG_SPACE_SIZE,
                "capabilities overflow"
            );
            offsets[index] = next_free as u8;
            next_free += cap.footprint();
        }
        for (index, cap) in capabilities.iter().enumerate() {
            let at = usize::from(offsets[index]);
            let next = offsets.get(index + 1).copied().unwrap_or(0);
            put(&mut config, at, &[cap.cap_id, next]);
            put(&mut config, at + 2, &cap.body);
        }
        if let Some(&first) = offsets.first() {
            config[usize::from(PCI_CAPABILITY_LIST)] = first;
            put(
                &mut config,
                usize::from(PCI_STATUS),
                &PCI_STATUS_CAP_LIST.to_le_bytes(),
            );
        }

        let notify_offs = self
            .queue_notify_offs
            .unwrap_or_else(|| (0..self.queue_max_sizes.len() as u16).collect());
        let queues = self
            .queue_max_sizes
            .iter()
            .enumerate()
            .map(|(i, &max)| FakeQueue::new(max, notify_offs.get(i).copied().unwrap_or(0)))
            .collect();
        let state = State {
            config,
            capability_offsets: offsets,
            bar_lens: self.bar_lens,
            regions: self.regions,
            device_features: self.device_features,
            required_features: self.required_features,
            refuse_features_ok: false,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            reset_delay: 0,
            stale_status_reads: 0,
            stale_status: 0,
            config_msix_vector: VIRTIO_MSI_NO_VECTOR,
            queue_select: 0,
            queues,
            msix_table_size: self.msix_table_size,
            refused_vectors: Vec::new(),
            isr: 0,
            device_config_default: self.device_config.clone(),
            device_config: self.device_config,
            device_config_writable: self.device_config_writable,
            device_config_fields: self.device_config_fields,
            generation: 0,
            generation_bumps: 0,
            status_writes: Vec::new(),
            notifications: Vec::new(),
            violations: Vec::new(),
        };
        FakeVirtioPci {
            state: Arc::new(Mutex::new(state)),
        }
    }
}

#[derive(Debug)]
struct State {
    config: [u8; CONFIG_SPACE_SIZE],
    capability_offsets: Vec<u8>,
    bar_lens: [Option<u64>; 6],
    regions: FakeRegions,
    device_features: Features,
    required_features: Features,
    refuse_features_ok: bool,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    /// Status reads that still show the pre-reset status after a reset (see `set_reset_delay`).
    reset_delay: u32,
    stale_status_reads: u32,
    stale_status: u8,
    config_msix_vector: u16,
    queue_select: u16,
    queues: Vec<FakeQueue>,
    msix_table_size: Option<u16>,
    refused_vectors: Vec<u16>,
    isr: u8,
    device_config_default: Vec<u8>,
    device_config: Vec<u8>,
    device_config_writable: Vec<Range<u32>>,
    device_config_fields: Vec<Range<u32>>,
    generation: u8,
    /// Device configuration reads that will each bump the generation (a racing device update).
    generation_bumps: u32,
    status_writes: Vec<u8>,
    notifications: Vec<NotifyWrite>,
    violations: Vec<Violation>,
}

/// The high halves of the 64-bit queue address fields.
const QUEUE_DESC_HI: u64 = Common::QUEUE_DESC + 4;
const QUEUE_DRIVER_HI: u64 = Common::QUEUE_DRIVER + 4;
const QUEUE_DEVICE_HI: u64 = Common::QUEUE_DEVICE + 4;

/// Which structure an access hits, with the offset relative to it.
enum Target {
    Common(u64),
    Notify(u64),
    Isr(u64),
    Device(u64),
    Unbacked,
    OutsideBar,
}

fn within(region: Region, bar: u8, offset: u64, width: u8, cap: u64) -> Option<u64> {
    let start = u64::from(region.offset);
    let len = u64::from(region.length).min(cap);
    let rel = offset.checked_sub(start)?;
    (region.bar == bar && rel + u64::from(width) <= len).then_some(rel)
}

impl State {
    fn violation(&mut self, bar: u8, offset: u64, width: u8, what: &'static str) {
        self.violations.push(Violation {
            bar,
            offset,
            width,
            what,
        });
    }

    fn target(&self, bar: u8, offset: u64, width: u8) -> Target {
        let mapped = self.bar_lens.get(usize::from(bar)).copied().flatten();
        match mapped {
            Some(len)
                if offset
                    .checked_add(u64::from(width))
                    .is_some_and(|end| end <= len) => {}
            _ => return Target::OutsideBar,
        }
        let r = self.regions;
        if let Some(rel) = within(r.common, bar, offset, width, 64) {
            Target::Common(rel)
        } else if let Some(rel) = within(r.notify, bar, offset, width, u64::MAX) {
            Target::Notify(rel)
        } else if let Some(rel) = within(r.isr, bar, offset, width, u64::MAX) {
            Target::Isr(rel)
        } else if let Some(rel) = within(r.device, bar, offset, width, u64::MAX) {
            Target::Device(rel)
        } else {
            Target::Unbacked
        }
    }

    fn vector_accepted(&self, vector: u16) -> bool {
        vector == VIRTIO_MSI_NO_VECTOR
            || (self.msix_table_size.is_some_and(|size| vector < size)
                && !self.refused_vectors.contains(&vector))
    }

    fn selected(&mut self) -> Option<&mut FakeQueue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn device_reset(&mut self) {
        self.status = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.config_msix_vector = VIRTIO_MSI_NO_VECTOR;
        self.queue_select = 0;
        self.queues.iter_mut().for_each(FakeQueue::reset);
        self.isr = 0;
        self.device_config.clone_from(&self.device_config_default);
    }

    fn write_status(&mut self, value: u8) {
        self.status_writes.push(value);
        if value == 0 {
            // A reset requested while one is still in progress does not restart it, and a
            // device whose status is already 0 has nothing stale to show.
            if self.stale_status_reads == 0 {
                self.stale_status = self.status;
                self.stale_status_reads = if self.status == 0 {
                    0
                } else {
                    self.reset_delay
                };
            }
            self.device_reset();
            return;
        }
        if self.stale_status_reads > 0 {
            self.stale_status_reads = 0;
            self.violation(
                self.regions.common.bar,
                Common::DEVICE_STATUS,
                1,
                "status written before the reset completed",
            );
        }
        let needs_reset = DeviceStatus::DEVICE_NEEDS_RESET.bits();
        let driver_bits = self.status & !needs_reset;
        if value & driver_bits != driver_bits {
            self.violation(
                self.regions.common.bar,
                Common::DEVICE_STATUS,
                1,
                "cleared a status bit",
            );
        }
        let features_ok = DeviceStatus::FEATURES_OK.bits();
        let mut new = value | (self.status & needs_reset);
        if value & features_ok != 0 && self.status & features_ok == 0 {
            let accepted = self.driver_features;
            let refused = self.refuse_features_ok
                || accepted & !self.device_features.bits() != 0
                || accepted & self.required_features.bits() != self.required_features.bits();
            if refused {
                new &= !features_ok;
            }
        }
        self.status = new;
    }

    fn read_status(&mut self) -> u8 {
        if self.stale_status_reads > 0 {
            self.stale_status_reads -= 1;
            return self.stale_status;
        }
        self.status
    }

    fn common_read(&mut self, rel: u64, width: u8) -> Option<u64> {
        let queue = self.selected().copied();
        let half = |value: u64, rel: u64, field: u64| {
            if rel == field {
                value & 0xFFFF_FFFF
            } else {
                value >> 32
            }
        };
        let value = match (rel, width) {
            (Common::DEVICE_FEATURE_SELECT, 4) => u64::from(self.device_feature_select),
            (Common::DEVICE_FEATURE, 4) => match self.device_feature_select {
                0 => self.device_features.bits() & 0xFFFF_FFFF,
                1 => self.device_features.bits() >> 32,
                _ => 0,
            },
            (Common::DRIVER_FEATURE_SELECT, 4) => u64::from(self.driver_feature_select),
            (Common::DRIVER_FEATURE, 4) => match self.driver_feature_select {
                0 => self.driver_features & 0xFFFF_FFFF,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            (Common::CONFIG_MSIX_VECTOR, 2) => u64::from(self.config_msix_vector),
            (Common::NUM_QUEUES, 2) => self.queues.len() as u64,
            (Common::DEVICE_STATUS, 1) => u64::from(self.read_status()),
            (Common::CONFIG_GENERATION, 1) => u64::from(self.generation),
            // `queue_notif_config_data` is the queue index, the trivial choice of section 4.1.4.3.
            (Common::QUEUE_SELECT | Common::QUEUE_NOTIF_CONFIG_DATA, 2) => {
                u64::from(self.queue_select)
            }
            (Common::QUEUE_SIZE, 2) => queue.map_or(0, |q| u64::from(q.size)),
            (Common::QUEUE_MSIX_VECTOR, 2) => queue.map_or(u64::from(VIRTIO_MSI_NO_VECTOR), |q| {
                u64::from(q.msix_vector)
            }),
            (Common::QUEUE_ENABLE, 2) => queue.map_or(0, |q| u64::from(q.enabled)),
            (Common::QUEUE_NOTIFY_OFF, 2) => queue.map_or(0, |q| u64::from(q.notify_off)),
            (Common::QUEUE_DESC | QUEUE_DESC_HI, 4) => {
                queue.map_or(0, |q| half(q.desc, rel, Common::QUEUE_DESC))
            }
            (Common::QUEUE_DRIVER | QUEUE_DRIVER_HI, 4) => {
                queue.map_or(0, |q| half(q.driver, rel, Common::QUEUE_DRIVER))
            }
            (Common::QUEUE_DEVICE | QUEUE_DEVICE_HI, 4) => {
                queue.map_or(0, |q| half(q.device, rel, Common::QUEUE_DEVICE))
            }
            (Common::QUEUE_RESET | Common::ADMIN_QUEUE_INDEX | Common::ADMIN_QUEUE_NUM, 2) => 0,
            _ => return None,
        };
        Some(value)
    }

    fn common_write(&mut self, rel: u64, width: u8, value: u64) -> Result<(), &'static str> {
        let features_ok = self.status & DeviceStatus::FEATURES_OK.bits() != 0;
        let set_half = |field: &mut u64, high: bool, value: u64| {
            *field = if high {
                (*field & 0xFFFF_FFFF) | (value << 32)
            } else {
                (*field & !0xFFFF_FFFF) | (value & 0xFFFF_FFFF)
            };
        };
        match (rel, width) {
            (Common::DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = value as u32,
            (Common::DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = value as u32,
            (Common::DRIVER_FEATURE, 4) => {
                if features_ok {
                    return Err("driver features written after FEATURES_OK");
                }
                match self.driver_feature_select {
                    0 => set_half(&mut self.driver_features, false, value),
                    1 => set_half(&mut self.driver_features, true, value),
                    _ => {}
                }
            }
            (Common::CONFIG_MSIX_VECTOR, 2) => {
                let vector = value as u16;
                self.config_msix_vector = if self.vector_accepted(vector) {
                    vector
                } else {
                    VIRTIO_MSI_NO_VECTOR
                };
            }
            (Common::DEVICE_STATUS, 1) => self.write_status(value as u8),
            (Common::QUEUE_SELECT, 2) => self.queue_select = value as u16,
            (Common::QUEUE_SIZE, 2) => {
                let queue = self.selected().ok_or("queue_size of a missing queue")?;
                if value as u16 > queue.max_size {
                    return Err("queue_size above the maximum");
                }
                queue.size = value as u16;
            }
            (Common::QUEUE_MSIX_VECTOR, 2) => {
                let vector = value as u16;
                let accepted = self.vector_accepted(vector);
                let queue = self
                    .selected()
                    .ok_or("queue_msix_vector of a missing queue")?;
                queue.msix_vector = if accepted {
                    vector
                } else {
                    VIRTIO_MSI_NO_VECTOR
                };
            }
            (Common::QUEUE_ENABLE, 2) => {
                if value != 1 {
                    return Err("queue_enable written with a value other than 1");
                }
                self.selected()
                    .ok_or("queue_enable of a missing queue")?
                    .enabled = true;
            }
            (
                Common::QUEUE_DESC
                | QUEUE_DESC_HI
                | Common::QUEUE_DRIVER
                | QUEUE_DRIVER_HI
                | Common::QUEUE_DEVICE
                | QUEUE_DEVICE_HI,
                4,
            ) => {
                let queue = self.selected().ok_or("queue address of a missing queue")?;
                let high = rel % 8 == 4;
                let field = match rel & !7 {
                    Common::QUEUE_DESC => &mut queue.desc,
                    Common::QUEUE_DRIVER => &mut queue.driver,
                    _ => &mut queue.device,
                };
                set_half(field, high, value);
            }
            (Common::QUEUE_RESET, 2) => {}
            (
                Common::DEVICE_FEATURE
                | Common::NUM_QUEUES
                | Common::CONFIG_GENERATION
                | Common::QUEUE_NOTIFY_OFF
                | Common::QUEUE_NOTIF_CONFIG_DATA
                | Common::ADMIN_QUEUE_INDEX
                | Common::ADMIN_QUEUE_NUM,
                _,
            ) => return Err("write to a read-only field"),
            _ => return Err("access of the wrong width or misaligned"),
        }
        Ok(())
    }

    /// Whether an access of `width` bytes at `rel` in the device configuration covers one field
    /// at its natural width (see [`FakeVirtioPciBuilder::device_config_fields`]).
    /// Bytes past every field (padding up to the structure's length) are not fields: reading
    /// them is not this rule's concern.
    fn device_access_is_one_field(&self, rel: u64, width: u8) -> bool {
        let end = rel + u64::from(width);
        let overlaps_a_field = self
            .device_config_fields
            .iter()
            .any(|field| rel < u64::from(field.end) && u64::from(field.start) < end);
        !overlaps_a_field
            || self.device_config_fields.iter().any(|field| {
                let (start, end) = (u64::from(field.start), u64::from(field.end));
                match end - start {
                    8 => width == 4 && (rel == start || rel == start + 4),
                    size => rel == start && u64::from(width) == size,
                }
            })
    }

    fn device_read(&mut self, rel: u64, width: u8) -> Option<u64> {
        if !rel.is_multiple_of(u64::from(width)) {
            return None;
        }
        if self.generation_bumps > 0 {
            self.generation_bumps -= 1;
            self.generation = self.generation.wrapping_add(1);
        }
        let mut bytes = [0u8; 8];
        let start = usize::try_from(rel).ok()?;
        for (i, byte) in bytes.iter_mut().take(usize::from(width)).enumerate() {
            *byte = self.device_config.get(start + i).copied().unwrap_or(0);
        }
        Some(u64::from_le_bytes(bytes))
    }

    fn device_write(&mut self, rel: u64, width: u8, value: u64) -> Result<(), &'static str> {
        if !rel.is_multiple_of(u64::from(width)) {
            return Err("misaligned device configuration write");
        }
        let writable = (0..u64::from(width)).all(|i| {
            let at = rel + i;
            self.device_config_writable
                .iter()
                .any(|r| u64::from(r.start) <= at && at < u64::from(r.end))
        });
        if !writable {
            return Err("write to a read-only device configuration byte");
        }
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .take(usize::from(width))
            .enumerate()
        {
            let at = usize::try_from(rel).map_err(|_| "offset overflow")? + i;
            if let Some(slot) = self.device_config.get_mut(at) {
                *slot = byte;
            }
        }
        Ok(())
    }

    fn read(&mut self, bar: u8, offset: u64, width: u8) -> u64 {
        let all_ones = u64::MAX >> (64 - 8 * u32::from(width));
        let value = match self.target(bar, offset, width) {
            Target::Common(rel) => self.common_read(rel, width),
            Target::Isr(0) if width == 1 => Some(u64::from(core::mem::take(&mut self.isr))),
            Target::Device(rel) => {
                // A misaligned access is recorded below as such.
                if rel.is_multiple_of(u64::from(width))
                    && !self.device_access_is_one_field(rel, width)
                {
                    self.violation(bar, offset, width, MIXED_WIDTH_DEVICE_CONFIG);
                }
                self.device_read(rel, width)
            }
            // The ISR status is one byte; anything else in its region is undefined.
            Target::Isr(_) => None,
            Target::Notify(_) | Target::Unbacked => Some(0),
            Target::OutsideBar => {
                self.violation(bar, offset, width, "read outside a mapped BAR");
                return all_ones;
            }
        };
        value.unwrap_or_else(|| {
            self.violation(bar, offset, width, "read of the wrong width or misaligned");
            all_ones
        })
    }

    fn write(&mut self, bar: u8, offset: u64, width: u8, value: u64) {
        let result = match self.target(bar, offset, width) {
            Target::Common(rel) => self.common_write(rel, width, value),
            Target::Notify(rel) => {
                self.notifications.push(NotifyWrite {
                    offset: rel,
                    width,
                    value,
                });
                Ok(())
            }
            Target::Device(rel) if !self.device_access_is_one_field(rel, width) => {
                Err(MIXED_WIDTH_DEVICE_CONFIG)
            }
            Target::Device(rel) => self.device_write(rel, width, value),
            Target::Isr(_) => Err("write to the ISR status"),
            Target::Unbacked => Err("write to an unbacked register"),
            Target::OutsideBar => Err("write outside a mapped BAR"),
        };
        if let Err(what) = result {
            self.violation(bar, offset, width, what);
        }
    }

    fn config_byte(&self, offset: u16) -> u8 {
        self.config
            .get(usize::from(offset))
            .copied()
            .unwrap_or(0xFF)
    }
}

/// A virtio PCI device backed by memory; see the module documentation.
#[derive(Clone, Debug)]
pub struct FakeVirtioPci {
    state: Arc<Mutex<State>>,
}

impl FakeVirtioPci {
    /// A builder for a QEMU-like modern device of virtio `device_type` with the QEMU layout,
    /// offering `VERSION_1`, one queue of 256 entries, an MSI-X table of 2 entries and no device
    /// configuration.
    #[must_use]
    pub fn builder(device_type: u16) -> FakeVirtioPciBuilder {
        let mut bar_lens = [None; 6];
        bar_lens[usize::from(QEMU_MSIX_BAR)] = Some(0x1000);
        bar_lens[usize::from(QEMU_VIRTIO_BAR)] = Some(0x4000);
        FakeVirtioPciBuilder {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: VIRTIO_PCI_MODERN_DEVICE_ID_BASE + device_type,
            device_features: Features::VERSION_1,
            required_features: Features::VERSION_1,
            queue_max_sizes: vec![256],
            queue_notify_offs: None,
            regions: FakeRegions::qemu(),
            capabilities: None,
            bar_lens,
            msix_table_size: Some(2),
            device_config: Vec::new(),
            device_config_writable: Vec::new(),
            device_config_fields: Vec::new(),
        }
    }

    /// A builder for a QEMU-like virtio-scsi device with `request_queues` request queues (plus
    /// controlq and eventq) of 256 entries, an MSI-X vector per queue plus one for configuration,
    /// QEMU's features (`VERSION_1`, `INDIRECT_DESC`, `EVENT_IDX`, `RING_PACKED`, `HOTPLUG`, `CHANGE`) and
    /// the default `virtio_scsi_config` (section 5.6.4) with `sense_size` and `cdb_size`
    /// writable.
    #[must_use]
    pub fn scsi(request_queues: u16) -> FakeVirtioPciBuilder {
        let mut config = Vec::new();
        for value in [
            u32::from(request_queues), // num_queues
            254,                       // seg_max
            0xFFFF,                    // max_sectors
            128,                       // cmd_per_lun
            16,                        // event_info_size
            96,                        // sense_size
            32,                        // cdb_size
        ] {
            config.extend_from_slice(&value.to_le_bytes());
        }
        config.extend_from_slice(&0u16.to_le_bytes()); // max_channel
        config.extend_from_slice(&255u16.to_le_bytes()); // max_target
        config.extend_from_slice(&16_383u32.to_le_bytes()); // max_lun
        let queues = vec![256; usize::from(request_queues) + 2];
        Self::builder(VIRTIO_DEVICE_TYPE_SCSI)
            .device_features(
                Features::VERSION_1
                    | Features::INDIRECT_DESC
                    | Features::EVENT_IDX
                    | Features::RING_PACKED
                    | Features::SCSI_HOTPLUG
                    | Features::SCSI_CHANGE,
            )
            .msix_table_size(Some(request_queues + 3))
            .queues(&queues)
            .device_config(&config, &[20..24, 24..28]) // sense_size, cdb_size
            .device_config_fields(&SCSI_CONFIG_FIELDS)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves consistent-enough state for the
        // others to read; never propagate the poison as a second panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the capabilities were placed in configuration space, in list order.
    #[must_use]
    pub fn capability_offsets(&self) -> Vec<u8> {
        self.state().capability_offsets.clone()
    }

    /// Overwrites configuration-space bytes (for malformed-list tests). Bytes past the end are
    /// ignored.
    pub fn poke_config(&self, offset: u8, bytes: &[u8]) {
        let mut state = self.state();
        for (i, &byte) in bytes.iter().enumerate() {
            if let Some(slot) = state.config.get_mut(usize::from(offset) + i) {
                *slot = byte;
            }
        }
    }

    /// Maps or unmaps a BAR after construction.
    pub fn set_bar_len(&self, bar: u8, len: Option<u64>) {
        if let Some(slot) = self.state().bar_lens.get_mut(usize::from(bar)) {
            *slot = len;
        }
    }

    /// Makes the device refuse (or accept again) `FEATURES_OK`, whatever the driver accepted.
    pub fn set_refuse_features_ok(&self, refuse: bool) {
        self.state().refuse_features_ok = refuse;
    }

    /// Makes the device refuse to map `vector` (its read-back becomes `NO_VECTOR`).
    pub fn refuse_msix_vector(&self, vector: u16) {
        self.state().refused_vectors.push(vector);
    }

    /// After each reset, `device_status` keeps reading the old value for `reads` reads.
    pub fn set_reset_delay(&self, reads: u32) {
        self.state().reset_delay = reads;
    }

    /// The next `reads` device configuration reads each change `config_generation`, as if the
    /// device updated its configuration while the driver reads it.
    pub fn bump_generation_on_config_reads(&self, reads: u32) {
        self.state().generation_bumps = reads;
    }

    /// Device side: changes device configuration bytes (and `config_generation`), as a
    /// configuration change does. Bytes past the end are ignored.
    pub fn update_device_config(&self, offset: usize, bytes: &[u8]) {
        let mut state = self.state();
        for (i, &byte) in bytes.iter().enumerate() {
            if let Some(slot) = state.device_config.get_mut(offset + i) {
                *slot = byte;
            }
        }
        state.generation = state.generation.wrapping_add(1);
    }

    /// The current device configuration bytes.
    #[must_use]
    pub fn device_config_bytes(&self) -> Vec<u8> {
        self.state().device_config.clone()
    }

    /// The current `config_generation`.
    #[must_use]
    pub fn generation(&self) -> u8 {
        self.state().generation
    }

    /// Device side: sets ISR bits (cleared by the driver's next ISR read).
    pub fn raise_isr(&self, bits: Isr) {
        self.state().isr |= bits.bits();
    }

    /// The ISR bits currently set, without clearing them.
    #[must_use]
    pub fn pending_isr(&self) -> Isr {
        Isr::from_bits_retain(self.state().isr)
    }

    /// Device side: sets `DEVICE_NEEDS_RESET`.
    pub fn set_device_needs_reset(&self) {
        self.state().status |= DeviceStatus::DEVICE_NEEDS_RESET.bits();
    }

    /// The current `device_status` (without consuming a delayed-reset read).
    #[must_use]
    pub fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.state().status)
    }

    /// Every value the driver wrote to `device_status`, in order.
    #[must_use]
    pub fn status_writes(&self) -> Vec<u8> {
        self.state().status_writes.clone()
    }

    /// The 64 bits the driver wrote to `driver_feature`.
    #[must_use]
    pub fn driver_features(&self) -> Features {
        Features::from_bits_retain(self.state().driver_features)
    }

    /// The registers of queue `index`.
    #[must_use]
    pub fn queue(&self, index: u16) -> Option<FakeQueue> {
        self.state().queues.get(usize::from(index)).copied()
    }

    /// `config_msix_vector`.
    #[must_use]
    pub fn config_msix_vector(&self) -> u16 {
        self.state().config_msix_vector
    }

    /// Every write into the notification structure, in order.
    #[must_use]
    pub fn notifications(&self) -> Vec<NotifyWrite> {
        self.state().notifications.clone()
    }

    /// Removes and returns the recorded notifications (a device model consumes them).
    #[must_use]
    pub fn take_notifications(&self) -> Vec<NotifyWrite> {
        core::mem::take(&mut self.state().notifications)
    }

    /// How many well-formed notifications queue `index` received: 16-bit writes of the queue
    /// index at `queue_notify_off * notify_off_multiplier`.
    #[must_use]
    pub fn notify_count(&self, index: u16) -> usize {
        let state = self.state();
        let Some(queue) = state.queues.get(usize::from(index)) else {
            return 0;
        };
        let at = u64::from(queue.notify_off) * u64::from(state.regions.notify_off_multiplier);
        state
            .notifications
            .iter()
            .filter(|n| n.offset == at && n.width == 2 && n.value == u64::from(index))
            .count()
    }

    /// Every forbidden access the driver made.
    #[must_use]
    pub fn violations(&self) -> Vec<Violation> {
        self.state().violations.clone()
    }
}

impl PciConfig for FakeVirtioPci {
    fn read8(&self, offset: u16) -> u8 {
        self.state().config_byte(offset)
    }

    fn read16(&self, offset: u16) -> u16 {
        let state = self.state();
        u16::from_le_bytes([
            state.config_byte(offset),
            state.config_byte(offset.wrapping_add(1)),
        ])
    }

    fn read32(&self, offset: u16) -> u32 {
        let state = self.state();
        let byte = |i: u16| state.config_byte(offset.wrapping_add(i));
        u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)])
    }

    fn write16(&self, offset: u16, value: u16) {
        let mut state = self.state();
        // Writable: the command register and the MSI-X Message Control word.
        let msix_control = state
            .capability_offsets
            .iter()
            .find(|&&at| state.config.get(usize::from(at)) == Some(&PCI_CAP_ID_MSIX))
            .map(|&at| u16::from(at) + 2);
        if offset == 0x04 || Some(offset) == msix_control {
            let at = usize::from(offset);
            if let Some(slot) = state.config.get_mut(at..at + 2) {
                slot.copy_from_slice(&value.to_le_bytes());
            }
        } else {
            state.violation(
                0xFF,
                offset.into(),
                2,
                "write to read-only configuration space",
            );
        }
    }
}

impl RegisterIo for FakeVirtioPci {
    fn bar_len(&self, bar: u8) -> Option<u64> {
        self.state()
            .bar_lens
            .get(usize::from(bar))
            .copied()
            .flatten()
    }

    fn read8(&self, bar: u8, offset: u64) -> u8 {
        self.state().read(bar, offset, 1) as u8
    }

    fn read16(&self, bar: u8, offset: u64) -> u16 {
        self.state().read(bar, offset, 2) as u16
    }

    fn read32(&self, bar: u8, offset: u64) -> u32 {
        self.state().read(bar, offset, 4) as u32
    }

    fn write8(&self, bar: u8, offset: u64, value: u8) {
        self.state().write(bar, offset, 1, value.into());
    }

    fn write16(&self, bar: u8, offset: u64, value: u16) {
        self.state().write(bar, offset, 2, value.into());
    }

    fn write32(&self, bar: u8, offset: u64, value: u32) {
        self.state().write(bar, offset, 4, value.into());
    }
}

#[cfg(test)]
mod tests;
