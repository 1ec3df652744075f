//! The two-node half of `cargo xtask vmtest`: tgtd exports one LUN over iSCSI on 127.0.0.1,
//! two guests (nodes A and B) attach it through QEMU's iSCSI block driver as `scsi-block`, each
//! with its own initiator name (so tgtd sees two I_T nexuses), and run the
//! persistent-reservation sequence of `vmtest_guest::cluster::PLAN` against each other.
//!
//! Both guests run at once. The host orders the steps: a guest announces its next step with
//! `PR-STEP-READY <n> <name>` and waits for the byte `n` on its serial input; the host sends it
//! when step `n - 1` is done (`PR-STEP-DONE`), whichever node ran that. The run passes when every
//! step was run in order, both guests reported every one of their `RESULT` lines as PASS, and
//! both QEMUs exited with the guest's success status.
//!
//! Two flavours run the same plan: `pr`, each node's commands sent by the guest's own driver,
//! and `image-pr`, sent by the shipped `rvscsi.sys` under the guest's StorPort, as Windows'
//! disk stack would send them ([`Flavour`]).

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use vmtest_guest::cluster::{Node, PLAN, step_number};

use super::tgt::{DISK_LUN, TARGET_IQN, Target};
use super::{Accel, GUEST_SUCCESS, GuestReport, QEMU, base_command, fresh_disk, wait_with_limit};

/// The name that selects the driver flavour on the command line.
pub const NAME: &str = "pr";

/// Who sends each node's commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// The guest's own virtio-scsi driver (`mode=pr`).
    Driver,
    /// The shipped image under the guest's StorPort (`mode=image-pr`).
    Image,
}

impl Flavour {
    /// The name that selects it on the command line and prefixes its files and logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Driver => NAME,
            Self::Image => "image-pr",
        }
    }

    /// The `RESULT` names of a node's device bring-up, before `pr-ready`.
    const fn bring_up(self) -> [&'static str; 2] {
        match self {
            Self::Driver => ["pci-find", "pci-bars"],
            Self::Image => ["image-load", "image-start"],
        }
    }
}
/// The two nodes, in the order their logs are reported.
const NODES: [Node; 2] = [Node::A, Node::B];
/// Size of the shared LUN.
const LUN_BYTES: u64 = 16 << 20;
/// Longest the sequence may wait for one step (or for a guest to boot and announce its first).
const STEP_LIMIT: Duration = Duration::from_mins(1);
/// Longest the whole two-node run may take.
const RUN_LIMIT: Duration = Duration::from_mins(4);

/// A step the host lets a node run: the node and the step number it sends as the go byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Go {
    node: Node,
    step: u8,
}

/// Orders [`PLAN`] between the nodes from the lines they print.
#[derive(Debug, Default)]
struct Sequencer {
    /// Index in [`PLAN`] of the step to run next.
    next: usize,
    /// The step released and not yet done.
    running: Option<u8>,
    /// The step each node announced and waits to run (by [`node_index`]).
    ready: [Option<u8>; 2],
}

fn node_index(node: Node) -> usize {
    match node {
        Node::A => 0,
        Node::B => 1,
    }
}

impl Sequencer {
    /// Takes one line of `node`'s serial output; returns the step to release, if one may run
    /// now. A line that breaks the protocol (a step announced out of turn, by the wrong node,
    /// under another name, or finished without being released) is an error.
    fn on_line(&mut self, node: Node, line: &str) -> Result<Option<Go>, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["PR-STEP-READY", number, name] => {
                let step = parse_step(number)?;
                let planned = usize::from(step)
                    .checked_sub(1)
                    .and_then(|index| PLAN.get(index))
                    .ok_or_else(|| format!("node {} announced unknown step {step}", node.name()))?;
                if planned.node != node || planned.name != *name {
                    return Err(format!(
                        "node {} announced step {step} {name}, but the plan's step {step} is {} \
                         on node {}",
                        node.name(),
                        planned.name,
                        planned.node.name()
                    ));
                }
                let slot = &mut self.ready[node_index(node)];
                if let Some(waiting) = slot {
                    return Err(format!(
                        "node {} announced step {step} while waiting for step {waiting}",
                        node.name()
                    ));
                }
                *slot = Some(step);
            }
            ["PR-STEP-DONE", number] => {
                let step = parse_step(number)?;
                if self.running != Some(step) {
                    return Err(format!(
                        "node {} finished step {step}, but the step running is {:?}",
                        node.name(),
                        self.running
                    ));
                }
                self.running = None;
                self.next += 1;
            }
            _ => return Ok(None),
        }
        self.release()
    }

    /// Releases the next step if no step runs and its node is waiting for it.
    fn release(&mut self) -> Result<Option<Go>, String> {
        if self.running.is_some() {
            return Ok(None);
        }
        let Some(step) = PLAN.get(self.next) else {
            return Ok(None);
        };
        let number = step_number(self.next).ok_or("the plan has more than 255 steps")?;
        let slot = &mut self.ready[node_index(step.node)];
        match *slot {
            Some(waiting) if waiting == number => {
                *slot = None;
                self.running = Some(number);
                Ok(Some(Go {
                    node: step.node,
                    step: number,
                }))
            }
            Some(waiting) => Err(format!(
                "node {} waits for step {waiting}, but its next step is {number} {}",
                step.node.name(),
                step.name
            )),
            None => Ok(None),
        }
    }

    /// Whether every step has been run.
    fn finished(&self) -> bool {
        self.next >= PLAN.len()
    }

    /// Whether `node` still has steps to run.
    fn owes_steps(&self, node: Node) -> bool {
        PLAN.iter().skip(self.next).any(|step| step.node == node)
    }

    /// The step the sequence waits for, for error messages.
    fn waiting_for(&self) -> String {
        PLAN.get(self.next).map_or_else(
            || "the guests to exit".to_owned(),
            |step| {
                format!(
                    "step {} {} on node {}",
                    self.next + 1,
                    step.name,
                    step.node.name()
                )
            },
        )
    }
}

fn parse_step(number: &str) -> Result<u8, String> {
    number
        .parse()
        .map_err(|_| format!("bad step number {number:?}"))
}

/// One guest: its QEMU, the pipe to its serial input, and what it printed.
struct NodeRun {
    node: Node,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines with their arrival time since the guest's QEMU started.
    lines: Vec<(Duration, String)>,
    started: Instant,
    ended: bool,
}

/// The guests of one run; dropping it kills any QEMU still running.
struct Guests {
    runs: Vec<NodeRun>,
}

impl Drop for Guests {
    fn drop(&mut self) {
        for run in &mut self.runs {
            super::kill(&mut run.child);
        }
    }
}

/// When the sequence ran: the first go byte sent, and the last step's end received.
#[derive(Debug, Default)]
struct Timing {
    first_go: Option<Instant>,
    last_done: Option<Instant>,
}

/// Runs the two-node part and returns its summary, or what went wrong.
pub fn run_cluster(
    guest: &Path,
    work: &Path,
    accel: Accel,
    flavour: Flavour,
) -> Result<String, String> {
    let name = flavour.name();
    let file = |suffix: &str| work.join(format!("{name}-{suffix}"));
    crate::util::ensure_package("qemu-block-extra")?;
    let disk = file("lun.raw");
    fresh_disk(&disk, LUN_BYTES)?;
    let setup_started = Instant::now();
    let target = Target::start(&disk, &file("tgtd.log"))?;
    let setup = setup_started.elapsed();
    eprintln!(
        "vmtest: [{name}] tgtd up with LUN {DISK_LUN} on 127.0.0.1:{} in {} ms",
        target.portal_port,
        setup.as_millis()
    );

    let (sender, receiver) = mpsc::channel();
    let mut guests = Guests { runs: Vec::new() };
    for node in NODES {
        let stderr = file(&format!("{}.stderr", node.name()));
        guests.runs.push(spawn_node(
            (node, flavour),
            guest,
            accel,
            target.portal_port,
            &stderr,
            sender.clone(),
        )?);
    }
    drop(sender);

    let timing = drive(&mut guests, &receiver, flavour);
    let mut statuses = Vec::new();
    for run in &mut guests.runs {
        let status = if timing.is_ok() {
            wait_with_limit(&mut run.child, Duration::from_secs(10)).unwrap_or(None)
        } else {
            super::kill(&mut run.child);
            None
        };
        statuses.push(status);
        let mut serial = String::new();
        for (at, line) in &run.lines {
            let _ = writeln!(serial, "{:>8.3} {line}", at.as_secs_f64());
        }
        let _ = fs::write(file(&format!("{}-serial.log", run.node.name())), serial);
    }
    drop(target);
    let timing = timing.map_err(|error| {
        let mut message = error;
        for run in &guests.runs {
            let last: Vec<&str> = run
                .lines
                .iter()
                .rev()
                .take(3)
                .map(|(_, l)| l.as_str())
                .collect();
            let stderr = fs::read_to_string(file(&format!("{}.stderr", run.node.name())))
                .unwrap_or_default();
            let _ = write!(
                message,
                "\n  node {}: last lines {last:?}, QEMU stderr {:?}",
                run.node.name(),
                stderr.lines().last()
            );
        }
        message
    })?;
    summarize(setup, &guests.runs, &statuses, (&timing, flavour))
}

/// Starts node `node`'s QEMU on the LUN behind tgtd's portal, with a thread that sends its
/// serial lines to `sender` (and `None` when it closes).
fn spawn_node(
    (node, flavour): (Node, Flavour),
    guest: &Path,
    accel: Accel,
    portal_port: u16,
    stderr_path: &Path,
    sender: mpsc::Sender<(Node, Instant, Option<String>)>,
) -> Result<NodeRun, String> {
    let stderr =
        fs::File::create(stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    let mode = match flavour {
        Flavour::Driver => "pr",
        Flavour::Image => "image-pr",
    };
    let mut command = base_command(guest, accel, &format!("mode={mode} node={}", node.name()));
    command
        .stdin(Stdio::piped())
        .stderr(stderr)
        .args(shared_lun_args(
            &format!("127.0.0.1:{portal_port}"),
            TARGET_IQN,
            DISK_LUN,
            &format!("{TARGET_IQN}:node-{}", node.name()),
        ));
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let stdin = child.stdin.take();
    let Some(stdout) = child.stdout.take() else {
        super::kill(&mut child);
        return Err("QEMU's stdout is not piped".into());
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r').to_owned();
            if sender.send((node, Instant::now(), Some(line))).is_err() {
                return;
            }
        }
        let _ = sender.send((node, Instant::now(), None));
    });
    Ok(NodeRun {
        node,
        child,
        stdin,
        lines: Vec::new(),
        started,
        ended: false,
    })
}

/// Checks both nodes' logs and exit statuses; returns the figures, or every problem.
fn summarize(
    setup: Duration,
    runs: &[NodeRun],
    statuses: &[Option<i32>],
    (timing, flavour): (&Timing, Flavour),
) -> Result<String, String> {
    let mut problems = Vec::new();
    let mut summary = format!(
        "vmtest: [{}] scsi-block on tgtd's iSCSI LUN, commands from {}; tgtd setup {} ms; ",
        flavour.name(),
        match flavour {
            Flavour::Driver => "the guest's driver",
            Flavour::Image => "the shipped rvscsi.sys",
        },
        setup.as_millis()
    );
    for (run, status) in runs.iter().zip(statuses) {
        let report = GuestReport::parse(run.lines.iter().map(|(at, line)| (*at, line.as_str())));
        problems.extend(check_node((run.node, flavour), *status, &report));
        let ready = run
            .lines
            .iter()
            .find(|(_, line)| line.starts_with("RESULT pr-ready "))
            .map(|(at, _)| *at);
        let _ = write!(
            summary,
            "node {}: booted at {}, LUN ready at {}; ",
            run.node.name(),
            millis(report.booted_at),
            millis(ready),
        );
    }
    if let (Some(first), Some(last)) = (timing.first_go, timing.last_done) {
        let wall = last.saturating_duration_since(first);
        let _ = write!(
            summary,
            "{} steps in {} ms ({} ms per step)",
            PLAN.len(),
            wall.as_millis(),
            wall.as_millis() / PLAN.len().max(1) as u128
        );
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(problems.join("\n"))
    }
}

/// `at` in milliseconds since the guest's QEMU started, or "never".
fn millis(at: Option<Duration>) -> String {
    at.map_or_else(|| "never".to_owned(), |at| format!("{} ms", at.as_millis()))
}

/// Reads both guests' lines, releasing steps as the plan's order allows, until both guests have
/// exited; fails on a protocol error, a guest that leaves while it owes steps, or no progress
/// within [`STEP_LIMIT`].
fn drive(
    guests: &mut Guests,
    receiver: &mpsc::Receiver<(Node, Instant, Option<String>)>,
    flavour: Flavour,
) -> Result<Timing, String> {
    let started = Instant::now();
    let mut sequencer = Sequencer::default();
    let mut timing = Timing::default();
    while guests.runs.iter().any(|run| !run.ended) {
        let left = RUN_LIMIT.saturating_sub(started.elapsed());
        let (node, at, line) = match receiver.recv_timeout(left.min(STEP_LIMIT)) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "no progress within {}s (or the run passed {}s): waiting for {}",
                    STEP_LIMIT.as_secs(),
                    RUN_LIMIT.as_secs(),
                    sequencer.waiting_for()
                ));
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let run = guests
            .runs
            .iter_mut()
            .find(|run| run.node == node)
            .ok_or("a line from an unknown node")?;
        let Some(line) = line else {
            run.ended = true;
            if sequencer.owes_steps(node) {
                return Err(format!(
                    "node {} exited while waiting for {}",
                    node.name(),
                    sequencer.waiting_for()
                ));
            }
            continue;
        };
        println!("[{}-{}] {line}", flavour.name(), node.name());
        let go = sequencer.on_line(node, &line);
        if sequencer.finished() && timing.last_done.is_none() {
            timing.last_done = Some(at);
        }
        run.lines
            .push((at.saturating_duration_since(run.started), line));
        if let Some(go) = go? {
            send_go(guests, go)?;
            timing.first_go.get_or_insert_with(Instant::now);
        }
    }
    if sequencer.finished() {
        Ok(timing)
    } else {
        Err(format!(
            "the guests exited while waiting for {}",
            sequencer.waiting_for()
        ))
    }
}

/// Writes the go byte to the node's serial input.
fn send_go(guests: &mut Guests, go: Go) -> Result<(), String> {
    let run = guests
        .runs
        .iter_mut()
        .find(|run| run.node == go.node)
        .ok_or("go for an unknown node")?;
    let stdin = run
        .stdin
        .as_mut()
        .ok_or("the guest's serial input is closed")?;
    stdin
        .write_all(&[go.step])
        .and_then(|()| stdin.flush())
        .map_err(|e| {
            format!(
                "cannot send step {} to node {}: {e}",
                go.step,
                go.node.name()
            )
        })
}

/// The `RESULT` names node `node` must report as PASS: the boot, the device, the LUN, each of
/// its steps, and its verdict.
fn expected_results(node: Node, flavour: Flavour) -> Vec<String> {
    let mut names: Vec<String> = ["boot"]
        .into_iter()
        .chain(flavour.bring_up())
        .chain(["pr-ready"])
        .map(|name| (*name).to_owned())
        .collect();
    names.extend(
        PLAN.iter()
            .filter(|step| step.node == node)
            .map(|step| format!("pr-{}", step.name)),
    );
    names.push("pr-done".to_owned());
    if flavour == Flavour::Image {
        // The guest's StorPort found the image kept StorPort's rules throughout.
        names.push("image-rules".to_owned());
    }
    names
}

/// Every problem with one node's run: its exit status, a crash, a failed or missing result.
fn check_node(
    (node, flavour): (Node, Flavour),
    status: Option<i32>,
    report: &GuestReport,
) -> Vec<String> {
    let name = node.name();
    let mut problems = Vec::new();
    if status != Some(GUEST_SUCCESS) {
        problems.push(format!(
            "node {name}: QEMU exited with {status:?}, not the guest's success status \
             {GUEST_SUCCESS}"
        ));
    }
    problems.extend(
        report
            .crashes
            .iter()
            .map(|line| format!("node {name}: guest crashed: {line}")),
    );
    for (result, passed, details) in &report.results {
        if !passed {
            problems.push(format!("node {name}: RESULT {result} FAIL {details}"));
        }
    }
    for expected in expected_results(node, flavour) {
        if !report
            .results
            .iter()
            .any(|(result, passed, _)| *result == expected && *passed)
        {
            problems.push(format!("node {name}: no passing RESULT {expected}"));
        }
    }
    problems
}

/// The QEMU arguments that attach a shared, reservation-capable iSCSI LUN to a node, as
/// `docs/cluster.md` shows them (a test keeps the page equal to this): QEMU's iSCSI driver
/// (libiscsi) with the node's own initiator name, so each node is its own I_T nexus, under
/// `scsi-block`, which passes every command the guest sends (reads and writes too) to the LUN,
/// so PERSISTENT RESERVE reaches the target. `report`: a RESERVATION CONFLICT or UNIT ATTENTION
/// on a read or write goes to the guest and never stops the VM.
fn shared_lun_args(portal: &str, target: &str, lun: u32, initiator: &str) -> [String; 6] {
    [
        "-device".into(),
        "virtio-scsi-pci,id=scsi0".into(),
        "-blockdev".into(),
        format!(
            "driver=iscsi,node-name=shared1,transport=tcp,portal={portal},target={target},\
             lun={lun},initiator-name={initiator},cache.direct=on"
        ),
        "-device".into(),
        "scsi-block,bus=scsi0.0,drive=shared1,rerror=report,werror=report".into(),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cluster_page_shows_the_lines_vmtest_boots() {
        let page = include_str!("../../../../docs/cluster.md");
        let args = super::shared_lun_args(
            "192.0.2.10:3260",
            "iqn.2026-01.test:shared",
            1,
            "iqn.2026-01.test:node1",
        );
        for pair in args.chunks(2) {
            let line = format!("{} {} \\", pair[0], pair[1]);
            let last = format!("{} {}\n", pair[0], pair[1]);
            assert!(
                page.contains(&line) || page.contains(&last),
                "docs/cluster.md lacks `{} {}`",
                pair[0],
                pair[1]
            );
        }
    }

    use super::*;

    /// Plays both guests honestly: each announces its next step as soon as its previous one is
    /// done, and finishes a step as soon as it is released.
    fn play(sequencer: &mut Sequencer) -> Vec<Go> {
        let mut released = Vec::new();
        let announce = |sequencer: &mut Sequencer, node: Node, after: usize| {
            let next = PLAN
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, step)| step.node == node);
            next.map_or(Ok(None), |(index, step)| {
                let line = format!("PR-STEP-READY {} {}", index + 1, step.name);
                sequencer.on_line(node, &line)
            })
        };
        let mut pending: Vec<Go> = Vec::new();
        for node in NODES {
            pending.extend(announce(sequencer, node, 0).unwrap());
        }
        while let Some(go) = pending.pop() {
            released.push(go);
            let done = format!("PR-STEP-DONE {}", go.step);
            pending.extend(sequencer.on_line(go.node, &done).unwrap());
            pending.extend(announce(sequencer, go.node, usize::from(go.step)).unwrap());
        }
        released
    }

    #[test]
    fn the_sequencer_releases_every_step_once_in_plan_order() {
        let mut sequencer = Sequencer::default();
        let released = play(&mut sequencer);
        assert!(sequencer.finished());
        assert_eq!(released.len(), PLAN.len());
        for (index, (go, step)) in released.iter().zip(PLAN).enumerate() {
            assert_eq!(go.step as usize, index + 1);
            assert_eq!(go.node, step.node);
        }
        assert!(!sequencer.owes_steps(Node::A) && !sequencer.owes_steps(Node::B));
    }

    #[test]
    fn the_sequencer_waits_for_the_owner_of_the_next_step() {
        let mut sequencer = Sequencer::default();
        // Node B's first step comes after several of A's: announcing it releases nothing.
        let b_first = PLAN.iter().position(|s| s.node == Node::B).unwrap();
        assert!(b_first > 0);
        let line = format!("PR-STEP-READY {} {}", b_first + 1, PLAN[b_first].name);
        assert_eq!(sequencer.on_line(Node::B, &line), Ok(None));
        let line = format!("PR-STEP-READY 1 {}", PLAN[0].name);
        assert_eq!(
            sequencer.on_line(Node::A, &line),
            Ok(Some(Go {
                node: Node::A,
                step: 1
            }))
        );
        assert!(sequencer.owes_steps(Node::B));
        // Noise and results do not move the sequence.
        assert_eq!(sequencer.on_line(Node::A, "RESULT pr-x PASS"), Ok(None));
    }

    #[test]
    fn protocol_errors_are_reported() {
        let mut sequencer = Sequencer::default();
        // Step 1 belongs to node A, and has a name.
        assert!(
            sequencer
                .on_line(Node::B, &format!("PR-STEP-READY 1 {}", PLAN[0].name))
                .is_err()
        );
        assert!(
            sequencer
                .on_line(Node::A, "PR-STEP-READY 1 another-name")
                .is_err()
        );
        assert!(sequencer.on_line(Node::A, "PR-STEP-READY 0 x").is_err());
        assert!(sequencer.on_line(Node::A, "PR-STEP-READY 250 x").is_err());
        assert!(sequencer.on_line(Node::A, "PR-STEP-READY one x").is_err());
        // Finishing a step that was never released.
        assert!(sequencer.on_line(Node::A, "PR-STEP-DONE 1").is_err());
        // A node that skips its next step would wait forever; it is caught at once.
        let a_second = PLAN
            .iter()
            .enumerate()
            .filter(|(_, s)| s.node == Node::A)
            .nth(1)
            .unwrap()
            .0;
        let line = format!("PR-STEP-READY {} {}", a_second + 1, PLAN[a_second].name);
        assert!(sequencer.on_line(Node::A, &line).is_err());
    }

    fn passing_log(node: Node) -> GuestReport {
        let lines: Vec<String> = expected_results(node, Flavour::Driver)
            .iter()
            .map(|name| format!("RESULT {name} PASS ok"))
            .collect();
        GuestReport::parse(lines.iter().map(|l| (Duration::ZERO, l.as_str())))
    }

    #[test]
    fn a_node_passes_only_with_every_result_and_its_exit_status() {
        let good = passing_log(Node::A);
        assert!(check_node((Node::A, Flavour::Driver), Some(GUEST_SUCCESS), &good).is_empty());
        assert_eq!(
            check_node((Node::A, Flavour::Driver), Some(35), &good).len(),
            1
        );
        assert_eq!(check_node((Node::A, Flavour::Driver), None, &good).len(), 1);
        // Node B's log lacks node A's steps.
        let problems = check_node(
            (Node::A, Flavour::Driver),
            Some(GUEST_SUCCESS),
            &passing_log(Node::B),
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("no passing RESULT pr-a-register")),
            "{problems:?}"
        );
        let lines = ["RESULT pr-a-register FAIL expected Good, got Conflict".to_owned()];
        let failed = GuestReport::parse(lines.iter().map(|l| (Duration::ZERO, l.as_str())));
        let problems = check_node((Node::A, Flavour::Driver), Some(GUEST_SUCCESS), &failed);
        assert!(problems.iter().any(|p| p.contains("got Conflict")));
        let crashed = GuestReport::parse(std::iter::once((Duration::ZERO, "PANIC at x")));
        assert!(
            check_node((Node::B, Flavour::Driver), Some(GUEST_SUCCESS), &crashed)
                .iter()
                .any(|p| p.contains("crashed"))
        );
    }

    #[test]
    fn each_node_expects_its_own_steps_and_the_frame() {
        // The image flavour checks the image's load and start instead of the driver's PCI
        // steps, and the StorPort rules at the end.
        let image = expected_results(Node::A, Flavour::Image);
        for name in [
            "image-load",
            "image-start",
            "image-rules",
            "pr-ready",
            "pr-done",
        ] {
            assert!(image.iter().any(|n| n == name), "{name}");
        }
        assert!(!image.iter().any(|n| n == "pci-find"));
        let a = expected_results(Node::A, Flavour::Driver);
        let b = expected_results(Node::B, Flavour::Driver);
        assert_eq!(
            a.len() + b.len(),
            PLAN.len() + 2 * ["boot", "pci-find", "pci-bars", "pr-ready", "pr-done"].len()
        );
        assert!(a.contains(&"pr-a-attention-preempted".to_owned()));
        assert!(b.contains(&"pr-b-preempt".to_owned()));
        assert!(!a.iter().any(|name| name.starts_with("pr-b-")));
    }
}
