//! `cargo xtask vmtest`: boots the bare-metal test guest (tools/vmtest-guest) under QEMU against
//! QEMU's own virtio-scsi-pci and checks what it reports.
//!
//! Steps: install `qemu-system-x86` if missing (apt-get, as root), build the guest for
//! `x86_64-unknown-none`, probe KVM with a short boot (falling back to TCG, which is what these
//! machines run), then boot each configuration ([`CONFIGS`]) with a fresh file-backed disk. While
//! a guest runs, its serial lines are read live: `HOTPLUG add|remove` makes the host
//! `device_add`/`device_del` a scsi-hd over QMP. Afterwards the run passes only if QEMU exited
//! with the guest's success status, every expected `RESULT` line says PASS, and the kicks the
//! guest counted per queue equal the notifications QEMU traced (`virtio_queue_notify`);
//! interrupts are QEMU's `virtio_notify` events. Kicks and interrupts per I/O are reported for
//! the queue-depth-1 and queue-depth-32 phases, each run on a queue of its own.
//!
//! The `image-*` configurations ([`image`]) boot the same guest in `mode=image`: its StorPort
//! host runs the shipped `rvscsi.sys` (built first, with `cargo xtask package`'s build) against
//! the same device, and a planted fault (a dropped RequestComplete) must be caught.
//!
//! Then two guests share one LUN that tgtd exports over iSCSI and run the persistent-reservation
//! sequence against each other ([`cluster`], [`tgt`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{cargo, run, workspace_root};

mod cluster;
mod image;
mod tgt;

/// The QEMU binary.
const QEMU: &str = "qemu-system-x86_64";
/// The guest's bare-metal target.
const GUEST_TARGET: &str = "x86_64-unknown-none";
/// The driver target of the image the guest runs (its code runs natively in the guest).
const IMAGE_TARGET: &str = "x86_64-pc-windows-msvc";
/// QEMU's exit status when the guest writes its success code to isa-debug-exit.
const GUEST_SUCCESS: i32 = 33;
/// Size of the main test disk.
const DISK_BYTES: u64 = 64 << 20;
/// Size of the disk hot-plugged during the run.
const HOTPLUG_DISK_BYTES: u64 = 16 << 20;
/// The serial numbers QEMU reports in VPD page 0x80, which the guest checks.
const DISK_SERIAL: &str = "RVSCSI-VMTEST-0";
const HOTPLUG_SERIAL: &str = "RVSCSI-VMTEST-HP";
/// Longest a guest may stay silent before the run is declared hung.
const SILENCE_LIMIT: Duration = Duration::from_mins(2);
/// Longest one configuration may run.
const RUN_LIMIT: Duration = Duration::from_mins(5);
/// How long the KVM probe boot may take before KVM is declared unusable.
const KVM_PROBE_LIMIT: Duration = Duration::from_secs(20);

/// One guest boot: how the device is configured and what the guest is told to expect.
struct Config {
    /// Name, also the prefix of the files in target/vmtest.
    name: &'static str,
    /// Extra virtio-scsi-pci properties.
    device: &'static str,
    /// Extra QEMU arguments.
    extra: &'static [&'static str],
    /// The ring layout the guest must negotiate (`ring=` on its command line).
    ring: &'static str,
    /// Whether the device offers `VIRTIO_F_INDIRECT_DESC` (`indirect_desc=off` when not); the
    /// guest is told (`indirect=on|off`), checks the negotiation and lays chains out
    /// accordingly.
    indirect: bool,
    /// Whether the device offers `VIRTIO_F_EVENT_IDX` (`event_idx=off` when not); the guest
    /// is told (`event-idx=on|off`), and kicks and interrupts are judged by the used ring's
    /// NO_NOTIFY and the available ring's NO_INTERRUPT flags instead ([`expect_phase`]).
    event_idx: bool,
}

impl Config {
    /// The virtio-scsi-pci properties beyond the common ones.
    fn device_properties(&self) -> String {
        let mut properties = self.device.to_owned();
        if !self.indirect {
            properties.push_str(",indirect_desc=off");
        }
        if !self.event_idx {
            properties.push_str(",event_idx=off");
        }
        properties
    }

    /// Whether QEMU interrupts at most once per arming of `used_event` ([`check_queue`]): with
    /// EVENT_IDX on a split ring. On a packed ring QEMU 7.2 sends more (one more per few
    /// hundred I/Os at depth 32, where the used index wraps: its packed event check compares
    /// ring positions across the wrap), which the spec allows, so there only the
    /// one-per-I/O bound of [`expect_phase`] is held.
    fn interrupts_follow_used_event(&self) -> bool {
        self.event_idx && self.ring == "split"
    }

    /// What the guest's command line says it must negotiate.
    fn guest_expectations(&self) -> String {
        let on_off = |on: bool| if on { "on" } else { "off" };
        format!(
            "ring={} indirect={} event-idx={}",
            self.ring,
            on_off(self.indirect),
            on_off(self.event_idx)
        )
    }
}

/// The configurations `cargo xtask vmtest` runs by default.
const CONFIGS: &[Config] = &[
    Config {
        // Transitional device (0x1004, QEMU's default on the PC machine), split ring.
        name: "split",
        device: "",
        extra: &[],
        ring: "split",
        indirect: true,
        event_idx: true,
    },
    Config {
        // Modern-only device (0x1048), packed ring, and a 4 GiB BAR elsewhere so the firmware
        // moves the 64-bit BARs above 4 GiB and the guest has to map them.
        name: "packed",
        device: ",packed=on,disable-legacy=on",
        extra: &["-device", "pci-testdev,membar=4G"],
        ring: "packed",
        indirect: true,
        event_idx: true,
    },
    Config {
        // Split ring without indirect descriptors: every request is a direct chain, so a full
        // ring holds a third as many 4 KiB reads and the largest transfer takes seg_max + 2
        // ring descriptors.
        name: "split-indirect-off",
        device: "",
        extra: &[],
        ring: "split",
        indirect: false,
        event_idx: true,
    },
    Config {
        // Split ring without EVENT_IDX: notifications and interrupts are suppressed only by
        // the NO_NOTIFY and NO_INTERRUPT flags.
        name: "split-event-idx-off",
        device: "",
        extra: &[],
        ring: "split",
        indirect: true,
        event_idx: false,
    },
];

/// The `RESULT` names every configuration must report as PASS.
const EXPECTED_RESULTS: &[&str] = &[
    "boot",
    "pci-find",
    "pci-bars",
    "features",
    "queues",
    "test-unit-ready",
    "inquiry",
    "vpd-00",
    "vpd-80",
    "vpd-83",
    "report-luns",
    "read-capacity",
    "write-verify",
    "max-transfer",
    "queue-depth",
    "qd1",
    "qd32",
    "multiqueue",
    "tmf-lun-reset",
    "hotplug-add",
    "hotplug-remove",
    "irq-driven-completion",
    "done",
];

/// Entry point: `cargo xtask vmtest [--tcg] [config...]`, where a config is one of
/// [`CONFIGS`] or `pr` (the two-node persistent-reservation run, [`cluster`]); all of them by
/// default.
pub fn run_vmtest(args: &[String]) -> Result<(), String> {
    let force_tcg = args.iter().any(|a| a == "--tcg");
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let two_nodes = names.is_empty() || names.iter().any(|name| *name == cluster::NAME);
    let is_image = |name: &str| image::CONFIGS.iter().any(|c| c.name == name);
    let configs: Vec<&Config> = if names.is_empty() {
        CONFIGS.iter().collect()
    } else {
        names
            .iter()
            .filter(|name| {
                **name != cluster::NAME
                    && **name != cluster::Flavour::Image.name()
                    && !is_image(name)
            })
            .map(|name| {
                CONFIGS
                    .iter()
                    .find(|c| c.name == name.as_str())
                    .ok_or_else(|| {
                        let mut known: Vec<_> = CONFIGS.iter().map(|c| c.name).collect();
                        known.extend(image::CONFIGS.iter().map(|c| c.name));
                        known.push(cluster::NAME);
                        known.push(cluster::Flavour::Image.name());
                        format!("unknown configuration {name:?}; known: {known:?}")
                    })
            })
            .collect::<Result<_, _>>()?
    };
    let image_configs: Vec<&image::ImageConfig> = image::CONFIGS
        .iter()
        .filter(|c| names.is_empty() || names.iter().any(|name| *name == c.name))
        .collect();
    let image_two_nodes = names.is_empty()
        || names
            .iter()
            .any(|name| *name == cluster::Flavour::Image.name());

    crate::util::ensure_tool(QEMU, "--version", "qemu-system-x86")?;
    // The image runs need the shipped image built into the guest.
    let image = if image_configs.is_empty() && !image_two_nodes {
        None
    } else {
        Some(crate::package::miniport_image(IMAGE_TARGET, &[])?)
    };
    let guest = build_guest(image.as_deref())?;
    let work = target_dir().join("vmtest");
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;

    let accel = if force_tcg {
        Accel::Tcg
    } else {
        choose_accel(&guest, &work)?
    };
    eprintln!("vmtest: accelerator {}", accel.name());

    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    for config in configs {
        match run_config(config, &guest, &work, accel) {
            Ok(summary) => summaries.push(summary),
            Err(error) => failures.push(format!("{}: {error}", config.name)),
        }
    }
    if let Some(image) = &image {
        for config in image_configs {
            match image::run_config(config, &guest, image, &work, accel) {
                Ok(summary) => summaries.push(summary),
                Err(error) => failures.push(format!("{}: {error}", config.name)),
            }
        }
    }
    let mut flavours = Vec::new();
    if two_nodes {
        flavours.push(cluster::Flavour::Driver);
    }
    if image_two_nodes {
        flavours.push(cluster::Flavour::Image);
    }
    for flavour in flavours {
        match cluster::run_cluster(&guest, &work, accel, flavour) {
            Ok(summary) => summaries.push(summary),
            Err(error) => failures.push(format!("{}: {error}", flavour.name())),
        }
    }
    for summary in &summaries {
        eprintln!("{summary}");
    }
    if failures.is_empty() {
        eprintln!("vmtest: all configurations passed");
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// `$CARGO_TARGET_DIR` or the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Builds the guest for bare metal, with `image` built into it for `mode=image`, and returns
/// the ELF's path.
fn build_guest(image: Option<&Path>) -> Result<PathBuf, String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == GUEST_TARGET)
        });
    if matches!(installed, Ok(false)) {
        run(Command::new("rustup").args(["target", "add", GUEST_TARGET]))?;
    }
    let mut command = cargo();
    command.args([
        "build",
        "--package",
        "vmtest-guest",
        "--release",
        "--target",
        GUEST_TARGET,
    ]);
    if let Some(image) = image {
        command.env("RVSCSI_GUEST_IMAGE", image);
    }
    run(&mut command)?;
    let elf = target_dir()
        .join(GUEST_TARGET)
        .join("release")
        .join("vmtest-guest");
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!("the guest build did not produce {}", elf.display()))
    }
}

/// The accelerator QEMU runs the guests with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// Picks the accelerator: boots the guest in probe mode (boot, then touch as much memory as
/// the exercise) under TCG, then under KVM with a limit, and uses KVM only if it passed and was
/// faster. Nested KVM can boot a guest yet page its memory in at a crawl; TCG never depends on
/// the host.
fn choose_accel(guest: &Path, work: &Path) -> Result<Accel, String> {
    let tcg = probe(guest, work, Accel::Tcg, KVM_PROBE_LIMIT)
        .map_err(|e| format!("the guest does not boot under TCG: {e}"))?;
    eprintln!(
        "vmtest: TCG probe boot and memory touch: {} ms",
        tcg.as_millis()
    );
    if !Path::new("/dev/kvm").exists() {
        eprintln!("vmtest: no /dev/kvm; using TCG");
        return Ok(Accel::Tcg);
    }
    match probe(guest, work, Accel::Kvm, tcg.max(Duration::from_secs(1))) {
        Ok(kvm) if kvm < tcg => {
            eprintln!(
                "vmtest: KVM probe: {} ms, faster than TCG; using KVM",
                kvm.as_millis()
            );
            Ok(Accel::Kvm)
        }
        Ok(kvm) => {
            eprintln!(
                "vmtest: KVM probe: {} ms, not faster than TCG; using TCG",
                kvm.as_millis()
            );
            Ok(Accel::Tcg)
        }
        Err(error) => {
            eprintln!("vmtest: KVM probe failed ({error}); using TCG");
            Ok(Accel::Tcg)
        }
    }
}

/// Boots the guest with `mode=probe` and returns how long it took.
fn probe(guest: &Path, work: &Path, accel: Accel, limit: Duration) -> Result<Duration, String> {
    let stderr_path = work.join(format!("probe-{}.stderr", accel.name()));
    let mut command = base_command(guest, accel, "mode=probe");
    let started = Instant::now();
    let (status, lines) = spawn_and_collect(&mut command, &stderr_path, limit)?;
    let elapsed = started.elapsed();
    if status == Some(GUEST_SUCCESS) && lines.iter().any(|l| l.starts_with("RESULT probe PASS")) {
        Ok(elapsed)
    } else {
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        Err(format!(
            "exit {status:?}, output {lines:?}, stderr {:?}",
            stderr.lines().last()
        ))
    }
}

/// QEMU with the machine, the guest and its exit device; no other devices.
fn base_command(guest: &Path, accel: Accel, cmdline: &str) -> Command {
    let mut command = Command::new(QEMU);
    command
        .args([
            "-machine",
            "pc",
            "-accel",
            accel.name(),
            "-m",
            "256M",
            "-smp",
            "1",
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(guest)
        .args(["-append", cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    command
}

/// Runs `command` to completion or `limit`, returning its exit code and stdout lines.
fn spawn_and_collect(
    command: &mut Command,
    stderr_path: &Path,
    limit: Duration,
) -> Result<(Option<i32>, Vec<String>), String> {
    let stderr =
        fs::File::create(stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    let mut child = command
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let lines = serial_lines(&mut child)?;
    let deadline = Instant::now() + limit;
    let mut collected = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((_, line)) => collected.push(line),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                kill(&mut child);
                return Err(format!("no exit within {}s", limit.as_secs()));
            }
        }
    }
    let status = wait_with_limit(&mut child, Duration::from_secs(10))?;
    Ok((status, collected))
}

/// Starts a thread that sends each line QEMU prints on stdout (the guest's serial port), with
/// the time it arrived.
fn serial_lines(child: &mut Child) -> Result<mpsc::Receiver<(Instant, String)>, String> {
    let stdout = child.stdout.take().ok_or("QEMU's stdout is not piped")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r').to_owned();
            if sender.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    Ok(receiver)
}

/// Kills a QEMU this job started (by its handle) and reaps it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for `child` to exit for at most `limit`, killing it after that.
fn wait_with_limit(child: &mut Child, limit: Duration) -> Result<Option<i32>, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status.code()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill(child);
                return Err("QEMU did not exit after the guest finished".into());
            }
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    }
}

/// Creates (or truncates to zeroes) a sparse raw disk image.
fn fresh_disk(path: &Path, bytes: u64) -> Result<(), String> {
    let file = fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.set_len(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Boots one configuration, drives hot-plug, and checks the outcome.
fn run_config(config: &Config, guest: &Path, work: &Path, accel: Accel) -> Result<String, String> {
    let file = |suffix: &str| work.join(format!("{}-{suffix}", config.name));
    let disk = file("disk.raw");
    let hotplug_disk = file("hotplug.raw");
    let qmp_socket = file("qmp.sock");
    let trace_log = file("trace.log");
    let serial_log = file("serial.log");
    fresh_disk(&disk, DISK_BYTES)?;
    fresh_disk(&hotplug_disk, HOTPLUG_DISK_BYTES)?;
    let _ = fs::remove_file(&qmp_socket);
    let _ = fs::remove_file(&trace_log);

    let cmdline = format!(
        "{} serial={DISK_SERIAL} hotplug-serial={HOTPLUG_SERIAL} disk-bytes={DISK_BYTES} \
         hotplug-bytes={HOTPLUG_DISK_BYTES}",
        config.guest_expectations()
    );
    let mut command = base_command(guest, accel, &cmdline);
    // ioeventfd=off: with KVM, notifications would otherwise bypass the traced path.
    command
        .arg("-device")
        .arg(format!(
            "virtio-scsi-pci,id=scsi0,num_queues=6,ioeventfd=off{}",
            config.device_properties()
        ))
        .arg("-drive")
        .arg(format!(
            "if=none,id=disk0,format=raw,file={}",
            disk.display()
        ))
        .arg("-device")
        .arg(format!(
            "scsi-hd,id=hd0,drive=disk0,bus=scsi0.0,scsi-id=0,lun=0,serial={DISK_SERIAL}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=none,id=hp0,format=raw,file={}",
            hotplug_disk.display()
        ))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_socket.display()))
        .arg("-D")
        .arg(&trace_log)
        .args(["-trace", "enable=virtio_queue_notify"])
        .args(["-trace", "enable=virtio_notify"])
        .args(["-trace", "enable=virtio_set_status"])
        .args(config.extra);

    let stderr_path = file("qemu.stderr");
    let stderr =
        fs::File::create(&stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    eprintln!("vmtest: [{}] starting {command:?}", config.name);
    let started = Instant::now();
    let mut child = command
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let outcome = drive_guest(config, &mut child, &qmp_socket, started);
    let (lines, status) = match outcome {
        Ok(lines) => {
            let status = wait_with_limit(&mut child, Duration::from_secs(10))?;
            (lines, status)
        }
        Err(error) => {
            kill(&mut child);
            let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err(format!("{error}\nQEMU stderr:\n{stderr}"));
        }
    };
    let mut serial = String::new();
    for (at, line) in &lines {
        let _ = writeln!(serial, "{:>8.3} {line}", at.as_secs_f64());
    }
    let _ = fs::write(&serial_log, serial);

    let trace =
        fs::read_to_string(&trace_log).map_err(|e| format!("{}: {e}", trace_log.display()))?;
    let counts = parse_trace(&trace);
    let report = GuestReport::parse(lines.iter().map(|(at, line)| (*at, line.as_str())));
    check(config, status, &report, &counts)
}

/// Reads the guest's serial lines until QEMU closes stdout, answering hot-plug requests.
fn drive_guest(
    config: &Config,
    child: &mut Child,
    qmp_socket: &Path,
    started: Instant,
) -> Result<Vec<(Duration, String)>, String> {
    let lines = serial_lines(child)?;
    let mut qmp = Qmp::connect(qmp_socket, Duration::from_secs(30))?;
    let mut collected = Vec::new();
    loop {
        let left = RUN_LIMIT.saturating_sub(started.elapsed());
        let (at, line) = match lines.recv_timeout(left.min(SILENCE_LIMIT)) {
            Ok(item) => item,
            Err(RecvTimeoutError::Disconnected) => return Ok(collected),
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "guest silent for {}s or run over {}s; last line: {:?}",
                    SILENCE_LIMIT.as_secs(),
                    RUN_LIMIT.as_secs(),
                    collected
                        .last()
                        .map(|(_, l): &(Duration, String)| l.clone())
                ));
            }
        };
        println!("[{}] {line}", config.name);
        match line.as_str() {
            "HOTPLUG add" => {
                qmp.execute(
                    "device_add",
                    &json!({
                        "driver": "scsi-hd", "id": "hotdisk", "drive": "hp0",
                        "bus": "scsi0.0", "scsi-id": 0, "lun": 1, "serial": HOTPLUG_SERIAL,
                    }),
                )?;
            }
            "HOTPLUG remove" => {
                // SCSI devices unplug at once (no guest handshake); the guest checks the removal
                // itself, through the eventq and REPORT LUNS, and may finish and exit before
                // QEMU's DEVICE_DELETED event could be read here, or even its reply.
                qmp.execute_unless_gone("device_del", &json!({ "id": "hotdisk" }))?;
            }
            _ => {}
        }
        collected.push((at.saturating_duration_since(started), line));
    }
}

/// A QMP connection (QEMU Machine Protocol: one JSON object per line).
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (QEMU creates the socket shortly after starting) and leaves capabilities
    /// negotiation mode.
    fn connect(path: &Path, limit: Duration) -> Result<Self, String> {
        let deadline = Instant::now() + limit;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("cannot connect to QMP at {}: {e}", path.display())),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| format!("QMP socket: {e}"))?;
        let writer = stream.try_clone().map_err(|e| format!("QMP socket: {e}"))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("unexpected QMP greeting {greeting}"));
        }
        qmp.execute("qmp_capabilities", &json!({}))?;
        Ok(qmp)
    }

    /// Reads one message.
    fn read_message(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("QMP read: {e}"))?;
        if read == 0 {
            return Err("QMP connection closed".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}"))
    }

    /// Runs a command after which the guest may finish and QEMU exit before it answers (the
    /// guest checks the command's effect itself, and QEMU's exit status is checked): a
    /// connection closed or reset before the reply counts as done.
    fn execute_unless_gone(&mut self, command: &str, arguments: &Value) -> Result<(), String> {
        let request = json!({ "execute": command, "arguments": arguments });
        eprintln!("vmtest: QMP {request}");
        writeln!(self.writer, "{request}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(format!("QMP read: {e}")),
                Ok(_) => {}
            }
            let message: Value =
                serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}"))?;
            match classify(&message) {
                QmpMessage::Return(_) => return Ok(()),
                QmpMessage::Error(description) => {
                    return Err(format!("QMP {command} failed: {description}"));
                }
                QmpMessage::Event => {}
                QmpMessage::Other => return Err(format!("unexpected QMP message {message}")),
            }
        }
    }

    /// Runs a command and returns its `return` value; events arriving meanwhile are skipped
    /// (the guest, not the host, checks what a hot-plug did).
    fn execute(&mut self, command: &str, arguments: &Value) -> Result<Value, String> {
        let request = json!({ "execute": command, "arguments": arguments });
        eprintln!("vmtest: QMP {request}");
        writeln!(self.writer, "{request}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let message = self.read_message()?;
            match classify(&message) {
                QmpMessage::Return(value) => return Ok(value),
                QmpMessage::Error(description) => {
                    return Err(format!("QMP {command} failed: {description}"));
                }
                QmpMessage::Event => {}
                QmpMessage::Other => return Err(format!("unexpected QMP message {message}")),
            }
        }
    }
}

/// What a QMP message is.
#[derive(Debug, PartialEq)]
enum QmpMessage {
    Return(Value),
    Error(String),
    Event,
    Other,
}

fn classify(message: &Value) -> QmpMessage {
    if let Some(value) = message.get("return") {
        QmpMessage::Return(value.clone())
    } else if let Some(error) = message.get("error") {
        let class = error.get("class").and_then(Value::as_str).unwrap_or("?");
        let desc = error.get("desc").and_then(Value::as_str).unwrap_or("?");
        QmpMessage::Error(format!("{class}: {desc}"))
    } else if message.get("event").is_some() {
        QmpMessage::Event
    } else {
        QmpMessage::Other
    }
}

/// Notifications and interrupts QEMU traced for one virtqueue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct QueueCounts {
    /// `virtio_queue_notify`: the driver wrote the queue's notify register.
    notifies: u64,
    /// `virtio_notify`: the device decided to interrupt for the queue.
    interrupts: u64,
}

/// Per-virtqueue counts from a QEMU trace log, counting only what happened after the last
/// device reset (`virtio_set_status ... val 0`): the firmware drives the device first, and the
/// guest resets it once before setting it up.
fn parse_trace(log: &str) -> BTreeMap<u16, QueueCounts> {
    let mut queue_of = BTreeMap::new();
    let mut notifies: BTreeMap<String, u64> = BTreeMap::new();
    let mut interrupts: BTreeMap<String, u64> = BTreeMap::new();
    for line in log.lines() {
        // The log backend may prefix "pid@seconds:"; the event name starts the rest.
        let body = line
            .rsplit_once(':')
            .filter(|(p, _)| p.contains('@'))
            .map_or(line, |(_, b)| b);
        let mut words = body.split_whitespace();
        let event = words.next().unwrap_or("");
        let fields: BTreeMap<&str, &str> = {
            let rest: Vec<&str> = words.collect();
            rest.chunks(2)
                .filter_map(|pair| Some((*pair.first()?, *pair.get(1)?)))
                .collect()
        };
        match event {
            "virtio_set_status" if fields.get("val") == Some(&"0") => {
                notifies.clear();
                interrupts.clear();
            }
            "virtio_queue_notify" => {
                if let (Some(vq), Some(n)) = (fields.get("vq"), fields.get("n")) {
                    if let Ok(n) = n.parse::<u16>() {
                        queue_of.insert((*vq).to_owned(), n);
                    }
                    *notifies.entry((*vq).to_owned()).or_default() += 1;
                }
            }
            "virtio_notify" => {
                if let Some(vq) = fields.get("vq") {
                    *interrupts.entry((*vq).to_owned()).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let mut counts: BTreeMap<u16, QueueCounts> = BTreeMap::new();
    for (vq, count) in notifies {
        if let Some(n) = queue_of.get(&vq) {
            counts.entry(*n).or_default().notifies += count;
        }
    }
    for (vq, count) in interrupts {
        // A queue the driver never notified has no known index; u16::MAX collects those, and
        // `check` reports them.
        let n = queue_of.get(&vq).copied().unwrap_or(u16::MAX);
        counts.entry(n).or_default().interrupts += count;
    }
    counts
}

/// One measured phase reported by the guest: `PHASE <name> vq <n> ios <count> begin|end`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Phase {
    vq: u16,
    ios: u64,
    begin: Option<Duration>,
    end: Option<Duration>,
}

/// What the guest counted for one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct GuestQueueStats {
    kicks: u64,
    completions: u64,
    interrupts: u64,
    /// Interrupt passes the guest ran, and those that found nothing.
    passes: u64,
    empty_passes: u64,
    /// Completions drained right after an interrupt.
    irq_completions: u64,
    /// `enable_interrupts` re-checks that found chains, and the chains they found.
    rechecks: u64,
    recheck_completions: u64,
}

/// What the guest printed, parsed.
#[derive(Debug, Default)]
struct GuestReport {
    /// `RESULT <name> PASS|FAIL <details>`, in order.
    results: Vec<(String, bool, String)>,
    /// `STAT vq <n> kicks <k> completions <c> interrupts <i> passes <p> empty-passes <e>
    /// irq-completions <q> rechecks <r> recheck-completions <rc>`: the guest's own counts of
    /// notifications sent, MSI-X interrupts received and what its interrupt passes drained,
    /// per queue.
    stats: BTreeMap<u16, GuestQueueStats>,
    /// Measured phases by name.
    phases: BTreeMap<String, Phase>,
    /// Lines reporting a panic or a CPU exception.
    crashes: Vec<String>,
    /// When the boot result arrived.
    booted_at: Option<Duration>,
}

impl GuestReport {
    fn parse<'a>(lines: impl Iterator<Item = (Duration, &'a str)>) -> Self {
        let mut report = Self::default();
        for (at, line) in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["RESULT", name, verdict @ ("PASS" | "FAIL"), details @ ..] => {
                    if *name == "boot" {
                        report.booted_at = Some(at);
                    }
                    report.results.push((
                        (*name).to_owned(),
                        *verdict == "PASS",
                        details.join(" "),
                    ));
                }
                ["STAT", "vq", vq, fields @ ..] => {
                    if let (Ok(vq), Some(stats)) = (vq.parse(), parse_stat_fields(fields)) {
                        report.stats.insert(vq, stats);
                    }
                }
                [
                    "PHASE",
                    name,
                    "vq",
                    vq,
                    "ios",
                    ios,
                    edge @ ("begin" | "end"),
                ] => {
                    let phase = report.phases.entry((*name).to_owned()).or_default();
                    phase.vq = vq.parse().unwrap_or(u16::MAX);
                    phase.ios = ios.parse().unwrap_or(0);
                    if *edge == "begin" {
                        phase.begin = Some(at);
                    } else {
                        phase.end = Some(at);
                    }
                }
                ["PANIC" | "EXCEPTION", ..] => report.crashes.push(line.to_owned()),
                _ => {}
            }
        }
        report
    }
}

/// The `name value` pairs of a `STAT` line after its queue number, all of them present.
fn parse_stat_fields(fields: &[&str]) -> Option<GuestQueueStats> {
    const NAMES: [&str; 8] = [
        "kicks",
        "completions",
        "interrupts",
        "passes",
        "empty-passes",
        "irq-completions",
        "rechecks",
        "recheck-completions",
    ];
    if fields.len() != 2 * NAMES.len() {
        return None;
    }
    let mut values = [0u64; NAMES.len()];
    for ((pair, name), value) in fields.chunks(2).zip(NAMES).zip(&mut values) {
        match pair {
            [key, number] if *key == name => *value = number.parse().ok()?,
            _ => return None,
        }
    }
    let [
        kicks,
        completions,
        interrupts,
        passes,
        empty_passes,
        irq_completions,
        rechecks,
        recheck_completions,
    ] = values;
    Some(GuestQueueStats {
        kicks,
        completions,
        interrupts,
        passes,
        empty_passes,
        irq_completions,
        rechecks,
        recheck_completions,
    })
}

/// Checks a finished run and returns its summary, or every problem found.
fn check(
    config: &Config,
    status: Option<i32>,
    report: &GuestReport,
    counts: &BTreeMap<u16, QueueCounts>,
) -> Result<String, String> {
    let mut problems = Vec::new();
    if status != Some(GUEST_SUCCESS) {
        problems.push(format!(
            "QEMU exited with {status:?}, not the guest's success status {GUEST_SUCCESS}"
        ));
    }
    problems.extend(
        report
            .crashes
            .iter()
            .map(|line| format!("guest crashed: {line}")),
    );
    for (name, passed, details) in &report.results {
        if !passed {
            problems.push(format!("RESULT {name} FAIL {details}"));
        }
    }
    for expected in EXPECTED_RESULTS {
        if !report
            .results
            .iter()
            .any(|(name, passed, _)| name == expected && *passed)
        {
            problems.push(format!("no passing RESULT {expected}"));
        }
    }
    if report.stats.is_empty() {
        problems.push("the guest reported no queue statistics".into());
    }
    let mut table = String::new();
    for (vq, guest) in &report.stats {
        let traced = counts.get(vq).copied().unwrap_or_default();
        check_queue(
            *vq,
            guest,
            traced,
            config.interrupts_follow_used_event(),
            &mut table,
            &mut problems,
        );
    }
    if let Some(unknown) = counts.get(&u16::MAX) {
        problems.push(format!(
            "{} interrupts on a queue the guest never notified",
            unknown.interrupts
        ));
    }
    let mut summary = format!(
        "vmtest: [{}] ({}) ",
        config.name,
        if config.event_idx {
            "EVENT_IDX"
        } else {
            "NO_NOTIFY/NO_INTERRUPT flags"
        }
    );
    if let Some(boot) = report.booted_at {
        let _ = write!(summary, "boot {} ms; ", boot.as_millis());
    }
    for name in ["qd1", "qd32"] {
        let Some(phase) = report.phases.get(name) else {
            problems.push(format!("no measured phase {name}"));
            continue;
        };
        let queue = counts.get(&phase.vq).copied().unwrap_or_default();
        let figures = phase_figures(phase, queue);
        match figures {
            Ok(figures) => {
                let _ = write!(
                    summary,
                    "{name}: {} I/Os, {:.0} IOPS, {:.3} kicks/IO, {:.3} interrupts/IO; ",
                    phase.ios, figures.iops, figures.kicks_per_io, figures.interrupts_per_io
                );
                let guest = report.stats.get(&phase.vq).copied().unwrap_or_default();
                if let Err(problem) = expect_phase(name, phase.ios, queue, guest) {
                    problems.push(problem);
                }
            }
            Err(problem) => problems.push(format!("phase {name}: {problem}")),
        }
    }
    summary.push_str(&table);
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(problems.join("\n"))
    }
}

/// Appends queue `vq`'s line to `table`, and a problem for each count that disagrees: the kicks
/// with QEMU's notifications, the interrupts with what QEMU sent, the completions with what the
/// interrupt passes drained, and when `used_event_bound` the interrupts with the times the guest
/// armed `used_event`.
fn check_queue(
    vq: u16,
    guest: &GuestQueueStats,
    traced: QueueCounts,
    used_event_bound: bool,
    table: &mut String,
    problems: &mut Vec<String>,
) {
    let _ = write!(
        table,
        "\n    vq {vq}: {} completions ({} right after an interrupt, {} after {} re-checks), \
         kicks {} (QEMU {}), interrupts received {} (QEMU sent {}), {} passes ({} empty)",
        guest.completions,
        guest.irq_completions,
        guest.recheck_completions,
        guest.rechecks,
        guest.kicks,
        traced.notifies,
        guest.interrupts,
        traced.interrupts,
        guest.passes,
        guest.empty_passes
    );
    if guest.irq_completions + guest.recheck_completions != guest.completions {
        problems.push(format!(
            "vq {vq}: {} completions, but interrupt passes drained {} + {}",
            guest.completions, guest.irq_completions, guest.recheck_completions
        ));
    }
    if traced.notifies != guest.kicks {
        problems.push(format!(
            "vq {vq}: the guest kicked {} times but QEMU traced {} notifications",
            guest.kicks, traced.notifies
        ));
    }
    // MSI-X messages for one vector can merge while the CPU has not taken the first, so
    // the guest may see fewer than QEMU sent, never more, and some whenever QEMU sent any.
    if guest.interrupts > traced.interrupts || (traced.interrupts > 0) != (guest.interrupts > 0) {
        problems.push(format!(
            "vq {vq}: the guest received {} interrupts on its vector but QEMU sent {}",
            guest.interrupts, traced.interrupts
        ));
    }
    // With EVENT_IDX the device interrupts only when the used index passes `used_event`, and
    // then not again until the driver moves it: it is armed once at setup (0) and once by each
    // `enable_interrupts` (one per pass and one per re-check; disabling parks it out of reach).
    // Without EVENT_IDX nothing limits interrupts to the driver's passes: the NO_INTERRUPT flag
    // is set only while a pass drains, so a sleeping driver gets one per used chain.
    let armed = 1 + guest.passes + guest.rechecks;
    if used_event_bound && traced.interrupts > armed {
        problems.push(format!(
            "vq {vq}: QEMU sent {} interrupts but the guest armed used_event only {armed} times",
            traced.interrupts
        ));
    }
}

/// Figures of one phase.
#[derive(Debug, PartialEq)]
struct PhaseFigures {
    iops: f64,
    kicks_per_io: f64,
    interrupts_per_io: f64,
}

fn phase_figures(phase: &Phase, queue: QueueCounts) -> Result<PhaseFigures, String> {
    let (Some(begin), Some(end)) = (phase.begin, phase.end) else {
        return Err("begin or end missing".into());
    };
    if phase.ios == 0 {
        return Err("no I/Os".into());
    }
    let seconds = end.saturating_sub(begin).as_secs_f64().max(1e-6);
    #[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let (ios, kicks, interrupts) = (
        phase.ios as f64,
        queue.notifies as f64,
        queue.interrupts as f64,
    );
    Ok(PhaseFigures {
        iops: ios / seconds,
        kicks_per_io: kicks / ios,
        interrupts_per_io: interrupts / ios,
    })
}

/// What the device must have seen in a phase.
///
/// At queue depth 1 every request finds the device idle and the driver asleep, so each needs
/// exactly one kick and gets exactly one interrupt, which the guest receives (one at a time,
/// nothing can merge) and whose pass drains that request's completion. With EVENT_IDX that is
/// because `avail_event` and `used_event` name the one index in play; without it (the same
/// expectation) because the device clears NO_NOTIFY once it has processed the queue and the
/// sleeping driver has cleared NO_INTERRUPT. At depth 32 batching may only lower kicks (one per
/// refill batch); interrupts are at most one per I/O either way. With EVENT_IDX on a split ring
/// they are also at most one per arming of `used_event` ([`check_queue`]); without EVENT_IDX
/// QEMU interrupts for every chain used while the driver sleeps, so about one per I/O is
/// expected there.
fn expect_phase(
    name: &str,
    ios: u64,
    queue: QueueCounts,
    guest: GuestQueueStats,
) -> Result<(), String> {
    let QueueCounts {
        notifies,
        interrupts,
    } = queue;
    let received = guest.interrupts;
    let ok = match name {
        "qd1" => {
            notifies == ios
                && interrupts == ios
                && received == ios
                && guest.irq_completions == ios
                && guest.completions == ios
        }
        _ => (1..=ios).contains(&notifies) && (1..=ios).contains(&interrupts),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "phase {name}: {ios} I/Os but {notifies} kicks and {interrupts} interrupts \
             ({received} received, {} of {} completions right after an interrupt)",
            guest.irq_completions, guest.completions
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "\
virtio_set_status vdev 0x55 val 0
virtio_set_status vdev 0x55 val 15
virtio_queue_notify vdev 0x55 n 2 vq 0x7f00
virtio_queue_notify vdev 0x55 n 2 vq 0x7f00
virtio_set_status vdev 0x55 val 0
virtio_set_status vdev 0x55 val 15
virtio_queue_notify vdev 0x55 n 1 vq 0x7e00
virtio_queue_notify vdev 0x55 n 3 vq 0x7f80
virtio_notify vdev 0x55 vq 0x7f80
4242@1700000000.123456:virtio_queue_notify vdev 0x55 n 3 vq 0x7f80
virtio_notify vdev 0x55 vq 0x7f80
virtio_notify vdev 0x55 vq 0x7f00
virtio_notify vdev 0x55 vq 0x9999
";

    #[test]
    fn trace_counts_start_at_the_last_reset_and_map_queues_by_pointer() {
        let counts = parse_trace(TRACE);
        assert_eq!(
            counts[&1],
            QueueCounts {
                notifies: 1,
                interrupts: 0
            }
        );
        assert_eq!(
            counts[&3],
            QueueCounts {
                notifies: 2,
                interrupts: 2
            }
        );
        // Queue 2 was notified only before the last reset, but its pointer is still known.
        assert_eq!(
            counts[&2],
            QueueCounts {
                notifies: 0,
                interrupts: 1
            }
        );
        assert_eq!(
            counts[&u16::MAX],
            QueueCounts {
                notifies: 0,
                interrupts: 1
            }
        );
    }

    fn lines(text: &str) -> Vec<(Duration, String)> {
        text.lines()
            .enumerate()
            .map(|(i, l)| (Duration::from_millis(100 * i as u64), l.to_owned()))
            .collect()
    }

    fn report(text: &str) -> GuestReport {
        let lines = lines(text);
        GuestReport::parse(lines.iter().map(|(at, l)| (*at, l.as_str())))
    }

    #[test]
    fn guest_report_collects_results_stats_phases_and_crashes() {
        let parsed = report(
            "noise\nRESULT boot PASS pvh\nRESULT inquiry FAIL short data\n\
             STAT vq 3 kicks 10 completions 11 interrupts 9 passes 9 empty-passes 1 irq-completions 10 rechecks 1 recheck-completions 1\n\
             STAT vq 4 kicks 10 completions 11 interrupts 9\n\
             PHASE qd1 vq 3 ios 10 begin\nPHASE qd1 vq 3 ios 10 end\nPANIC at foo\n",
        );
        assert_eq!(parsed.results.len(), 2);
        assert_eq!(
            parsed.results[1],
            ("inquiry".into(), false, "short data".into())
        );
        assert_eq!(parsed.booted_at, Some(Duration::from_millis(100)));
        assert_eq!(
            parsed.stats[&3],
            GuestQueueStats {
                kicks: 10,
                completions: 11,
                interrupts: 9,
                passes: 9,
                empty_passes: 1,
                irq_completions: 10,
                rechecks: 1,
                recheck_completions: 1,
            }
        );
        // A line missing the pass counts is not taken.
        assert!(!parsed.stats.contains_key(&4));
        let phase = &parsed.phases["qd1"];
        assert_eq!((phase.vq, phase.ios), (3, 10));
        assert_eq!(
            phase
                .end
                .unwrap()
                .checked_sub(phase.begin.unwrap())
                .unwrap(),
            Duration::from_millis(100)
        );
        assert_eq!(parsed.crashes, ["PANIC at foo"]);
    }

    fn passing_text() -> String {
        let mut text = String::new();
        for name in EXPECTED_RESULTS {
            let _ = writeln!(text, "RESULT {name} PASS ok");
        }
        text.push_str(
            "STAT vq 3 kicks 4 completions 4 interrupts 4 passes 4 empty-passes 0 irq-completions 4 rechecks 0 recheck-completions 0\n\
             STAT vq 4 kicks 2 completions 64 interrupts 9 passes 9 empty-passes 1 irq-completions 60 rechecks 2 recheck-completions 4\n\
             PHASE qd1 vq 3 ios 4 begin\nPHASE qd1 vq 3 ios 4 end\n\
             PHASE qd32 vq 4 ios 64 begin\nPHASE qd32 vq 4 ios 64 end\n",
        );
        text
    }

    fn counts(qd1: (u64, u64), qd32: (u64, u64)) -> BTreeMap<u16, QueueCounts> {
        BTreeMap::from([
            (
                3,
                QueueCounts {
                    notifies: qd1.0,
                    interrupts: qd1.1,
                },
            ),
            (
                4,
                QueueCounts {
                    notifies: qd32.0,
                    interrupts: qd32.1,
                },
            ),
        ])
    }

    #[test]
    fn a_complete_run_passes_and_reports_figures() {
        let summary = check(
            &CONFIGS[0],
            Some(33),
            &report(&passing_text()),
            &counts((4, 4), (2, 10)),
        )
        .unwrap();
        assert!(summary.contains("qd1: 4 I/Os"), "{summary}");
        assert!(summary.contains("1.000 kicks/IO"), "{summary}");
        assert!(summary.contains("0.031 kicks/IO"), "{summary}");
    }

    #[test]
    fn every_kind_of_problem_fails_the_run() {
        let good = report(&passing_text());
        let good_counts = counts((4, 4), (2, 10));
        // Wrong exit status.
        assert!(check(&CONFIGS[0], Some(35), &good, &good_counts).is_err());
        assert!(check(&CONFIGS[0], None, &good, &good_counts).is_err());
        // A missing result, and a failing one.
        let missing = report(&passing_text().replace("RESULT hotplug-add PASS ok\n", ""));
        assert!(
            check(&CONFIGS[0], Some(33), &missing, &good_counts)
                .unwrap_err()
                .contains("hotplug-add")
        );
        let failing = report(&(passing_text() + "RESULT extra FAIL broken\n"));
        assert!(
            check(&CONFIGS[0], Some(33), &failing, &good_counts)
                .unwrap_err()
                .contains("extra FAIL")
        );
        // Kicks the device did not see.
        let err = check(&CONFIGS[0], Some(33), &good, &counts((4, 4), (3, 10))).unwrap_err();
        assert!(
            err.contains("vq 4: the guest kicked 2 times but QEMU traced 3"),
            "{err}"
        );
        // Queue depth 1 must be one kick and one interrupt per I/O.
        let text = passing_text().replace("STAT vq 3 kicks 4", "STAT vq 3 kicks 3");
        assert!(
            check(
                &CONFIGS[0],
                Some(33),
                &report(&text),
                &counts((3, 4), (2, 10))
            )
            .is_err()
        );
        assert!(check(&CONFIGS[0], Some(33), &good, &counts((4, 3), (2, 10))).is_err());
        // Depth 32 with no interrupt at all, or more kicks than I/Os, is wrong.
        assert!(check(&CONFIGS[0], Some(33), &good, &counts((4, 4), (2, 0))).is_err());
        // Interrupts: never more received than sent, some whenever some were sent, and at
        // depth 1 every one of them.
        let extra = passing_text().replace(
            "completions 64 interrupts 9",
            "completions 64 interrupts 11",
        );
        let err = check(&CONFIGS[0], Some(33), &report(&extra), &good_counts).unwrap_err();
        assert!(
            err.contains("received 11 interrupts on its vector but QEMU sent 10"),
            "{err}"
        );
        let none =
            passing_text().replace("completions 64 interrupts 9", "completions 64 interrupts 0");
        assert!(check(&CONFIGS[0], Some(33), &report(&none), &good_counts).is_err());
        let merged =
            passing_text().replace("completions 4 interrupts 4", "completions 4 interrupts 3");
        let err = check(&CONFIGS[0], Some(33), &report(&merged), &good_counts).unwrap_err();
        assert!(err.contains("(3 received"), "{err}");
        // At depth 1 every completion comes right after its interrupt; everywhere, every
        // completion comes from an interrupt pass.
        let rechecked = passing_text().replace(
            "irq-completions 4 rechecks 0 recheck-completions 0",
            "irq-completions 3 rechecks 1 recheck-completions 1",
        );
        let err = check(&CONFIGS[0], Some(33), &report(&rechecked), &good_counts).unwrap_err();
        assert!(err.contains("3 of 4 completions right after"), "{err}");
        let polled = passing_text().replace("irq-completions 60", "irq-completions 59");
        let err = check(&CONFIGS[0], Some(33), &report(&polled), &good_counts).unwrap_err();
        assert!(
            err.contains("vq 4: 64 completions, but interrupt passes drained 59 + 4"),
            "{err}"
        );
        // A crash line fails even with everything else in place.
        let crashed = report(&(passing_text() + "EXCEPTION vector 14\n"));
        assert!(check(&CONFIGS[0], Some(33), &crashed, &good_counts).is_err());
    }

    fn config(name: &str) -> &'static Config {
        CONFIGS.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn the_device_and_the_guest_are_told_the_same_features() {
        use vmtest_guest::exercise::{Mode, Settings};
        for config in CONFIGS {
            let properties = config.device_properties();
            assert_eq!(
                properties.contains("indirect_desc=off"),
                !config.indirect,
                "{}",
                config.name
            );
            assert_eq!(
                properties.contains("event_idx=off"),
                !config.event_idx,
                "{}",
                config.name
            );
            let line = format!(
                "{} serial=S hotplug-serial=H disk-bytes=1 hotplug-bytes=1",
                config.guest_expectations()
            );
            let (mode, settings) = Settings::parse(&line).unwrap();
            let settings = settings.unwrap();
            assert_eq!(mode, Mode::Exercise);
            assert_eq!(
                (settings.packed, settings.indirect, settings.event_idx),
                (config.ring == "packed", config.indirect, config.event_idx),
                "{}",
                config.name
            );
        }
        assert_eq!(
            config("split-indirect-off").device_properties(),
            ",indirect_desc=off"
        );
        assert_eq!(
            config("split-event-idx-off").guest_expectations(),
            "ring=split indirect=on event-idx=off"
        );
    }

    #[test]
    fn with_event_idx_on_a_split_ring_interrupts_follow_the_armings() {
        // vq 4 ran 9 passes and 2 re-checks: used_event was armed 12 times.
        let good = report(&passing_text());
        let too_many = counts((4, 4), (2, 13));
        let err = check(config("split"), Some(33), &good, &too_many).unwrap_err();
        assert!(
            err.contains("vq 4: QEMU sent 13 interrupts but the guest armed used_event only 12"),
            "{err}"
        );
        assert!(check(config("split-indirect-off"), Some(33), &good, &too_many).is_err());
        assert!(check(config("split"), Some(33), &good, &counts((4, 4), (2, 12))).is_ok());
        // Without EVENT_IDX a sleeping driver gets one interrupt per used chain; QEMU's packed
        // ring sends extra ones at wraps. Both are held to one per I/O only.
        for name in ["split-event-idx-off", "packed"] {
            let summary = check(config(name), Some(33), &good, &counts((4, 4), (2, 64)));
            assert!(summary.is_ok(), "{name}: {summary:?}");
            assert!(check(config(name), Some(33), &good, &counts((4, 4), (2, 65))).is_err());
        }
        // Depth 1 is exact in every configuration.
        for config in CONFIGS {
            assert!(check(config, Some(33), &good, &counts((4, 5), (2, 10))).is_err());
        }
    }

    #[test]
    fn qmp_messages_are_classified() {
        assert_eq!(
            classify(&json!({"return": {}})),
            QmpMessage::Return(json!({}))
        );
        assert_eq!(
            classify(&json!({"error": {"class": "GenericError", "desc": "no such device"}})),
            QmpMessage::Error("GenericError: no such device".into())
        );
        let event = json!({"event": "DEVICE_DELETED", "data": {"device": "hotdisk"}});
        assert_eq!(classify(&event), QmpMessage::Event);
        assert_eq!(classify(&json!({"QMP": {}})), QmpMessage::Other);
    }
}
