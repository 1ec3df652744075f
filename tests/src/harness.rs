//! Plugs the pieces together: the real miniport (`rvscsi::entry::DriverEntry`, or the shipped
//! image named by [`IMAGE_VARIABLE`]), the StorPort simulator and the virtio-scsi device model,
//! sharing one simulated physical memory.

use std::sync::Arc;

use virtio_core::hal::PciConfig;

use crate::device::{
    DeviceOptions, FaultAction, FaultHook, InterruptSink, Lun, Nexus, PhysicalMemory, RequestInfo,
    VirtioScsiDevice,
};
use crate::sim::{
    Adapter, DmaArena, InterruptLine, PciFunction, Platform, SimError, SimOptions, Simulator,
};

/// Bytes of simulated physical memory (reserved lazily: only touched pages cost memory).
pub const MEMORY_BYTES: usize = 1 << 30;

/// The device as the simulator's PCI function.
struct DeviceFunction(VirtioScsiDevice);

impl PciFunction for DeviceFunction {
    fn config_read(&self, offset: u16, out: &mut [u8]) {
        let config = self.0.pci_config();
        for (index, byte) in out.iter_mut().enumerate() {
            *byte = config.read8(offset.wrapping_add(index as u16));
        }
    }

    fn config_write(&self, offset: u16, data: &[u8]) {
        if let [low, high] = *data {
            self.0
                .pci_config()
                .write16(offset, u16::from_le_bytes([low, high]));
        }
    }

    fn bar_len(&self, bar: u8) -> Option<u64> {
        self.0.bar_len(bar)
    }

    fn mmio_read(&self, bar: u8, offset: u64, width: u8) -> u64 {
        self.0.mmio_read(bar, offset, width)
    }

    fn mmio_write(&self, bar: u8, offset: u64, width: u8, value: u64) {
        self.0.mmio_write(bar, offset, width, value);
    }
}

/// The device model's physical memory as the simulator's DMA arena (behind its IOMMU when the
/// memory has one); test miniports in `sim_contract` use it too.
pub struct Memory(pub PhysicalMemory);

impl DmaArena for Memory {
    fn alloc(&self, len: usize, align: usize) -> Option<usize> {
        self.0
            .alloc(len, align)
            .map(|pointer| pointer.as_ptr() as usize)
    }

    fn free(&self, address: usize, len: usize) {
        if let Some(pointer) = std::ptr::NonNull::new(address as *mut u8) {
            let _ = self.0.free(pointer, len);
        }
    }

    fn write(&self, address: usize, bytes: &[u8]) -> bool {
        self.0.write(address, bytes)
    }

    fn read(&self, address: usize, out: &mut [u8]) -> bool {
        self.0.read(address, out)
    }

    fn iommu(&self) -> bool {
        self.0.iommu_enabled()
    }

    fn map(&self, address: usize, len: usize) -> Option<u64> {
        self.0.map(address, len)
    }

    fn unmap(&self, bus: u64, len: usize) {
        self.0.unmap(bus, len);
    }
}

/// The device's interrupts onto the simulator's line.
struct Line(InterruptLine);

impl InterruptSink for Line {
    fn raise(&self, msix_vector: u16) {
        self.0.raise(msix_vector);
    }
}

/// Why [`boot`] failed.
#[derive(Debug)]
pub enum BootError {
    /// The simulated physical memory could not be mapped.
    Memory(crate::device::memory::MemoryError),
    /// A LUN could not be added to the device.
    Lun {
        /// Its target.
        target: u8,
        /// Its number.
        lun: u16,
        /// Why.
        error: virtio_core::scsi::LunError,
    },
    /// A simulator boot step (DriverEntry, find-adapter, initialise, ...) failed.
    Simulator(SimError),
}

/// The environment variable that selects the build every scenario runs: unset, the miniport
/// linked into the test binary (`rvscsi::entry::DriverEntry`); set, the path of a Windows image
/// (`target/package/amd64/rvscsi.sys`) that [`boot`] loads ([`crate::image`]) and runs instead.
pub const IMAGE_VARIABLE: &str = "RVSCSI_IMAGE";

/// The image [`IMAGE_VARIABLE`] names, loaded once per process; `None` when it is unset.
///
/// # Panics
/// If the variable names an image that cannot be loaded (the message names the file and the
/// reason, an import the simulator lacks among them): a scenario must not silently fall back
/// to the linked miniport.
#[must_use]
pub fn shipped_image() -> Option<&'static crate::image::Image> {
    static IMAGE: std::sync::OnceLock<Option<&'static crate::image::Image>> =
        std::sync::OnceLock::new();
    *IMAGE.get_or_init(|| {
        let path = std::env::var_os(IMAGE_VARIABLE)?;
        let path = std::path::PathBuf::from(path);
        let image = crate::image::Image::load(&path, crate::sim::win64_export)
            .unwrap_or_else(|error| panic!("{IMAGE_VARIABLE}={}: {error}", path.display()));
        crate::image::stack::report_at_exit();
        Some(image)
    })
}

/// Boots `platform`'s miniport: the linked one, or the shipped image if [`IMAGE_VARIABLE`] is
/// set (then `platform.entry` is not used).
fn start_miniport(sim: SimOptions, platform: Platform) -> Result<Adapter, BootError> {
    match shipped_image() {
        Some(image) => Simulator::boot_image(
            sim,
            image,
            platform.pci,
            platform.memory,
            &platform.interrupts,
        ),
        None => Simulator::boot(sim, platform),
    }
    .map_err(BootError::Simulator)
}

/// A booted machine: the simulated adapter running our miniport, and its device.
pub struct Machine {
    /// The StorPort side.
    pub adapter: Adapter,
    /// The device side.
    pub device: VirtioScsiDevice,
}

/// The environment variable that turns DMA remapping on for every scenario
/// ([`SimOptions::iommu`]) when set to `1`: the device then reaches memory only through the
/// IOMMU, at the bus addresses StorPort handed out.
pub const IOMMU_VARIABLE: &str = "RVSCSI_IOMMU";

/// Whether [`IOMMU_VARIABLE`] asks for DMA remapping.
#[must_use]
pub fn iommu_from_environment() -> bool {
    std::env::var_os(IOMMU_VARIABLE).is_some_and(|value| value == "1")
}

/// The environment variable that chooses the virtqueue layout of every booted device:
/// `packed` offers `VIRTIO_F_RING_PACKED` on top of the scenario's [`DeviceOptions`] (the
/// miniport then runs packed rings), `split` or unset leaves the options as they are.
pub const RING_ENV: &str = "RVSCSI_RING";

/// `options` with the ring layout [`RING_ENV`] asks for.
///
/// # Panics
/// If [`RING_ENV`] names no layout, so a typo cannot silently test the split ring twice.
#[must_use]
pub fn ring_from_env(options: DeviceOptions) -> DeviceOptions {
    match std::env::var(RING_ENV).as_deref() {
        Ok("packed") => DeviceOptions {
            packed: true,
            ..options
        },
        Ok("split" | "") | Err(std::env::VarError::NotPresent) => options,
        Ok(other) => panic!("{RING_ENV}={other}: expected `split` or `packed`"),
        Err(std::env::VarError::NotUnicode(_)) => panic!("{RING_ENV} is not UTF-8"),
    }
}

/// Boots the real miniport on a device with `luns` ((target, lun, unit)), behind an IOMMU if
/// `sim.iommu` or [`IOMMU_VARIABLE`] asks for one; the ring layout follows [`RING_ENV`].
///
/// # Errors
/// [`BootError`] naming what failed: the memory, a LUN, or a simulator boot step.
pub fn boot(
    sim: SimOptions,
    device: DeviceOptions,
    luns: Vec<(u8, u16, Lun)>,
) -> Result<Machine, BootError> {
    let sim = SimOptions {
        iommu: sim.iommu || iommu_from_environment(),
        ..sim
    };
    let memory = if sim.iommu {
        PhysicalMemory::with_iommu(MEMORY_BYTES)
    } else {
        PhysicalMemory::new(MEMORY_BYTES)
    }
    .map_err(BootError::Memory)?;
    let line = InterruptLine::new();
    let device = VirtioScsiDevice::new(
        ring_from_env(device),
        memory.clone(),
        Arc::new(Line(line.clone())),
    );
    for (target, lun, unit) in luns {
        device
            .add_lun(target, lun, unit)
            .map_err(|error| BootError::Lun { target, lun, error })?;
    }
    let platform = Platform {
        entry: rvscsi::entry::DriverEntry,
        pci: Arc::new(DeviceFunction(device.clone())),
        memory: Arc::new(Memory(memory)),
        interrupts: line,
    };
    let adapter = start_miniport(sim, platform)?;
    Ok(Machine { adapter, device })
}

/// Boots one machine per entry of `nodes`, the simulated nodes of a cluster: each is its own
/// adapter running the real miniport (its own simulator, processors, physical memory and
/// virtio-scsi device), and every device carries the same `luns` ((target, lun, unit)).
///
/// Each device gets a clone of every [`Lun`] handle, and clones share the medium and the
/// reservation state, so a write one node makes is what another node reads, and a reservation
/// one node takes binds the others: several hosts zoned to one SAN volume. Node `i` (from 0)
/// is I_T nexus `i + 1` ([`Nexus::new`]; `device.nexus` is ignored, since every node must be
/// its own initiator), so scenarios can name each node's registrations in
/// [`Lun::pr_status`](crate::device::target::Lun::pr_status). Give the units their identity
/// ([`Lun::with_identity`]) before calling this; it is fixed once cloned.
///
/// # Errors
/// The first node's [`BootError`]; the nodes already booted are shut down.
pub fn boot_nodes(
    nodes: &[SimOptions],
    device: DeviceOptions,
    luns: &[(u8, u16, Lun)],
) -> Result<Vec<Machine>, BootError> {
    let mut booted = Vec::with_capacity(nodes.len());
    for (id, sim) in (1..).zip(nodes) {
        let device = DeviceOptions {
            nexus: Some(Nexus::new(id)),
            ..device
        };
        booted.push(boot(sim.clone(), device, luns.to_vec())?);
    }
    Ok(booted)
}

/// Loads the miniport a second time on `device`, as the crash-dump stack does after a
/// bugcheck: the simulator plays the dump port ([`crate::sim::DumpPort`]; `sim.dump` or the
/// default one), over the same device and memory. The miniport's find-adapter resets the
/// device, whatever the crashed instance left on it. The device's interrupts keep going to the
/// crashed machine's line, where nobody takes them: the dump port's interrupts are off.
///
/// # Errors
/// [`BootError::Simulator`] naming the step that failed.
pub fn boot_dump(device: &VirtioScsiDevice, sim: SimOptions) -> Result<Machine, BootError> {
    let platform = Platform {
        entry: rvscsi::entry::DriverEntry,
        pci: Arc::new(DeviceFunction(device.clone())),
        memory: Arc::new(Memory(device.memory().clone())),
        interrupts: InterruptLine::new(),
    };
    let sim = SimOptions {
        dump: Some(sim.dump.unwrap_or_default()),
        // The dump stack's port driver maps for the same IOMMU the crashed machine had.
        iommu: device.memory().iommu_enabled(),
        ..sim
    };
    let adapter = start_miniport(sim, platform)?;
    Ok(Machine {
        adapter,
        device: device.clone(),
    })
}

impl Machine {
    /// Crashes the machine as a bugcheck does ([`Adapter::crash`]), panicking with the
    /// simulator's record if the miniport broke the StorPort contract before, or with the
    /// device's if it broke the virtio protocol or a device limit; returns the device, for
    /// [`boot_dump`].
    ///
    /// # Panics
    /// On any violation recorded before the crash: this is test support.
    #[must_use]
    pub fn crash(self) -> VirtioScsiDevice {
        let violations = self.adapter.crash();
        assert!(violations.is_empty(), "{violations:?}");
        let device_violations = self.device.violations();
        assert!(
            device_violations.is_empty(),
            "device: {device_violations:?}"
        );
        assert_no_iommu_faults(&self.device);
        self.device
    }

    /// The miniport's adapter in the simulated device extension, for its counters; `None`
    /// if find-adapter did not construct one.
    ///
    /// # Panics
    /// On the shipped image ([`IMAGE_VARIABLE`]), if the image's adapter is not the size of the
    /// linked build's (`size_of::<Adapter>()`, which the image registers as its device
    /// extension size): then the two builds lay the type out differently, and the linked
    /// build's code must not read the image's.
    #[must_use]
    pub fn miniport(&self) -> Option<&rvscsi::adapter::Adapter> {
        self.check_adapter_layout();
        let extension = self.adapter.device_extension_ptr();
        // SAFETY: the device extension the simulator allocated for this adapter: as large as
        // the miniport registered, 16-aligned, zeroed before find-adapter, and alive as long as
        // `self.adapter`, which the returned reference borrows through `self`. The miniport
        // mutates its adapter only through atomics and cells, as `rvscsi::entry::adapter` requires.
        unsafe { rvscsi::entry::adapter(extension) }
    }

    /// On the shipped image, the linked build's `Adapter` may read the image's only if both
    /// builds lay it out alike: the same compiler and the same data layout of x86-64 (Windows
    /// and Linux differ in symbol mangling only) give the same layout to the same type, unless
    /// a field's type differs between the targets, which would change the size the image
    /// registered. (The magic, read first by `rvscsi::entry::adapter`, checks the start.)
    fn check_adapter_layout(&self) {
        if shipped_image().is_none() {
            return;
        }
        let registered = self
            .adapter
            .hw_initialization_data()
            .map(|hw| hw.device_extension_size as usize);
        let linked = size_of::<rvscsi::adapter::Adapter>();
        assert!(
            registered.is_none_or(|size| size == linked),
            "the image's Adapter is {registered:?} bytes, the linked build's {linked}: their \
             layouts differ, so the scenario cannot read the image's adapter"
        );
    }

    /// Shuts the machine down, panicking with the simulator's record if the miniport broke the
    /// StorPort contract at any point (including an SRB still outstanding), with the device's
    /// if it broke the virtio protocol or a limit the device advertised, or with the IOMMU's
    /// faults if the device was handed memory StorPort did not map for it.
    ///
    /// # Panics
    /// On any recorded violation: this is test support.
    pub fn finish(self) {
        let seen = self.adapter.violations();
        assert!(seen.is_empty(), "{seen:?}");
        // The device's register file records the accesses the virtio spec forbids the driver
        // (wrong widths, read-only fields, device configuration fields not read at their
        // natural width).
        let registers = self.device.registers().violations();
        assert!(registers.is_empty(), "{registers:?}");
        let violations = self.adapter.shutdown();
        assert!(violations.is_empty(), "{violations:?}");
        let device_violations = self.device.violations();
        assert!(
            device_violations.is_empty(),
            "device: {device_violations:?}"
        );
        assert_no_iommu_faults(&self.device);
    }

    /// The miniport's trace ring, read from its device extension as a debugger would.
    ///
    /// # Panics
    /// As [`Machine::miniport`], on an image whose adapter layout differs.
    #[must_use]
    pub fn trace(&self) -> Vec<rvscsi::trace::TraceEntry> {
        self.check_adapter_layout();
        let extension = std::ptr::with_exposed_provenance_mut(self.adapter.device_extension());
        // SAFETY: the simulator allocated the device extension with the size the miniport
        // asked for and keeps it until shutdown (which consumes `self.adapter`); the miniport
        // constructed its Adapter there in find-adapter, and `rvscsi::entry::adapter` checks the magic.
        let adapter = unsafe { rvscsi::entry::adapter(extension) };
        adapter.map_or_else(Vec::new, |adapter| adapter.trace_entries().collect())
    }
}

/// Panics if `device` touched memory the IOMMU does not map for it (DMA remapping on).
fn assert_no_iommu_faults(device: &VirtioScsiDevice) {
    let faults = device.memory().iommu_faults();
    assert!(faults.is_empty(), "IOMMU faults: {faults:?}");
}

/// A fault hook that applies `action` to the first request `matches` selects and lets every
/// other request (before and after) run normally.
#[must_use]
pub fn fault_once(
    matches: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static,
    action: FaultAction,
) -> FaultHook {
    let fired = std::sync::atomic::AtomicBool::new(false);
    Arc::new(move |info: &RequestInfo| {
        if matches(info) && !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            action.clone()
        } else {
            FaultAction::Normal
        }
    })
}
