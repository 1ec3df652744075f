//! What a vmtest run is judged by: QEMU's trace counts per virtqueue, the guest's serial report
//! (results, phases, per-queue statistics), and the checks that compare the two.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::{Config, EXPECTED_RESULTS, GUEST_SUCCESS};

/// Notifications and interrupts QEMU traced for one virtqueue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct QueueCounts {
    /// `virtio_queue_notify`: the driver wrote the queue's notify register.
    pub(super) notifies: u64,
    /// `virtio_notify`: the device decided to interrupt for the queue.
    pub(super) interrupts: u64,
}

/// Per-virtqueue counts from a QEMU trace log, counting only what happened after the last
/// device reset (`virtio_set_status ... val 0`): the firmware drives the device first, and the
/// guest resets it once before setting it up.
pub(super) fn parse_trace(log: &str) -> BTreeMap<u16, QueueCounts> {
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
pub(super) struct Phase {
    pub(super) vq: u16,
    pub(super) ios: u64,
    pub(super) begin: Option<Duration>,
    pub(super) end: Option<Duration>,
}

/// What the guest counted for one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct GuestQueueStats {
    pub(super) kicks: u64,
    pub(super) completions: u64,
    pub(super) interrupts: u64,
    /// Interrupt passes the guest ran, and those that found nothing.
    pub(super) passes: u64,
    pub(super) empty_passes: u64,
    /// Completions drained right after an interrupt.
    pub(super) irq_completions: u64,
    /// `enable_interrupts` re-checks that found chains, and the chains they found.
    pub(super) rechecks: u64,
    pub(super) recheck_completions: u64,
}

/// What the guest printed, parsed.
#[derive(Debug, Default)]
pub(super) struct GuestReport {
    /// `RESULT <name> PASS|FAIL <details>`, in order.
    pub(super) results: Vec<(String, bool, String)>,
    /// `STAT vq <n> kicks <k> completions <c> interrupts <i> passes <p> empty-passes <e>
    /// irq-completions <q> rechecks <r> recheck-completions <rc>`: the guest's own counts of
    /// notifications sent, MSI-X interrupts received and what its interrupt passes drained,
    /// per queue.
    pub(super) stats: BTreeMap<u16, GuestQueueStats>,
    /// Measured phases by name.
    pub(super) phases: BTreeMap<String, Phase>,
    /// Lines reporting a panic or a CPU exception.
    pub(super) crashes: Vec<String>,
    /// When the boot result arrived.
    pub(super) booted_at: Option<Duration>,
}

impl GuestReport {
    pub(super) fn parse<'a>(lines: impl Iterator<Item = (Duration, &'a str)>) -> Self {
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
pub(super) fn parse_stat_fields(fields: &[&str]) -> Option<GuestQueueStats> {
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
pub(super) fn check(
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
pub(super) fn check_queue(
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
pub(super) struct PhaseFigures {
    pub(super) iops: f64,
    pub(super) kicks_per_io: f64,
    pub(super) interrupts_per_io: f64,
}

pub(super) fn phase_figures(phase: &Phase, queue: QueueCounts) -> Result<PhaseFigures, String> {
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
pub(super) fn expect_phase(
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
