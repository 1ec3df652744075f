//! The SCSI exerciser: the sequence of checks the guest runs against the device, each reported
//! as one `RESULT <name> PASS|FAIL <details>` line.
//!
//! Queue use is fixed so the host can attribute QEMU's per-queue trace counts: request queue 0
//! (virtqueue 2) carries the general commands and the data-integrity passes, request queue 1
//! (virtqueue 3) only the queue-depth-1 phase, request queue 2 (virtqueue 4) only the
//! queue-depth-32 phase, and request queue 3 (virtqueue 5) the full-ring test. The multiqueue
//! check uses request queues 0, 3, 4 and 5 at once, never the two measured ones. Hot-plug is requested from the host with a
//! `HOTPLUG add|remove` line; the guest then waits for the event on the eventq.
#![expect(
    clippy::result_large_err,
    reason = "a check's error is its 200-byte result line, returned once per check and never on \
              an I/O path; boxing needs an allocator the guest does not have"
)]

use core::fmt::Write;

use virtio_core::dma::DmaMemory;
use virtio_core::features::Features;
use virtio_core::hal::{Hal, RegisterIo, Segment};
use virtio_core::pci::PciTransport;
use virtio_core::queue::QueueError;
use virtio_core::scsi::queue_index;
use virtio_core::scsi::{
    CommandOutcome, DataDirection, Disposition, Event, EventKind, Lun, ResetReason, TmfReq,
    TmfResp, TmfSubtype, complete_tmf, scsi_status,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::cluster::Node;
use crate::driver::{Data, Device, DriverError, Interrupts, Layout, MAX_DATA_SEGMENTS, Used};
use crate::pattern;
use crate::scsi_cmd::{self, Capacity};
pub use crate::text::Text;
use crate::text::text;

/// What the host told the guest on its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings<'a> {
    /// The ring layout the device must negotiate.
    pub packed: bool,
    /// Whether the device offers `VIRTIO_F_INDIRECT_DESC`, so it must be negotiated (or must
    /// not be).
    pub indirect: bool,
    /// Whether the device offers `VIRTIO_F_EVENT_IDX`, likewise.
    pub event_idx: bool,
    /// VPD 0x80 serial of the disk at LUN 0.
    pub serial: &'a str,
    /// VPD 0x80 serial of the disk hot-plugged at LUN 1.
    pub hotplug_serial: &'a str,
    /// Size of the disk at LUN 0.
    pub disk_bytes: u64,
    /// Size of the hot-plugged disk.
    pub hotplug_bytes: u64,
}

/// What the command line asks for besides the exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Boot and report, nothing else (the host's KVM probe).
    Probe,
    /// The full exercise.
    Exercise,
    /// One node of the two-node persistent-reservation sequence ([`crate::cluster`]).
    Reservations(Node),
}

/// Why the command line is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingsError<'a> {
    /// A word that is not `key=value` with a known key.
    Unknown(&'a str),
    /// A value that does not parse.
    BadValue(&'a str),
    /// A setting the exercise needs is absent.
    Missing(&'static str),
}

impl<'a> Settings<'a> {
    /// Parses the guest command line: `mode=probe`, `mode=pr node=a|b`, or `ring=split|packed
    /// indirect=on|off event-idx=on|off serial=S hotplug-serial=S disk-bytes=N hotplug-bytes=N`.
    ///
    /// # Errors
    /// [`SettingsError`] naming the offending word.
    pub fn parse(cmdline: &'a str) -> Result<(Mode, Option<Self>), SettingsError<'a>> {
        let (mut reservations, mut node) = (false, None);
        let (mut ring, mut indirect, mut event_idx) = (None, None, None);
        let (mut serial, mut hotplug_serial, mut disk_bytes, mut hotplug_bytes) =
            (None, None, None, None);
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').ok_or(SettingsError::Unknown(word))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| SettingsError::BadValue(word))
            };
            let switch = || match value {
                "on" => Ok(true),
                "off" => Ok(false),
                _ => Err(SettingsError::BadValue(word)),
            };
            match key {
                "mode" if value == "probe" => return Ok((Mode::Probe, None)),
                "mode" if value == "pr" => reservations = true,
                "node" => {
                    node = Some(match value {
                        "a" => Node::A,
                        "b" => Node::B,
                        _ => return Err(SettingsError::BadValue(word)),
                    });
                }
                "ring" => {
                    ring = Some(match value {
                        "split" => false,
                        "packed" => true,
                        _ => return Err(SettingsError::BadValue(word)),
                    });
                }
                "indirect" => indirect = Some(switch()?),
                "event-idx" => event_idx = Some(switch()?),
                "serial" => serial = Some(value),
                "hotplug-serial" => hotplug_serial = Some(value),
                "disk-bytes" => disk_bytes = Some(number()?),
                "hotplug-bytes" => hotplug_bytes = Some(number()?),
                _ => return Err(SettingsError::Unknown(word)),
            }
        }
        if reservations {
            let node = node.ok_or(SettingsError::Missing("node"))?;
            return Ok((Mode::Reservations(node), None));
        }
        Ok((
            Mode::Exercise,
            Some(Self {
                packed: ring.ok_or(SettingsError::Missing("ring"))?,
                indirect: indirect.ok_or(SettingsError::Missing("indirect"))?,
                event_idx: event_idx.ok_or(SettingsError::Missing("event-idx"))?,
                serial: serial.ok_or(SettingsError::Missing("serial"))?,
                hotplug_serial: hotplug_serial.ok_or(SettingsError::Missing("hotplug-serial"))?,
                disk_bytes: disk_bytes.ok_or(SettingsError::Missing("disk-bytes"))?,
                hotplug_bytes: hotplug_bytes.ok_or(SettingsError::Missing("hotplug-bytes"))?,
            }),
        ))
    }
}

/// The features the device must have negotiated with the guest, and those it must not have,
/// given what the host configured: always `VERSION_1` and `SCSI_HOTPLUG`; the ring layout,
/// `INDIRECT_DESC` and `EVENT_IDX` as `settings` say.
#[must_use]
pub fn expected_features(settings: &Settings<'_>) -> (Features, Features) {
    let mut needed = Features::VERSION_1 | Features::SCSI_HOTPLUG;
    let mut absent = Features::empty();
    for (feature, on) in [
        (Features::RING_PACKED, settings.packed),
        (Features::INDIRECT_DESC, settings.indirect),
        (Features::EVENT_IDX, settings.event_idx),
    ] {
        if on {
            needed |= feature;
        } else {
            absent |= feature;
        }
    }
    (needed, absent)
}

/// The outcome of one check.
type Check = Result<Text, Text>;

/// One check on a LUN, with its result name.
type NamedCheck<S> = (&'static str, fn(&mut S, Lun) -> Check);

/// Request queue (virtqueue) assignments; see the module documentation.
const GENERAL: usize = 2;
const QD1_QUEUE: usize = 3;
const QD32_QUEUE: usize = 4;
const FULL_RING_QUEUE: usize = 5;
/// The virtqueues of the multiqueue check.
const MULTIQUEUE: [usize; 4] = [GENERAL, FULL_RING_QUEUE, 6, 7];
/// Event buffers kept posted.
const EVENT_BUFFERS: usize = 8;
/// Data buffer: big enough for QEMU's default max_sectors (0xFFFF sectors).
pub const DATA_LEN: usize = 32 << 20;
/// Regions written and verified across the disk, and their size.
const REGIONS: u64 = 64;
const REGION_BYTES: u64 = 64 << 10;
/// I/Os of the measured phases.
const QD1_IOS: u64 = 2000;
const QD32_IOS: u64 = 8000;

/// The exerciser's state.
pub struct Exerciser<'a, H: Hal, R: RegisterIo, W: Write> {
    hal: &'a H,
    device: Device<R>,
    out: W,
    settings: Settings<'a>,
    data: DmaMemory,
    events: DmaMemory,
    tag: u64,
    failures: u32,
    capacity: Capacity,
    /// Seed of the data the write-verify pass left in the regions (read by later checks).
    region_seed: u64,
    /// Seed for the next pattern written.
    seed: u64,
    /// The MSI-X interrupts completions wait for.
    interrupts: &'a dyn Interrupts,
}

/// One command of a [`Exerciser::pipeline`].
#[derive(Clone, Copy)]
struct Job {
    lba: u64,
    blocks: u32,
    write: bool,
    buffer: DmaMemory,
    /// For reads: the seed of the pattern the blocks must hold, checked on completion.
    verify: Option<u64>,
}

/// Runs every check and returns whether all passed. Results go to `out`.
///
/// Every completion waits for its queue's interrupt through `interrupts`.
pub fn run<H: Hal, R: RegisterIo, W: Write>(
    hal: &H,
    transport: PciTransport<R>,
    settings: Settings<'_>,
    mut out: W,
    interrupts: &dyn Interrupts,
) -> bool {
    let wanted = if settings.packed {
        virtio_core::features::SCSI_DRIVER_FEATURES
    } else {
        virtio_core::features::SCSI_DRIVER_FEATURES - Features::RING_PACKED
    };
    let device = match Device::bring_up(hal, transport, wanted) {
        Ok(device) => device,
        Err(error) => {
            let _ = writeln!(out, "RESULT features FAIL bring-up: {error}");
            return false;
        }
    };
    let (data, events) = match (
        hal.dma_alloc(DATA_LEN, 4096),
        hal.dma_alloc(EVENT_BUFFERS * 16, 16),
    ) {
        (Ok(data), Ok(events)) => (data, events),
        (Err(error), _) | (_, Err(error)) => {
            let _ = writeln!(
                out,
                "RESULT features FAIL no DMA memory for buffers: {error:?}"
            );
            return false;
        }
    };
    let mut exerciser = Exerciser {
        hal,
        device,
        out,
        settings,
        data,
        events,
        tag: 1,
        failures: 0,
        capacity: Capacity {
            last_lba: 0,
            block_length: 512,
        },
        region_seed: 0,
        seed: 0x5eed,
        interrupts,
    };
    exerciser.all()
}

impl<H: Hal, R: RegisterIo, W: Write> Exerciser<'_, H, R, W> {
    fn report(&mut self, name: &str, check: Check) -> bool {
        let (passed, details) = match check {
            Ok(details) => (true, details),
            Err(details) => (false, details),
        };
        if !passed {
            self.failures += 1;
        }
        let verdict = if passed { "PASS" } else { "FAIL" };
        let _ = writeln!(self.out, "RESULT {name} {verdict} {}", details.as_str());
        passed
    }

    fn all(&mut self) -> bool {
        let features = self.check_features();
        self.report("features", features);
        let queues = self.check_queues();
        if !self.report("queues", queues) {
            return false;
        }
        let Ok(lun0) = Lun::new(0, 0) else {
            return false;
        };
        let checks: [NamedCheck<Self>; 14] = [
            ("test-unit-ready", Self::check_test_unit_ready),
            ("inquiry", Self::check_inquiry),
            ("vpd-00", Self::check_vpd_00),
            ("vpd-80", Self::check_vpd_80),
            ("vpd-83", Self::check_vpd_83),
            ("report-luns", Self::check_report_luns),
            ("read-capacity", Self::check_read_capacity),
            ("write-verify", Self::check_write_verify),
            ("queue-depth", Self::check_queue_depth),
            ("qd1", Self::check_qd1),
            ("qd32", Self::check_qd32),
            ("multiqueue", Self::check_multiqueue),
            ("tmf-lun-reset", Self::check_lun_reset),
            // Last of the LUN 0 checks: it overwrites the second half of the disk.
            ("max-transfer", Self::check_max_transfer),
        ];
        for (name, check) in checks {
            let outcome = check(self, lun0);
            self.report(name, outcome);
        }
        let add = self.check_hotplug_add();
        self.report("hotplug-add", add);
        let remove = self.check_hotplug_remove();
        self.report("hotplug-remove", remove);
        self.print_stats();
        let irq_driven = self.check_irq_driven();
        self.report("irq-driven-completion", irq_driven);
        let done = if self.failures == 0 {
            Ok(text!("all checks passed"))
        } else {
            Err(text!("{} checks failed", self.failures))
        };
        self.report("done", done)
    }

    fn check_features(&mut self) -> Check {
        let offered = self.device.transport.offered_features();
        let accepted = self.device.features;
        let details = text!(
            "offered {:#x} accepted {:#x}",
            offered.bits(),
            accepted.bits()
        );
        let (needed, absent) = expected_features(&self.settings);
        if !accepted.contains(needed) {
            return Err(text!(
                "{} lacks {:#x}",
                details.as_str(),
                (needed - accepted).bits()
            ));
        }
        if accepted.intersects(absent) {
            return Err(text!(
                "{} has {:#x}, which the device was told not to offer",
                details.as_str(),
                (accepted & absent).bits()
            ));
        }
        let on_off = |feature| {
            if accepted.contains(feature) {
                "on"
            } else {
                "off"
            }
        };
        Ok(text!(
            "{} ({} ring, indirect {}, event-idx {})",
            details.as_str(),
            if accepted.contains(Features::RING_PACKED) {
                "packed"
            } else {
                "split"
            },
            on_off(Features::INDIRECT_DESC),
            on_off(Features::EVENT_IDX)
        ))
    }

    /// The layout of page-segmented commands: indirect when negotiated.
    fn pages(&self) -> Layout {
        Layout::pages(self.device.features)
    }

    /// Ring size of queue `queue`.
    fn ring_size(&mut self, queue: usize) -> Result<u16, Text> {
        Ok(self
            .device
            .queue(queue)
            .map_err(|e| text!("{e}"))?
            .ring_ref()
            .size())
    }

    fn check_queues(&mut self) -> Check {
        let requests = self.device.request_queues();
        let limits = self.device.limits;
        let msix = self.device.transport.layout().msix_table_size;
        let sizes = self
            .device
            .queues
            .iter()
            .flatten()
            .map(|q| q.ring_ref().size())
            .max()
            .unwrap_or(0);
        let details = text!(
            "{} request queues (device {}), size {sizes}, msix table {msix:?}, seg_max {}, max_sectors {:?}",
            requests,
            limits.num_queues,
            limits.seg_max,
            limits.max_sectors
        );
        if requests < crate::driver::MAX_REQUEST_QUEUES || msix.is_none() {
            return Err(details);
        }
        // Post the event buffers now: the device reports hot-plug only into posted buffers.
        for index in 0..EVENT_BUFFERS {
            if let Err(error) = self.post_event(index) {
                return Err(text!("event buffer {index}: {error}"));
            }
        }
        self.device
            .kick(usize::from(queue_index::EVENT))
            .map_err(|e| text!("{e}"))?;
        Ok(details)
    }

    fn post_event(&mut self, index: usize) -> Result<(), DriverError> {
        let buffer = self
            .events
            .sub(index * 16, 16)
            .ok_or(DriverError::NoContext)?;
        buffer.zero();
        let queue = self.device.queue(usize::from(queue_index::EVENT))?;
        queue.submit(
            self.hal,
            &[],
            0,
            Data::In(buffer),
            Layout::DIRECT_PAGES,
            index as u64,
        )?;
        Ok(())
    }

    fn next_tag(&mut self) -> u64 {
        self.tag += 1;
        self.tag
    }

    /// Submits one command on `queue` without waiting; returns the tag.
    fn submit(
        &mut self,
        queue: usize,
        lun: Lun,
        cdb: &[u8],
        data: Data,
        layout: Layout,
    ) -> Result<u64, DriverError> {
        let tag = self.next_tag();
        self.device
            .submit_command(self.hal, queue, (lun, tag), cdb, data, layout)?;
        Ok(tag)
    }

    /// Waits for one completion on `queue` (for its interrupt, unless an earlier interrupt pass
    /// drained it) and maps its response.
    fn complete(
        &mut self,
        queue: usize,
        direction: DataDirection,
    ) -> Result<(u64, CommandOutcome, [u8; 96]), DriverError> {
        let used = self.device.wait(queue, self.interrupts)?;
        self.outcome(queue, used, direction)
    }

    /// Maps the response of a used command.
    fn outcome(
        &mut self,
        queue: usize,
        used: Used,
        direction: DataDirection,
    ) -> Result<(u64, CommandOutcome, [u8; 96]), DriverError> {
        let completion = self.device.completion(queue, used, direction)?;
        Ok((completion.tag, completion.outcome, completion.sense))
    }

    /// Runs one command synchronously on the general queue.
    fn command(
        &mut self,
        lun: Lun,
        cdb: &[u8],
        data: Data,
    ) -> Result<(CommandOutcome, [u8; 96]), DriverError> {
        let tag = self.next_tag();
        let completion =
            self.device
                .command(self.hal, GENERAL, (lun, tag), cdb, data, self.interrupts)?;
        Ok((completion.outcome, completion.sense))
    }

    /// Runs a command, retrying while it reports a UNIT ATTENTION (power on, reset, LUN
    /// inventory changed: each is reported once).
    fn command_ok(&mut self, lun: Lun, cdb: &[u8], data: Data) -> Result<CommandOutcome, Text> {
        for _ in 0..4 {
            let (outcome, sense) = self.command(lun, cdb, data).map_err(|e| text!("{e}"))?;
            if is_unit_attention(&outcome, &sense) {
                continue;
            }
            return match outcome.disposition {
                Disposition::Success | Disposition::DataOverrun => Ok(outcome),
                other => Err(text!(
                    "opcode {:#04x}: {other:?}, status {:#04x}, sense {:?}",
                    cdb.first().copied().unwrap_or(0),
                    outcome.scsi_status,
                    scsi_cmd::parse_sense(
                        sense.get(..usize::from(outcome.sense_len)).unwrap_or(&[])
                    )
                )),
            };
        }
        Err(text!("unit attention did not clear"))
    }

    /// Reads `len` bytes of data-in for `cdb` into the start of the data buffer and returns
    /// how many came.
    fn data_in(&mut self, lun: Lun, cdb: &[u8], len: usize, out: &mut [u8]) -> Result<usize, Text> {
        let buffer = self.data.sub(0, len).ok_or(text!("buffer"))?;
        buffer.zero();
        let outcome = self.command_ok(lun, cdb, Data::In(buffer))?;
        let got = (outcome.transferred as usize).min(out.len());
        let target = out.get_mut(..got).ok_or(text!("short buffer"))?;
        if !buffer.read_bytes(0, target) {
            return Err(text!("cannot read back {got} bytes"));
        }
        Ok(got)
    }

    fn check_test_unit_ready(&mut self, lun: Lun) -> Check {
        let mut attentions = 0;
        for _ in 0..4 {
            let (outcome, sense) = self
                .command(lun, &scsi_cmd::test_unit_ready(), Data::None)
                .map_err(|e| text!("{e}"))?;
            if is_unit_attention(&outcome, &sense) {
                attentions += 1;
                continue;
            }
            if outcome.disposition == Disposition::Success {
                return Ok(text!("ready after {attentions} unit attention(s)"));
            }
            return Err(text!(
                "{:?} status {:#x}",
                outcome.disposition,
                outcome.scsi_status
            ));
        }
        Err(text!("still reporting unit attention"))
    }

    fn check_inquiry(&mut self, lun: Lun) -> Check {
        let mut data = [0u8; 96];
        let got = self.data_in(lun, &scsi_cmd::inquiry(96), 96, &mut data)?;
        let inquiry =
            scsi_cmd::parse_inquiry(data.get(..got).unwrap_or(&[])).map_err(|e| text!("{e:?}"))?;
        let details = text!(
            "{} {} {} type {} version {}",
            ascii(&inquiry.vendor),
            ascii(&inquiry.product),
            ascii(&inquiry.revision),
            inquiry.device_type,
            inquiry.version
        );
        if inquiry.qualifier == 0 && inquiry.device_type == 0 && inquiry.vendor.starts_with(b"QEMU")
        {
            Ok(details)
        } else {
            Err(details)
        }
    }

    fn vpd(&mut self, lun: Lun, page: u8, out: &mut [u8; 255]) -> Result<usize, Text> {
        let got = self.data_in(lun, &scsi_cmd::inquiry_vpd(page, 255), 255, out)?;
        let payload = scsi_cmd::vpd_payload(out.get(..got).unwrap_or(&[]), page)
            .map_err(|e| text!("{e:?}"))?;
        Ok(payload.len())
    }

    fn check_vpd_00(&mut self, lun: Lun) -> Check {
        let mut page = [0u8; 255];
        let len = self.vpd(lun, 0x00, &mut page)?;
        let pages = page.get(4..4 + len).unwrap_or(&[]);
        let details = text!("pages {pages:02x?}");
        if [0x00, 0x80, 0x83].iter().all(|p| pages.contains(p)) {
            Ok(details)
        } else {
            Err(details)
        }
    }

    fn serial_of(&mut self, lun: Lun) -> Result<([u8; 255], usize), Text> {
        let mut page = [0u8; 255];
        let len = self.vpd(lun, 0x80, &mut page)?;
        Ok((page, len))
    }

    fn check_vpd_80(&mut self, lun: Lun) -> Check {
        let (page, len) = self.serial_of(lun)?;
        let serial = page.get(4..4 + len).unwrap_or(&[]);
        let details = text!("serial {:?}", ascii(serial));
        if trim(serial) == self.settings.serial.as_bytes() {
            Ok(details)
        } else {
            Err(details)
        }
    }

    fn check_vpd_83(&mut self, lun: Lun) -> Check {
        let mut page = [0u8; 255];
        let len = self.vpd(lun, 0x83, &mut page)?;
        let payload = page.get(4..4 + len).unwrap_or(&[]);
        let mut lu_designators = 0;
        let mut kinds = Text::new();
        let count = scsi_cmd::parse_designators(payload, |d| {
            if d.association == 0 {
                lu_designators += 1;
            }
            let _ = write!(kinds, "{}/{} ", d.designator_type, d.designator.len());
        })
        .map_err(|e| text!("{e:?}"))?;
        let details = text!(
            "{count} designators (type/len: {}), {lu_designators} for the LU",
            kinds.as_str()
        );
        if lu_designators > 0 {
            Ok(details)
        } else {
            Err(details)
        }
    }

    fn report_luns(&mut self, lun: Lun) -> Result<([Option<u16>; 8], usize), Text> {
        let mut data = [0u8; 8 + 8 * 8];
        let got = self.data_in(lun, &scsi_cmd::report_luns(72), 72, &mut data)?;
        let mut luns = [None; 8];
        let mut index = 0;
        let total = scsi_cmd::parse_report_luns(data.get(..got).unwrap_or(&[]), |raw| {
            if let Some(slot) = luns.get_mut(index) {
                *slot = scsi_cmd::lun_number(raw);
            }
            index += 1;
        })
        .map_err(|e| text!("{e:?}"))?;
        Ok((luns, total))
    }

    fn check_report_luns(&mut self, lun: Lun) -> Check {
        let (luns, total) = self.report_luns(lun)?;
        let details = text!(
            "{total} LUN(s): {:?}",
            luns.get(..total.min(8)).unwrap_or(&[])
        );
        if total == 1 && luns[0] == Some(0) {
            Ok(details)
        } else {
            Err(details)
        }
    }

    fn read_capacity(&mut self, lun: Lun) -> Result<Capacity, Text> {
        let mut data = [0u8; 32];
        let got = self.data_in(lun, &scsi_cmd::read_capacity_16(32), 32, &mut data)?;
        scsi_cmd::parse_read_capacity_16(data.get(..got).unwrap_or(&[])).map_err(|e| text!("{e:?}"))
    }

    fn check_read_capacity(&mut self, lun: Lun) -> Check {
        let capacity = self.read_capacity(lun)?;
        // The data checks address 4 KiB pages in whole blocks.
        if capacity.block_length > 4096 {
            return Err(text!("block length {} above 4 KiB", capacity.block_length));
        }
        self.capacity = capacity;
        let bytes = capacity
            .blocks()
            .saturating_mul(u64::from(capacity.block_length));
        let details = text!(
            "{} blocks of {} bytes",
            capacity.blocks(),
            capacity.block_length
        );
        if bytes == self.settings.disk_bytes {
            Ok(details)
        } else {
            Err(details)
        }
    }

    fn blocks(&self, bytes: u64) -> u32 {
        (bytes / u64::from(self.capacity.block_length.max(1))) as u32
    }

    /// Region `index` of the write-verify pass: its first LBA.
    fn region_lba(&self, index: u64) -> Option<u64> {
        let region_blocks = u64::from(self.blocks(REGION_BYTES));
        pattern::spread(self.capacity.blocks(), REGIONS, region_blocks, index)
    }

    /// Runs `count` commands with at most `depth` (at most 256) in flight on `queue`, refilling
    /// in batches (drain what is used, then add as many and kick once), as an interrupt-driven
    /// driver would. `job(i, slot)` gives the i-th command; `slot` (below `depth`) is free for
    /// its buffer until the command completes. Reads with a seed are verified on completion.
    fn pipeline(
        &mut self,
        queue: usize,
        count: u64,
        depth: usize,
        layout: Layout,
        lun: Lun,
        mut job: impl FnMut(u64, usize) -> Option<Job>,
    ) -> Result<(), Text> {
        const MAX_DEPTH: usize = 256;
        let depth = depth.clamp(1, MAX_DEPTH);
        // In-flight table: (tag, job) per buffer slot; tag 0 marks a free slot.
        let mut flight: [(u64, Option<Job>); MAX_DEPTH] = [(0, None); MAX_DEPTH];
        let mut submitted = 0u64;
        let mut completed = 0u64;
        while completed < count {
            let mut added = 0;
            while submitted < count {
                let Some(slot) = flight.iter().take(depth).position(|(tag, _)| *tag == 0) else {
                    break;
                };
                let command = job(submitted, slot).ok_or(text!("job {submitted}"))?;
                let (cdb, data) = if command.write {
                    (
                        scsi_cmd::write_16(command.lba, command.blocks),
                        Data::Out(command.buffer),
                    )
                } else {
                    (
                        scsi_cmd::read_16(command.lba, command.blocks),
                        Data::In(command.buffer),
                    )
                };
                let tag = self
                    .submit(queue, lun, &cdb, data, layout)
                    .map_err(|e| text!("submit {submitted}: {e}"))?;
                if let Some(entry) = flight.get_mut(slot) {
                    *entry = (tag, Some(command));
                }
                submitted += 1;
                added += 1;
            }
            if added > 0 {
                self.device.kick(queue).map_err(|e| text!("{e}"))?;
            }
            // Sleep until the queue's interrupt; its pass drains what the device used, which
            // is handled before refilling, as an interrupt-driven driver would.
            let mut next = Some(
                self.device
                    .wait(queue, self.interrupts)
                    .map_err(|e| text!("after {completed} of {count}: {e}"))?,
            );
            while let Some(used) = next {
                let (tag, outcome, _) = self
                    .outcome(queue, used, DataDirection::FromDevice)
                    .map_err(|e| text!("{e}"))?;
                let entry = flight
                    .iter_mut()
                    .find(|(t, _)| *t == tag)
                    .ok_or(text!("completion for unknown tag {tag}"))?;
                let command = entry.1.take().ok_or(text!("tag {tag} has no job"))?;
                entry.0 = 0;
                if outcome.disposition != Disposition::Success {
                    return Err(text!(
                        "LBA {}: {:?} status {:#x}",
                        command.lba,
                        outcome.disposition,
                        outcome.scsi_status
                    ));
                }
                if let (false, Some(seed)) = (command.write, command.verify) {
                    let block_length = self.capacity.block_length;
                    pattern::verify(
                        &command.buffer,
                        seed,
                        command.lba,
                        block_length,
                        command.blocks,
                    )
                    .map_err(|e| text!("{e:?}"))?;
                }
                completed += 1;
                next = self
                    .device
                    .queue(queue)
                    .map_err(|e| text!("{e}"))?
                    .take_drained();
            }
        }
        Ok(())
    }

    fn check_write_verify(&mut self, lun: Lun) -> Check {
        self.seed = self.seed.wrapping_add(1);
        let seed = self.seed;
        let block_length = self.capacity.block_length;
        let region_blocks = self.blocks(REGION_BYTES);
        let mut lbas = [0u64; REGIONS as usize];
        for (index, slot) in lbas.iter_mut().enumerate() {
            *slot = self
                .region_lba(index as u64)
                .ok_or(text!("disk too small for {REGIONS} regions"))?;
        }
        let data = self.data;
        let region = |index: u64| {
            data.sub(
                index as usize * REGION_BYTES as usize,
                REGION_BYTES as usize,
            )
        };
        for (index, lba) in lbas.iter().enumerate() {
            let buffer = region(index as u64).ok_or(text!("buffer"))?;
            if !pattern::fill(&buffer, seed, *lba, block_length, region_blocks) {
                return Err(text!("pattern geometry"));
            }
        }
        // 32 deep, or as many as the ring holds when each takes a direct chain.
        let layout = self.pages();
        let ring_size = self.ring_size(GENERAL)?;
        let depth = usize::from(layout.requests_per_ring(ring_size, REGION_BYTES)).min(32);
        let job = |write: bool| {
            move |i: u64, _slot: usize| {
                let lba = *lbas.get(i as usize)?;
                let verify = (!write).then_some(seed);
                Some(Job {
                    lba,
                    blocks: region_blocks,
                    write,
                    buffer: region(i)?,
                    verify,
                })
            }
        };
        self.pipeline(GENERAL, REGIONS, depth, layout, lun, job(true))?;
        // Clear the buffers so the read pass has to bring every byte back.
        data.sub(0, (REGIONS * REGION_BYTES) as usize)
            .ok_or(text!("buffer"))?
            .zero();
        self.pipeline(GENERAL, REGIONS, depth, layout, lun, job(false))?;
        self.region_seed = seed;
        Ok(text!(
            "{REGIONS} regions x {} KiB from LBA 0 to {}, queue depth {depth}, {} segments each \
             ({} chains)",
            REGION_BYTES >> 10,
            lbas[REGIONS as usize - 1] + u64::from(region_blocks) - 1,
            REGION_BYTES / 4096,
            chain_kind(layout)
        ))
    }

    fn check_max_transfer(&mut self, lun: Lun) -> Check {
        let limits = self.device.limits;
        let max_bytes = u64::from(limits.max_sectors.unwrap_or(0xffff)) * 512;
        let block = u64::from(self.capacity.block_length);
        let bytes = max_bytes
            .min(DATA_LEN as u64)
            .min(self.settings.disk_bytes / 2)
            / block
            * block;
        let blocks = (bytes / block) as u32;
        // A direct chain also needs ring descriptors for both headers and every segment (up to
        // seg_max + 2, which QEMU sizes to the ring).
        let layout = self.pages();
        let ring_size = self.ring_size(GENERAL)?;
        let mut segment_limit = (limits.seg_max as usize).min(MAX_DATA_SEGMENTS) as u64;
        if !layout.indirect {
            segment_limit = segment_limit.min(u64::from(ring_size).saturating_sub(2));
        }
        let segment_len = bytes.div_ceil(segment_limit.max(1)).next_multiple_of(4096) as u32;
        let segments = bytes.div_ceil(u64::from(segment_len));
        self.seed = self.seed.wrapping_add(1);
        let seed = self.seed;
        // The last blocks of the disk, so the transfer ends exactly at the capacity.
        let lba = self
            .capacity
            .blocks()
            .checked_sub(u64::from(blocks))
            .filter(|_| blocks > 0)
            .ok_or(text!("{blocks} blocks do not fit the disk"))?;
        let buffer = self.data.sub(0, bytes as usize).ok_or(text!("buffer"))?;
        if !pattern::fill(&buffer, seed, lba, self.capacity.block_length, blocks) {
            return Err(text!("pattern geometry"));
        }
        let layout = Layout {
            indirect: layout.indirect,
            segment_len,
        };
        let run = |this: &mut Self,
                   cdb: scsi_cmd::Cdb,
                   data: Data,
                   direction|
         -> Result<CommandOutcome, Text> {
            this.submit(GENERAL, lun, &cdb, data, layout)
                .map_err(|e| text!("{e}"))?;
            this.device.kick(GENERAL).map_err(|e| text!("{e}"))?;
            let (_, outcome, _) = this
                .complete(GENERAL, direction)
                .map_err(|e| text!("{e}"))?;
            Ok(outcome)
        };
        let written = run(
            self,
            scsi_cmd::write_16(lba, blocks),
            Data::Out(buffer),
            DataDirection::ToDevice,
        )?;
        buffer.zero();
        let read = run(
            self,
            scsi_cmd::read_16(lba, blocks),
            Data::In(buffer),
            DataDirection::FromDevice,
        )?;
        for outcome in [written, read] {
            if outcome.disposition != Disposition::Success
                || u64::from(outcome.transferred) != bytes
            {
                return Err(text!(
                    "{:?}, {} of {bytes} bytes",
                    outcome.disposition,
                    outcome.transferred
                ));
            }
        }
        pattern::verify(&buffer, seed, lba, self.capacity.block_length, blocks)
            .map_err(|e| text!("{e:?}"))?;
        Ok(text!(
            "{blocks} blocks ({} KiB, device max_sectors {:?}) in {segments} segments of {} KiB \
             ({} chain of {} ring descriptors)",
            bytes >> 10,
            limits.max_sectors,
            segment_len >> 10,
            chain_kind(layout),
            layout.ring_descriptors(bytes)
        ))
    }

    /// The LBA of page `i` of the written regions (4 KiB pages, region after region).
    fn page_lba(&self, i: u64) -> Option<u64> {
        let pages_per_region = REGION_BYTES / 4096;
        let page = i % (REGIONS * pages_per_region);
        let region = self.region_lba(page / pages_per_region)?;
        Some(region + (page % pages_per_region) * u64::from(self.blocks(4096)))
    }

    /// A verified 4 KiB read of page `i` into buffer slot `slot`.
    fn page_read(&self, i: u64, slot: usize) -> Option<Job> {
        Some(Job {
            lba: self.page_lba(i)?,
            blocks: self.blocks(4096),
            write: false,
            buffer: self.data.sub(slot * 4096, 4096)?,
            verify: Some(self.region_seed),
        })
    }

    /// Submits `job` on `queue` (not kicked) and returns its tag.
    fn submit_job(&mut self, queue: usize, lun: Lun, job: &Job) -> Result<u64, Text> {
        let cdb = scsi_cmd::read_16(job.lba, job.blocks);
        let layout = self.pages();
        self.submit(queue, lun, &cdb, Data::In(job.buffer), layout)
            .map_err(|e| text!("LBA {}: {e}", job.lba))
    }

    /// Checks a completed page read.
    fn verify_job(&self, job: &Job) -> Result<(), Text> {
        let seed = job.verify.ok_or(text!("nothing to verify"))?;
        pattern::verify(
            &job.buffer,
            seed,
            job.lba,
            self.capacity.block_length,
            job.blocks,
        )
        .map_err(|e| text!("{e:?}"))
    }

    /// Fills request queue [`FULL_RING_QUEUE`] with 4 KiB reads: one per ring descriptor with
    /// indirect chains, one per three (header, data, response) with direct ones. The next
    /// request must then be refused as Full, and every one must complete and verify.
    fn check_queue_depth(&mut self, lun: Lun) -> Check {
        let queue = FULL_RING_QUEUE;
        let layout = self.pages();
        let size = self.ring_size(queue)?;
        let per_request = layout.ring_descriptors(4096);
        let requests = layout.requests_per_ring(size, 4096);
        let left = u64::from(size) - u64::from(requests) * per_request;
        for i in 0..u64::from(requests) {
            let job = self.page_read(i, i as usize).ok_or(text!("job {i}"))?;
            job.buffer.zero();
            self.submit_job(queue, lun, &job)
                .map_err(|e| text!("request {i} of {requests}: {}", e.as_str()))?;
        }
        let ring = self.device.queue(queue).map_err(|e| text!("{e}"))?.ring();
        let (free, in_flight) = (ring.free_descriptors(), ring.in_flight());
        // One more chain shaped like a request (at least two descriptors) must be refused with
        // Full, not overwrite anything.
        let probe = Segment::new(self.data.bus_address(), 16);
        let writable = [probe; 2];
        let extra = writable
            .get(..(per_request as usize).saturating_sub(1).clamp(1, 2))
            .unwrap_or(&writable);
        let refused = ring.add(&[probe], extra, None);
        if u64::from(free) != left
            || in_flight != requests
            || !matches!(refused, Err(QueueError::Full { .. }))
        {
            return Err(text!(
                "{requests} requests: {free} descriptors free (expected {left}), {in_flight} in \
                 flight, extra add {refused:?}"
            ));
        }
        self.device.kick(queue).map_err(|e| text!("{e}"))?;
        for _ in 0..requests {
            let (tag, outcome, _) = self
                .complete(queue, DataDirection::FromDevice)
                .map_err(|e| text!("{e}"))?;
            if outcome.disposition != Disposition::Success {
                return Err(text!("tag {tag}: {:?}", outcome.disposition));
            }
        }
        for i in 0..u64::from(requests) {
            let job = self.page_read(i, i as usize).ok_or(text!("job {i}"))?;
            self.verify_job(&job)
                .map_err(|e| text!("request {i}: {}", e.as_str()))?;
        }
        Ok(text!(
            "{requests} requests ({} chains of {per_request} descriptors) in flight on vq {queue} \
             of {size} (ring full, {left} left, extra add refused), all verified",
            chain_kind(layout)
        ))
    }

    fn measured(
        &mut self,
        name: &str,
        queue: usize,
        ios: u64,
        depth: usize,
        layout: Layout,
        lun: Lun,
    ) -> Check {
        let _ = writeln!(self.out, "PHASE {name} vq {queue} ios {ios} begin");
        let started = self.interrupts.now_nanos();
        let region_seed = self.region_seed;
        let data = self.data;
        let block_length = self.capacity.block_length;
        let mut lbas = [0u64; (REGIONS * REGION_BYTES / 4096) as usize];
        for (i, slot) in lbas.iter_mut().enumerate() {
            *slot = self.page_lba(i as u64).ok_or(text!("page {i}"))?;
        }
        let blocks = (4096 / block_length.max(1)).max(1);
        self.pipeline(queue, ios, depth, layout, lun, |i, slot| {
            Some(Job {
                lba: *lbas.get(i as usize % lbas.len())?,
                blocks,
                write: false,
                buffer: data.sub(slot * 4096, 4096)?,
                verify: Some(region_seed),
            })
        })?;
        let nanos = self.interrupts.now_nanos().saturating_sub(started);
        let _ = writeln!(
            self.out,
            "PHASE {name} vq {queue} ios {ios} end nanos {nanos}"
        );
        let q = self.device.queue(queue).map_err(|e| text!("{e}"))?;
        Ok(text!(
            "{ios} verified reads of 4 KiB at depth {depth} ({} chains), {} kicks",
            chain_kind(layout),
            q.kicks
        ))
    }

    fn check_qd1(&mut self, lun: Lun) -> Check {
        self.measured("qd1", QD1_QUEUE, QD1_IOS, 1, Layout::DIRECT_PAGES, lun)
    }

    fn check_qd32(&mut self, lun: Lun) -> Check {
        let layout = self.pages();
        self.measured("qd32", QD32_QUEUE, QD32_IOS, 32, layout, lun)
    }

    fn check_multiqueue(&mut self, lun: Lun) -> Check {
        const PER_QUEUE: usize = 16;
        let queues = MULTIQUEUE.len();
        let total = PER_QUEUE * queues;
        let mut tags = [[0u64; PER_QUEUE]; MULTIQUEUE.len()];
        for i in 0..total {
            let (which, nth) = (i % queues, i / queues);
            let queue = MULTIQUEUE.get(which).copied().unwrap_or(GENERAL);
            let job = self.page_read(i as u64, i).ok_or(text!("job {i}"))?;
            job.buffer.zero();
            let tag = self.submit_job(queue, lun, &job)?;
            if let Some(slot) = tags.get_mut(which).and_then(|t| t.get_mut(nth)) {
                *slot = tag;
            }
        }
        for queue in MULTIQUEUE {
            self.device.kick(queue).map_err(|e| text!("{e}"))?;
        }
        for (which, queue) in MULTIQUEUE.into_iter().enumerate() {
            for _ in 0..PER_QUEUE {
                let (tag, outcome, _) = self
                    .complete(queue, DataDirection::FromDevice)
                    .map_err(|e| text!("{e}"))?;
                let ours = tags.get(which).is_some_and(|t| t.contains(&tag));
                if outcome.disposition != Disposition::Success || !ours {
                    return Err(text!(
                        "vq {queue} tag {tag} (submitted here: {ours}): {:?}",
                        outcome.disposition
                    ));
                }
            }
        }
        for i in 0..total {
            let job = self.page_read(i as u64, i).ok_or(text!("job {i}"))?;
            self.verify_job(&job)?;
        }
        Ok(text!(
            "{PER_QUEUE} reads in flight on each of virtqueues {MULTIQUEUE:?}, each completed on its own queue, verified"
        ))
    }

    fn tmf(
        &mut self,
        subtype: TmfSubtype,
        lun: Lun,
    ) -> Result<virtio_core::scsi::TmfOutcome, Text> {
        let control = usize::from(queue_index::CONTROL);
        let tag = self.next_tag();
        let request = TmfReq::new(subtype, lun, 0);
        let queue = self.device.queue(control).map_err(|e| text!("{e}"))?;
        queue
            .submit(
                self.hal,
                request.as_bytes(),
                size_of::<TmfResp>(),
                Data::None,
                Layout::DIRECT_PAGES,
                tag,
            )
            .map_err(|e| text!("{e}"))?;
        self.device.kick(control).map_err(|e| text!("{e}"))?;
        let used = self
            .device
            .wait(control, self.interrupts)
            .map_err(|e| text!("{e}"))?;
        let mut raw = [0u8; 1];
        if !self
            .device
            .queue(control)
            .map_err(|e| text!("{e}"))?
            .response(used.context, &mut raw)
        {
            return Err(text!("response unreadable"));
        }
        let response = TmfResp::read_from_bytes(&raw).map_err(|_| text!("response"))?;
        complete_tmf(&response).map_err(|e| text!("{e:?}"))
    }

    fn check_lun_reset(&mut self, lun: Lun) -> Check {
        // Eight reads in flight when the reset arrives: each must still complete, one way or
        // the other (done before the reset, or ended by it).
        for i in 0..8 {
            let job = self.page_read(i, i as usize).ok_or(text!("job {i}"))?;
            self.submit_job(GENERAL, lun, &job)?;
        }
        self.device.kick(GENERAL).map_err(|e| text!("{e}"))?;
        let outcome = self.tmf(TmfSubtype::LogicalUnitReset, lun)?;
        let mut ended = [0u32; 2];
        for _ in 0..8 {
            let (_, outcome, _) = self
                .complete(GENERAL, DataDirection::FromDevice)
                .map_err(|e| text!("{e}"))?;
            let index = usize::from(outcome.disposition != Disposition::Success);
            if let Some(count) = ended.get_mut(index) {
                *count += 1;
            }
        }
        if !outcome.is_success() {
            return Err(text!("TMF {outcome:?}"));
        }
        // The reset leaves a unit attention (SPC-4: 29/xx, POWER ON, RESET, OR BUS DEVICE
        // RESET OCCURRED) for the next command: proof it happened.
        let (first, sense) = self
            .command(lun, &scsi_cmd::test_unit_ready(), Data::None)
            .map_err(|e| text!("{e}"))?;
        let parsed =
            scsi_cmd::parse_sense(sense.get(..usize::from(first.sense_len)).unwrap_or(&[]));
        let reset_seen = first.scsi_status == scsi_status::CHECK_CONDITION
            && matches!(parsed, Ok(s) if s.key == scsi_cmd::UNIT_ATTENTION && s.asc == 0x29);
        let ready = self.check_test_unit_ready(lun)?;
        if !reset_seen {
            return Err(text!(
                "no reset unit attention after the TMF: {:?} {parsed:?}",
                first.disposition
            ));
        }
        Ok(text!(
            "{outcome:?}; in-flight reads: {} done, {} ended by the reset; then unit attention {parsed:?}, {}",
            ended[0],
            ended[1],
            ready.as_str()
        ))
    }

    /// Waits for an event on the eventq, re-posts its buffer, and returns it.
    fn next_event(&mut self) -> Result<EventKind, Text> {
        let event_queue = usize::from(queue_index::EVENT);
        let used = self
            .device
            .wait(event_queue, self.interrupts)
            .map_err(|e| text!("{e}"))?;
        let index = used.tag as usize;
        let buffer = self
            .events
            .sub(index * 16, 16)
            .ok_or(text!("event {index}"))?;
        let mut raw = [0u8; 16];
        let _ = buffer.read_bytes(0, &mut raw);
        let event = Event::read_from_bytes(&raw).map_err(|_| text!("event bytes"))?;
        self.post_event(index).map_err(|e| text!("{e}"))?;
        self.device.kick(event_queue).map_err(|e| text!("{e}"))?;
        let decoded = event.decode().map_err(|e| text!("{e:?}"))?;
        if decoded.events_missed {
            return Err(text!("events missed"));
        }
        Ok(decoded.kind)
    }

    fn wait_transport_reset(&mut self, lun: Lun, reason: ResetReason) -> Result<Text, Text> {
        for _ in 0..4 {
            match self.next_event()? {
                EventKind::TransportReset {
                    lun: got,
                    reason: why,
                } if got == lun && why == reason => {
                    return Ok(text!(
                        "event transport reset {why:?} for target {} LUN {}",
                        got.target(),
                        got.lun()
                    ));
                }
                EventKind::NoEvent => {}
                other => return Err(text!("unexpected event {other:?}")),
            }
        }
        Err(text!("no transport reset event"))
    }

    fn check_hotplug_add(&mut self) -> Check {
        let lun0 = Lun::new(0, 0).map_err(|e| text!("{e:?}"))?;
        let lun1 = Lun::new(0, 1).map_err(|e| text!("{e:?}"))?;
        let _ = writeln!(self.out, "HOTPLUG add");
        let event = self.wait_transport_reset(lun1, ResetReason::Rescan)?;
        let (listed, total) = self.report_luns(lun0)?;
        if total != 2 || !listed.contains(&Some(0)) || !listed.contains(&Some(1)) {
            return Err(text!(
                "{}; REPORT LUNS {total}: {:?}",
                event.as_str(),
                listed
            ));
        }
        let _ = self.check_test_unit_ready(lun1)?;
        let capacity = self.read_capacity(lun1)?;
        let bytes = capacity
            .blocks()
            .saturating_mul(u64::from(capacity.block_length));
        let (page, len) = self.serial_of(lun1)?;
        let serial = trim(page.get(4..4 + len).unwrap_or(&[]));
        if bytes != self.settings.hotplug_bytes || serial != self.settings.hotplug_serial.as_bytes()
        {
            return Err(text!("LUN 1: {bytes} bytes, serial {:?}", ascii(serial)));
        }
        // Write and read back its last 64 KiB.
        let blocks = (REGION_BYTES / u64::from(capacity.block_length)) as u32;
        let lba = capacity
            .blocks()
            .checked_sub(u64::from(blocks))
            .ok_or(text!("LUN 1 is smaller than {blocks} blocks"))?;
        let buffer = self
            .data
            .sub(0, REGION_BYTES as usize)
            .ok_or(text!("buffer"))?;
        let seed = self.seed.wrapping_add(99);
        if !pattern::fill(&buffer, seed, lba, capacity.block_length, blocks) {
            return Err(text!("pattern geometry"));
        }
        self.command_ok(lun1, &scsi_cmd::write_16(lba, blocks), Data::Out(buffer))?;
        buffer.zero();
        self.command_ok(lun1, &scsi_cmd::read_16(lba, blocks), Data::In(buffer))?;
        pattern::verify(&buffer, seed, lba, capacity.block_length, blocks)
            .map_err(|e| text!("LUN 1 data: {e:?}"))?;
        Ok(text!(
            "{}; REPORT LUNS [0, 1]; LUN 1 {} MiB serial {} verified",
            event.as_str(),
            bytes >> 20,
            ascii(serial)
        ))
    }

    fn check_hotplug_remove(&mut self) -> Check {
        let lun0 = Lun::new(0, 0).map_err(|e| text!("{e:?}"))?;
        let lun1 = Lun::new(0, 1).map_err(|e| text!("{e:?}"))?;
        let _ = writeln!(self.out, "HOTPLUG remove");
        let event = self.wait_transport_reset(lun1, ResetReason::Removed)?;
        let (listed, total) = self.report_luns(lun0)?;
        if total != 1 || listed[0] != Some(0) {
            return Err(text!(
                "{}; REPORT LUNS {total}: {:?}",
                event.as_str(),
                listed
            ));
        }
        // LUN 1 is gone: the device either refuses the command or answers INQUIRY with
        // peripheral qualifier 3 (no device at this LUN).
        let buffer = self.data.sub(0, 96).ok_or(text!("buffer"))?;
        buffer.zero();
        let (outcome, _) = self
            .command(lun1, &scsi_cmd::inquiry(96), Data::In(buffer))
            .map_err(|e| text!("{e}"))?;
        let qualifier = buffer.load_u8(0) >> 5;
        let gone = matches!(
            outcome.disposition,
            Disposition::InvalidLun | Disposition::InvalidTargetId
        ) || (matches!(
            outcome.disposition,
            Disposition::Success | Disposition::DataOverrun
        ) && qualifier == 3);
        if !gone {
            return Err(text!(
                "LUN 1 still answers: {:?} qualifier {qualifier}",
                outcome.disposition
            ));
        }
        Ok(text!(
            "{}; REPORT LUNS [0]; INQUIRY LUN 1: {:?}, qualifier {qualifier}",
            event.as_str(),
            outcome.disposition
        ))
    }

    fn print_stats(&mut self) {
        for queue in self.device.queues.iter().flatten() {
            let index = queue.index();
            let passes = queue.passes;
            let _ = writeln!(
                self.out,
                "STAT vq {index} kicks {} completions {} interrupts {} passes {} empty-passes {} \
                 irq-completions {} rechecks {} recheck-completions {}",
                queue.kicks,
                queue.completions,
                self.interrupts.count(crate::driver::vector_of_queue(index)),
                passes.passes,
                passes.empty_passes,
                passes.irq_completions,
                passes.rechecks,
                passes.recheck_completions,
            );
        }
    }

    /// Every completion must have been drained by an interrupt pass, and at queue depth 1 by
    /// the drain right after the interrupt (one in flight, so nothing is left for a re-check).
    fn check_irq_driven(&mut self) -> Check {
        let (mut total, mut irq, mut recheck, mut rechecks) = (0, 0, 0, 0);
        for queue in self.device.queues.iter().flatten() {
            total += queue.completions;
            irq += queue.passes.irq_completions;
            recheck += queue.passes.recheck_completions;
            rechecks += queue.passes.rechecks;
        }
        let qd1 = self.device.queue(QD1_QUEUE).map_err(|e| text!("{e}"))?;
        let (qd1_total, qd1_irq) = (qd1.completions, qd1.passes.irq_completions);
        let details = text!(
            "{} of {total} completions in interrupt passes ({irq} right after the interrupt, \
             {recheck} after {rechecks} re-checks); qd1 {qd1_irq} of {qd1_total} right after \
             the interrupt",
            irq + recheck
        );
        if irq + recheck == total && qd1_irq == qd1_total && qd1_total == QD1_IOS {
            Ok(details)
        } else {
            Err(details)
        }
    }
}

/// "indirect" or "direct", for result details.
fn chain_kind(layout: Layout) -> &'static str {
    if layout.indirect {
        "indirect"
    } else {
        "direct"
    }
}

fn is_unit_attention(outcome: &CommandOutcome, sense: &[u8; 96]) -> bool {
    outcome.scsi_status == scsi_status::CHECK_CONDITION
        && scsi_cmd::parse_sense(sense.get(..usize::from(outcome.sense_len)).unwrap_or(&[]))
            .is_ok_and(|s| s.key == scsi_cmd::UNIT_ATTENTION)
}

/// Printable ASCII of a fixed-width SCSI field.
pub(crate) fn ascii(bytes: &[u8]) -> &str {
    core::str::from_utf8(trim(bytes)).unwrap_or("?")
}

/// The field without trailing spaces and NULs.
fn trim(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ' && *b != 0)
        .map_or(0, |p| p + 1);
    bytes.get(..end).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_parse_or_name_the_bad_word() {
        let line = "ring=packed indirect=on event-idx=on serial=A hotplug-serial=B \
                    disk-bytes=67108864 hotplug-bytes=16777216";
        let (mode, settings) = Settings::parse(line).unwrap();
        let settings = settings.unwrap();
        assert_eq!(mode, Mode::Exercise);
        assert!(settings.packed && settings.indirect && settings.event_idx);
        assert_eq!((settings.serial, settings.hotplug_serial), ("A", "B"));
        assert_eq!(
            (settings.disk_bytes, settings.hotplug_bytes),
            (64 << 20, 16 << 20)
        );
        assert_eq!(Settings::parse("mode=probe").unwrap(), (Mode::Probe, None));
        assert_eq!(
            Settings::parse("mode=pr node=b").unwrap(),
            (Mode::Reservations(Node::B), None)
        );
        assert_eq!(
            Settings::parse("node=a mode=pr").unwrap(),
            (Mode::Reservations(Node::A), None)
        );
        assert_eq!(
            Settings::parse("mode=pr"),
            Err(SettingsError::Missing("node"))
        );
        assert_eq!(
            Settings::parse("mode=pr node=c"),
            Err(SettingsError::BadValue("node=c"))
        );
        assert_eq!(
            Settings::parse("ring=ring"),
            Err(SettingsError::BadValue("ring=ring"))
        );
        assert_eq!(
            Settings::parse("colour=red"),
            Err(SettingsError::Unknown("colour=red"))
        );
        assert_eq!(
            Settings::parse("noise"),
            Err(SettingsError::Unknown("noise"))
        );
        assert_eq!(
            Settings::parse("ring=split disk-bytes=x"),
            Err(SettingsError::BadValue("disk-bytes=x"))
        );
        assert_eq!(
            Settings::parse("ring=split indirect=on event-idx=on"),
            Err(SettingsError::Missing("serial"))
        );
    }

    const REST: &str = "serial=A hotplug-serial=B disk-bytes=1 hotplug-bytes=1";

    fn parse_with(words: &str) -> Result<Settings<'static>, SettingsError<'static>> {
        let line = std::format!("{words} {REST}").leak();
        Settings::parse(line).map(|(_, settings)| settings.unwrap())
    }

    #[test]
    fn indirect_and_event_idx_are_switched_on_or_off_and_must_be_given() {
        let settings = parse_with("ring=split indirect=off event-idx=on").unwrap();
        assert!(!settings.packed && !settings.indirect && settings.event_idx);
        let settings = parse_with("event-idx=off ring=split indirect=on").unwrap();
        assert!(settings.indirect && !settings.event_idx);
        assert_eq!(
            parse_with("ring=split indirect=no event-idx=on"),
            Err(SettingsError::BadValue("indirect=no"))
        );
        assert_eq!(
            parse_with("ring=split indirect=on event-idx=1"),
            Err(SettingsError::BadValue("event-idx=1"))
        );
        assert_eq!(
            parse_with("ring=split event-idx=on"),
            Err(SettingsError::Missing("indirect"))
        );
        assert_eq!(
            parse_with("ring=split indirect=off"),
            Err(SettingsError::Missing("event-idx"))
        );
    }

    #[test]
    fn the_expected_features_follow_the_settings() {
        let settings = parse_with("ring=split indirect=off event-idx=on").unwrap();
        let (needed, absent) = expected_features(&settings);
        assert_eq!(
            needed,
            Features::VERSION_1 | Features::SCSI_HOTPLUG | Features::EVENT_IDX
        );
        assert_eq!(absent, Features::RING_PACKED | Features::INDIRECT_DESC);
        let settings = parse_with("ring=packed indirect=on event-idx=off").unwrap();
        let (needed, absent) = expected_features(&settings);
        assert!(needed.contains(Features::RING_PACKED | Features::INDIRECT_DESC));
        assert_eq!(absent, Features::EVENT_IDX);
        assert!(!needed.intersects(absent));
    }

    #[test]
    fn fields_are_trimmed() {
        assert_eq!(trim(b"QEMU    "), b"QEMU");
        assert_eq!(trim(b"AB\0\0"), b"AB");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(ascii(b"2.5+"), "2.5+");
    }
}
