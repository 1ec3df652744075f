//! Dump and hibernation mode: how the miniport learns that the crash-dump stack loaded it, and
//! how find-adapter sizes the adapter down for it.
//!
//! # What the dump stack does
//!
//! When Windows bugchecks (or hibernates), crashdmp.sys loads a second copy of the boot disk's
//! miniport (`dump_rvscsi.sys`, or `hiber_rvscsi.sys`) under a dump port driver that plays
//! StorPort, and writes the dump through it. Everything below is what that environment does
//! differently, and where each fact comes from.
//!
//! * **Detection.** The miniport's DriverEntry gets NULL for both arguments, and HwFindAdapter
//!   gets `dump=1` in its ArgumentString \[MS-boot\]; Windows 8 and later also set
//!   `PORT_CONFIGURATION_INFORMATION.DumpMode` (`DUMP_MODE_CRASH`, `_HIBER`, `_MARK_MEMORY`,
//!   `_RESUME`), which storahci reads in find-adapter (`adapterExtension->DumpMode =
//!   ConfigInfo->DumpMode`, and "dump mode" is any nonzero value: `IsDumpMode`, util.h)
//!   \[storahci\]. vioscsi and viostor test DriverEntry's `RegistryPath == NULL` into a global
//!   \[vioscsi\]; rvscsi keeps dump mode as adapter state (never a global), so it is decided in
//!   find-adapter from `DumpMode` (when ConfigInfo's `Length` covers the field) or the
//!   `dump=1` argument ([`detect`]).
//! * **One CPU at HIGH_LEVEL, synchronous I/O.** "All CPUs are disabled except the one that the
//!   current thread is executing on; the single, active CPU becomes single-threaded with
//!   HIGH_LEVEL IRQL and is uninterruptible; I/O sent through the crash dump stack is
//!   synchronous" \[crashdmp\]. The dump port calls every miniport routine above PASSIVE_LEVEL,
//!   find-adapter included, so the registry cannot be read \[MS-boot\]; it sends one request per
//!   logical unit at a time \[MS-boot\], and storahci drops its port queue depth to 1 in dump
//!   mode (pnppower.c) \[storahci\].
//! * **Completion by polling.** Interrupts are off, so the dump port learns about completions
//!   by calling the miniport's HwInterrupt itself. vioscsi's ISR therefore services the queues
//!   in dump mode whatever the ISR status register says (`if (intReason == 1 ||
//!   adaptExt->dump_mode)`) \[vioscsi\]: a device that suppressed the interrupt (EVENT_IDX) sets
//!   no ISR bit for a used buffer the poll must still find. rvscsi does the same
//!   ([`crate::adapter::Adapter::on_line_interrupt`] in dump mode drains the one request queue
//!   unconditionally). It does not complete from HwStartIo: a real device completes
//!   asynchronously (QEMU's I/O thread), so a drain right after the notify would almost never
//!   find anything, and vioscsi, viostor and storahci all rely on the port's HwInterrupt polls.
//! * **No DPCs, no timers, no passive initialisation.** "StorPort miniport drivers must not
//!   attempt to initialize a DPC routine with StorPortInitializeDpc. Any processing normally
//!   queued for execution to a DPC routine during an interrupt request must, in this case, occur
//!   in the context of that request" \[MS-boot\]; storahci calls its completion DPC routine
//!   directly in dump mode (util.c) and polls with StorPortStallExecution instead of
//!   StorPortRequestTimer (hbastat.c: "If we are in dump mode, do not initialize timers.
//!   Interrupt is disabled.") \[storahci\]; vioscsi and viostor skip
//!   StorPortEnablePassiveInitialization, the DPC array, the event buffers and
//!   StorPortInitializePerfOpts in dump mode \[vioscsi\]. So rvscsi in dump mode asks for no
//!   passive initialisation, and a protocol violation found while polling resets the device
//!   right there (the normal ISR defers it to a StorPort timer, which does not exist here).
//! * **No MSI-X.** storahci: "In dump mode, always use interrupt share mode"; vioscsi sets
//!   `msix_enabled = FALSE` and sets the queues up with no vectors \[storahci, vioscsi\]. rvscsi
//!   registers no HwMSInterruptRoutine in dump mode and programs no MSI-X vector.
//! * **Memory.** "The miniport driver should not attempt to allocate more than 32 kilobytes of
//!   memory" \[MS-boot\]; storahci: "In order to perform crashdump/hibernate the
//!   UncachedExtensionSize should not be larger than 30K", and in dump mode the address
//!   StorPortGetUncachedExtension returns "is not guaranteed align with 1K", and
//!   StorPortAllocatePool "is not supported in dump stack" \[storahci\]; virtio-win found
//!   StorPortGetUncachedExtension "can only allocate a maximum of 64 kB on some Windows
//!   versions" and moved to one virtqueue in dump mode \[vioscsi-110\];
//!   `MINIPORT_DUMP_POINTERS.CommonBufferSize` "can't be larger than 64 KB" \[dump-pointers\].
//!   rvscsi keeps its dump-mode uncached extension under [`DUMP_UNCACHED_BUDGET`] (32 KiB):
//!   one request queue of [`DUMP_REQUEST_QUEUE_SIZE`] entries, controlq and eventq of
//!   [`DUMP_SIDE_QUEUE_SIZE`], rings aligned to 16 bytes instead of a page (the base may be
//!   unaligned), and no LUN table or WMI scratch (the dump port sends no WMI request).
//!   `ConfigInfo.DumpRegion` (a physically contiguous buffer the port may offer, `MEMORY_REGION`
//!   \[memory-region\]) is undocumented beyond that and rvscsi does not use it.
//! * **Transfer size.** vioscsi and viostor keep `SCSI_MINIMUM_PHYSICAL_BREAKS` (16) in dump
//!   mode, vioscsi reporting `MaximumTransferLength` = 16 pages = 64 KiB \[vioscsi\]. rvscsi caps
//!   the segments at [`DUMP_PHYSICAL_BREAKS`] + 1 = 17, so any 64 KiB buffer fits whatever its
//!   page offset, and reports 64 KiB (less if the device's `max_sectors` says so).
//! * **Resets.** "Miniport drivers should disregard requests to reset the bus" \[MS-boot\], and
//!   vioscsi's DeviceReset returns at once in dump mode \[vioscsi\]. rvscsi ignores HwResetBus
//!   when nothing is in flight (the port resetting for form's sake), but with a request in
//!   flight it resets the device synchronously (a status write and read-back, no timer), which
//!   completes that request once with SRB_STATUS_BUS_RESET: otherwise a request the device
//!   lost would hang the dump forever.
//!
//! Sources:
//! \[MS-boot\] Microsoft, "Restrictions on Miniport Drivers that Manage the Boot Drive",
//! learn.microsoft.com/windows-hardware/drivers/storage/restrictions-on-miniport-drivers-that-manage-the-boot-drive;
//! \[storahci\] microsoft/Windows-driver-samples, storage/miniports/storahci/src (entrypts.c
//! `AllocateResourcesForAdapter`, `AhciHwFindAdapter`, `GetInterruptMode`; util.c
//! `AhciCompleteRequest`; hbastat.c `P_Running_WaitOnDET`; pnppower.c `AhciPortInitialize`);
//! \[vioscsi\] virtio-win/kvm-guest-drivers-windows, vioscsi/vioscsi.c (`DriverEntry`,
//! `VioScsiFindAdapter`, `VioScsiHwInitialize`, `VioScsiInterrupt`), vioscsi/helper.c
//! (`DeviceReset`), viostor/virtio_stor.c; \[vioscsi-110\] virtio-win/kvm-guest-drivers-windows
//! pull request 110, "vioscsi: Allocate only one virtqueue in dump mode"; \[dump-pointers\]
//! Microsoft, `MINIPORT_DUMP_POINTERS` (storport.h); \[memory-region\] Microsoft,
//! `MEMORY_REGION` (storport.h); \[crashdmp\] crashdmp.wordpress.com, "Crash Dump Mechanism:
//! Overview".
#![forbid(unsafe_code)]

use core::mem::offset_of;

use virtio_core::queue::{packed, split};
use virtio_core::scsi::queue_index;

use crate::registry::Parameters;
use crate::storport::{
    DUMP_MODE_CRASH, DUMP_MODE_HIBER, DUMP_MODE_MARK_MEMORY, DUMP_MODE_RESUME, FALSE,
    PortConfigurationInformation,
};

/// Most bytes of uncached extension rvscsi asks for in dump mode: Microsoft's 32 KiB (the
/// module doc has the sources; some dump ports allow 64 KiB, storahci stays under 30 KiB).
pub const DUMP_UNCACHED_BUDGET: usize = 32 * 1024;

/// `NumberOfPhysicalBreaks` in dump mode: `SCSI_MINIMUM_PHYSICAL_BREAKS`, as vioscsi and
/// viostor use there. 17 segments carry any 64 KiB buffer.
pub const DUMP_PHYSICAL_BREAKS: u32 = 16;

/// Entries of the one request queue in dump mode: the dump port keeps one request in flight,
/// and a direct (non-indirect) chain of [`DUMP_PHYSICAL_BREAKS`] + 1 data segments, the header
/// and the response (19 descriptors) must fit, since no chain may be longer than the queue
/// (virtio 1.x section 2.7.5.3.1). A power of two, as split rings need.
pub const DUMP_REQUEST_QUEUE_SIZE: u16 = 32;

/// Entries of controlq and eventq in dump mode. The device has them whether or not they are
/// used; eight entries keep them set up (so the device sees the same queue layout as in normal
/// mode) for a few hundred bytes.
pub const DUMP_SIDE_QUEUE_SIZE: u16 = 8;

/// Alignment of ring memory in dump mode: what the rings themselves need (16 bytes for the
/// split and the packed layout), instead of the page the normal mode spends per ring.
pub const DUMP_RING_ALIGN: usize = if split::RING_ALIGN > packed::RING_ALIGN {
    split::RING_ALIGN
} else {
    packed::RING_ALIGN
};

/// The argument the dump port passes in HwFindAdapter's ArgumentString.
const DUMP_ARGUMENT: &[u8] = b"dump=1";

/// Why the dump stack loaded this instance of the miniport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpMode {
    /// `DUMP_MODE_CRASH`: writing a crash dump after a bugcheck.
    Crash,
    /// `DUMP_MODE_HIBER`: writing the hibernation file.
    Hibernation,
    /// `DUMP_MODE_MARK_MEMORY`: the hibernation stack marking the memory it needs.
    MarkMemory,
    /// `DUMP_MODE_RESUME`: reading the hibernation file back on resume.
    Resume,
    /// A `DumpMode` value this build does not know (a newer StorPort): still the dump stack.
    Other(u8),
    /// Only `dump=1` in ArgumentString said so (a StorPort whose ConfigInfo has no `DumpMode`).
    Signalled,
}

impl DumpMode {
    /// The mode `PORT_CONFIGURATION_INFORMATION.DumpMode` names; `None` for 0 (normal mode).
    #[must_use]
    pub const fn from_config(value: u8) -> Option<Self> {
        Some(match value {
            0 => return None,
            DUMP_MODE_CRASH => Self::Crash,
            DUMP_MODE_HIBER => Self::Hibernation,
            DUMP_MODE_MARK_MEMORY => Self::MarkMemory,
            DUMP_MODE_RESUME => Self::Resume,
            other => Self::Other(other),
        })
    }

    /// The `DumpMode` value (0 for [`Self::Signalled`], which had none).
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Crash => DUMP_MODE_CRASH,
            Self::Hibernation => DUMP_MODE_HIBER,
            Self::MarkMemory => DUMP_MODE_MARK_MEMORY,
            Self::Resume => DUMP_MODE_RESUME,
            Self::Other(value) => value,
            Self::Signalled => 0,
        }
    }
}

/// Whether HwFindAdapter runs in the dump stack, from ConfigInfo (`Length`, `DumpMode`) and
/// the bytes of ArgumentString before its NUL.
///
/// `DumpMode` is read only when `Length` (the size of ConfigInfo as the port knows it) covers
/// the field: an older port's structure ends before it, and the byte there is not ours to read.
/// Otherwise (or when `DumpMode` is 0) a `dump=1` token in the argument string, as Microsoft
/// documents it, decides.
#[must_use]
pub fn detect(config: &PortConfigurationInformation, argument_string: &[u8]) -> Option<DumpMode> {
    let covers = config.length as usize > offset_of!(PortConfigurationInformation, dump_mode);
    let from_config = if covers {
        DumpMode::from_config(config.dump_mode)
    } else {
        None
    };
    from_config.or_else(|| has_dump_argument(argument_string).then_some(DumpMode::Signalled))
}

/// Whether `argument_string` holds the token `dump=1` (ASCII case ignored), tokens being
/// separated by whitespace, `;` or `,`.
fn has_dump_argument(argument_string: &[u8]) -> bool {
    argument_string
        .split(|&byte| byte.is_ascii_whitespace() || byte == b';' || byte == b',')
        .any(|token| token.eq_ignore_ascii_case(DUMP_ARGUMENT))
}

/// How find-adapter sizes the adapter: for the normal stack, or for the dump stack's small,
/// single-threaded, polled world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing {
    /// The normal stack: the device's limits and the registry.
    Normal,
    /// The dump stack: the limits in this module.
    Dump,
}

impl Sizing {
    /// The sizing for `dump` (`None`: normal mode).
    #[must_use]
    pub const fn of(dump: Option<DumpMode>) -> Self {
        if dump.is_some() {
            Self::Dump
        } else {
            Self::Normal
        }
    }

    /// The largest ring set up for virtqueue `index`, whatever the device offers.
    #[must_use]
    pub const fn queue_size_cap(self, index: u16) -> u16 {
        match self {
            Self::Normal => crate::sizing::MAX_QUEUE_SIZE,
            Self::Dump if index < queue_index::REQUEST_BASE => DUMP_SIDE_QUEUE_SIZE,
            Self::Dump => DUMP_REQUEST_QUEUE_SIZE,
        }
    }

    /// Alignment of each ring's memory in the uncached extension.
    #[must_use]
    pub const fn ring_align(self) -> usize {
        match self {
            Self::Normal => crate::sizing::RING_MEMORY_ALIGN,
            Self::Dump => DUMP_RING_ALIGN,
        }
    }

    /// Slots of the LUN table (and of the WMI scratch that copies it): none in dump mode,
    /// where no WMI request arrives and nothing else reads the table.
    #[must_use]
    pub const fn lun_slots(self) -> usize {
        match self {
            Self::Normal => crate::sizing::LUN_SLOTS,
            Self::Dump => 0,
        }
    }

    /// Task management slots ([`crate::recovery::tmf`]): none in dump mode, which sends no task
    /// management function (it has no timer to watch a deadline with; resets run inline).
    #[must_use]
    pub const fn tmf_slots(self) -> usize {
        match self {
            Self::Normal => crate::sizing::TMF_SLOTS,
            Self::Dump => 0,
        }
    }

    /// The most uncached extension this sizing may ask for, if it is bounded.
    #[must_use]
    pub const fn uncached_budget(self) -> Option<usize> {
        match self {
            Self::Normal => None,
            Self::Dump => Some(DUMP_UNCACHED_BUDGET),
        }
    }
}

/// The parameters dump mode runs with, in place of the registry (unreadable above
/// PASSIVE_LEVEL): one request queue, [`DUMP_PHYSICAL_BREAKS`], errors-only debug prints.
#[must_use]
pub const fn parameters() -> Parameters {
    Parameters {
        physical_breaks: Some(DUMP_PHYSICAL_BREAKS),
        max_request_queues: Some(1),
        debug_print_level: 0,
    }
}

/// Takes back what ConfigInfo offers that the dump port cannot use: the message-signalled
/// ISR (no MSI-X: the port polls HwInterrupt) and WMI (the dump port sends no WMI request).
pub fn restrict_config(config: &mut PortConfigurationInformation) {
    config.hw_ms_interrupt_routine = None;
    config.interrupt_synchronization_mode = crate::storport::InterruptSupportNone;
    config.wmi_data_provider = FALSE;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ConfigInfo's length as a Windows 8+ StorPort reports it (the whole structure).
    const FULL: u32 = size_of::<PortConfigurationInformation>() as u32;

    fn detect(length: u32, dump_mode: u8, argument: &[u8]) -> Option<DumpMode> {
        let mut config = PortConfigurationInformation::zeroed();
        config.length = length;
        config.dump_mode = dump_mode;
        super::detect(&config, argument)
    }

    #[test]
    fn config_dump_mode_names_the_mode() {
        assert_eq!(detect(FULL, 0, b""), None);
        assert_eq!(detect(FULL, 1, b""), Some(DumpMode::Crash));
        assert_eq!(detect(FULL, 2, b""), Some(DumpMode::Hibernation));
        assert_eq!(detect(FULL, 3, b""), Some(DumpMode::MarkMemory));
        assert_eq!(detect(FULL, 4, b""), Some(DumpMode::Resume));
        assert_eq!(detect(FULL, 9, b""), Some(DumpMode::Other(9)));
    }

    #[test]
    fn a_short_config_is_not_read_past_its_length() {
        let at = offset_of!(PortConfigurationInformation, dump_mode) as u32;
        // The field's byte is outside a structure of `at` bytes: whatever it holds is ignored.
        assert_eq!(detect(at, 1, b""), None);
        assert_eq!(detect(at + 1, 1, b""), Some(DumpMode::Crash));
        // The argument string still signals it.
        assert_eq!(detect(at, 1, b"dump=1"), Some(DumpMode::Signalled));
    }

    #[test]
    fn the_argument_string_signals_dump_mode_as_a_whole_token() {
        for yes in [
            &b"dump=1"[..],
            b"DUMP=1",
            b" dump=1 ",
            b"foo=2;dump=1",
            b"dump=1,bar",
        ] {
            assert_eq!(detect(FULL, 0, yes), Some(DumpMode::Signalled), "{yes:?}");
        }
        for no in [
            &b""[..],
            b"dump=0",
            b"dump=10",
            b"nodump=1",
            b"dump",
            b"dump = 1",
        ] {
            assert_eq!(detect(FULL, 0, no), None, "{no:?}");
        }
        // DumpMode wins over the string when both are there.
        assert_eq!(detect(FULL, 2, b"dump=1"), Some(DumpMode::Hibernation));
    }

    #[test]
    fn codes_round_trip() {
        for value in 1..=u8::MAX {
            let mode = DumpMode::from_config(value).unwrap();
            assert_eq!(mode.code(), value);
        }
        assert_eq!(DumpMode::Signalled.code(), 0);
    }

    #[test]
    fn dump_sizing_is_small_and_normal_sizing_unchanged() {
        let dump = Sizing::of(Some(DumpMode::Crash));
        assert_eq!(dump, Sizing::Dump);
        assert_eq!(dump.queue_size_cap(0), DUMP_SIDE_QUEUE_SIZE);
        assert_eq!(dump.queue_size_cap(1), DUMP_SIDE_QUEUE_SIZE);
        assert_eq!(dump.queue_size_cap(2), DUMP_REQUEST_QUEUE_SIZE);
        assert_eq!(dump.ring_align(), 16);
        assert_eq!(dump.lun_slots(), 0);
        assert_eq!(dump.uncached_budget(), Some(32 * 1024));
        let normal = Sizing::of(None);
        assert_eq!(normal.queue_size_cap(5), crate::sizing::MAX_QUEUE_SIZE);
        assert_eq!(normal.ring_align(), 4096);
        assert_eq!(normal.lun_slots(), crate::sizing::LUN_SLOTS);
        assert_eq!(normal.uncached_budget(), None);
    }

    #[test]
    fn dump_limits_carry_64_kib_in_17_segments_on_one_queue() {
        let device = virtio_core::scsi::Limits {
            num_queues: 8,
            seg_max: 254,
            max_sectors: Some(0xFFFF),
            cmd_per_lun: 128,
            max_target: 255,
            max_lun: 16_383,
        };
        let parameters = parameters();
        let mut capped = device;
        let breaks = parameters.physical_breaks.unwrap();
        capped.seg_max = capped.seg_max.min(breaks + 1);
        for indirect in [true, false] {
            let limits =
                crate::limits::StorLimits::derive(&capped, DUMP_REQUEST_QUEUE_SIZE, 1, indirect)
                    .unwrap();
            assert_eq!(limits.max_segments, 17);
            assert_eq!(limits.physical_breaks, 16);
            assert_eq!(limits.max_transfer_length, 64 * 1024);
            // A direct chain of every segment, the header and the response fits the ring.
            assert!(limits.max_segments + 2 <= u32::from(DUMP_REQUEST_QUEUE_SIZE));
        }
        assert_eq!(parameters.max_request_queues, Some(1));
    }

    #[test]
    fn restricting_the_config_drops_msi_and_wmi() {
        extern "system" fn isr(_extension: *mut core::ffi::c_void, _message: u32) -> u8 {
            0
        }
        let routine: unsafe extern "system" fn(*mut core::ffi::c_void, u32) -> u8 = isr;
        let mut config = PortConfigurationInformation::zeroed();
        config.hw_ms_interrupt_routine = Some(routine);
        config.interrupt_synchronization_mode = crate::storport::InterruptSynchronizePerMessage;
        config.wmi_data_provider = crate::storport::TRUE;
        restrict_config(&mut config);
        assert!(config.hw_ms_interrupt_routine.is_none());
        assert_eq!(
            config.interrupt_synchronization_mode,
            crate::storport::InterruptSupportNone
        );
        assert_eq!(config.wmi_data_provider, FALSE);
    }

    proptest! {
        /// Any argument string and any ConfigInfo: detection never panics, and says "dump"
        /// exactly when a covered nonzero DumpMode or a dump=1 token is there.
        #[test]
        fn detection_matches_its_definition(
            length in 0u32..512,
            mode in any::<u8>(),
            argument in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let covered = length as usize > offset_of!(PortConfigurationInformation, dump_mode);
            let token = argument
                .split(|&b| b.is_ascii_whitespace() || b == b';' || b == b',')
                .any(|t| t.eq_ignore_ascii_case(b"dump=1"));
            let found = detect(length, mode, &argument);
            prop_assert_eq!(found.is_some(), (covered && mode != 0) || token);
        }
    }
}
