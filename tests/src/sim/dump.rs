//! The crash-dump stack's port driver, as the simulator plays it when [`super::SimOptions::dump`]
//! is set (what it does and why: `rvscsi::dump`'s module doc, with sources).
//!
//! Everything runs on the caller's thread, attached as processor 0, at HIGH_LEVEL: DriverEntry
//! with NULL arguments, HwFindAdapter with `dump=1` and ConfigInfo's DumpMode, HwInitialize, then
//! each request synchronously: HwBuildIo and HwStartIo with no lock held (one processor with
//! interrupts off has nothing to exclude), then HwInterrupt polled under the interrupt lock until
//! the SRB completes; past its timeout, HwResetBus once, then a grace period, then a violation.
//! No interrupt is ever delivered, and DPCs, timers, passive initialisation, the registry,
//! performance options and the system time are violations ([`Violation::ForbiddenInDumpMode`]).
//! The uncached extension is refused above the port's budget and is not page aligned.

use std::time::Instant;

use super::locks::{Attach, CallContext, HIGH_LEVEL, LockId};
use super::machine::{HwBoolFn, HwSrbFn, HwUlongFn, Machine, callback};
use super::{Adapter, Notification, Request, SimError, Ticket, Violation, abi, lock};

/// How the simulated dump port behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpPort {
    /// ConfigInfo's DumpMode: `DUMP_MODE_CRASH` (1), `DUMP_MODE_HIBER` (2), ... 0 plays a port
    /// whose ConfigInfo predates the field, signalling dump mode only by `dump=1` in
    /// ArgumentString.
    pub mode: u8,
    /// Most bytes of uncached extension the port gives; a larger request gets NULL.
    /// Microsoft's limit for dump-mode miniports is 32 KiB.
    pub uncached_budget: usize,
}

impl Default for DumpPort {
    fn default() -> Self {
        Self {
            mode: abi::DUMP_MODE_CRASH,
            uncached_budget: 32 * 1024,
        }
    }
}

/// Offset of the dump-mode uncached extension from a page boundary: storahci notes that in
/// dump mode it "is not guaranteed align with 1K", so the simulator gives a 16-byte aligned
/// one (x64 pool alignment) to catch a miniport that assumes more.
pub const DUMP_UNCACHED_MISALIGNMENT: usize = 16;

impl Machine {
    /// Records a [`Violation::ForbiddenInDumpMode`] if the machine plays the dump port; true
    /// when it did (the caller then refuses the routine).
    pub(crate) fn forbid_in_dump(&self, routine: &'static str) -> bool {
        if self.options.dump.is_none() {
            return false;
        }
        self.violate(Violation::ForbiddenInDumpMode { routine });
        true
    }

    /// Calls a miniport routine the way the dump port does: at HIGH_LEVEL, holding the
    /// interrupt lock if `interrupt_lock` (HwInitialize and HwInterrupt, whose contracts say
    /// it is held). `None` if the lock could not be taken (recorded).
    fn dump_call<R>(
        &self,
        context: CallContext,
        interrupt_lock: bool,
        f: impl FnOnce() -> R,
    ) -> Option<R> {
        let old = if interrupt_lock {
            Some(self.acquire(LockId::Interrupt)?)
        } else {
            None
        };
        let result = self.call(context, HIGH_LEVEL, f);
        if let Some(old) = old {
            self.release(LockId::Interrupt, old);
        }
        Some(result)
    }

    /// One poll: HwInterrupt, as the dump port calls it while it waits.
    fn dump_poll(&self) {
        let Some(routine) = self
            .hw
            .get()
            .and_then(|hw| callback!(hw.hw_interrupt as usize, HwBoolFn))
        else {
            return;
        };
        let extension = self.extension_ptr();
        // SAFETY: HwInterrupt gets the device extension, under the interrupt lock.
        let _ = self.dump_call(CallContext::Interrupt, true, || unsafe {
            routine.call(extension)
        });
    }

    /// Runs the SRB at `srb` (built and outstanding) through the miniport, synchronously.
    fn run_dump(&self, srb: usize) {
        let Some(hw) = self.hw.get() else { return };
        if !self.build_io(hw, srb, |routine| {
            self.dump_call(CallContext::BuildIo, false, routine)
        }) {
            return;
        }
        if let Some(start_io) = callback!(hw.hw_start_io as usize, HwSrbFn) {
            let extension = self.extension_ptr();
            let srb_ptr: *mut std::ffi::c_void = std::ptr::with_exposed_provenance_mut(srb);
            // SAFETY: as for HwBuildIo.
            let _ = self.dump_call(CallContext::StartIo, false, || unsafe {
                start_io.call(extension, srb_ptr)
            });
        }
        self.poll_until_complete(srb);
    }

    /// Polls HwInterrupt until `srb` completes; past its deadline calls HwResetBus once and
    /// polls for a grace period more; then records [`Violation::NotCompletedAfterReset`].
    fn poll_until_complete(&self, srb: usize) {
        let Some((mut deadline, path)) = self
            .state()
            .outstanding
            .get(&srb)
            .map(|record| (record.deadline, record.address.0))
        else {
            return;
        };
        let grace = self.options.timeout_scale.saturating_mul(2);
        let mut reset_sent = false;
        loop {
            self.dump_poll();
            let Some(ticket) = self
                .state()
                .outstanding
                .get(&srb)
                .map(|record| record.ticket)
            else {
                return;
            };
            let now = Instant::now();
            if now < deadline {
                // The device model may complete on its worker thread: let it run.
                std::thread::yield_now();
                continue;
            }
            if reset_sent {
                self.violate(Violation::NotCompletedAfterReset { ticket });
                return;
            }
            self.log(format!(
                "dump port: ticket {ticket} timed out: HwResetBus({path})"
            ));
            self.notify(Notification::TimeoutReset { path, ticket });
            if let Some(reset) = self
                .hw
                .get()
                .and_then(|hw| callback!(hw.hw_reset_bus as usize, HwUlongFn))
            {
                let extension = self.extension_ptr();
                // SAFETY: HwResetBus gets the device extension and a path id.
                let _ = self.dump_call(CallContext::ResetBus, false, || unsafe {
                    reset.call(extension, u32::from(path))
                });
            }
            reset_sent = true;
            deadline = now + grace;
        }
    }
}

impl Adapter {
    /// HwInitialize as the dump port calls it (HIGH_LEVEL, interrupt lock held); no DPC runs
    /// and no passive initialisation follows, since the dump port has neither.
    pub(super) fn initialize_for_dump(
        &self,
        hw: &abi::HwInitializationData,
    ) -> Result<(), SimError> {
        let machine = &self.machine;
        let extension = machine.extension_ptr();
        if let Some(initialize) = callback!(hw.hw_initialize as usize, HwBoolFn) {
            // SAFETY: HwInitialize gets the device extension, under the interrupt lock.
            let ok = machine
                .dump_call(CallContext::Initialize, true, || unsafe {
                    initialize.call(extension)
                })
                .unwrap_or(0);
            if ok == 0 {
                return Err(SimError::Initialize);
            }
        }
        Ok(())
    }

    /// Runs `request` through the dump port on the caller's thread: the port has one request
    /// outstanding at a time, and it has completed (or been given up on) when this returns.
    pub(super) fn run_dump_request(&self, request: &Request) -> Result<Ticket, SimError> {
        let _one_at_a_time = lock(&self.dump_port);
        let _attach = Attach::new(&self.machine, 0);
        let (srb, ticket) = self.machine.build_srb(request)?;
        self.machine.run_dump(srb);
        Ok(Ticket(ticket))
    }
}

impl Adapter {
    /// HwResetBus as the dump port may call it on its own (not after a timeout), on the
    /// caller's thread at HIGH_LEVEL with no lock held. Returns the routine's answer.
    ///
    /// # Errors
    /// [`SimError::NotStarted`] outside dump mode or without a HwResetBus.
    pub fn dump_reset_bus(&self, path: u8) -> Result<bool, SimError> {
        let machine = &self.machine;
        let reset = machine
            .hw
            .get()
            .and_then(|hw| callback!(hw.hw_reset_bus as usize, HwUlongFn))
            .filter(|_| machine.options.dump.is_some())
            .ok_or(SimError::NotStarted)?;
        let _one_at_a_time = lock(&self.dump_port);
        let _attach = Attach::new(machine, 0);
        let extension = machine.extension_ptr();
        // SAFETY: HwResetBus gets the device extension and a path id.
        let answer = machine.dump_call(CallContext::ResetBus, false, || unsafe {
            reset.call(extension, u32::from(path))
        });
        Ok(answer.is_some_and(|answer| answer != 0))
    }

    /// The machine bugchecks: its processors and timer stop where they are, and nothing is
    /// completed or shut down (requests outstanding stay so, as a crash leaves them). Returns
    /// the violations recorded until then. The device lives on, for the dump stack.
    #[must_use]
    pub fn crash(mut self) -> Vec<Violation> {
        self.stop();
        self.machine.violations()
    }
}
