//! What the I/O path reaches of the adapter: the adapter implements [`IoHost`], so the I/O
//! path names no adapter type (the adapter names it instead, to drive it).
#![forbid(unsafe_code)]

use core::sync::atomic::AtomicU64;

use virtio_core::features::Features;
use virtio_core::scsi::Limits;

use super::device_identification::LunLocation;
use crate::control::wmi_provider::WmiHost;
use crate::counters::{QueueCounters, RecoveryCounters};
use crate::events::GoneUnits;
use crate::limits::StorLimits;
use crate::luns::{LunSlot, LunTable};
use crate::queue_state::QueueGuard;
use crate::storport::dma::Carved;
use crate::storport::port::DeviceExtension;
use crate::storport::srb::Srb;
use crate::trace::Tracer;

/// The adapter's state and actions the I/O path uses: BuildIo (no lock), StartIo (which takes
/// the queue lock through [`IoHost::lock`]) and the completions (under a queue lock the caller
/// holds). Every method is a field read or a short routine, called through a generic parameter
/// (static dispatch), so the I/O path costs what it cost when it named the adapter.
pub trait IoHost: WmiHost {
    /// The adapter in StorPort's calls.
    fn extension(&self) -> DeviceExtension;
    /// The limits reported to StorPort (the request layout in the SRB extension among them).
    fn limits(&self) -> &StorLimits;
    /// The device's limits (the addresses a request may name).
    fn device_limits(&self) -> &Limits;
    /// Features negotiated with the device.
    fn features(&self) -> Features;
    /// Request queues in use.
    fn request_queues(&self) -> u16;
    /// The request queue `srb`, submitted on the current processor, goes to.
    fn queue_for_request(&self, srb: &Srb) -> u16;
    /// Locks request queue `queue`.
    fn lock(&self, queue: u16) -> QueueGuard<'_>;
    /// Notifies the device of new requests on request queue `queue` (after unlocking).
    fn notify(&self, queue: u16, offset: u64);
    /// Between ScsiStopAdapter and a successful ScsiRestartAdapter (read under a queue lock).
    fn is_stopped(&self) -> bool;
    /// Whether rings keep room for large requests ([`crate::queue_state::room`]): not on the
    /// dump stack, which holds one request at a time and must not ask for the system time.
    fn keeps_reservations(&self) -> bool;
    /// Counters of request queue `queue`.
    fn counters(&self, queue: u16) -> Option<&QueueCounters>;
    /// Recovery and lifecycle counters.
    fn recovery(&self) -> &RecoveryCounters;
    /// The units the device (or PnP) reported removed.
    fn gone(&self) -> &GoneUnits<Carved<AtomicU64>>;
    /// The LUN table, which completions of the bus scan's commands update.
    fn luns(&self) -> &LunTable<Carved<LunSlot>>;
    /// Where synthesised identifiers for `target`/`lun` come from.
    fn location(&self, target: u8, lun: u16) -> LunLocation;
    /// Where the I/O path records protocol violations.
    fn tracer(&self) -> Tracer<'_>;
}
