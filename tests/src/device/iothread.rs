//! The request queues served as QEMU serves them from an iothread ([`CompletionMode::IoThread`]).
//!
//! What is modelled, from QEMU's `hw/virtio/virtio.c` and `hw/scsi/virtio-scsi.c`:
//! - A kick is an ioeventfd: the driver's notify write only wakes the queue's thread and
//!   returns at once (`virtio_queue_notify` with a host notifier).
//! - The handler turns notifications off, pops every available chain, turns them back on and
//!   drains again until the ring stays empty (`virtio_scsi_handle_cmd_vq`). With EVENT_IDX,
//!   turning notifications off writes nothing: `avail_event` keeps the value written when they
//!   were last turned on, so the driver's next add after that crosses it and kicks once, and no
//!   add after it kicks until the device turns notifications on again
//!   (`virtio_queue_split_set_notification`, `vring_set_avail_event`).
//! - After the handler, the event loop keeps polling the ring for a while with notifications
//!   off (`aio_poll` with `poll-max-ns`), so a driver that adds during the poll window does not
//!   kick at all. Here the window is counted in turns of the processor (`poll_rounds` empty
//!   polls, each yielding once) rather than in nanoseconds, so it means the same under
//!   callgrind, which serialises the threads, as natively.
//! - Completions of one batch are pushed together and interrupt at most once, when the
//!   driver's `used_event` lies among the elements used since the last decision
//!   (`virtio_split_should_notify`, with the deferred irqfd notification of QEMU's block
//!   completions).
//!
//! One thread per request queue, as QEMU's `iothread-vq-mapping` gives each queue its own
//! iothread; the controlq and the eventq stay inline.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;

use super::{CompletionMode, DeviceOptions, Shared};

/// What wakes one queue's thread, and whether it is at work.
#[derive(Default)]
struct Doorbell {
    state: Mutex<DoorbellState>,
    changed: Condvar,
}

#[derive(Default)]
struct DoorbellState {
    /// A kick came since the thread last woke.
    kicked: bool,
    /// The thread is draining or polling its queue.
    busy: bool,
    /// The device is gone: the thread ends.
    shutdown: bool,
}

impl Doorbell {
    fn lock(&self) -> MutexGuard<'_, DoorbellState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps until a kick (then the thread is busy: `true`) or shutdown (`false`).
    fn wait_for_kick(&self) -> bool {
        let mut state = self.lock();
        loop {
            if state.shutdown {
                return false;
            }
            if state.kicked {
                state.kicked = false;
                state.busy = true;
                return true;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn finished(&self) {
        self.lock().busy = false;
        self.changed.notify_all();
    }
}

/// The doorbells of the request queues' threads, by queue index (`None`: served inline).
#[derive(Default)]
pub(super) struct Doorbells {
    queues: Vec<Option<Arc<Doorbell>>>,
    poll_rounds: u32,
}

impl Doorbells {
    /// One doorbell per request queue with [`CompletionMode::IoThread`], none otherwise.
    pub(super) fn new(options: &DeviceOptions, queue_count: usize) -> Self {
        let CompletionMode::IoThread { poll_rounds } = options.completion else {
            return Self::default();
        };
        let first_request_queue = usize::from(virtio_core::scsi::queue_index::REQUEST_BASE);
        Self {
            queues: (0..queue_count)
                .map(|index| (index >= first_request_queue).then(Arc::default))
                .collect(),
            poll_rounds,
        }
    }

    /// Wakes queue `index`'s thread; `false` if the queue has none (it is served inline).
    pub(super) fn ring(&self, index: u16) -> bool {
        let Some(Some(doorbell)) = self.queues.get(usize::from(index)) else {
            return false;
        };
        doorbell.lock().kicked = true;
        doorbell.changed.notify_all();
        true
    }

    /// Waits until no thread has a kick to serve or is serving one.
    pub(super) fn wait_idle(&self) {
        for doorbell in self.queues.iter().flatten() {
            let mut state = doorbell.lock();
            while state.kicked || state.busy {
                state = doorbell
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    /// Ends every thread (the device is being dropped).
    pub(super) fn shut_down(&self) {
        for doorbell in self.queues.iter().flatten() {
            doorbell.lock().shutdown = true;
            doorbell.changed.notify_all();
        }
    }
}

/// Starts the threads of `shared`'s doorbells; they end when the device is dropped.
pub(super) fn start(shared: &Arc<Shared>) {
    let poll_rounds = shared.iothreads.poll_rounds;
    for (index, doorbell) in shared.iothreads.queues.iter().enumerate() {
        let (Some(doorbell), Ok(index)) = (doorbell, u16::try_from(index)) else {
            continue;
        };
        let doorbell = Arc::clone(doorbell);
        let device = Arc::downgrade(shared);
        // A thread that cannot start leaves its queue unserved; say so loudly in the test log
        // (the scenario then stalls and reports which request it waited for).
        if let Err(error) = thread::Builder::new()
            .name(format!("virtio-scsi-iothread{index}"))
            .spawn(move || run(&doorbell, &device, index, poll_rounds))
        {
            eprintln!("virtio-scsi device: iothread of queue {index} did not start: {error}");
        }
    }
}

/// One queue's thread: sleep until kicked, serve, repeat.
fn run(doorbell: &Doorbell, device: &Weak<Shared>, index: u16, poll_rounds: u32) {
    while doorbell.wait_for_kick() {
        let Some(shared) = device.upgrade() else {
            doorbell.finished();
            return;
        };
        shared.serve(index, poll_rounds);
        drop(shared);
        doorbell.finished();
    }
}

impl Shared {
    /// Serves request queue `index` after a kick: drain in batches with notifications off, one
    /// interrupt decision per batch, poll `poll_rounds` empty turns, then notifications on and
    /// (if the ring is still empty) back to sleep.
    fn serve(&self, index: u16, poll_rounds: u32) {
        let mut notifications_on = true;
        let mut empty_rounds = 0u32;
        loop {
            let Some(mut state) = self.queue_lock(index) else {
                return;
            };
            let epoch = self.epoch();
            let queue = match self.ready(&mut state, index) {
                Ok(Some(queue)) => queue,
                Ok(None) => return,
                Err(error) => {
                    drop(state);
                    self.raise([self.device_error(Some(index), error)]);
                    return;
                }
            };
            let mut error = None;
            if notifications_on {
                match queue.disable_notification(&self.guest) {
                    Ok(()) => notifications_on = false,
                    Err(e) => error = Some(e),
                }
            }
            let batch = if error.is_none() {
                self.drain_available(queue, index, epoch)
            } else {
                super::Batch::default()
            };
            error = error.or(batch.error);
            let mut raise = None;
            if batch.completed > 0 && (batch.bogus || self.needs_interrupt(index, queue)) {
                raise = self.interrupt_vector(index);
            }
            let mut asleep = false;
            if error.is_none() {
                if batch.popped > 0 {
                    empty_rounds = 0;
                } else if empty_rounds < poll_rounds {
                    empty_rounds += 1;
                } else {
                    // The poll window is over: notifications on, and one more look, since
                    // the driver may have added just before it could see them on.
                    match queue.enable_notification(&self.guest) {
                        Ok(true) => {
                            notifications_on = true;
                            empty_rounds = 0;
                        }
                        Ok(false) => asleep = true,
                        Err(e) => error = Some(e),
                    }
                }
            }
            drop(state);
            self.raise(raise);
            if let Some(error) = error {
                self.raise([self.device_error(Some(index), error)]);
                return;
            }
            if asleep {
                return;
            }
            if batch.popped == 0 {
                thread::yield_now();
            }
        }
    }
}
