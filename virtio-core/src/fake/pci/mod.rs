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
//!
//! Files: `builder.rs` describes a device and lays out its configuration space, `registers.rs`
//! is the register model behind the BARs, and this file holds the shared handle.

mod builder;
mod raw;
mod registers;

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::vec;
use std::vec::Vec;

use crate::features::Features;
use crate::hal::{PciConfig, RegisterIo};
use crate::pci::{
    DeviceStatus, Isr, PCI_CAP_ID_MSIX, PCI_CAP_ID_VNDR, Region, VIRTIO_DEVICE_TYPE_SCSI,
    VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG,
    VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_CAP_PCI_CFG,
    VIRTIO_PCI_MODERN_DEVICE_ID_BASE, VIRTIO_PCI_VENDOR_ID,
};

pub use builder::FakeVirtioPciBuilder;
pub use raw::RawConfigSpace;
use registers::State;

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
