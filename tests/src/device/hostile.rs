//! The hostile mode of the device: request and control chains wait until the caller (a fuzzer,
//! through [`crate::hostile`]) answers them, with every value the device writes chosen by the
//! caller: used ids and lengths, packed descriptor flags, response, status, sense length,
//! residual, TMF answers, and whether an interrupt follows.
//!
//! One rule keeps the write check meaningful: the device writes response OK with status GOOD
//! only for a command it executed (so a WRITE the device answered GOOD reached the medium and
//! the write journal). Every other answer is written without executing anything. A driver that
//! completes a WRITE with SUCCESS although the journal lacks it therefore made the success up
//! (read a response the device never wrote, or took one request's answer for another's).

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use virtio_core::scsi::queue_index;
use zerocopy::IntoBytes;

use super::{CMD_RESP_HEADER, Chain, CmdResp, Held, Reply, VirtioScsiDevice, Work};

/// What the hostile device writes for one command it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostileAnswer {
    /// The `response` byte (any value, defined or not). With `status` 0 and this 0 (OK, GOOD)
    /// the command is executed first and its real outcome written (see the module's rule).
    pub response: u8,
    /// The SCSI status byte.
    pub status: u8,
    /// `status_qualifier`.
    pub status_qualifier: u16,
    /// `sense_len`, whatever the sense buffer holds.
    pub sense_len: u32,
    /// The byte the sense buffer is filled with (an executed command's own sense comes first).
    pub sense_fill: u8,
    /// `resid`.
    pub resid: u32,
    /// The used element's `len`; `None`: the bytes really written.
    pub used_len: Option<u32>,
    /// Raise the queue's interrupt afterwards (`false`: the interrupt is lost).
    pub interrupt: bool,
}

/// A chain the hostile device took off its books to name it in a used element of its choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleasedChain {
    /// The epoch (reset generation) the chain was taken in.
    epoch: u64,
    /// The ring slots it occupied (packed: 1 for an indirect chain).
    descriptors: u16,
}

/// What the hostile device did with a command it answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// No command is waiting.
    NothingHeld,
    /// The command belonged to an epoch a reset ended: forgotten.
    Stale,
    /// Answered; `executed` says whether it ran on its unit.
    Published {
        /// It ran (OK, GOOD was asked and the command was a real one).
        executed: bool,
    },
    /// The ring memory could not be written.
    Unpublished,
}

impl VirtioScsiDevice {
    /// Turns the hostile mode on or off. Off, the device is the well-behaved one again: every
    /// chain available and every command or control request the hostile mode held is answered
    /// as the device answers them normally, with the interrupts EVENT_IDX asks for.
    pub fn set_hostile(&self, on: bool) {
        let shared = &self.shared;
        shared.hostile.store(on, Ordering::SeqCst);
        if on {
            return;
        }
        let control: Vec<(u64, Chain)> = std::mem::take(
            &mut *shared
                .hostile_control
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (epoch, chain) in control {
            // A chain of an epoch a reset ended is forgotten, not executed.
            let Some(read) = shared.read_held_control(epoch, &chain) else {
                continue;
            };
            match read.and_then(|read| shared.control_request(&read)) {
                Ok(Some(answer)) => {
                    let len = u32::try_from(answer.len()).unwrap_or(u32::MAX);
                    self.publish_control(epoch, &chain, &answer, Some(len), None);
                }
                Ok(None) => {}
                Err(error) => {
                    shared.raise([shared.device_error(Some(queue_index::CONTROL), error)]);
                }
            }
        }
        let held: Vec<_> = {
            let mut pending = shared.pending.lock();
            pending.jobs.drain(..).map(|held| held.job).collect()
        };
        shared.pending.changed.notify_all();
        shared.finish(held);
        for index in 0..shared.queues.len() {
            let index = index as u16;
            if index != queue_index::EVENT {
                shared.notified(index);
            }
        }
    }

    /// In the hostile mode, takes every chain the driver made available on the request queues
    /// (held until [`Self::hostile_answer`] or a TMF answers them) and on the controlq (held
    /// until [`Self::hostile_answer_control`]); returns how many. A chain that breaks the
    /// protocol makes the device need a reset (a driver's violation, recorded), as always.
    pub fn hostile_take(&self) -> usize {
        let shared = &self.shared;
        let mut taken = 0;
        for index in 0..shared.queues.len() {
            let index = index as u16;
            if index == queue_index::EVENT {
                continue;
            }
            let epoch = shared.epoch();
            let Some(mut state) = shared.queue_lock(index) else {
                continue;
            };
            let queue = match shared.ready(&mut state, index) {
                Ok(Some(queue)) => queue,
                Ok(None) => continue,
                Err(error) => {
                    drop(state);
                    shared.raise([shared.device_error(Some(index), error)]);
                    continue;
                }
            };
            let mut error = None;
            loop {
                let chain = match queue.pop(&shared.guest) {
                    Ok(Some(chain)) => chain,
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                };
                taken += 1;
                if let Some(counters) = shared.counters(index) {
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                }
                if index == queue_index::CONTROL {
                    shared
                        .hostile_control
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((epoch, chain));
                    continue;
                }
                match shared.parse_command(index, epoch, chain) {
                    Ok(job) => shared.pending.lock().jobs.push(Held { due: None, job }),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            // Publishes avail_event, so that the driver notifies the next chain.
            if error.is_none()
                && let Err(e) = queue.enable_notification(&shared.guest)
            {
                error = Some(e);
            }
            drop(state);
            if let Some(error) = error {
                shared.raise([shared.device_error(Some(index), error)]);
            }
        }
        taken
    }

    /// Commands and control requests the hostile mode holds.
    #[must_use]
    pub fn hostile_held(&self) -> (usize, usize) {
        let commands = self.shared.pending.lock().jobs.len();
        let control = self
            .shared
            .hostile_control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (commands, control)
    }

    /// Answers held command number `pick` (modulo the number held) with `answer`.
    #[must_use]
    pub fn hostile_answer(&self, pick: usize, answer: &HostileAnswer) -> Answered {
        let shared = &self.shared;
        let job = {
            let mut pending = shared.pending.lock();
            if pending.jobs.is_empty() {
                return Answered::NothingHeld;
            }
            let at = pick % pending.jobs.len();
            pending.jobs.remove(at).job
        };
        shared.pending.changed.notify_all();
        // The queue's lock is held from the epoch check to the used element, as the device's
        // own completions hold it: a reset (which takes every queue lock after moving the
        // epoch on) then either comes first and the command is forgotten, or waits until it
        // is answered, so nothing executes after the driver's reset returned.
        let Some(mut state) = shared.queue_lock(job.queue) else {
            return Answered::Unpublished;
        };
        if job.epoch != shared.epoch() {
            return Answered::Stale;
        }
        let Some(queue) = state.queue.as_mut() else {
            return Answered::Unpublished;
        };
        let good = answer.response == 0 && answer.status == 0;
        let (reply, executed) = match job.work {
            work @ Work::Execute { .. } if good => {
                (shared.run_journaled(work, job.queue, job.nexus), true)
            }
            Work::Reply(reply) if good => (reply, false),
            _ => (
                Reply {
                    sense: Vec::new(),
                    data_in: Vec::new(),
                    ..Reply::response(virtio_core::scsi::Response::Ok, 0)
                },
                false,
            ),
        };
        let (response, status) = if good {
            (reply.response.raw(), reply.status)
        } else {
            (answer.response, answer.status)
        };
        let sense_size = job.resp_size.saturating_sub(CMD_RESP_HEADER);
        let mut sense = reply.sense.clone();
        sense.resize(sense_size.max(sense.len()), answer.sense_fill);
        sense.truncate(sense_size);
        let header = CmdResp {
            sense_len: answer.sense_len.into(),
            resid: answer.resid.into(),
            status_qualifier: answer.status_qualifier.into(),
            status,
            response,
            sense: [0; virtio_core::scsi::SENSE_SIZE],
        };
        let mut resp = header
            .as_bytes()
            .get(..CMD_RESP_HEADER)
            .unwrap_or_default()
            .to_vec();
        resp.extend_from_slice(&sense);
        let mut written = 0;
        if !reply.data_in.is_empty()
            && let Ok(n) = job
                .chain
                .write_at(&shared.guest, job.resp_size, &reply.data_in)
        {
            written = n;
        }
        if job.chain.write_at(&shared.guest, 0, &resp) == Ok(resp.len()) {
            written += resp.len();
        }
        let len = answer
            .used_len
            .unwrap_or(u32::try_from(written).unwrap_or(u32::MAX));
        // Released before the used element is published, as the device always does.
        drop(job.slot);
        if queue.add_used(&shared.guest, &job.chain, len).is_err() {
            return Answered::Unpublished;
        }
        // Asked even when the interrupt is lost, so EVENT_IDX bookkeeping moves on.
        let _ = shared.needs_interrupt(job.queue, queue);
        let raise = if answer.interrupt {
            shared.interrupt_vector(job.queue)
        } else {
            None
        };
        drop(state);
        shared.raise(raise);
        Answered::Published { executed }
    }

    /// Answers held control request number `pick` (modulo the number held): performed as the
    /// device normally does (`honest`, the TMF taking back what it covers) or with `response`
    /// as its only byte, without performing anything; the used length is `used_len` or the
    /// bytes written, and an interrupt follows if `interrupt`. `false` if none is held.
    pub fn hostile_answer_control(
        &self,
        pick: usize,
        honest: bool,
        response: u8,
        used_len: Option<u32>,
        interrupt: bool,
    ) -> bool {
        let shared = &self.shared;
        let (epoch, chain) = {
            let mut held = shared
                .hostile_control
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if held.is_empty() {
                return false;
            }
            let at = pick % held.len();
            held.remove(at)
        };
        let answer = if honest {
            let Some(read) = shared.read_held_control(epoch, &chain) else {
                return true;
            };
            match read.and_then(|read| shared.control_request(&read)) {
                Ok(Some(answer)) => answer,
                Ok(None) => return true,
                Err(error) => {
                    shared.raise([shared.device_error(Some(queue_index::CONTROL), error)]);
                    return true;
                }
            }
        } else {
            vec![response]
        };
        self.publish_control(epoch, &chain, &answer, used_len, Some(interrupt));
        true
    }

    /// Writes `answer` into a control chain of `epoch` and publishes it with `used_len` (or
    /// the bytes written); interrupts if `interrupt`, or (`None`) if EVENT_IDX asks for it.
    fn publish_control(
        &self,
        epoch: u64,
        chain: &Chain,
        answer: &[u8],
        used_len: Option<u32>,
        interrupt: Option<bool>,
    ) {
        let shared = &self.shared;
        let index = queue_index::CONTROL;
        let mut raise = None;
        if let Some(mut state) = shared.queue_lock(index)
            && epoch == shared.epoch()
            && let Some(queue) = state.queue.as_mut()
        {
            let written = match chain.write_at(&shared.guest, 0, answer) {
                Ok(n) if n == answer.len() => u32::try_from(n).unwrap_or(u32::MAX),
                _ => 0,
            };
            if queue
                .add_used(&shared.guest, chain, used_len.unwrap_or(written))
                .is_ok()
            {
                let wanted = shared.needs_interrupt(index, queue);
                if interrupt.unwrap_or(wanted) {
                    raise = shared.interrupt_vector(index);
                }
            }
        }
        shared.raise(raise);
    }

    /// Publishes a used element that names whatever `id` says on queue `index` (split: `{id,
    /// len}`; packed: a descriptor with `flags` too, `None` the flags of a real used
    /// descriptor), then interrupts if `interrupt`. `false` if nothing was written (the queue
    /// is not live, or, packed, an unseen descriptor had no slot of the device's to go to).
    ///
    /// The device stays consistent with its lie: it first takes every available chain, and if
    /// `id` names one it holds on that queue, it gives that one back (its response unwritten)
    /// and, on the packed ring, moves on by the descriptors it occupied; a driver may take such
    /// an element for the real completion. An `id` the device does not hold is a lie the
    /// driver must catch.
    #[must_use]
    pub fn hostile_publish_raw(
        &self,
        index: u16,
        id: u16,
        len: u32,
        flags: Option<u16>,
        interrupt: bool,
    ) -> bool {
        let _ = self.hostile_take();
        let released = self.hostile_release(index, id);
        self.hostile_publish_released(index, released, id, len, flags, interrupt)
    }

    /// The first half of [`Self::hostile_publish_raw`]: removes the chain `id` the device holds
    /// on queue `index` from its books and returns it (with the epoch it was taken in), or
    /// `None` if the device holds no such chain.
    #[must_use]
    pub fn hostile_release(&self, index: u16, id: u16) -> Option<ReleasedChain> {
        let shared = &self.shared;
        let (epoch, chain) = if index == queue_index::CONTROL {
            let mut held = shared
                .hostile_control
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let at = held.iter().position(|(_, chain)| chain.id == id)?;
            held.remove(at)
        } else {
            let mut pending = shared.pending.lock();
            let at = pending
                .jobs
                .iter()
                .position(|held| held.job.queue == index && held.job.chain.id == id)?;
            let job = pending.jobs.remove(at).job;
            (job.epoch, job.chain)
        };
        Some(ReleasedChain {
            epoch,
            descriptors: chain.descriptors,
        })
    }

    /// The second half of [`Self::hostile_publish_raw`]: publishes the used element, giving
    /// back `released` if it is still of the queue's ring.
    #[must_use]
    pub fn hostile_publish_released(
        &self,
        index: u16,
        released: Option<ReleasedChain>,
        id: u16,
        len: u32,
        flags: Option<u16>,
        interrupt: bool,
    ) -> bool {
        let shared = &self.shared;
        let published = {
            let Some(mut state) = shared.queue_lock(index) else {
                return false;
            };
            // A chain taken before a reset that came in between (the queue locks are not held
            // from the release to here) is of a ring the reset ended: the device no longer
            // holds anything under that id, so this is a lie about an id it does not hold,
            // and the ring slots it would move on by are not the device's.
            let descriptors = released
                .filter(|released| released.epoch == shared.epoch())
                .map(|released| released.descriptors);
            match shared.ready(&mut state, index) {
                Ok(Some(queue)) => {
                    let flags = flags.unwrap_or_else(|| queue.used_flags());
                    let published =
                        queue.publish_raw(&shared.guest, id, len, flags, descriptors.unwrap_or(1));
                    // A lie about an id the device does not hold may name a chain the driver
                    // made available after this call's take (the queue locks are dropped in
                    // between): the driver completes that request and gives its memory back,
                    // and the device, taking the chain afterwards, finds it unreadable or
                    // reused. Such a failure is the lie's consequence too (the CI runs'
                    // `Unmapped` and controlq `TooShort` findings, tools/fuzz/CAMPAIGNS.md).
                    if queue.used_ahead_of_available() || descriptors.is_none() {
                        shared
                            .lied_ahead
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(index);
                    }
                    published
                }
                _ => false,
            }
        };
        if published && interrupt {
            let vector = shared.interrupt_vector(index);
            shared.raise(vector);
        }
        published
    }

    /// Whether queue `index` has a chain available that the device has not taken yet (a peek:
    /// nothing is taken). `false` if the queue is not live.
    #[must_use]
    pub fn hostile_has_available(&self, index: u16) -> bool {
        let shared = &self.shared;
        let Some(mut state) = shared.queue_lock(index) else {
            return false;
        };
        match shared.ready(&mut state, index) {
            Ok(Some(queue)) => queue.has_available(&shared.guest),
            _ => false,
        }
    }

    /// The (queue, id) of every command the hostile mode holds, oldest first.
    #[must_use]
    pub fn hostile_held_ids(&self) -> Vec<(u16, u16)> {
        self.shared
            .pending
            .lock()
            .jobs
            .iter()
            .map(|held| (held.job.queue, held.job.chain.id))
            .collect()
    }

    /// Raises MSI-X message `vector` with nothing new on any ring: a spurious interrupt.
    pub fn hostile_interrupt(&self, vector: u16) {
        self.shared.raise([vector]);
    }

    /// Queues the device has (controlq, eventq and the request queues).
    #[must_use]
    pub fn queue_count(&self) -> u16 {
        u16::try_from(self.shared.queues.len()).unwrap_or(u16::MAX)
    }

    /// The device configuration as it is now.
    #[must_use]
    pub fn device_config(&self) -> Vec<u8> {
        self.shared.regs.device_config_bytes()
    }
}
