//! HwInitialize and PassiveInitialize: the interrupt mode, the queues set up on the device,
//! DRIVER_OK, the queue DPCs and StorPort's performance options.
#![forbid(unsafe_code)]

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use virtio_core::scsi::queue_index;

use super::{Adapter, AdapterError, AllQueuesLocked, InterruptMode, QueueDpc};
use crate::sizing::MAX_REQUEST_QUEUES;
use crate::storport::StorDpc;
use crate::storport::queue_locks::HeldByStorPort;
use crate::trace::{ADAPTER_WIDE, TraceEvent};

impl Adapter {
    /// HwInitialize: decides the interrupt mode from the messages StorPort connected, sets up
    /// every queue with its vector and sets DRIVER_OK. Runs before any I/O, with StorPort's
    /// interrupt lock held (`held`).
    pub fn initialize(&self, held: &mut HeldByStorPort) -> bool {
        let Some(mut every_lock) = self.lock_all(Some(held)) else {
            return false;
        };
        let mut messages = 0u16;
        // The dump port connects no interrupt at all (it polls HwInterrupt): line mode, which
        // programs no MSI-X vector, whatever messages the function has.
        while self.dump.is_none()
            && messages < MAX_REQUEST_QUEUES + 3
            && self.extension.msi_info(u32::from(messages)).is_some()
        {
            messages += 1;
        }
        let prepared_requests = self.prepared_queues - queue_index::REQUEST_BASE;
        let (mode, request_queues) = InterruptMode::choose(messages, prepared_requests);
        self.queues.set_mode(mode, &mut every_lock);
        self.request_queues.store(request_queues, Ordering::Relaxed);
        self.trace(
            TraceEvent::Initialized,
            ADAPTER_WIDE,
            (mode as u32, u64::from(messages), u64::from(request_queues)),
        );
        if self.start_queues(&mut every_lock).is_err() {
            return false;
        }
        drop(every_lock);
        // The health timer (no timer at all on the dump stack: `arm_timer`).
        self.arm_timer();
        // Without passive initialisation (a StorPort that offers the miniport no DPCs) there
        // are no queue DPCs: the ISR completes requests itself. The dump stack must not even be
        // asked (see `crate::dump`).
        if self.dump.is_none() {
            let _dpcs_offered = self
                .extension
                .enable_passive_initialization(self.callbacks.passive_initialize);
        }
        true
    }

    /// Virtqueues in use: controlq, eventq and the request queues.
    pub(crate) fn active_queues(&self) -> u16 {
        self.request_queues() + queue_index::REQUEST_BASE
    }

    /// Sets every active queue up on the device and sets DRIVER_OK, holding every queue lock
    /// (initialize, reset, restart).
    pub(crate) fn start_queues(
        &self,
        every_lock: &mut AllQueuesLocked<'_>,
    ) -> Result<(), AdapterError> {
        let mode = self.mode();
        let msix = mode != InterruptMode::Line;
        if msix {
            every_lock.shared_mut().set_config_msix_vector(Some(0))?;
        }
        for index in 0..self.active_queues() {
            let (transport, queue) = every_lock.shared_and_state(index);
            let Some(queue) = queue else {
                return Err(AdapterError::OutOfMemory);
            };
            let vector = match mode {
                InterruptMode::PerQueue => Some(Self::vector_of_queue(index)),
                InterruptMode::Shared => Some(0),
                InterruptMode::Line => None,
            };
            let ring = queue.ring.queue();
            let notifier = transport.setup_queue(index, ring.size(), ring.addresses(), vector)?;
            queue.notify_offset = notifier.offset();
        }
        let transport = every_lock.shared_mut();
        transport.driver_ok()?;
        self.events.started(transport);
        // The eventq is stocked from DRIVER_OK on (the device must not be notified before).
        if let Some(eventq) = every_lock.state(queue_index::EVENT)
            && let Some(offset) = self.events.stock(eventq.ring_view())
        {
            self.notify_virtqueue(queue_index::EVENT, offset);
        }
        Ok(())
    }

    /// PassiveInitialize: per-queue DPCs and StorPort's performance options (concurrent
    /// StartIo channels, completion DPCs redirected to the submitting processor).
    pub fn passive_initialize(&self) -> bool {
        for queue in 0..self.request_queues() {
            if let Some(dpc) = self.dpc(queue) {
                self.extension.initialize_dpc(dpc, self.callbacks.queue_dpc);
            }
        }
        // ORDERING: the DPC objects must be initialised before an ISR on another processor
        // sees `dpc_ready` and issues one; pairs with the acquire load in `on_queue_interrupt`.
        self.dpc_ready.store(true, Ordering::Release);
        let mut perf = crate::storport::PerfConfigurationData::zeroed();
        perf.version = crate::storport::STOR_PERF_VERSION_2;
        perf.size = size_of::<crate::storport::PerfConfigurationData>() as u32;
        if self.extension.perf_opts(true, &mut perf) {
            let supported = perf.flags;
            let mut wanted = crate::storport::STOR_PERF_CONCURRENT_CHANNELS;
            if self.mode() == InterruptMode::PerQueue {
                // Completions on the submitting processor: StorPort's completion DPCs go where
                // each request came from, and with the request queues' messages as the
                // redirection range, StorPortGetStartIoPerfParams names for each processor the
                // message (so the queue) that interrupts on it; the device's interrupt, our
                // ISR, our DPC and RequestComplete then all run on the submitter.
                wanted |= crate::storport::STOR_PERF_DPC_REDIRECTION
                    | crate::storport::STOR_PERF_INTERRUPT_MESSAGE_RANGES;
                perf.first_redirection_message_number =
                    u32::from(Self::vector_of_queue(queue_index::REQUEST_BASE));
                perf.last_redirection_message_number = u32::from(Self::vector_of_queue(
                    queue_index::REQUEST_BASE + self.request_queues() - 1,
                ));
            }
            perf.flags = supported & wanted;
            perf.concurrent_channels = u32::from(self.request_queues());
            // A refusal leaves StorPort's defaults (StartIo serialised), which our per-queue
            // locks handle as well.
            let applied = self.extension.perf_opts(false, &mut perf);
            self.message_ranges.store(
                applied && perf.flags & crate::storport::STOR_PERF_INTERRUPT_MESSAGE_RANGES != 0,
                Ordering::Relaxed,
            );
        }
        true
    }

    /// The DPC object of request queue `queue`.
    pub(crate) fn dpc(&self, queue: u16) -> Option<NonNull<StorDpc>> {
        let table: &[QueueDpc] = core::borrow::Borrow::borrow(&self.dpcs);
        table
            .get(usize::from(queue))
            .map(|dpc| NonNull::from(&dpc.0))
    }
}
