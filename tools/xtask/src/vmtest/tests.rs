//! Tests of the vmtest host side: QEMU trace parsing and the checks of the guest's report.

use std::collections::BTreeMap;

use serde_json::json;

use super::qmp::{QmpMessage, classify};
use super::report::{GuestQueueStats, QueueCounts};
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
    let none = passing_text().replace("completions 64 interrupts 9", "completions 64 interrupts 0");
    assert!(check(&CONFIGS[0], Some(33), &report(&none), &good_counts).is_err());
    let merged = passing_text().replace("completions 4 interrupts 4", "completions 4 interrupts 3");
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
