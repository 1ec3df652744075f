//! What StorPort's abort and reset requests become: one task management function each
//! (`start`), or one per target holding requests (`reset_bus`).

use core::sync::atomic::Ordering;

use super::{Nexus, Owner, PostError, post_tmf};
use crate::recovery::host::RecoveryHost;
use crate::storport::srb::Srb;
use crate::storport::{
    SRB_FUNCTION_ABORT_COMMAND, SRB_FUNCTION_RESET_BUS, SRB_FUNCTION_RESET_DEVICE,
    SRB_FUNCTION_RESET_LOGICAL_UNIT, SRB_STATUS_ABORT_FAILED, SRB_STATUS_ERROR,
    SRB_STATUS_INVALID_LUN, SRB_STATUS_INVALID_PATH_ID, SRB_STATUS_INVALID_REQUEST,
    SRB_STATUS_INVALID_TARGET_ID, SRB_STATUS_SUCCESS,
};
use crate::trace::ResetCause;

/// StartIo for `SRB_FUNCTION_ABORT_COMMAND`, `_RESET_LOGICAL_UNIT`, `_RESET_DEVICE` and
/// `_RESET_BUS`: sends the function (see the module documentation); the SRB completes when it
/// ends.
pub fn start<H: RecoveryHost>(host: &H, srb: Srb) {
    let function = srb.function();
    if function == u32::from(SRB_FUNCTION_RESET_BUS) {
        host.reset_bus(ResetCause::ResetSrb);
        host.complete(srb, SRB_STATUS_SUCCESS);
        return;
    }
    let abort = function == u32::from(SRB_FUNCTION_ABORT_COMMAND);
    if host.is_stopped() {
        // Nothing is in flight on a stopped adapter: no command to abort, no unit to reset.
        let status = if abort {
            SRB_STATUS_ABORT_FAILED
        } else {
            SRB_STATUS_SUCCESS
        };
        host.complete(srb, status);
        return;
    }
    let address = srb.address();
    let device = host.device_limits();
    let refused = if address.path != 0 {
        Some(SRB_STATUS_INVALID_PATH_ID)
    } else if address.target > device.max_target {
        Some(SRB_STATUS_INVALID_TARGET_ID)
    } else if u16::from(address.lun) > device.max_lun {
        Some(SRB_STATUS_INVALID_LUN)
    } else {
        None
    };
    if let Some(status) = refused {
        host.complete(srb, status);
        return;
    }
    let nexus = if abort {
        let victim = srb.next_srb();
        let mut found = None;
        if victim != 0 {
            host.for_each_in_flight(|request| {
                if request.srb == victim {
                    found = Some(*request);
                }
            });
        }
        let Some(request) = found else {
            // Not (or no longer) on a ring: it completed, or never reached the device.
            host.complete(srb, SRB_STATUS_ABORT_FAILED);
            return;
        };
        Nexus::Task {
            target: request.target,
            lun: request.lun,
            tag: request.tag,
        }
    } else if function == u32::from(SRB_FUNCTION_RESET_LOGICAL_UNIT) {
        Nexus::LogicalUnit {
            target: address.target,
            lun: u16::from(address.lun),
        }
    } else if function == u32::from(SRB_FUNCTION_RESET_DEVICE) {
        Nexus::Target {
            target: address.target,
        }
    } else {
        host.complete(srb, SRB_STATUS_INVALID_REQUEST);
        return;
    };
    if host.in_dump_mode() {
        // No task management on the dump stack: no timer bounds a function there. The unit
        // (or the aborted command, which is in flight) is reset as HwResetBus resets in dump
        // mode, with the whole device, inline.
        host.reset_bus(ResetCause::ResetSrb);
        host.complete(srb, SRB_STATUS_SUCCESS);
        return;
    }
    // The slot owns the SRB from here; a function that is not sent hands it back.
    let owner = Owner::keep(srb);
    match post_tmf(host, nexus, Some(owner)) {
        Ok(()) => {}
        Err(PostError::Stopped(owner)) => {
            if let Some(owner) = owner {
                host.complete_owner(owner, SRB_STATUS_SUCCESS);
            }
        }
        Err(PostError::NotSent(owner)) => {
            host.tmfs()
                .counters
                .not_sent
                .fetch_add(1, Ordering::Relaxed);
            let restarted = host.reset_device(ResetCause::ResetSrb);
            if let Some(owner) = owner {
                let status = if restarted {
                    SRB_STATUS_SUCCESS
                } else {
                    SRB_STATUS_ERROR
                };
                host.complete_owner(owner, status);
            }
        }
    }
}

/// HwResetBus (and `SRB_FUNCTION_RESET_BUS`) in the normal stack: polls every queue, then
/// sends an I_T NEXUS RESET to each target still holding requests (the full reset, for
/// `cause`, when they do not all fit). The requests complete as the functions end; StorPort is
/// told a reset happened. The dump stack resets differently: the adapter's `reset_bus`.
pub fn reset_bus<H: RecoveryHost>(host: &H, cause: ResetCause) {
    let recovery = host.recovery();
    recovery.bus_resets.fetch_add(1, Ordering::Relaxed);
    if host.is_stopped() {
        return;
    }
    if host.poll_all() {
        host.reset_device(ResetCause::ProtocolViolation);
        return;
    }
    let mut targets = [0u64; 4];
    host.for_each_in_flight(|request| {
        if let Some(word) = targets.get_mut(usize::from(request.target / 64)) {
            *word |= 1 << (request.target % 64);
        }
    });
    if targets == [0; 4] {
        recovery.bus_resets_polled.fetch_add(1, Ordering::Relaxed);
        host.extension().reset_detected();
        return;
    }
    for target in 0..=u8::MAX {
        let word = targets.get(usize::from(target / 64)).copied().unwrap_or(0);
        if word & (1 << (target % 64)) == 0 {
            continue;
        }
        if post_tmf(host, Nexus::Target { target }, None).is_err() {
            host.tmfs()
                .counters
                .not_sent
                .fetch_add(1, Ordering::Relaxed);
            host.reset_device(cause);
            return;
        }
    }
    host.extension().reset_detected();
}
