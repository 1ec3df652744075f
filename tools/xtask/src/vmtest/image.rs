//! `cargo xtask vmtest`'s runs of the shipped image: the guest boots with `mode=image`, its
//! StorPort host loads the `rvscsi.sys` built into it (`RVSCSI_GUEST_IMAGE`, the package
//! [`run_vmtest`](super::run_vmtest) builds first) and drives QEMU's virtio-scsi-pci through the
//! image (see tools/vmtest-guest/src/guest/image_run.rs).
//!
//! A run passes only if QEMU exits with the guest's success status, every expected `RESULT
//! image-*` line says PASS, the MSI-X deliveries the guest's StorPort handed the image equal
//! the interrupts QEMU traced (`virtio_notify`), in total and per request queue, and at queue
//! depth 1 each I/O took exactly one kick and one interrupt. The planted configuration
//! (`drop-completion=`) must instead fail, naming the SRB whose RequestComplete the guest's
//! StorPort dropped as never completed: the completions come from the image.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use serde_json::json;

use super::report::QueueCounts;
use super::{
    Accel, GUEST_SUCCESS, QEMU, Qmp, RUN_LIMIT, SILENCE_LIMIT, base_command, fresh_disk, kill,
    parse_trace, serial_lines, wait_with_limit,
};

/// Bytes of each of the two disks.
const DISK_BYTES: u64 = 16 << 20;
/// LUN 0 has this WWN (an NAA designator in VPD 0x83); LUN 1 has none.
const WWN: &str = "0x5000c50015ea71ac";
/// The serials QEMU reports in VPD 0x80 for LUNs 0 and 1.
const SERIALS: [&str; 2] = ["RVSCSI-IMAGE-0", "RVSCSI-IMAGE-1"];
/// Request queues (and logical processors: the guest's StorPort reports four, one per queue).
const REQUEST_QUEUES: u16 = 4;
/// The virtqueue of the first request queue (after controlq and eventq).
const FIRST_REQUEST_VQ: u16 = 2;
/// The RequestComplete the planted configuration drops (during the depth-32 phase).
const DROPPED_COMPLETION: u64 = 700;
/// The RequestComplete the planted configuration plays twice (during the depth-1 phase).
const REPEATED_COMPLETION: u64 = 300;

/// One boot of the guest running the image.
pub struct ImageConfig {
    /// Name, also the prefix of its files in target/vmtest.
    pub name: &'static str,
    /// Extra virtio-scsi-pci properties.
    device: &'static str,
    /// The ring layout the image must negotiate.
    ring: &'static str,
    /// `srb=classic` makes the guest's StorPort hand SCSI_REQUEST_BLOCKs instead of SRB_EX.
    classic: bool,
    /// The planted fault: drop this RequestComplete, and expect the run to catch it.
    drop_completion: Option<u64>,
    /// The planted lost interrupt (message, arrival): withheld from the image, whose HwTimer
    /// must complete the request; the run passes.
    lose_interrupt: Option<(u16, u64)>,
    /// The planted double completion: this RequestComplete is played twice, and the guest's
    /// StorPort must report the second as a violation of exactly-once completion.
    repeat_completion: Option<u64>,
    /// `adapter-reset=after-lost-interrupt`: after enumeration only, the adapter-level reset
    /// of a request whose interrupt was lost ([`check_adapter_reset`] judges it).
    adapter_reset: bool,
    /// vCPUs: 2 runs `smp=2` ([`check_smp2`] judges it).
    cpus: u8,
    /// With two vCPUs, the planted `smp=2-misrouted` instead ([`check_misrouted`]).
    misrouted: bool,
}

/// The image configurations `cargo xtask vmtest` runs by default.
pub const CONFIGS: &[ImageConfig] = &[
    ImageConfig {
        name: "image-split",
        device: "",
        ring: "split",
        classic: false,
        drop_completion: None,
        lose_interrupt: None,
        repeat_completion: None,
        adapter_reset: false,
        cpus: 1,
        misrouted: false,
    },
    ImageConfig {
        // Modern-only device offering the packed ring, which the image takes.
        name: "image-packed",
        device: ",packed=on,disable-legacy=on",
        ring: "packed",
        classic: false,
        drop_completion: None,
        lose_interrupt: None,
        repeat_completion: None,
        adapter_reset: false,
        cpus: 1,
        misrouted: false,
    },
    ImageConfig {
        // Classic SRBs (SrbType SCSI_REQUEST_BLOCK), which the image also accepts.
        name: "image-classic",
        device: "",
        ring: "split",
        classic: true,
        drop_completion: None,
        lose_interrupt: None,
        repeat_completion: None,
        adapter_reset: false,
        cpus: 1,
        misrouted: false,
    },
    ImageConfig {
        // The planted fault: the guest's StorPort drops one RequestComplete.
        name: "image-planted-drop",
        device: "",
        ring: "split",
        classic: false,
        drop_completion: Some(DROPPED_COMPLETION),
        lose_interrupt: None,
        repeat_completion: None,
        adapter_reset: false,
        cpus: 1,
        misrouted: false,
    },
    ImageConfig {
        // One MSI-X message of the depth-1 queue (message 3) never reaches the image: no later
        // interrupt comes, so its HwTimer must find the completion and finish the request.
        name: "image-lost-interrupt",
        device: "",
        ring: "split",
        classic: false,
        drop_completion: None,
        lose_interrupt: Some((3, 100)),
        repeat_completion: None,
        adapter_reset: false,
        cpus: 1,
        misrouted: false,
    },
    ImageConfig {
        // The exactly-once rule's planted offender: one RequestComplete arrives twice.
        name: "image-planted-double",
        device: "",
        ring: "split",
        classic: false,
        drop_completion: None,
        lose_interrupt: None,
        repeat_completion: Some(REPEATED_COMPLETION),
        adapter_reset: false,
        cpus: 1,
        misrouted: false,
    },
    ImageConfig {
        // Enumeration, then a READ whose interrupt is withheld and which the guest's StorPort
        // times out with the adapter-level reset (ScsiStopAdapter, ScsiRestartAdapter).
        name: "image-adapter-reset",
        device: "",
        ring: "split",
        classic: false,
        drop_completion: None,
        lose_interrupt: None,
        repeat_completion: None,
        adapter_reset: true,
        cpus: 1,
        misrouted: false,
    },
    ImageConfig {
        // Two vCPUs (MTTCG under TCG): after enumeration, both CPUs write and verify at once,
        // each on its own request queue, with its queue's MSI-X message aimed at it.
        name: "image-smp2",
        device: "",
        ring: "split",
        classic: false,
        drop_completion: None,
        lose_interrupt: None,
        repeat_completion: None,
        adapter_reset: false,
        cpus: 2,
        misrouted: false,
    },
    ImageConfig {
        // The planted offender of the two-CPU run: processor 1's MSI-X message left aimed at
        // CPU 0, so CPU 1's completions arrive on CPU 0; the run must fail saying so.
        name: "image-smp2-misrouted",
        device: "",
        ring: "split",
        classic: false,
        drop_completion: None,
        lose_interrupt: None,
        repeat_completion: None,
        adapter_reset: false,
        cpus: 2,
        misrouted: true,
    },
];

/// The `RESULT` names a passing run reports as PASS.
const EXPECTED_RESULTS: &[&str] = &[
    "boot",
    "image-load",
    "image-start",
    "image-features",
    "image-test-unit-ready",
    "image-report-luns",
    "image-inquiry",
    "image-vpd-00",
    "image-vpd-80",
    "image-vpd-83",
    "image-read-capacity",
    "image-qd1",
    "image-qd32",
    "image-every-queue",
    "image-max-transfer",
    "image-clusdisk",
    "image-lun-reset",
    "image-abort",
    "image-bus-reset",
    "image-wmi",
    "image-hotplug-add",
    "image-hotplug-remove",
    "image-rules",
    "image-done",
];

impl ImageConfig {
    /// The guest's command line.
    fn cmdline(&self) -> String {
        let mut line = format!(
            "mode=image ring={} serial0={} serial1={} wwn={WWN} disk-bytes={DISK_BYTES}",
            self.ring, SERIALS[0], SERIALS[1]
        );
        if self.classic {
            line.push_str(" srb=classic");
        }
        if let Some(number) = self.drop_completion {
            let _ = write!(line, " drop-completion={number}");
        }
        if let Some((message, arrival)) = self.lose_interrupt {
            let _ = write!(line, " lose-interrupt={message}:{arrival}");
        }
        if let Some(number) = self.repeat_completion {
            let _ = write!(line, " repeat-completion={number}");
        }
        if self.adapter_reset {
            line.push_str(" adapter-reset=after-lost-interrupt");
        }
        match (self.cpus, self.misrouted) {
            (2, false) => line.push_str(" smp=2"),
            (2, true) => line.push_str(" smp=2-misrouted"),
            _ => {}
        }
        line
    }
}

/// A measured phase: `IMAGE-PHASE <name> begin`, then `IMAGE-PHASE <name> end processors
/// <p,...> depth <d> ios <n> nanos <t>` (the guest's own clock: the serial lines' arrival times
/// on a loaded host say more about the reader thread than about the phase).
#[derive(Clone, Debug, Default, PartialEq)]
struct Phase {
    processors: Vec<u16>,
    depth: u64,
    ios: u64,
    /// Guest nanoseconds the phase took.
    nanos: u64,
}

/// What the image run printed, parsed.
#[derive(Debug, Default)]
struct ImageReport {
    /// `RESULT <name> PASS|FAIL <details>`, in order.
    results: Vec<(String, bool, String)>,
    phases: BTreeMap<String, Phase>,
    /// `IMAGE-STAT message <m> interrupts <k>`: MSI-X deliveries per message.
    deliveries: BTreeMap<u16, u64>,
    /// `IMAGE-COUNTERS name value ...`.
    counters: BTreeMap<String, u64>,
    /// `IMAGE-QUEUE index <i> size <s> requests <r> kicks <k> interrupts <n> ...`: the image's
    /// own counters (its `Rvscsi_QueueStatistics` WMI class), by request queue.
    image_queues: BTreeMap<u16, BTreeMap<String, u64>>,
    /// `IMAGE-SMP cpu <c> ios <n> nanos <t> completions <k> deliveries <d> queue-messages <q>`:
    /// what each CPU did in the two-CPU phase.
    cpus: BTreeMap<u16, BTreeMap<String, u64>>,
    /// `storport: planted fault: ... of SRB <address> dropped`.
    dropped_srb: Option<String>,
    /// `storport: planted fault: ... of SRB <address> played twice`.
    repeated_srb: Option<String>,
    /// Panics, CPU exceptions and rule violations.
    crashes: Vec<String>,
}

impl ImageReport {
    fn parse<'a>(lines: impl Iterator<Item = (Duration, &'a str)>) -> Self {
        let mut report = Self::default();
        for (_, line) in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["RESULT", name, verdict @ ("PASS" | "FAIL"), details @ ..] => {
                    report.results.push((
                        (*name).to_owned(),
                        *verdict == "PASS",
                        details.join(" "),
                    ));
                }
                ["IMAGE-PHASE", name, "begin"] => {
                    report.phases.entry((*name).to_owned()).or_default();
                }
                [
                    "IMAGE-PHASE",
                    name,
                    "end",
                    "processors",
                    processors,
                    "depth",
                    depth,
                    "ios",
                    ios,
                    "nanos",
                    nanos,
                ] => {
                    let phase = report.phases.entry((*name).to_owned()).or_default();
                    phase.nanos = nanos.parse().unwrap_or(0);
                    phase.processors = processors
                        .split(',')
                        .filter_map(|p| p.parse().ok())
                        .collect();
                    phase.depth = depth.parse().unwrap_or(0);
                    phase.ios = ios.parse().unwrap_or(0);
                }
                ["IMAGE-STAT", "message", message, "interrupts", count] => {
                    if let (Ok(message), Ok(count)) = (message.parse(), count.parse()) {
                        report.deliveries.insert(message, count);
                    }
                }
                ["IMAGE-COUNTERS", fields @ ..] => {
                    for pair in fields.chunks(2) {
                        if let [name, value] = pair
                            && let Ok(value) = value.parse()
                        {
                            report.counters.insert((*name).to_owned(), value);
                        }
                    }
                }
                ["IMAGE-SMP", "cpu", cpu, fields @ ..] => {
                    if let Ok(cpu) = cpu.parse() {
                        let entry = report.cpus.entry(cpu).or_default();
                        for pair in fields.chunks(2) {
                            if let [name, value] = pair
                                && let Ok(value) = value.parse()
                            {
                                entry.insert((*name).to_owned(), value);
                            }
                        }
                    }
                }
                ["IMAGE-QUEUE", "index", index, fields @ ..] => {
                    if let Ok(index) = index.parse() {
                        let queue = report.image_queues.entry(index).or_default();
                        for pair in fields.chunks(2) {
                            if let [name, value] = pair
                                && let Ok(value) = value.parse()
                            {
                                queue.insert((*name).to_owned(), value);
                            }
                        }
                    }
                }
                ["storport:", "planted", "fault:", .., "SRB", srb, "dropped"] => {
                    report.dropped_srb = Some((*srb).to_owned());
                }
                [
                    "storport:",
                    "planted",
                    "fault:",
                    ..,
                    "SRB",
                    srb,
                    "played",
                    "twice",
                ] => {
                    report.repeated_srb = Some((*srb).to_owned());
                }
                ["PANIC" | "EXCEPTION" | "VIOLATION", ..] => report.crashes.push(line.to_owned()),
                _ => {}
            }
        }
        report
    }
}

/// QEMU for `config`: the guest, the device with its two LUNs (LUN 0 with a WWN), the drive
/// LUN 2 is hot-plugged from, QMP, and the trace events the checks read.
fn qemu_command(
    config: &ImageConfig,
    guest: &Path,
    accel: Accel,
    disks: &[std::path::PathBuf; 2],
    hotplug_disk: &Path,
    qmp_socket: &Path,
) -> std::process::Command {
    let mut command = base_command(guest, accel, &config.cmdline(), config.cpus);
    command.arg("-device").arg(format!(
        "virtio-scsi-pci,id=scsi0,num_queues={REQUEST_QUEUES},ioeventfd=off{}",
        config.device
    ));
    for (lun, disk) in disks.iter().enumerate() {
        let wwn = if lun == 0 {
            format!(",wwn={WWN}")
        } else {
            String::new()
        };
        command
            .arg("-drive")
            .arg(format!(
                "if=none,id=disk{lun},format=raw,file={}",
                disk.display()
            ))
            .arg("-device")
            .arg(format!(
                "scsi-hd,drive=disk{lun},bus=scsi0.0,scsi-id=0,lun={lun},serial={}{wwn}",
                SERIALS[lun]
            ));
    }
    command
        .arg("-drive")
        .arg(format!(
            "if=none,id=hp0,format=raw,file={}",
            hotplug_disk.display()
        ))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_socket.display()))
        .args(["-trace", "enable=virtio_queue_notify"])
        .args(["-trace", "enable=virtio_notify"])
        .args(["-trace", "enable=virtio_set_status"]);
    command
}

/// Boots `config` with the guest at `guest` and judges the outcome; the summary names the
/// configuration and the image it ran.
pub fn run_config(
    config: &ImageConfig,
    guest: &Path,
    image: &Path,
    work: &Path,
    accel: Accel,
) -> Result<String, String> {
    let file = |suffix: &str| work.join(format!("{}-{suffix}", config.name));
    let disks = [file("disk0.raw"), file("disk1.raw")];
    for disk in &disks {
        fresh_disk(disk, DISK_BYTES)?;
    }
    let hotplug_disk = file("hotplug.raw");
    fresh_disk(&hotplug_disk, DISK_BYTES)?;
    let qmp_socket = file("qmp.sock");
    let _ = fs::remove_file(&qmp_socket);
    let trace_log = file("trace.log");
    let _ = fs::remove_file(&trace_log);
    let mut command = qemu_command(config, guest, accel, &disks, &hotplug_disk, &qmp_socket);
    command.arg("-D").arg(&trace_log);
    let stderr_path = file("qemu.stderr");
    let stderr =
        fs::File::create(&stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    eprintln!("vmtest: [{}] starting {command:?}", config.name);
    let started = Instant::now();
    let mut child = command
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let receiver = serial_lines(&mut child)?;
    let mut qmp = match Qmp::connect(&qmp_socket, Duration::from_secs(30)) {
        Ok(qmp) => qmp,
        Err(error) => {
            kill(&mut child);
            return Err(error);
        }
    };
    let mut lines = Vec::new();
    loop {
        let left = RUN_LIMIT.saturating_sub(started.elapsed());
        match receiver.recv_timeout(left.min(SILENCE_LIMIT)) {
            Ok((at, line)) => {
                println!("[{}] {line}", config.name);
                // The guest asks for LUN 2 to come and go while its I/O runs.
                let answered = match line.as_str() {
                    "HOTPLUG add" => qmp.execute(
                        "device_add",
                        &json!({
                            "driver": "scsi-hd", "id": "hotdisk", "drive": "hp0",
                            "bus": "scsi0.0", "scsi-id": 0, "lun": 2,
                            "serial": "RVSCSI-IMAGE-HP",
                        }),
                    ),
                    "HOTPLUG remove" => qmp
                        .execute_unless_gone("device_del", &json!({ "id": "hotdisk" }))
                        .map(|()| serde_json::Value::Null),
                    _ => Ok(serde_json::Value::Null),
                };
                if let Err(error) = answered {
                    kill(&mut child);
                    return Err(format!("QMP: {error}"));
                }
                lines.push((at.saturating_duration_since(started), line));
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                kill(&mut child);
                return Err(format!(
                    "guest silent or over time; last line {:?}",
                    lines.last()
                ));
            }
        }
    }
    let status = wait_with_limit(&mut child, Duration::from_secs(10))?;
    let mut serial = String::new();
    for (at, line) in &lines {
        let _ = writeln!(serial, "{:>8.3} {line}", at.as_secs_f64());
    }
    let _ = fs::write(file("serial.log"), serial);
    let trace =
        fs::read_to_string(&trace_log).map_err(|e| format!("{}: {e}", trace_log.display()))?;
    let counts = parse_trace(&trace);
    let report = ImageReport::parse(lines.iter().map(|(at, line)| (*at, line.as_str())));
    let verdict = match (config.drop_completion, config.repeat_completion) {
        (Some(number), _) => check_planted(number, status, &report),
        (None, Some(number)) => check_repeated(number, status, &report),
        (None, None) if config.misrouted => check_misrouted(status, &report),
        (None, None) if config.cpus == 2 => check_smp2(status, &report, &counts),
        (None, None) if config.adapter_reset => {
            check_adapter_reset(status, &report, &counts, &status_values(&trace))
        }
        (None, None) => check(config, status, &report, &counts),
    }?;
    Ok(format!(
        "{}: image {} ({:?}): {verdict}",
        config.name,
        image.display(),
        accel.name()
    ))
}

/// A passing run: every result, the interrupts through the IDT equal QEMU's, and the figures.
fn check(
    config: &ImageConfig,
    status: Option<i32>,
    report: &ImageReport,
    counts: &BTreeMap<u16, QueueCounts>,
) -> Result<String, String> {
    let mut problems = Vec::new();
    if status != Some(GUEST_SUCCESS) {
        problems.push(format!("QEMU exited with {status:?}, not {GUEST_SUCCESS}"));
    }
    problems.extend(report.crashes.iter().cloned());
    for (name, passed, details) in &report.results {
        if !passed {
            problems.push(format!("{name} FAIL {details}"));
        }
    }
    let lost_expected = config.lose_interrupt.map(|_| "image-lost-interrupt");
    for expected in EXPECTED_RESULTS.iter().chain(lost_expected.as_ref()) {
        if !report
            .results
            .iter()
            .any(|(name, passed, _)| name == expected && *passed)
        {
            problems.push(format!("no PASS for {expected}"));
        }
    }
    // What QEMU sent arrived through the IDT in the image's message routine. A message sent
    // while its vector is still pending in the local APIC (the image holds the message's lock
    // at DIRQL) merges with it, as on real hardware, so deliveries may fall short of what was
    // sent, never exceed it; at depth 1 nothing can merge (checked below through the figures).
    let traced: u64 = counts.values().map(|queue| queue.interrupts).sum();
    let delivered = report.counters.get("interrupts").copied().unwrap_or(0);
    if delivered > traced || delivered == 0 {
        problems.push(format!(
            "QEMU traced {traced} interrupts, the guest's StorPort delivered {delivered}"
        ));
    }
    // Per request queue: vq 2 + p takes message 3 + p (config, controlq, eventq first).
    for queue in 0..REQUEST_QUEUES {
        let vq = FIRST_REQUEST_VQ + queue;
        let traced = counts.get(&vq).map_or(0, |counts| counts.interrupts);
        let delivered = report.deliveries.get(&(vq + 1)).copied().unwrap_or(0);
        if delivered > traced || delivered == 0 {
            problems.push(format!(
                "vq {vq}: QEMU traced {traced} interrupts, message {} delivered {delivered}",
                vq + 1
            ));
        }
    }
    problems.extend(image_counters(report, counts));
    let mut figures = String::new();
    for name in ["qd1", "qd32", "every-queue"] {
        match phase_figures(name, report, counts) {
            Ok(line) => figures.push_str(&line),
            Err(problem) => problems.push(problem),
        }
    }
    let start = report
        .results
        .iter()
        .find(|(name, ..)| name == "image-start")
        .map_or("", |(_, _, details)| details.as_str());
    let withheld = report.counters.get("lost").copied().unwrap_or(0);
    let bus_reset = report
        .results
        .iter()
        .find(|(name, ..)| name == "image-bus-reset")
        .map_or("", |(_, _, details)| details.as_str());
    let abort = report
        .results
        .iter()
        .find(|(name, ..)| name == "image-abort")
        .map_or("", |(_, _, details)| details.as_str());
    if problems.is_empty() {
        Ok(format!(
            "ring {}, {start}; CLUSDISK probes, LUN reset, abort ({abort}), HwResetBus ({bus_reset}), LUN 2 hot-plugged and removed under I/O; the image's WMI queue counters agree with QEMU's kicks and the delivered interrupts; {figures}{traced} interrupts traced, {delivered} delivered to the image ({withheld} withheld by the planted fault, {} merged while pending)",
            config.ring,
            (traced - delivered).saturating_sub(withheld)
        ))
    } else {
        Err(problems.join("\n"))
    }
}

/// The image's own per-queue counters against QEMU's trace and the guest StorPort's count:
/// its kicks are QEMU's notifications of that virtqueue, its interrupts the MSI-X deliveries
/// of that queue's message, and the queues measured alone (depth 1 on queue 0, depth 32 on
/// queue 1) took exactly their phase's requests.
fn image_counters(report: &ImageReport, counts: &BTreeMap<u16, QueueCounts>) -> Vec<String> {
    let mut problems = Vec::new();
    if report.image_queues.len() != usize::from(REQUEST_QUEUES) {
        problems.push(format!(
            "the image reported {} request queues, not {REQUEST_QUEUES}",
            report.image_queues.len()
        ));
    }
    for (index, queue) in &report.image_queues {
        let field = |name: &str| queue.get(name).copied().unwrap_or(u64::MAX);
        let vq = FIRST_REQUEST_VQ + index;
        let traced = counts.get(&vq).copied().unwrap_or_default();
        let delivered = report.deliveries.get(&(vq + 1)).copied().unwrap_or(0);
        if field("kicks") != traced.notifies {
            problems.push(format!(
                "queue {index}: the image counted {} kicks, QEMU traced {} notifications of vq {vq}",
                field("kicks"),
                traced.notifies
            ));
        }
        if field("interrupts") != delivered {
            problems.push(format!(
                "queue {index}: the image counted {} interrupts, the guest's StorPort delivered {delivered}",
                field("interrupts")
            ));
        }
        let alone = match index {
            0 => report.phases.get("qd1"),
            1 => report.phases.get("qd32"),
            _ => None,
        };
        if let Some(phase) = alone
            && field("requests") != phase.ios
        {
            problems.push(format!(
                "queue {index}: the image counted {} requests, its phase sent {}",
                field("requests"),
                phase.ios
            ));
        }
    }
    problems
}

/// Per-I/O figures of `x` over `ios`.
#[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
fn per_io(x: u64, ios: u64) -> f64 {
    x as f64 / ios.max(1) as f64
}

/// The figures of phase `name` (kicks and interrupts from QEMU's trace of its queues, MSI-X
/// deliveries from the guest's StorPort, IOPS from the guest's clock), or why they are
/// wrong: at depth 1 each I/O takes exactly one kick, one interrupt sent and one delivered; at
/// depth 32 no more than that.
fn phase_figures(
    name: &str,
    report: &ImageReport,
    counts: &BTreeMap<u16, QueueCounts>,
) -> Result<String, String> {
    let phase = report
        .phases
        .get(name)
        .ok_or_else(|| format!("no figures for phase {name}"))?;
    let (mut kicks, mut interrupts, mut delivered) = (0, 0, 0);
    for processor in &phase.processors {
        let vq = FIRST_REQUEST_VQ + processor;
        let queue = counts.get(&vq).copied().unwrap_or_default();
        kicks += queue.notifies;
        interrupts += queue.interrupts;
        delivered += report.deliveries.get(&(vq + 1)).copied().unwrap_or(0);
    }
    let seconds = per_io(phase.nanos, 1) / 1e9;
    let ios = phase.ios;
    // An interrupt the planted fault withheld was sent by QEMU but never delivered.
    let withheld = report.counters.get("lost").copied().unwrap_or(0);
    let rate = if seconds > 0.0 {
        per_io(ios, 1) / seconds
    } else {
        0.0
    };
    if name == "qd1" && (kicks != ios || interrupts != ios || delivered + withheld != ios) {
        return Err(format!(
            "qd1: {ios} I/Os took {kicks} kicks and {interrupts} interrupts ({delivered} delivered), not one each"
        ));
    }
    if name == "qd32" && (kicks > ios || interrupts > ios) {
        return Err(format!(
            "qd32: {ios} I/Os took {kicks} kicks and {interrupts} interrupts"
        ));
    }
    let queues: Vec<u16> = phase
        .processors
        .iter()
        .map(|p| FIRST_REQUEST_VQ + p)
        .collect();
    if name == "every-queue" {
        // Its queues also carry enumeration, the largest transfer, the TMFs and the writes
        // around the hot-plug, so QEMU's counts for them are not its own.
        return Ok(format!(
            "{name} (depth {}, queues {queues:?}): {ios} I/Os, {rate:.0} IOPS; ",
            phase.depth
        ));
    }
    Ok(format!(
        "{name} (depth {}, queues {queues:?}): {ios} I/Os, {rate:.0} IOPS, {:.3} kicks/IO, {:.3} interrupts/IO traced, {:.3} delivered/IO; ",
        phase.depth,
        per_io(kicks, ios),
        per_io(interrupts, ios),
        per_io(delivered, ios),
    ))
}

/// The planted run: it must fail, naming the SRB whose RequestComplete was dropped as never
/// completed, and nothing else may have gone wrong first.
fn check_planted(number: u64, status: Option<i32>, report: &ImageReport) -> Result<String, String> {
    let Some(srb) = &report.dropped_srb else {
        return Err(format!(
            "RequestComplete #{number} was never dropped (the run ended first?)"
        ));
    };
    let caught = report.results.iter().find(|(_, passed, details)| {
        !passed && details.contains("never completed") && details.contains(srb.as_str())
    });
    let earlier = report
        .results
        .iter()
        .filter(|(name, passed, details)| {
            !passed && !details.contains("never completed") && name != "image-rules"
        })
        .count();
    match caught {
        Some((name, _, details)) if status != Some(GUEST_SUCCESS) && earlier == 0 => Ok(format!(
            "planted fault caught: RequestComplete #{number} of SRB {srb} dropped, {name} FAIL {details}"
        )),
        _ => Err(format!(
            "the dropped RequestComplete of SRB {srb} was not caught as such (exit {status:?}, results {:?})",
            report.results
        )),
    }
}

/// The planted double completion: the guest's StorPort must have reported the second
/// RequestComplete of that SRB as a violation, failing only the rules check.
fn check_repeated(
    number: u64,
    status: Option<i32>,
    report: &ImageReport,
) -> Result<String, String> {
    let Some(srb) = &report.repeated_srb else {
        return Err(format!("RequestComplete #{number} was never played twice"));
    };
    let wanted = format!("VIOLATION RequestComplete of SRB {srb}, which is not outstanding");
    let caught = report.crashes.iter().find(|line| line.starts_with(&wanted));
    let others: Vec<&(String, bool, String)> = report
        .results
        .iter()
        .filter(|(name, passed, _)| !passed && name != "image-rules")
        .collect();
    let rules_failed = report
        .results
        .iter()
        .any(|(name, passed, _)| name == "image-rules" && !passed);
    match caught {
        Some(line)
            if status != Some(GUEST_SUCCESS)
                && rules_failed
                && others.is_empty()
                && report.crashes.len() == 1 =>
        {
            Ok(format!(
                "planted fault caught: RequestComplete #{number} of SRB {srb} played twice, {line}"
            ))
        }
        _ => Err(format!(
            "the repeated RequestComplete of SRB {srb} was not caught as such (exit {status:?}, violations {:?}, failed {others:?})",
            report.crashes
        )),
    }
}

/// The `RESULT` names the adapter-reset configuration reports as PASS (enumeration, then the
/// reset instead of the pattern phases).
const ADAPTER_RESET_RESULTS: &[&str] = &[
    "boot",
    "image-load",
    "image-start",
    "image-features",
    "image-test-unit-ready",
    "image-report-luns",
    "image-inquiry",
    "image-vpd-00",
    "image-vpd-80",
    "image-vpd-83",
    "image-read-capacity",
    "image-adapter-reset",
    "image-rules",
    "image-done",
];

/// The `RESULT` names the two-CPU configuration reports as PASS.
const SMP2_RESULTS: &[&str] = &[
    "boot",
    "image-load",
    "image-start",
    "image-features",
    "image-test-unit-ready",
    "image-report-luns",
    "image-inquiry",
    "image-read-capacity",
    "image-smp2",
    "image-rules",
    "image-done",
];

/// I/Os each CPU makes in the two-CPU phase (512 regions written, then read and verified).
const SMP2_IOS_PER_CPU: u64 = 1024;

/// The two-CPU run: every result passes with no violation; each CPU made its
/// [`SMP2_IOS_PER_CPU`] I/Os with every completion on itself and every MSI-X delivery of its
/// queue's message on itself; QEMU sent at least as many interrupts on each queue as its CPU
/// received (merges only lower deliveries) and took at most a kick per I/O.
fn check_smp2(
    status: Option<i32>,
    report: &ImageReport,
    counts: &BTreeMap<u16, QueueCounts>,
) -> Result<String, String> {
    let mut problems = Vec::new();
    if status != Some(GUEST_SUCCESS) {
        problems.push(format!("QEMU exited with {status:?}, not {GUEST_SUCCESS}"));
    }
    problems.extend(report.crashes.iter().cloned());
    for (name, passed, details) in &report.results {
        if !passed {
            problems.push(format!("{name} FAIL {details}"));
        }
    }
    for expected in SMP2_RESULTS {
        if !report
            .results
            .iter()
            .any(|(name, passed, _)| name == expected && *passed)
        {
            problems.push(format!("no PASS for {expected}"));
        }
    }
    let mut figures = String::new();
    for cpu in 0..2_u16 {
        let Some(fields) = report.cpus.get(&cpu) else {
            problems.push(format!("no IMAGE-SMP line for CPU {cpu}"));
            continue;
        };
        let field = |name: &str| fields.get(name).copied().unwrap_or(0);
        let (ios, completions) = (field("ios"), field("completions"));
        let (deliveries, on_queue) = (field("deliveries"), field("queue-messages"));
        // Processor `cpu` submits on request queue `cpu`: virtqueue 2 + cpu.
        let vq = FIRST_REQUEST_VQ + cpu;
        let traced = counts.get(&vq).copied().unwrap_or_default();
        if ios != SMP2_IOS_PER_CPU || completions != ios {
            problems.push(format!(
                "CPU {cpu}: {ios} I/Os (want {SMP2_IOS_PER_CPU}), {completions} completions on it"
            ));
        }
        if deliveries == 0 || deliveries != on_queue || deliveries > traced.interrupts {
            problems.push(format!(
                "CPU {cpu}: {deliveries} MSI-X deliveries, {on_queue} of its queue's message, QEMU sent {} on vq {vq}",
                traced.interrupts
            ));
        }
        if traced.notifies == 0 || traced.notifies > ios {
            problems.push(format!("vq {vq}: {} kicks for {ios} I/Os", traced.notifies));
        }
        let _ = write!(
            figures,
            "CPU {cpu}: {ios} I/Os ({:.0} IOPS), {completions} completions and {deliveries} MSI-X deliveries on it, {:.3} kicks/IO, {:.3} interrupts/IO; ",
            per_io(ios * 1_000_000_000, field("nanos").max(1)),
            per_io(traced.notifies, ios),
            per_io(traced.interrupts, ios)
        );
    }
    let waits = report.counters.get("lock-waits").copied().unwrap_or(0);
    if problems.is_empty() {
        Ok(format!(
            "both CPUs at once, depth 16 each on its own queue: {figures}every completion on its submitter; {waits} lock acquisitions waited for the other CPU"
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// The planted misrouting: the run must fail in `image-smp2` only, naming completions made on
/// another CPU than the submitter, with no rule violation (the image did nothing wrong) and
/// every other result passing.
fn check_misrouted(status: Option<i32>, report: &ImageReport) -> Result<String, String> {
    let failed: Vec<&(String, bool, String)> = report
        .results
        .iter()
        .filter(|(_, passed, _)| !passed)
        .collect();
    match failed.as_slice() {
        [(name, _, details)]
            if name == "image-smp2"
                && details.contains("on another CPU than the submitter")
                && status != Some(GUEST_SUCCESS)
                && report.crashes.is_empty() =>
        {
            Ok(format!("planted fault caught: image-smp2 FAIL {details}"))
        }
        _ => Err(format!(
            "the misrouted message was not caught as such (exit {status:?}, failed {failed:?}, crashes {:?})",
            report.crashes
        )),
    }
}

/// The I/Os each processor makes after ScsiRestartAdapter (a READ of the data written before
/// the reset, a WRITE and its READ back); processor 0 makes none other after the reset, and
/// two before it (the WRITE and the READ that times out).
const IOS_AFTER_RESTART: u64 = 3;

/// Every value QEMU traced the driver writing to `device_status`, in order.
fn status_values(trace: &str) -> Vec<u8> {
    trace
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("virtio_set_status ")?;
            let mut words = rest.split_whitespace();
            while let Some(word) = words.next() {
                if word == "val" {
                    return words.next()?.parse().ok();
                }
            }
            None
        })
        .collect()
}

/// The adapter-level reset: every result passes with no violation, the device was reset (a
/// `device_status` of 0 after a DRIVER_OK) and brought back to DRIVER_OK, and QEMU's counts
/// since that last reset are only what the guest sent after ScsiRestartAdapter: exactly
/// [`IOS_AFTER_RESTART`] kicks and interrupts on processor 0's queue (which would show the two
/// requests made before it had the device not been reset), at least as many on the others.
fn check_adapter_reset(
    status: Option<i32>,
    report: &ImageReport,
    counts: &BTreeMap<u16, QueueCounts>,
    statuses: &[u8],
) -> Result<String, String> {
    /// DRIVER_OK with ACKNOWLEDGE, DRIVER and FEATURES_OK.
    const RUNNING: u8 = 0x0f;
    let mut problems = Vec::new();
    if status != Some(GUEST_SUCCESS) {
        problems.push(format!("QEMU exited with {status:?}, not {GUEST_SUCCESS}"));
    }
    problems.extend(report.crashes.iter().cloned());
    for (name, passed, details) in &report.results {
        if !passed {
            problems.push(format!("{name} FAIL {details}"));
        }
    }
    for expected in ADAPTER_RESET_RESULTS {
        if !report
            .results
            .iter()
            .any(|(name, passed, _)| name == expected && *passed)
        {
            problems.push(format!("no PASS for {expected}"));
        }
    }
    let last_reset = statuses.iter().rposition(|value| *value == 0);
    let running_before = last_reset.is_some_and(|at| statuses[..at].contains(&RUNNING));
    let running_after = last_reset.is_some_and(|at| statuses[at..].last() == Some(&RUNNING));
    if !(running_before && running_after) {
        problems.push(format!(
            "QEMU did not see a running device reset and brought back: device_status {statuses:?}"
        ));
    }
    for queue in 0..REQUEST_QUEUES {
        let vq = FIRST_REQUEST_VQ + queue;
        let traced = counts.get(&vq).copied().unwrap_or_default();
        let exact = queue == 0;
        let kicks_ok = if exact {
            traced.notifies == IOS_AFTER_RESTART
        } else {
            traced.notifies >= IOS_AFTER_RESTART
        };
        if !kicks_ok || traced.interrupts != traced.notifies {
            problems.push(format!(
                "vq {vq} since the last reset: {} kicks, {} interrupts ({}{IOS_AFTER_RESTART} requests made after the restart, one interrupt each)",
                traced.notifies,
                traced.interrupts,
                if exact { "" } else { "at least " }
            ));
        }
    }
    let details = report
        .results
        .iter()
        .find(|(name, ..)| name == "image-adapter-reset")
        .map_or("", |(_, _, details)| details.as_str());
    if problems.is_empty() {
        let (resets, bring_ups) = statuses.iter().fold((0, 0), |(resets, bring_ups), value| {
            (
                resets + usize::from(*value == 0),
                bring_ups + usize::from(*value == RUNNING),
            )
        });
        Ok(format!(
            "{details}; QEMU: {bring_ups} DRIVER_OKs and {resets} status resets, since the last only the {IOS_AFTER_RESTART} requests after the restart on vq {FIRST_REQUEST_VQ}"
        ))
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<(Duration, String)> {
        text.lines()
            .enumerate()
            .map(|(index, line)| (Duration::from_millis(index as u64 * 100), line.to_owned()))
            .collect()
    }

    fn report(text: &str) -> ImageReport {
        let lines = lines(text);
        ImageReport::parse(lines.iter().map(|(at, line)| (*at, line.as_str())))
    }

    fn passing_text() -> String {
        let mut text = String::new();
        for name in EXPECTED_RESULTS {
            let _ = writeln!(text, "RESULT {name} PASS fine");
        }
        text.push_str(
            "IMAGE-PHASE qd1 begin\nIMAGE-PHASE qd1 end processors 0 depth 1 ios 4 nanos 100000000\n\
             IMAGE-PHASE qd32 begin\nIMAGE-PHASE qd32 end processors 1 depth 32 ios 64 nanos 100000000\n\
             IMAGE-PHASE every-queue begin\n\
             IMAGE-PHASE every-queue end processors 2,3 depth 32 ios 8 nanos 100000000\n\
             IMAGE-STAT message 3 interrupts 4\nIMAGE-STAT message 4 interrupts 5\n\
             IMAGE-STAT message 5 interrupts 3\nIMAGE-STAT message 6 interrupts 2\n\
             IMAGE-COUNTERS completions 80 interrupts 14 violations 0\n\
             IMAGE-QUEUE index 0 size 256 requests 4 kicks 4 interrupts 4 queue-full 0 resets 0\n\
             IMAGE-QUEUE index 1 size 256 requests 64 kicks 20 interrupts 5 queue-full 0 resets 0\n\
             IMAGE-QUEUE index 2 size 256 requests 6 kicks 6 interrupts 3 queue-full 0 resets 0\n\
             IMAGE-QUEUE index 3 size 256 requests 4 kicks 4 interrupts 2 queue-full 0 resets 0\n",
        );
        text
    }

    fn counts(qd1: (u64, u64)) -> BTreeMap<u16, QueueCounts> {
        [(2, qd1), (3, (20, 5)), (4, (6, 3)), (5, (4, 2))]
            .into_iter()
            .map(|(vq, (notifies, interrupts))| {
                (
                    vq,
                    QueueCounts {
                        notifies,
                        interrupts,
                    },
                )
            })
            .collect()
    }

    fn adapter_reset_text() -> String {
        let mut text = String::new();
        for name in ADAPTER_RESET_RESULTS {
            let _ = writeln!(text, "RESULT {name} PASS fine");
        }
        text
    }

    #[test]
    fn the_adapter_reset_needs_the_device_reset_and_only_the_later_requests_after_it() {
        let trace = "virtio_set_status vdev 0x1 val 0\nvirtio_set_status vdev 0x1 val 15\n\
                     virtio_set_status vdev 0x1 val 0\nvirtio_set_status vdev 0x1 val 15\n\
                     virtio_set_status vdev 0x1 val 0\nvirtio_set_status vdev 0x1 val 1\n\
                     virtio_set_status vdev 0x1 val 15\n";
        let statuses = status_values(trace);
        assert_eq!(statuses, [0, 15, 0, 15, 0, 1, 15]);
        let after = |vq2: (u64, u64)| {
            [(2, vq2), (3, (3, 3)), (4, (5, 5)), (5, (3, 3))]
                .into_iter()
                .map(|(vq, (notifies, interrupts))| {
                    (
                        vq,
                        QueueCounts {
                            notifies,
                            interrupts,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>()
        };
        let good = report(&adapter_reset_text());
        let verdict = check_adapter_reset(Some(GUEST_SUCCESS), &good, &after((3, 3)), &statuses)
            .expect("passes");
        assert!(
            verdict.contains("3 DRIVER_OKs and 3 status resets"),
            "{verdict}"
        );
        // Processor 0's queue shows the two requests of before the reset: no device reset.
        let err =
            check_adapter_reset(Some(GUEST_SUCCESS), &good, &after((5, 5)), &statuses).unwrap_err();
        assert!(err.contains("vq 2 since the last reset: 5 kicks"), "{err}");
        // Never reset while running, or never brought back.
        for broken in [&[0, 1, 15][..], &[0, 15, 0, 1]] {
            let err = check_adapter_reset(Some(GUEST_SUCCESS), &good, &after((3, 3)), broken)
                .unwrap_err();
            assert!(err.contains("did not see a running device reset"), "{err}");
        }
        // A violation, a missing result, a failed exit.
        let violated = report(&format!(
            "{}VIOLATION RequestComplete of SRB 0x10, which is not outstanding\n",
            adapter_reset_text()
        ));
        assert!(
            check_adapter_reset(Some(GUEST_SUCCESS), &violated, &after((3, 3)), &statuses).is_err()
        );
        let missing =
            report(&adapter_reset_text().replace("RESULT image-adapter-reset PASS fine\n", ""));
        let err = check_adapter_reset(Some(GUEST_SUCCESS), &missing, &after((3, 3)), &statuses)
            .unwrap_err();
        assert!(err.contains("no PASS for image-adapter-reset"), "{err}");
        assert!(check_adapter_reset(Some(1), &good, &after((3, 3)), &statuses).is_err());
    }

    #[test]
    fn the_two_cpu_run_needs_each_cpus_completions_and_interrupts_on_itself() {
        let text = |cpu1: &str| {
            let mut text = String::new();
            for name in SMP2_RESULTS {
                let _ = writeln!(text, "RESULT {name} PASS fine");
            }
            text.push_str(
                "IMAGE-SMP cpu 0 ios 1024 nanos 100000000 completions 1024 deliveries 80 queue-messages 80\n",
            );
            text.push_str(cpu1);
            text.push_str("IMAGE-COUNTERS completions 2063 lock-waits 7 violations 0\n");
            text
        };
        let traced = |vq3: (u64, u64)| {
            [(2, (1024, 80)), (3, vq3)]
                .into_iter()
                .map(|(vq, (notifies, interrupts))| {
                    (
                        vq,
                        QueueCounts {
                            notifies,
                            interrupts,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>()
        };
        let good_cpu1 = "IMAGE-SMP cpu 1 ios 1024 nanos 100000000 completions 1024 deliveries 70 queue-messages 70\n";
        let verdict = check_smp2(
            Some(GUEST_SUCCESS),
            &report(&text(good_cpu1)),
            &traced((1024, 70)),
        )
        .expect("passes");
        assert!(
            verdict.contains("CPU 1: 1024 I/Os (10240 IOPS)"),
            "{verdict}"
        );
        assert!(verdict.contains("7 lock acquisitions waited"), "{verdict}");
        // Completions that landed on CPU 0 instead.
        let moved = "IMAGE-SMP cpu 1 ios 1024 nanos 100000000 completions 1000 deliveries 70 queue-messages 70\n";
        let err = check_smp2(
            Some(GUEST_SUCCESS),
            &report(&text(moved)),
            &traced((1024, 70)),
        )
        .unwrap_err();
        assert!(
            err.contains("CPU 1: 1024 I/Os (want 1024), 1000 completions"),
            "{err}"
        );
        // Deliveries on CPU 1 of another message than its queue's, or more than QEMU sent.
        let stray = "IMAGE-SMP cpu 1 ios 1024 nanos 100000000 completions 1024 deliveries 75 queue-messages 70\n";
        assert!(
            check_smp2(
                Some(GUEST_SUCCESS),
                &report(&text(stray)),
                &traced((1024, 75))
            )
            .is_err()
        );
        assert!(
            check_smp2(
                Some(GUEST_SUCCESS),
                &report(&text(good_cpu1)),
                &traced((1024, 60))
            )
            .is_err()
        );
        // The second CPU's line missing (it never ran).
        let err = check_smp2(Some(GUEST_SUCCESS), &report(&text("")), &traced((0, 0))).unwrap_err();
        assert!(err.contains("no IMAGE-SMP line for CPU 1"), "{err}");
    }

    #[test]
    fn the_misrouted_message_must_fail_the_two_cpu_run_and_nothing_else() {
        let mut text = String::new();
        for name in SMP2_RESULTS {
            let verdict = if *name == "image-smp2" {
                "FAIL 1024 completions on another CPU than the submitter"
            } else {
                "PASS fine"
            };
            let _ = writeln!(text, "RESULT {name} {verdict}");
        }
        let caught = report(&text);
        let verdict = check_misrouted(Some(35), &caught).expect("caught");
        assert!(
            verdict.contains("1024 completions on another CPU"),
            "{verdict}"
        );
        // Passing regardless, or failing for another reason, is not the fault caught.
        let mut passing = String::new();
        for name in SMP2_RESULTS {
            let _ = writeln!(passing, "RESULT {name} PASS fine");
        }
        assert!(check_misrouted(Some(GUEST_SUCCESS), &report(&passing)).is_err());
        let other = text.replace(
            "FAIL 1024 completions on another CPU than the submitter",
            "FAIL CPU 1 did not finish",
        );
        assert!(check_misrouted(Some(35), &report(&other)).is_err());
        let violated =
            format!("{text}VIOLATION spin lock Interrupt acquired again by its holder\n");
        assert!(check_misrouted(Some(35), &report(&violated)).is_err());
    }

    #[test]
    fn a_complete_image_run_passes_with_its_figures() {
        let report = report(&passing_text());
        let verdict =
            check(&CONFIGS[0], Some(GUEST_SUCCESS), &report, &counts((4, 4))).expect("passes");
        assert!(
            verdict.contains("qd1 (depth 1, queues [2]): 4 I/Os"),
            "{verdict}"
        );
        assert!(
            verdict.contains("qd32 (depth 32, queues [3]): 64 I/Os"),
            "{verdict}"
        );
        assert!(
            verdict.contains("14 interrupts traced, 14 delivered"),
            "{verdict}"
        );
    }

    #[test]
    fn lost_or_extra_interrupts_and_failures_fail_the_run() {
        let report_text = passing_text();
        let good = report(&report_text);
        // QEMU sent an interrupt on vq 2 the image never saw, at depth 1.
        let err = check(&CONFIGS[0], Some(GUEST_SUCCESS), &good, &counts((4, 5))).unwrap_err();
        assert!(
            err.contains("qd1: 4 I/Os took 4 kicks and 5 interrupts"),
            "{err}"
        );
        // The image was handed more interrupts than QEMU sent.
        let extra = report(&report_text.replace("interrupts 14", "interrupts 15"));
        let err = check(&CONFIGS[0], Some(GUEST_SUCCESS), &extra, &counts((4, 4))).unwrap_err();
        assert!(
            err.contains("QEMU traced 14 interrupts, the guest's StorPort delivered 15"),
            "{err}"
        );
        let extra =
            report(&report_text.replace("message 4 interrupts 5", "message 4 interrupts 6"));
        let err = check(&CONFIGS[0], Some(GUEST_SUCCESS), &extra, &counts((4, 4))).unwrap_err();
        assert!(
            err.contains("vq 3: QEMU traced 5 interrupts, message 4 delivered 6"),
            "{err}"
        );
        // A depth-1 I/O that took two kicks.
        let err = check(&CONFIGS[0], Some(GUEST_SUCCESS), &good, &counts((5, 4))).unwrap_err();
        assert!(err.contains("qd1: 4 I/Os took 5 kicks"), "{err}");
        // The image's own counters disagree with QEMU's trace or the phase.
        let off = report(&report_text.replace(
            "index 1 size 256 requests 64 kicks 20",
            "index 1 size 256 requests 63 kicks 21",
        ));
        let err = check(&CONFIGS[0], Some(GUEST_SUCCESS), &off, &counts((4, 4))).unwrap_err();
        assert!(
            err.contains("queue 1: the image counted 21 kicks, QEMU traced 20"),
            "{err}"
        );
        assert!(
            err.contains("queue 1: the image counted 63 requests, its phase sent 64"),
            "{err}"
        );
        // A failed result, a violation, a bad exit.
        let bad = report(&report_text.replace(
            "RESULT image-qd32 PASS fine",
            "RESULT image-qd32 FAIL broken\nVIOLATION RequestComplete twice",
        ));
        let err = check(&CONFIGS[0], Some(35), &bad, &counts((4, 4))).unwrap_err();
        assert!(err.contains("exited with Some(35)"), "{err}");
        assert!(err.contains("image-qd32 FAIL broken"), "{err}");
        assert!(err.contains("VIOLATION RequestComplete twice"), "{err}");
        assert!(err.contains("no PASS for image-qd32"), "{err}");
    }

    #[test]
    fn a_withheld_interrupt_must_be_recovered_and_reported() {
        let config = CONFIGS
            .iter()
            .find(|config| config.lose_interrupt.is_some())
            .expect("the lost-interrupt configuration");
        let text = passing_text()
            .replace("message 3 interrupts 4", "message 3 interrupts 3")
            .replace(
                "interrupts 14 violations",
                "interrupts 13 lost 1 violations",
            )
            .replace(
                "index 0 size 256 requests 4 kicks 4 interrupts 4",
                "index 0 size 256 requests 4 kicks 4 interrupts 3",
            );
        let recovered = format!("{text}RESULT image-lost-interrupt PASS from HwTimer\n");
        let verdict = check(
            config,
            Some(GUEST_SUCCESS),
            &report(&recovered),
            &counts((4, 4)),
        )
        .expect("passes");
        assert!(
            verdict.contains("1 withheld by the planted fault, 0 merged while pending"),
            "{verdict}"
        );
        // Without the guest's confirmation that HwTimer completed it, the run fails.
        let err = check(config, Some(GUEST_SUCCESS), &report(&text), &counts((4, 4))).unwrap_err();
        assert!(err.contains("no PASS for image-lost-interrupt"), "{err}");
        // The same shortfall without a planted loss is a lost interrupt.
        let err = check(
            &CONFIGS[0],
            Some(GUEST_SUCCESS),
            &report(&text.replace(" lost 1", "")),
            &counts((4, 4)),
        )
        .unwrap_err();
        assert!(
            err.contains("qd1: 4 I/Os took 4 kicks and 4 interrupts (3 delivered)"),
            "{err}"
        );
    }

    #[test]
    fn the_planted_double_completion_must_be_caught_naming_its_srb() {
        let planted =
            "storport: planted fault: RequestComplete #300 of SRB 0xb30000 played twice\n";
        let violation = "VIOLATION RequestComplete of SRB 0xb30000, which is not outstanding (completed twice?) (in Dpc at IRQL 2)\n";
        let rules = "RESULT image-rules FAIL 1 violations\n";
        let caught = report(&format!(
            "RESULT image-qd1 PASS fine\n{planted}{violation}{rules}"
        ));
        let verdict = check_repeated(300, Some(35), &caught).expect("caught");
        assert!(verdict.contains("SRB 0xb30000 played twice"), "{verdict}");
        // The rule stayed silent.
        let silent = report(&format!(
            "RESULT image-qd1 PASS fine\n{planted}RESULT image-rules PASS\n"
        ));
        assert!(check_repeated(300, Some(GUEST_SUCCESS), &silent).is_err());
        // Another SRB was blamed, or something else failed too.
        let wrong = report(&format!(
            "{planted}{}{rules}",
            violation.replace("0xb30000", "0xc00000")
        ));
        assert!(check_repeated(300, Some(35), &wrong).is_err());
        let more = report(&format!(
            "RESULT image-qd1 FAIL lost\n{planted}{violation}{rules}"
        ));
        assert!(check_repeated(300, Some(35), &more).is_err());
    }

    #[test]
    fn the_planted_drop_must_be_caught_naming_its_srb() {
        let caught = report(
            "RESULT image-qd1 PASS fine\n\
             storport: planted fault: RequestComplete #700 of SRB 0xb30000 dropped\n\
             RESULT image-qd32 FAIL SRB 0xb30000 (slot 5) never completed: no RequestComplete\n",
        );
        let verdict = check_planted(700, Some(35), &caught).expect("caught");
        assert!(verdict.contains("SRB 0xb30000"), "{verdict}");
        // Not dropped at all: the run passed.
        let passed = report(&passing_text());
        assert!(check_planted(700, Some(GUEST_SUCCESS), &passed).is_err());
        // Dropped, but the run failed for another reason first.
        let other = report(
            "RESULT image-vpd-83 FAIL wrong wwn\n\
             storport: planted fault: RequestComplete #700 of SRB 0xb30000 dropped\n\
             RESULT image-qd32 FAIL SRB 0xb30000 (slot 5) never completed\n",
        );
        assert!(check_planted(700, Some(35), &other).is_err());
        // Dropped, but a different SRB was reported.
        let wrong = report(
            "storport: planted fault: RequestComplete #700 of SRB 0xb30000 dropped\n\
             RESULT image-qd32 FAIL SRB 0xc00000 (slot 1) never completed\n",
        );
        assert!(check_planted(700, Some(35), &wrong).is_err());
    }

    #[test]
    fn each_configuration_tells_the_guest_what_the_device_offers() {
        for config in CONFIGS {
            let line = config.cmdline();
            assert!(line.contains(&format!("ring={}", config.ring)), "{line}");
            assert_eq!(config.device.contains("packed=on"), config.ring == "packed");
            assert_eq!(line.contains("srb=classic"), config.classic);
            assert_eq!(
                line.contains("drop-completion="),
                config.drop_completion.is_some()
            );
        }
    }
}
