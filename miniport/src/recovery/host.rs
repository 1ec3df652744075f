//! What recovery reaches of the adapter: the adapter implements [`RecoveryHost`], so task
//! management and unit control name no adapter type (the adapter names them instead).
#![forbid(unsafe_code)]

use core::sync::atomic::AtomicU64;

use virtio_core::scsi::Limits;

use crate::counters::RecoveryCounters;
use crate::events::GoneUnits;
use crate::in_flight::InFlight;
use crate::luns::{LunSlot, LunTable};
use crate::recovery::tmf::{Owner, TmfSlot, TmfTable};
use crate::ring_view::{Doorbell, RingView};
use crate::storport::dma::Carved;
use crate::storport::port::DeviceExtension;
use crate::storport::srb::Srb;
use crate::trace::{ResetCause, Tracer};

/// The adapter's state and actions task management and unit control use. Each method says
/// which lock it takes; none is called with a queue lock held unless it says so.
pub trait RecoveryHost: Doorbell {
    /// Where recovery records what it does.
    fn tracer(&self) -> Tracer<'_>;
    /// The adapter in StorPort's calls.
    fn extension(&self) -> DeviceExtension;
    /// The device's limits (the addresses a function may name).
    fn device_limits(&self) -> &Limits;
    /// The crash-dump or hibernation stack loaded this instance: no task management there.
    fn in_dump_mode(&self) -> bool;
    /// Between ScsiStopAdapter and a successful ScsiRestartAdapter.
    fn is_stopped(&self) -> bool;
    /// The task management slots and their counters.
    fn tmfs(&self) -> &TmfTable<Carved<TmfSlot>>;
    /// Recovery and lifecycle counters.
    fn recovery(&self) -> &RecoveryCounters;
    /// The LUN table.
    fn luns(&self) -> &LunTable<Carved<LunSlot>>;
    /// The units the device (or PnP) reported removed.
    fn gone(&self) -> &GoneUnits<Carved<AtomicU64>>;
    /// Request queues in use.
    fn request_queues(&self) -> u16;
    /// Requests submitted on request queue `queue` so far, read under the queue's lock (under
    /// which StartIo numbers each request).
    fn submitted(&self, queue: u16) -> u64;
    /// Runs `f` under the controlq's lock with its ring (`None` before it exists).
    fn with_control_ring<R>(&self, f: impl FnOnce(Option<RingView<'_>>) -> R) -> R;
    /// Calls `visit` for every request in flight, queue by queue, each under its lock.
    fn for_each_in_flight(&self, visit: impl FnMut(&InFlight));
    /// Drains every request queue, each under its lock; true if a device broke the protocol.
    fn poll_all(&self) -> bool;
    /// Completes `srb`, which StorPort handed to StartIo, with `status`.
    fn complete(&self, srb: Srb, status: u8);
    /// Completes the SRB a task management slot handed back, with `status`.
    fn complete_owner(&self, owner: Owner, status: u8);
    /// Resets the device now (see the adapter's recovery); true if it came back.
    fn reset_device(&self, cause: ResetCause) -> bool;
    /// HwResetBus as this stack does it (task management, or inline on the dump stack).
    fn reset_bus(&self, cause: ResetCause);
    /// Asks the timer for a reset for `cause` without asking it to run now.
    fn note_reset_request(&self, cause: ResetCause);
    /// Asks the timer to run now.
    fn kick_timer(&self);
}
