//! A session of the real miniport against the hostile device: a script (a fuzzer's bytes, or
//! a seeded sequence in the stable tests) submits SRBs of every kind and decides every value
//! the device writes back, then the device turns well-behaved and the session checks what the
//! miniport made of it.
//!
//! The invariants, each a panic naming what broke (the fuzz target's crash, the stable test's
//! failure): no panic in the miniport; every SRB completed exactly once and none left over
//! (the simulator's records); the device reached only memory StorPort mapped for it (DMA
//! remapping on for half the sessions; no IOMMU fault); no WRITE completed with SUCCESS that
//! the device did not execute, and none executed after its SRB failed (the write journal);
//! every written region holds exactly what the journal says; and, once the device behaves, a
//! write and its read-back succeed on every unit: the adapter serves I/O again after whatever
//! reset it decided on.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use rvscsi::storport::SRB_STATUS_SUCCESS;

use crate::device::hostile::{Answered, HostileAnswer};
use crate::device::target::Lun;
use crate::device::{DeviceOptions, WriteRecord};
use crate::harness::{Machine, boot};
use crate::scenario::{Rng, STANDARD_BUS, read10, stamped, write10};
use crate::sim::{IoctlRequest, Request, SimOptions, Ticket, WmiRequest, abi};

/// Blocks of each unit.
const BLOCKS: u64 = 4096;
/// Where the writes of a session go: each its own region of [`WRITE_SPAN`] blocks from here.
const WRITE_AREA: u32 = 2048;
/// Blocks of one write region (a write covers 1 to all of them).
const WRITE_SPAN: u32 = 8;
/// Where the well-behaved phase writes and reads back.
const RESUME_AREA: u32 = 3584;
/// Operations of one session at most (the rest of a longer script is ignored).
const MAX_OPS: usize = 64;
/// SRBs of one session at most.
const MAX_SRBS: usize = 48;
/// How long a submitted request may take to reach the device before the script goes on.
const REACH: Duration = Duration::from_millis(10);
/// How long, once the device behaves, every SRB may take to complete (a lost TMF answer costs
/// the miniport's 2 s deadline, a lost command StorPort's timeout and the reset after it).
const SETTLE: Duration = Duration::from_secs(30);
/// How many times faster than real time the session's machine clocks run.
const CLOCK_RATE: u32 = 50;
/// Real time per second of an SRB's timeout: a 10 s command times out after 200 ms, still far
/// above what a healthy command takes on a loaded machine under the fuzzer's sanitizers.
const SRB_SECOND: Duration = Duration::from_millis(5);
/// How long after HwResetBus the port driver waits for the bus's requests: five times the
/// miniport's 2 s task management deadline on the session's clock.
const RESET_GRACE: Duration = Duration::from_millis(400);
/// Bytes of the device configuration a hostile configuration change may touch: `num_queues`,
/// `event_info_size`, `max_channel`, `max_target` and `max_lun`. Never the limits the device
/// enforces (`seg_max`, `max_sectors`, `cmd_per_lun`: lowering one under the driver's feet
/// would make the device record the driver's next request as a violation) nor the sizes the
/// driver writes (`sense_size`, `cdb_size`: changing one changes the request layout).
const CONFIG_FIELDS: [std::ops::Range<usize>; 3] = [0..4, 16..20, 28..36];

/// A script: the bytes decide, in order; past the end every byte is 0.
pub struct Script<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Script<'a> {
    /// A script over `bytes`.
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Whether every byte was used.
    #[must_use]
    pub fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        let byte = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        usize::from(self.u8()) % bound.max(1)
    }

    /// A 32-bit value that is small, near a boundary or anything, as the next byte says.
    pub fn length(&mut self) -> u32 {
        match self.u8() % 4 {
            0 => u32::from(self.u8()),
            1 => u32::from(self.u16()),
            2 => u32::MAX - u32::from(self.u8()),
            _ => self.u32(),
        }
    }
}

/// A script of `len` bytes from `seed` (the stable tests' sessions).
#[must_use]
pub fn seeded_script(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// What a session did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionFigures {
    /// Script operations run.
    pub ops: usize,
    /// SRBs submitted (commands, TMFs, WMI, IOCTL).
    pub srbs: usize,
    /// Commands the hostile device answered.
    pub answered: usize,
    /// Of them, executed (OK, GOOD).
    pub executed: usize,
    /// Full device resets the miniport did.
    pub resets: u64,
}

/// What one submitted SRB was.
enum Kind {
    Read,
    Write {
        target: u8,
        lun: u8,
        lba: u32,
        data: Vec<u8>,
    },
    Control,
}

impl std::fmt::Debug for Kind {
    /// A write without its data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read => write!(f, "READ"),
            Self::Write {
                target,
                lun,
                lba,
                data,
            } => write!(
                f,
                "WRITE of {} bytes to {target}:{lun} LBA {lba}",
                data.len()
            ),
            Self::Control => write!(f, "task management"),
        }
    }
}

/// Runs one session of `input` (see the module).
///
/// # Panics
/// When an invariant breaks, or the simulator cannot boot.
#[must_use]
pub fn run(input: &[u8]) -> SessionFigures {
    let mut script = Script::new(input);
    let shape = script.u8();
    let sim = SimOptions {
        processors: 2,
        force_scsi_request_block: shape & 4 != 0,
        iommu: shape & 2 != 0,
        // The machine's clocks run CLOCK_RATE times faster, so that the miniport's
        // seconds-long deadlines (task management, lost interrupts) pass in a fraction of that.
        clock_rate: CLOCK_RATE,
        timeout_scale: SRB_SECOND,
        // The miniport ends a reset asynchronously, within its task management deadline (2 s
        // on its clock, 2 s / CLOCK_RATE of real time).
        reset_grace: Some(RESET_GRACE),
        ..SimOptions::default()
    };
    let device = DeviceOptions {
        packed: shape & 1 != 0,
        hotplug: true,
        change: true,
        ..DeviceOptions::default()
    };
    let luns = STANDARD_BUS
        .iter()
        .map(|&(target, lun)| (target, lun, Lun::memory(BLOCKS, 512).expect("a disk")))
        .collect();
    let machine = boot(sim, device, luns).expect("boot");
    machine.device.journal_writes(true);
    let original_config = machine.device.device_config();
    let mut session = Session {
        machine: &machine,
        submitted: Vec::new(),
        writes: 0,
        figures: SessionFigures::default(),
        config_changed: false,
        trace: std::env::var_os(TRACE_VARIABLE).is_some(),
    };
    machine.device.set_hostile(true);
    while !script.done() && session.figures.ops < MAX_OPS {
        session.step(&mut script);
        session.figures.ops += 1;
    }
    machine.device.set_hostile(false);
    if session.config_changed {
        machine.device.change_config(0, &original_config);
    }
    let figures = session.settle();
    machine.finish();
    figures
}

/// The state of a running session.
struct Session<'m> {
    machine: &'m Machine,
    submitted: Vec<(Ticket, Kind)>,
    writes: u32,
    figures: SessionFigures,
    config_changed: bool,
    /// Print every operation ([`TRACE_VARIABLE`] set).
    trace: bool,
}

/// The environment variable that makes a session print each operation as it runs it (to
/// replay a failing input: `RVSCSI_HOSTILE_TRACE=1`).
pub const TRACE_VARIABLE: &str = "RVSCSI_HOSTILE_TRACE";

impl Session<'_> {
    /// Runs the operation the script's next byte names.
    fn step(&mut self, script: &mut Script) {
        let device = &self.machine.device;
        let op = script.u8() % 16;
        if self.trace {
            eprintln!(
                "hostile op {} ({op}): held {:?}, stats {:?}",
                self.figures.ops,
                device.hostile_held(),
                device.stats()
            );
        }
        match op {
            0 | 1 => self.submit_read(script),
            2 | 3 => self.submit_write(script),
            4 => self.submit_control(script),
            5 => self.send_wmi(script),
            6 => self.send_ioctl(script),
            7 => {
                std::thread::sleep(Duration::from_millis(u64::from(script.u8() % 4)));
                let _ = device.hostile_take();
            }
            8..=10 => self.answer_command(script),
            11 => {
                let _ = device.hostile_take();
                let pick = usize::from(script.u8());
                let how = script.u8();
                let response = script.u8();
                let used_len = (how & 2 != 0).then(|| script.length());
                let _ = device.hostile_answer_control(
                    pick,
                    how & 1 == 0,
                    response,
                    used_len,
                    how & 4 == 0,
                );
            }
            12 => self.publish_raw(script),
            13 => {
                let messages = self.machine.adapter.found_adapter().messages;
                let vector = if messages == 0 {
                    virtio_core::pci::VIRTIO_MSI_NO_VECTOR
                } else {
                    u16::try_from(u32::from(script.u8()) % messages).unwrap_or(0)
                };
                device.hostile_interrupt(vector);
            }
            14 => {
                let bytes = script.bytes(16);
                let used_len = script.length();
                let posted = device.post_raw_event(&bytes, used_len);
                if self.trace {
                    eprintln!("  raw event used_len {used_len} -> {posted}");
                }
            }
            _ => match script.u8() % 3 {
                0 => {
                    let field = &CONFIG_FIELDS[script.below(CONFIG_FIELDS.len())];
                    let offset = field.start + script.below(field.len());
                    let len = 1 + script.below(field.end - offset);
                    let bytes = script.bytes(len);
                    device.change_config(offset, &bytes);
                    self.config_changed = true;
                }
                1 => device.raise_needs_reset(),
                _ => std::thread::sleep(Duration::from_millis(1)),
            },
        }
    }

    /// Answers a command the device holds, as the script says.
    fn answer_command(&mut self, script: &mut Script) {
        let device = &self.machine.device;
        let _ = device.hostile_take();
        let pick = usize::from(script.u8());
        let answer = answer(script);
        let held = device.hostile_held_ids();
        let answered = device.hostile_answer(pick, &answer);
        if self.trace {
            eprintln!("  answer {pick} of {held:?}: {answer:?} -> {answered:?}");
        }
        if let Answered::Published { executed } = answered {
            self.figures.answered += 1;
            self.figures.executed += usize::from(executed);
        }
    }

    /// Publishes a used element of any shape, as the script says.
    fn publish_raw(&mut self, script: &mut Script) {
        let device = &self.machine.device;
        let _ = device.hostile_take();
        let held = device.hostile_held_ids();
        let queues = device.queue_count();
        let (index, id) = match script.u8() % 3 {
            // A command the device holds: its used element, its response unwritten.
            0 if !held.is_empty() => held[script.below(held.len())],
            1 => (virtio_core::scsi::queue_index::CONTROL, script.u16()),
            _ => (
                2 + script.u16() % queues.saturating_sub(2).max(1),
                script.u16(),
            ),
        };
        // Any length, also one covering the response header of a command the device never
        // executed: the header starts as VIRTIO_SCSI_S_FAILURE, so such a WRITE must fail.
        let len = script.length();
        let flags = match script.u8() % 4 {
            0 => None,
            _ => Some(script.u16()),
        };
        let interrupt = script.u8() & 1 == 0;
        let published = device.hostile_publish_raw(index, id, len, flags, interrupt);
        if self.trace {
            eprintln!(
                "  raw used element on queue {index}: id {id}, len {len}, flags \
                 {flags:?}, interrupt {interrupt}, held {held:?} -> {published}"
            );
        }
    }

    /// Submits `request` on a processor the script picks, and waits a little for it to reach
    /// the device (or complete), so that the script's next answers find it.
    fn submit(&mut self, script: &mut Script, request: &Request, kind: Kind) {
        if self.submitted.len() >= MAX_SRBS {
            return;
        }
        let processor = u32::from(script.u8() % 2);
        let before: u64 = self.notifications();
        let ticket = self
            .machine
            .adapter
            .submit(processor, request)
            .expect("the simulator takes the request");
        // The device takes what reaches its rings as it arrives (a device that polls), so the
        // wait ends as soon as the request is on a ring even when the driver, with EVENT_IDX,
        // did not notify it.
        let deadline = Instant::now() + REACH;
        while Instant::now() < deadline
            && self.notifications() == before
            && self.machine.device.hostile_take() == 0
            && self.machine.adapter.completed_at(ticket).is_none()
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        if self.trace {
            eprintln!("  submitted {ticket:?}: {kind:?}");
        }
        self.submitted.push((ticket, kind));
        self.figures.srbs += 1;
    }

    fn notifications(&self) -> u64 {
        self.machine
            .device
            .stats()
            .queues
            .iter()
            .map(|q| q.notifications)
            .sum()
    }

    fn unit(script: &mut Script) -> (u8, u8) {
        let (target, lun) = STANDARD_BUS[script.below(STANDARD_BUS.len())];
        (target, lun as u8)
    }

    fn submit_read(&mut self, script: &mut Script) {
        let (target, lun) = Self::unit(script);
        let blocks = 1 + u16::from(script.u8() % 16);
        let lba = u32::from(script.u16()) % (BLOCKS as u32 - 16);
        let mut request =
            Request::new(target, lun, &read10(lba, blocks)).reading(u32::from(blocks) * 512);
        request.data_offset = u16::from(script.u8() % 8) * 512;
        request.sense_len = script.u8() % 40;
        self.submit(script, &request, Kind::Read);
    }

    fn submit_write(&mut self, script: &mut Script) {
        let (target, lun) = Self::unit(script);
        let blocks = 1 + u16::from(script.u8()) % WRITE_SPAN as u16;
        let lba = WRITE_AREA + self.writes * WRITE_SPAN;
        self.writes += 1;
        let stamp = 0x5EED_0000_0000_0000 | (u64::from(target) << 40) | u64::from(lba);
        let data = stamped(stamp, usize::from(blocks) * 512);
        let mut request = Request::new(target, lun, &write10(lba, blocks)).writing(&data);
        request.sense_len = script.u8() % 40;
        self.submit(
            script,
            &request,
            Kind::Write {
                target,
                lun,
                lba,
                data,
            },
        );
    }

    fn submit_control(&mut self, script: &mut Script) {
        let (target, lun) = Self::unit(script);
        let request = match script.u8() % 4 {
            0 => Request::control(abi::SRB_FUNCTION_RESET_LOGICAL_UNIT, target, lun),
            1 => Request::control(abi::SRB_FUNCTION_RESET_DEVICE, target, lun),
            2 => Request::control(abi::SRB_FUNCTION_RESET_BUS, target, lun),
            _ => {
                let commands: Vec<_> = self
                    .submitted
                    .iter()
                    .filter(|(_, kind)| !matches!(kind, Kind::Control))
                    .map(|(ticket, _)| *ticket)
                    .collect();
                let Some(&victim) = commands.get(script.below(commands.len())) else {
                    return;
                };
                Request::abort(target, lun, victim)
            }
        };
        self.submit(script, &request, Kind::Control);
    }

    fn send_wmi(&mut self, script: &mut Script) {
        let sub_function = script.u8() % 12;
        let path = (script.u8() & 1 == 0).then(|| {
            let mut guid = [0; 16];
            guid.copy_from_slice(&script.bytes(16));
            guid
        });
        let len = script.below(96);
        let buffer = script.bytes(len);
        let completion = self.machine.adapter.wmi(
            u32::from(script.u8() % 2),
            &WmiRequest::adapter(sub_function, path, buffer),
        );
        assert!(completion.is_ok(), "WMI request: {completion:?}");
        self.figures.srbs += 1;
    }

    fn send_ioctl(&mut self, script: &mut Script) {
        let signature = if script.u8() & 1 == 0 {
            *b"CLUSDISK"
        } else {
            let mut signature = [0; 8];
            signature.copy_from_slice(&script.bytes(8));
            signature
        };
        let code = match script.u8() % 3 {
            0 => rvscsi::storport::IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
            1 => rvscsi::storport::IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE,
            _ => script.u32(),
        };
        let len = script.below(64);
        let payload = script.bytes(len);
        let completion = self.machine.adapter.ioctl(
            u32::from(script.u8() % 2),
            &IoctlRequest::new(signature, code, 30, &payload),
        );
        assert!(completion.is_ok(), "IOCTL request: {completion:?}");
        self.figures.srbs += 1;
    }

    /// With the device behaving: every SRB completes, the writes are checked against the
    /// journal and the medium, and I/O works on every unit.
    fn settle(mut self) -> SessionFigures {
        let machine = self.machine;
        let mut completed = Vec::new();
        for (ticket, kind) in std::mem::take(&mut self.submitted) {
            let done = machine
                .adapter
                .wait(ticket, SETTLE)
                .unwrap_or_else(|error| {
                    let log = machine.adapter.log();
                    panic!(
                        "{kind:?} {ticket:?} never completed: {error:?}; it is {}; device: {:?}, \
                     held {:?}; port violations {:?}; the port's log ends:\n{}",
                        machine.adapter.whereabouts(ticket),
                        machine.device.stats(),
                        machine.device.hostile_held_ids(),
                        machine.adapter.violations(),
                        log[log.len().saturating_sub(30)..].join("\n")
                    )
                });
            if self.trace {
                eprintln!("  {ticket:?} completed {:#x}", done.srb_status);
            }
            completed.push((ticket, kind, done));
        }
        let _ = machine.adapter.wait_pnp(SETTLE, |view| view.idle);
        machine.device.quiesce();
        let journal = machine.device.write_journal();
        for (ticket, kind, done) in &completed {
            if let Kind::Write {
                target,
                lun,
                lba,
                data,
            } = kind
            {
                check_write(
                    machine,
                    &journal,
                    (*ticket, done),
                    (*target, *lun, *lba),
                    data,
                );
            }
        }
        for (index, &(target, lun)) in STANDARD_BUS.iter().enumerate() {
            let lun = lun as u8;
            let lba = RESUME_AREA + index as u32 * 16;
            let data = stamped(0xAB1E_0000 + index as u64, 4096);
            for processor in 0..2 {
                let write = execute_retrying(
                    machine,
                    processor,
                    &Request::new(target, lun, &write10(lba, 8)).writing(&data),
                );
                assert_eq!(
                    write.status(),
                    SRB_STATUS_SUCCESS,
                    "resume write {target}:{lun}"
                );
                let read = execute_retrying(
                    machine,
                    processor,
                    &Request::new(target, lun, &read10(lba, 8)).reading(4096),
                );
                assert_eq!(
                    read.status(),
                    SRB_STATUS_SUCCESS,
                    "resume read {target}:{lun}"
                );
                assert!(
                    read.data == data,
                    "resume read {target}:{lun}: not the data written"
                );
            }
        }
        self.figures.resets = machine
            .miniport()
            .map_or(0, |m| m.resets.load(std::sync::atomic::Ordering::Relaxed));
        self.figures
    }
}

/// The write checks of one WRITE (see the module): SUCCESS only if the device executed it,
/// never executed after its SRB failed, and its region holds its data if it executed, zeros if
/// not.
fn check_write(
    machine: &Machine,
    journal: &[WriteRecord],
    (ticket, done): (Ticket, &crate::sim::Completion),
    (target, lun, lba): (u8, u8, u32),
    data: &[u8],
) {
    let stamp: [u8; 8] = data[..8].try_into().expect("8 bytes");
    let executed: Vec<&WriteRecord> = journal.iter().filter(|w| w.stamp == stamp).collect();
    if done.status() == SRB_STATUS_SUCCESS {
        assert!(
            !executed.is_empty(),
            "WRITE {ticket:?} at {target}:{lun} LBA {lba} completed SUCCESS, but the device never \
             executed it"
        );
    } else if let Some(failed_at) = machine.adapter.completed_at(ticket) {
        // A write after a lie about an id the device did not hold is the lie's consequence
        // (the driver took the lie for this WRITE's completion), as its chain errors are.
        for write in executed.iter().filter(|write| !write.after_a_lie) {
            assert!(
                write.at <= failed_at,
                "WRITE {ticket:?} (status {:#x}) executed after its SRB failed",
                done.srb_status
            );
        }
    }
    let blocks = u16::try_from(WRITE_SPAN).expect("a small span");
    let read = execute_retrying(
        machine,
        0,
        &Request::new(target, lun, &read10(lba, blocks)).reading(WRITE_SPAN * 512),
    );
    assert_eq!(
        read.status(),
        SRB_STATUS_SUCCESS,
        "reading back the write {ticket:?} at {target}:{lun} LBA {lba}: {:?}",
        (read.srb_status, read.scsi_status, &read.sense)
    );
    let (written, rest) = read.data.split_at(data.len().min(read.data.len()));
    if executed.is_empty() {
        assert!(
            written.iter().all(|&b| b == 0),
            "{target}:{lun} LBA {lba}: data without a write"
        );
    } else {
        assert!(written == data, "{target}:{lun} LBA {lba}: not its data");
    }
    assert!(
        rest.iter().all(|&b| b == 0),
        "{target}:{lun} LBA {lba}: data past the write"
    );
}

/// Runs `request` as the class driver does once the device behaves again: a request that
/// ends BUS_RESET or BUSY (a reset the miniport was still finishing), or CHECK CONDITION (the
/// UNIT ATTENTION a reset leaves), is sent again, up to 8 times in all.
fn execute_retrying(
    machine: &Machine,
    processor: u32,
    request: &Request,
) -> crate::sim::Completion {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let done = machine
            .adapter
            .execute(processor, request)
            .unwrap_or_else(|error| panic!("{:?}: {error:?}", request.cdb));
        let retry = matches!(
            done.status(),
            rvscsi::storport::SRB_STATUS_BUS_RESET | rvscsi::storport::SRB_STATUS_BUSY
        ) || done.scsi_status == CHECK_CONDITION;
        if !retry || attempts == 8 {
            return done;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SCSI status CHECK CONDITION.
const CHECK_CONDITION: u8 = 0x02;

/// A command's answer as the script writes it: mostly OK/GOOD (so that commands execute and
/// the interesting lies are in the other fields), often a failure, sometimes any bytes.
fn answer(script: &mut Script) -> HostileAnswer {
    let how = script.u8();
    let (response, status) = match how % 4 {
        0 | 1 => (0, 0),
        2 => (script.u8() % 10, 0),
        _ => (script.u8(), script.u8()),
    };
    HostileAnswer {
        response,
        status,
        status_qualifier: if how & 0x10 != 0 { script.u16() } else { 0 },
        sense_len: if how & 0x20 != 0 { script.length() } else { 0 },
        sense_fill: script.u8(),
        resid: if how & 0x40 != 0 { script.length() } else { 0 },
        used_len: (how & 0x80 != 0).then(|| script.length()),
        interrupt: how & 0x08 == 0,
    }
}
