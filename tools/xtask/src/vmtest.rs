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

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{cargo, run, workspace_root};

mod cluster;
mod image;
mod qmp;
mod report;
mod tgt;

use qmp::Qmp;
use report::{GuestReport, check, parse_trace};

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
    /// NO_NOTIFY and the available ring's NO_INTERRUPT flags instead ([`report::expect_phase`]).
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

    /// Whether QEMU interrupts at most once per arming of `used_event` ([`report::check_queue`]): with
    /// EVENT_IDX on a split ring. On a packed ring QEMU 7.2 sends more (one more per few
    /// hundred I/Os at depth 32, where the used index wraps: its packed event check compares
    /// ring positions across the wrap), which the spec allows, so there only the
    /// one-per-I/O bound of [`report::expect_phase`] is held.
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

#[cfg(test)]
mod tests;
