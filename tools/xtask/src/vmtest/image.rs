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
    let mut command = base_command(guest, accel, &config.cmdline());
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
