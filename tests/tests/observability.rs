//! Scenarios: registry parameters read at find-adapter, the trace ring a debugger reads from the
//! device extension, and the StorPortDebugPrint lines the registry's level lets through.

use std::sync::Arc;
use std::time::Duration;

use rvscsi::storport::{SRB_FUNCTION_RESET_LOGICAL_UNIT, SRB_STATUS_BUS_RESET, SRB_STATUS_SUCCESS};
use rvscsi::trace::{ResetCause, TraceEntry, TraceEvent, ViolationKind};
use rvscsi_tests::device::target::Lun;
use rvscsi_tests::device::{DeviceOptions, FaultAction, TmfAction, TmfInfo};
use rvscsi_tests::harness::{Machine, boot, fault_once};
use rvscsi_tests::sim::{Request, SimOptions};
use virtio_core::scsi::Response;

fn machine(registry: &[(&str, u32)], messages: Option<u32>) -> Machine {
    let sim = SimOptions {
        registry: registry
            .iter()
            .map(|&(name, value)| (name.to_owned(), value))
            .collect(),
        messages,
        ..SimOptions::default()
    };
    boot(
        sim,
        DeviceOptions::default(),
        vec![(0, 0, Lun::memory(1 << 14, 512).unwrap())],
    )
    .unwrap()
}

const fn read10_first_block() -> [u8; 10] {
    [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]
}

fn events(trace: &[TraceEntry], event: TraceEvent) -> Vec<TraceEntry> {
    trace
        .iter()
        .filter(|entry| entry.event == event as u16)
        .copied()
        .collect()
}

#[test]
fn registry_values_cap_the_limits_and_queues_and_adjustments_are_traced() {
    let machine = machine(
        &[
            ("PhysicalBreaks", 32),
            ("RvscsiMaxQueues", 2),
            // vioscsi's "do nothing on reset" would leave SRBs outstanding: refused.
            ("VioscsiActionOnReset", 1),
            // Above DPFLTR_INFO_LEVEL: clamped to it.
            ("RvscsiDebugPrintLevel", 9),
        ],
        None,
    );
    let found = machine.adapter.found_adapter();
    // The device offers seg_max 254 on 256-entry rings; the registry caps it at 32 breaks.
    assert_eq!(found.config.number_of_physical_breaks, 32);
    assert_eq!(found.config.maximum_transfer_length, 32 * 4096);
    // Two request queues of 256 instead of the device's four.
    assert_eq!(found.config.max_number_of_io, 2 * 256);

    let trace = machine.trace();
    let adjusted = events(&trace, TraceEvent::RegistryAdjusted);
    // (index in the registry table, value read, value used; u64::MAX = refused)
    let adjusted: Vec<_> = adjusted.iter().map(|entry| entry.args).collect();
    assert_eq!(adjusted, vec![(1, 1, u64::MAX), (3, 9, 3)]);
    let found_events = events(&trace, TraceEvent::AdapterFound);
    assert_eq!(found_events.len(), 1);
    assert_eq!(found_events[0].args.0, 2, "request queues");
    assert_eq!(found_events[0].args.2, 32, "physical breaks");
    assert_eq!(events(&trace, TraceEvent::Initialized).len(), 1);

    // At the info level the adapter's history is printed, not just its errors.
    let log = machine.adapter.log();
    assert!(
        log.iter()
            .any(|line| line.contains("[3] rvscsi: adapter-found 2 ")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|line| line.contains("[1] rvscsi: registry-adjusted 1 1 ffffffffffffffff")),
        "{log:?}"
    );
    // The registry buffer was allocated, used and freed within the contract.
    machine.finish();
}

#[test]
fn without_registry_values_the_device_decides_and_only_errors_are_printed() {
    let machine = machine(&[], None);
    let found = machine.adapter.found_adapter();
    assert_eq!(found.config.number_of_physical_breaks, 253);
    assert_eq!(found.config.max_number_of_io, 4 * 256);
    let trace = machine.trace();
    assert!(events(&trace, TraceEvent::RegistryAdjusted).is_empty());
    assert_eq!(events(&trace, TraceEvent::AdapterFound).len(), 1);
    assert!(
        !machine
            .adapter
            .log()
            .iter()
            .any(|line| line.contains("rvscsi:")),
        "nothing above the error level is printed by default"
    );
    machine.finish();
}

/// The TMF arguments the trace records: subtype, target << 16 | LUN, tag.
const I_T_NEXUS_RESET_OF_TARGET_0: (u32, u64, u64) = (4, 0, 0);

#[test]
fn a_timeout_recovered_by_task_management_is_traced_without_a_device_reset() {
    for messages in [None, Some(0)] {
        let machine = machine(&[], messages);
        machine.device.set_fault_hook(Some(fault_once(
            |info| info.cdb.first() == Some(&0x28),
            FaultAction::Drop,
        )));
        let mut request = Request::new(0, 0, &read10_first_block()).reading(512);
        request.timeout_seconds = 1;
        let done = machine.adapter.execute(0, &request).unwrap();
        // The I_T NEXUS RESET took the dropped command back with VIRTIO_SCSI_S_RESET.
        assert_eq!(done.status(), SRB_STATUS_BUS_RESET);
        // The function's end is recorded by the timer after the command completes.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while events(&machine.trace(), TraceEvent::TmfDone).is_empty()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let trace = machine.trace();
        let sent = events(&trace, TraceEvent::TmfSent);
        let ended = events(&trace, TraceEvent::TmfDone);
        assert_eq!(sent.len(), 1, "{trace:?}");
        assert_eq!(sent[0].args, I_T_NEXUS_RESET_OF_TARGET_0);
        assert_eq!(sent[0].queue, 0, "the controlq");
        assert_eq!(ended.len(), 1, "{trace:?}");
        // arg0 is the device's answer: FUNCTION COMPLETE.
        assert_eq!(ended[0].args, (0, 0, 0));
        assert!(sent[0].sequence < ended[0].sequence);
        assert!(
            events(&trace, TraceEvent::DeviceReset).is_empty(),
            "{trace:?}"
        );
        // Task management is recorded at the info levels: nothing printed by default.
        assert!(
            !machine
                .adapter
                .log()
                .iter()
                .any(|line| line.contains("rvscsi: tmf-")),
            "{:?}",
            machine.adapter.log()
        );
        machine.finish();
    }
}

#[test]
fn a_timeout_reset_is_traced_with_its_cause_and_printed_as_an_error() {
    for messages in [None, Some(0)] {
        let machine = machine(&[], messages);
        machine.device.set_fault_hook(Some(fault_once(
            |info| info.cdb.first() == Some(&0x28),
            FaultAction::Drop,
        )));
        // The device rejects the I_T NEXUS RESET: the miniport escalates to the device reset.
        machine.device.set_tmf_hook(Some(Arc::new(|_: &TmfInfo| {
            TmfAction::Respond(Response::FunctionRejected)
        })));
        let mut request = Request::new(0, 0, &read10_first_block()).reading(512);
        request.timeout_seconds = 1;
        let done = machine.adapter.execute(0, &request).unwrap();
        assert_eq!(done.status(), SRB_STATUS_BUS_RESET);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while events(&machine.trace(), TraceEvent::TmfDone).is_empty()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }

        let trace = machine.trace();
        let resets = events(&trace, TraceEvent::DeviceReset);
        assert_eq!(resets.len(), 1, "{trace:?}");
        assert_eq!(resets[0].args.0, ResetCause::TmfEscalation as u32);
        assert_eq!(resets[0].args.1, 1, "the adapter's first reset");
        let sent = events(&trace, TraceEvent::TmfSent);
        let ended = events(&trace, TraceEvent::TmfDone);
        assert_eq!(sent.len(), 1, "{trace:?}");
        assert_eq!(sent[0].args, I_T_NEXUS_RESET_OF_TARGET_0);
        assert_eq!(ended.len(), 1, "{trace:?}");
        assert_eq!(
            ended[0].args,
            (u32::from(Response::FunctionRejected.raw()), 0, 0)
        );
        // The function is sent, the reset it escalates to ends it.
        assert!(sent[0].sequence < resets[0].sequence);
        assert!(resets[0].sequence < ended[0].sequence);
        // Sequence numbers order the history: found, initialised, then the recovery.
        assert!(trace.windows(2).all(|w| w[0].sequence < w[1].sequence));
        assert!(
            machine
                .adapter
                .log()
                .iter()
                .any(|line| line.contains("[0] rvscsi: device-reset 5 1 0")),
            "{:?}",
            machine.adapter.log()
        );
        machine.finish();
    }
}

#[test]
fn a_task_management_function_the_device_never_answers_is_traced_as_timed_out() {
    let machine = machine(&[], None);
    machine.device.set_fault_hook(Some(fault_once(
        |info| info.cdb.first() == Some(&0x28),
        FaultAction::Drop,
    )));
    machine
        .device
        .set_tmf_hook(Some(Arc::new(|_: &TmfInfo| TmfAction::Ignore)));
    let mut request = Request::control(SRB_FUNCTION_RESET_LOGICAL_UNIT, 0, 0);
    request.timeout_seconds = 100;
    let mut read = Request::new(0, 0, &read10_first_block()).reading(512);
    // Long enough that StorPort's own timeout stays out of it.
    read.timeout_seconds = 100;
    let held = machine.adapter.submit(0, &read).unwrap();
    let done = machine.adapter.execute(0, &request).unwrap();
    // Unanswered past its deadline, the function escalates; the reset completes it.
    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
    let read = machine.adapter.wait(held, Duration::from_secs(10)).unwrap();
    assert_eq!(read.status(), SRB_STATUS_BUS_RESET);
    let trace = machine.trace();
    let sent = events(&trace, TraceEvent::TmfSent);
    let ended = events(&trace, TraceEvent::TmfDone);
    let resets = events(&trace, TraceEvent::DeviceReset);
    assert_eq!(sent.len(), 1, "{trace:?}");
    // LOGICAL UNIT RESET of 0:0.
    assert_eq!(sent[0].args, (5, 0, 0));
    assert_eq!(ended.len(), 1, "{trace:?}");
    assert_eq!(ended[0].args, (u32::MAX, 0, 0), "no answer");
    assert_eq!(resets.len(), 1, "{trace:?}");
    assert_eq!(resets[0].args.0, ResetCause::TmfEscalation as u32);
    machine.finish();
}

#[test]
fn a_protocol_violation_is_traced_with_what_the_device_wrote() {
    let machine = machine(&[], None);
    machine
        .device
        .set_fault_hook(Some(fault_once(|_| true, FaultAction::CorruptUsedId(4000))));
    let mut request = Request::new(0, 0, &read10_first_block()).reading(512);
    request.timeout_seconds = 2;
    let done = machine.adapter.execute(0, &request).unwrap();
    assert_eq!(done.status(), SRB_STATUS_BUS_RESET);
    // The reset runs after the violation is recorded; give the DPC a moment to finish it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while events(&machine.trace(), TraceEvent::DeviceReset).is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let trace = machine.trace();
    let violations = events(&trace, TraceEvent::ProtocolViolation);
    assert_eq!(violations.len(), 1, "{trace:?}");
    // Id 4000 is outside a 256-entry ring: virtio-core's used-ring validation rejects it.
    assert_eq!(violations[0].args.0, ViolationKind::RingError as u32);
    let resets = events(&trace, TraceEvent::DeviceReset);
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0].args.0, ResetCause::ProtocolViolation as u32);
    assert!(violations[0].sequence < resets[0].sequence);

    let done = machine
        .adapter
        .execute(0, &Request::new(0, 0, &read10_first_block()).reading(512))
        .unwrap();
    assert_eq!(done.status(), SRB_STATUS_SUCCESS);
    machine.finish();
}
