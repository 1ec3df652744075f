//! A small virtio-scsi driver over virtio-core, for the test guest: it brings the device up with
//! [`PciTransport`], runs split or packed queues behind [`Virtqueue`], and submits commands, task
//! management functions and event buffers.
//!
//! It is deliberately simple where the miniport is not (no locks, one CPU), and deliberately the
//! same where it matters for testing virtio-core: the same transport, queues, wire types and
//! response mapping, against QEMU's device, and the same completion model: the driver sleeps
//! until the queue's MSI-X vector fires, then runs one interrupt pass (drain the used ring,
//! `enable_interrupts`, drain again while that reports chains used meanwhile). The passes'
//! counters let the exerciser prove that every completion came through an interrupt.
//!
//! Each queue owns a table of request contexts in DMA memory: a device-readable header area, a
//! device-writable response area and an indirect descriptor table. A context is taken when a
//! chain is added and given back when its token is used; the token-to-context map is checked
//! on completion like everything else the device reports.

use core::fmt;

use virtio_core::dma::DmaMemory;
use virtio_core::features::Features;
use virtio_core::hal::{Hal, HalError, RegisterIo, Segment};
use virtio_core::pci::{PciTransport, QueueNotifier, TransportError};
use virtio_core::queue::packed::PackedQueue;
use virtio_core::queue::split::SplitQueue;
use virtio_core::queue::{
    DeviceError, QueueAddresses, QueueError, QueueFeatures, Slot, Token, UsedBuffer, Virtqueue,
};
use virtio_core::scsi::{
    CmdReq, CmdResp, CommandOutcome, Config, ConfigError, DataDirection, Limits, Lun, SENSE_SIZE,
    Transfer, complete_command,
};
use zerocopy::{FromBytes, IntoBytes};

/// Largest queue size the guest uses (QEMU's default `virtqueue_size` for virtio-scsi).
pub const MAX_QUEUE_SIZE: u16 = 256;
/// Most data segments one request carries.
pub const MAX_DATA_SEGMENTS: usize = 128;
/// Request queues the guest drives at most.
pub const MAX_REQUEST_QUEUES: usize = 6;
/// Control queue, event queue and the request queues.
pub const MAX_QUEUES: usize = 2 + MAX_REQUEST_QUEUES;

/// Bytes of a context's device-readable header area.
const REQUEST_AREA: usize = 64;
/// Offset and size of a context's device-writable response area.
const RESPONSE_OFFSET: usize = REQUEST_AREA;
const RESPONSE_AREA: usize = 128;
/// Offset of the indirect table: after the header areas, 16-byte aligned as descriptors need.
const INDIRECT_OFFSET: usize = RESPONSE_OFFSET + RESPONSE_AREA;
/// Descriptors of the indirect table: request header, response header, data segments.
const INDIRECT_ENTRIES: usize = MAX_DATA_SEGMENTS + 2;
/// Bytes of one context.
const CONTEXT_LEN: usize = INDIRECT_OFFSET + INDIRECT_ENTRIES * 16;

/// What went wrong in the driver; every variant names the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverError {
    /// The transport refused something.
    Transport(TransportError),
    /// The HAL could not allocate or translate.
    Hal(HalError),
    /// A queue refused a chain.
    Queue(QueueError),
    /// The device broke the ring protocol.
    Device(DeviceError),
    /// The device configuration is unusable.
    Config(ConfigError),
    /// No queue with this index was set up.
    NoQueue(usize),
    /// Every context of the queue is in use.
    NoContext,
    /// A used token maps to no context the driver handed out.
    UnknownToken(Token),
    /// The header does not fit a context's request area, or the response its response area.
    HeaderTooLarge(usize),
    /// The data needs more segments than a request carries.
    TooManySegments(usize),
    /// The device set DEVICE_NEEDS_RESET: it found something malformed and stopped.
    NeedsReset,
    /// No interrupt came on the queue's vector within the time limit, and nothing is used.
    Timeout {
        /// The virtqueue waited on.
        queue: u16,
    },
    /// No interrupt came on the queue's vector within the time limit, yet the device has used
    /// chains: it completed them without the interrupt it owed (or the interrupt was lost).
    LostInterrupt {
        /// The virtqueue waited on.
        queue: u16,
    },
    /// An interrupt pass drained more chains than the queue can have in flight.
    DrainedTooMany(u16),
}

/// Where the driver's interrupts come from: per-vector counts of the MSI-X messages received,
/// and a way to sleep until the next one.
pub trait Interrupts {
    /// Interrupts received so far on MSI-X table entry `vector`.
    fn count(&self, vector: u16) -> u64;

    /// Sleeps until the count of `vector` differs from `seen`, and returns it; `None` once the
    /// implementation's time limit has passed without that (a lost interrupt or a dead device).
    fn wait(&self, vector: u16, seen: u64) -> Option<u64>;

    /// Nanoseconds of guest time since an arbitrary start, from the clock that bounds
    /// [`Self::wait`]: measured phases are timed by it, since when their serial lines reach
    /// the host says more about a loaded host than about the guest.
    fn now_nanos(&self) -> u64;
}

/// What a queue's interrupt passes did, for the statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Interrupt passes run (one per wake-up on the queue's vector).
    pub passes: u64,
    /// Passes that found nothing to drain (their interrupt's chains were drained earlier).
    pub empty_passes: u64,
    /// Chains drained by the first drain of a pass, right after the interrupt.
    pub irq_completions: u64,
    /// Times `enable_interrupts` reported chains used between the drain and the re-enable.
    pub rechecks: u64,
    /// Chains drained after such a re-check.
    pub recheck_completions: u64,
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<TransportError> for DriverError {
    fn from(error: TransportError) -> Self {
        Self::Transport(error)
    }
}

impl From<HalError> for DriverError {
    fn from(error: HalError) -> Self {
        Self::Hal(error)
    }
}

impl From<QueueError> for DriverError {
    fn from(error: QueueError) -> Self {
        Self::Queue(error)
    }
}

impl From<DeviceError> for DriverError {
    fn from(error: DeviceError) -> Self {
        Self::Device(error)
    }
}

/// A split or packed ring, as negotiated.
pub enum Ring {
    /// Split virtqueue (virtio 1.x section 2.7).
    Split(SplitQueue<[Slot; MAX_QUEUE_SIZE as usize]>),
    /// Packed virtqueue (virtio 1.x section 2.8).
    Packed(PackedQueue<[Slot; MAX_QUEUE_SIZE as usize]>),
}

impl Ring {
    /// The ring as the common trait.
    pub fn queue(&mut self) -> &mut dyn Virtqueue {
        match self {
            Self::Split(queue) => queue,
            Self::Packed(queue) => queue,
        }
    }

    /// The ring as the common trait, read-only.
    #[must_use]
    pub fn queue_ref(&self) -> &dyn Virtqueue {
        match self {
            Self::Split(queue) => queue,
            Self::Packed(queue) => queue,
        }
    }
}

/// Data buffers of a request.
#[derive(Clone, Copy, Debug)]
pub enum Data {
    /// No data phase.
    None,
    /// Data-in: the device writes into the memory.
    In(DmaMemory),
    /// Data-out: the device reads the memory.
    Out(DmaMemory),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::In(memory) | Self::Out(memory) => memory.len(),
        }
    }
}

/// How a chain is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Use the context's indirect table (one ring descriptor) rather than a direct chain.
    pub indirect: bool,
    /// Largest data segment, in bytes (a multiple of 8, at least 512).
    pub segment_len: u32,
}

impl Layout {
    /// Direct chain, one data segment per 4 KiB page.
    pub const DIRECT_PAGES: Self = Self {
        indirect: false,
        segment_len: 4096,
    };
    /// Indirect chain, one data segment per 4 KiB page.
    pub const INDIRECT_PAGES: Self = Self {
        indirect: true,
        segment_len: 4096,
    };

    /// One data segment per 4 KiB page, in an indirect table when `features` include
    /// `VIRTIO_F_INDIRECT_DESC` and as a direct chain otherwise: a device that did not offer
    /// indirect descriptors must never be handed a table (virtio 1.x section 2.7.5.3.1), and
    /// virtio-core refuses one with [`QueueError::IndirectNotNegotiated`].
    #[must_use]
    pub fn pages(features: Features) -> Self {
        Self::INDIRECT_PAGES.allowed_by(features)
    }

    /// This layout, made direct unless `features` include `VIRTIO_F_INDIRECT_DESC`.
    #[must_use]
    pub fn allowed_by(self, features: Features) -> Self {
        Self {
            indirect: self.indirect && features.contains(Features::INDIRECT_DESC),
            segment_len: self.segment_len,
        }
    }

    /// Ring descriptors a command with `data_len` bytes of physically contiguous data takes
    /// (as [`Queue::submit`] lays it out, and the guest's identity-mapped memory is
    /// contiguous): 1 for an indirect chain; request header, response header and one per data
    /// segment for a direct one.
    #[must_use]
    pub fn ring_descriptors(self, data_len: u64) -> u64 {
        if self.indirect {
            1
        } else {
            2 + data_len.div_ceil(u64::from(self.segment_len.max(512)))
        }
    }

    /// Most commands of `data_len` bytes each that a ring of `ring_size` descriptors holds at
    /// once in this layout.
    #[must_use]
    pub fn requests_per_ring(self, ring_size: u16, data_len: u64) -> u16 {
        let fit = u64::from(ring_size) / self.ring_descriptors(data_len);
        u16::try_from(fit).unwrap_or(ring_size)
    }
}

/// One used chain, with the context it occupied (still readable until the next submit).
#[derive(Clone, Copy, Debug)]
pub struct Used {
    /// The context's index in its queue.
    pub context: u16,
    /// The caller's tag given at submission.
    pub tag: u64,
    /// Bytes the device reported written.
    pub written: u32,
    /// Data bytes posted (for the response mapping).
    pub data_len: u32,
}

/// One virtqueue with its request contexts and counters.
pub struct Queue {
    ring: Ring,
    notifier: QueueNotifier,
    contexts: DmaMemory,
    /// Free context indices (a stack of `free` entries).
    free_list: [u16; MAX_QUEUE_SIZE as usize],
    free: usize,
    /// Context of each in-flight token, or `u16::MAX`.
    context_of: [u16; MAX_QUEUE_SIZE as usize],
    /// Tag and data length of each context's request.
    tags: [(u64, u32); MAX_QUEUE_SIZE as usize],
    /// Chains drained by interrupt passes and not yet taken: (context, bytes written), a ring
    /// of `drained_len` entries from `drained_head`. Their contexts stay allocated until taken.
    drained: [(u16, u32); MAX_QUEUE_SIZE as usize],
    drained_head: usize,
    drained_len: usize,
    /// The count of the queue's vector that the last interrupt pass answered.
    interrupts_handled: u64,
    /// Notifications sent.
    pub kicks: u64,
    /// Chains used.
    pub completions: u64,
    /// What the interrupt passes did.
    pub passes: PassStats,
}

impl Queue {
    /// The ring.
    pub fn ring(&mut self) -> &mut dyn Virtqueue {
        self.ring.queue()
    }

    /// The ring, read-only.
    #[must_use]
    pub fn ring_ref(&self) -> &dyn Virtqueue {
        self.ring.queue_ref()
    }

    /// The queue index on the device.
    #[must_use]
    pub fn index(&self) -> u16 {
        self.ring.queue_ref().index()
    }

    /// Context `index`'s memory.
    fn context(&self, index: u16) -> Option<DmaMemory> {
        self.contexts
            .sub(usize::from(index) * CONTEXT_LEN, CONTEXT_LEN)
    }

    /// The response area of context `context`, `len` bytes (for reading what the device wrote).
    #[must_use]
    pub fn response(&self, context: u16, out: &mut [u8]) -> bool {
        self.context(context).is_some_and(|memory| {
            out.len() <= RESPONSE_AREA && memory.read_bytes(RESPONSE_OFFSET, out)
        })
    }

    /// Adds a chain: `header` device-readable, then data-out, then `response_len` bytes
    /// device-writable, then data-in (virtio 1.x section 2.7.4: readable before writable).
    ///
    /// # Errors
    /// [`DriverError`] if the queue is full, a context is missing or the data does not fit.
    pub fn submit(
        &mut self,
        hal: &impl Hal,
        header: &[u8],
        response_len: usize,
        data: Data,
        layout: Layout,
        tag: u64,
    ) -> Result<Token, DriverError> {
        if header.len() > REQUEST_AREA {
            return Err(DriverError::HeaderTooLarge(header.len()));
        }
        if response_len > RESPONSE_AREA {
            return Err(DriverError::HeaderTooLarge(response_len));
        }
        let context_index = *self
            .free
            .checked_sub(1)
            .and_then(|top| self.free_list.get(top))
            .ok_or(DriverError::NoContext)?;
        let context = self.context(context_index).ok_or(DriverError::NoContext)?;
        if !context.write_bytes(0, header) {
            return Err(DriverError::HeaderTooLarge(header.len()));
        }
        let response = Segment::new(
            context.bus_address() + RESPONSE_OFFSET as u64,
            response_len as u32,
        );
        let request = Segment::new(context.bus_address(), header.len() as u32);

        let mut data_segments = [Segment::default(); MAX_DATA_SEGMENTS];
        let data_count = split_segments(hal, &data, layout.segment_len, &mut data_segments)?;
        let data_segments = data_segments.get(..data_count).unwrap_or(&[]);

        let mut readable = [Segment::default(); MAX_DATA_SEGMENTS + 1];
        let mut writable = [Segment::default(); MAX_DATA_SEGMENTS + 1];
        let (mut readable_count, mut writable_count) = (0, 0);
        let push = |list: &mut [Segment], count: &mut usize, segment: Segment| {
            if let Some(slot) = list.get_mut(*count) {
                *slot = segment;
                *count += 1;
            }
        };
        if !header.is_empty() {
            push(&mut readable, &mut readable_count, request);
        }
        if let Data::Out(_) = data {
            for segment in data_segments {
                push(&mut readable, &mut readable_count, *segment);
            }
        }
        if response_len > 0 {
            push(&mut writable, &mut writable_count, response);
        }
        if let Data::In(_) = data {
            for segment in data_segments {
                push(&mut writable, &mut writable_count, *segment);
            }
        }
        let indirect = if layout.indirect {
            Some(
                context
                    .sub(INDIRECT_OFFSET, INDIRECT_ENTRIES * 16)
                    .ok_or(DriverError::NoContext)?,
            )
        } else {
            None
        };
        let token = self.ring.queue().add(
            readable.get(..readable_count).unwrap_or(&[]),
            writable.get(..writable_count).unwrap_or(&[]),
            indirect.as_ref(),
        )?;
        self.free -= 1;
        if let Some(slot) = self.context_of.get_mut(token.index()) {
            *slot = context_index;
        }
        if let Some(slot) = self.tags.get_mut(usize::from(context_index)) {
            *slot = (tag, data.len() as u32);
        }
        Ok(token)
    }

    /// Notifies the device if the ring says it must (EVENT_IDX or NO_NOTIFY), counting kicks.
    pub fn kick<R: RegisterIo>(&mut self, transport: &PciTransport<R>) {
        if self.ring.queue().kick_prepare() {
            transport.notify(&self.notifier);
            self.kicks += 1;
        }
    }

    /// Pops every used chain into the drained ring and returns how many.
    ///
    /// # Errors
    /// [`DriverError::Device`] if the device broke the ring protocol,
    /// [`DriverError::UnknownToken`] if a token has no context,
    /// [`DriverError::DrainedTooMany`] if the drained ring is full.
    fn drain(&mut self) -> Result<u64, DriverError> {
        let mut drained = 0;
        while let Some(UsedBuffer { token, written }) = self.ring.queue().pop_used()? {
            let context = self
                .context_of
                .get_mut(token.index())
                .map(|slot| core::mem::replace(slot, u16::MAX))
                .filter(|context| *context != u16::MAX)
                .ok_or(DriverError::UnknownToken(token))?;
            let index = self.index();
            let tail = (self.drained_head + self.drained_len) % self.drained.len();
            let slot = self
                .drained
                .get_mut(tail)
                .filter(|_| self.drained_len < MAX_QUEUE_SIZE as usize)
                .ok_or(DriverError::DrainedTooMany(index))?;
            *slot = (context, written);
            self.drained_len += 1;
            self.completions += 1;
            drained += 1;
        }
        Ok(drained)
    }

    /// One interrupt pass, as the miniport's interrupt handling does it: ask the device not to
    /// interrupt while draining, drain, re-enable, and drain again for as long as the re-enable
    /// reports chains used in the meantime (no interrupt is owed for those).
    ///
    /// # Errors
    /// What [`Queue::drain`] returns.
    fn interrupt_pass(&mut self) -> Result<(), DriverError> {
        self.passes.passes += 1;
        self.ring.queue().disable_interrupts();
        let first = self.drain()?;
        self.passes.irq_completions += first;
        let mut total = first;
        while self.ring.queue().enable_interrupts() {
            self.passes.rechecks += 1;
            let more = self.drain()?;
            self.passes.recheck_completions += more;
            total += more;
        }
        if total == 0 {
            self.passes.empty_passes += 1;
        }
        Ok(())
    }

    /// Takes the oldest drained chain and frees its context; the context's response stays
    /// readable until the context is reused by a submit.
    pub fn take_drained(&mut self) -> Option<Used> {
        if self.drained_len == 0 {
            return None;
        }
        let (context, written) = *self.drained.get(self.drained_head)?;
        self.drained_head = (self.drained_head + 1) % self.drained.len();
        self.drained_len -= 1;
        let (tag, data_len) = self
            .tags
            .get(usize::from(context))
            .copied()
            .unwrap_or((0, 0));
        if let Some(slot) = self.free_list.get_mut(self.free) {
            *slot = context;
            self.free += 1;
        }
        Some(Used {
            context,
            tag,
            written,
            data_len,
        })
    }

    /// Requests in flight.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        usize::from(self.ring_ref().size()).saturating_sub(self.free)
    }
}

/// Splits `data` into bus segments of at most `segment_len` bytes.
fn split_segments(
    hal: &impl Hal,
    data: &Data,
    segment_len: u32,
    out: &mut [Segment],
) -> Result<usize, DriverError> {
    let memory = match data {
        Data::None => return Ok(0),
        Data::In(memory) | Data::Out(memory) => memory,
    };
    let mut translated = [Segment::default(); MAX_DATA_SEGMENTS];
    let pieces = hal.translate(memory.cpu_address(), memory.len(), &mut translated)?;
    let segment_len = segment_len.max(512);
    let mut count = 0;
    for piece in translated.iter().take(pieces) {
        let mut offset = 0u32;
        while offset < piece.len {
            let len = (piece.len - offset).min(segment_len);
            let slot = out
                .get_mut(count)
                .ok_or(DriverError::TooManySegments(count + 1))?;
            *slot = Segment::new(piece.address + u64::from(offset), len);
            count += 1;
            offset += len;
        }
    }
    Ok(count)
}

/// A completed command: its tag, the response mapped by virtio-core, and the sense bytes.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// The tag given at submission.
    pub tag: u64,
    /// The response, mapped by [`complete_command`].
    pub outcome: CommandOutcome,
    /// The first `outcome.sense_len` bytes are the sense data the device wrote.
    pub sense: [u8; SENSE_SIZE],
}

impl Completion {
    /// The valid sense bytes.
    #[must_use]
    pub fn sense(&self) -> &[u8] {
        self.sense
            .get(..usize::from(self.outcome.sense_len))
            .unwrap_or(&[])
    }
}

/// The device brought up: transport, negotiated features, limits and queues.
pub struct Device<R: RegisterIo> {
    /// The transport.
    pub transport: PciTransport<R>,
    /// Accepted features.
    pub features: Features,
    /// The device limits.
    pub limits: Limits,
    /// The raw configuration read back.
    pub config: Config,
    /// Queues by virtqueue index (controlq, eventq, request queues).
    pub queues: [Option<Queue>; MAX_QUEUES],
}

/// MSI-X vector for virtqueue `index` (vector 0 is configuration changes).
#[must_use]
pub const fn vector_of_queue(index: u16) -> u16 {
    index + 1
}

impl<R: RegisterIo> Device<R> {
    /// Initialises the device (virtio 1.x section 3.1.1): negotiates `wanted`, writes
    /// `sense_size`/`cdb_size`, checks the configuration, sets up the controlq, the eventq and
    /// up to [`MAX_REQUEST_QUEUES`] request queues with MSI-X vectors (when the function has
    /// MSI-X), and sets DRIVER_OK.
    ///
    /// # Errors
    /// The first [`DriverError`]; the device is left FAILED or reset.
    pub fn bring_up(
        hal: &impl Hal,
        mut transport: PciTransport<R>,
        wanted: Features,
    ) -> Result<Self, DriverError> {
        let features = transport.begin_init(wanted)?;
        let (config, limits) =
            virtio_core::scsi::configure(&mut transport).map_err(|error| match error {
                virtio_core::scsi::ConfigureError::Transport(error) => {
                    DriverError::Transport(error)
                }
                virtio_core::scsi::ConfigureError::Config(error) => DriverError::Config(error),
            })?;

        let msix = transport.layout().msix_table_size.is_some();
        if msix {
            transport.set_config_msix_vector(Some(0))?;
        }
        let queue_features = QueueFeatures {
            event_idx: features.contains(Features::EVENT_IDX),
            indirect: features.contains(Features::INDIRECT_DESC),
        };
        let packed = features.contains(Features::RING_PACKED);
        let request_queues = usize::from(limits.num_queues).min(MAX_REQUEST_QUEUES);
        #[expect(
            clippy::large_stack_arrays,
            reason = "about 8 KiB per queue of driver-private tables; the guest's stack is 1 MiB \
                      and the guest has no heap"
        )]
        let mut queues: [Option<Queue>; MAX_QUEUES] = [const { None }; MAX_QUEUES];
        for (index, slot) in queues.iter_mut().enumerate().take(2 + request_queues) {
            let index = index as u16;
            let size = transport.queue_max_size(index)?.min(MAX_QUEUE_SIZE);
            // A split ring's size must be a power of two; the device's maximum is one in QEMU,
            // but round down in case.
            let size = if packed {
                size
            } else {
                size.checked_ilog2().map_or(1, |log| 1 << log)
            };
            let vector = msix.then_some(vector_of_queue(index));
            *slot = Some(Self::make_queue(
                hal,
                &mut transport,
                index,
                size,
                packed,
                queue_features,
                vector,
            )?);
        }
        transport.driver_ok()?;
        Ok(Self {
            transport,
            features,
            limits,
            config,
            queues,
        })
    }

    fn make_queue(
        hal: &impl Hal,
        transport: &mut PciTransport<R>,
        index: u16,
        size: u16,
        packed: bool,
        features: QueueFeatures,
        vector: Option<u16>,
    ) -> Result<Queue, DriverError> {
        let slots = [Slot::EMPTY; MAX_QUEUE_SIZE as usize];
        let ring = if packed {
            let memory = hal.dma_alloc(PackedQueue::<[Slot; 1]>::ring_len(size), 4096)?;
            Ring::Packed(PackedQueue::new(index, size, memory, slots, features)?)
        } else {
            let memory = hal.dma_alloc(SplitQueue::<[Slot; 1]>::ring_len(size), 4096)?;
            Ring::Split(SplitQueue::new(index, size, memory, slots, features)?)
        };
        let addresses: QueueAddresses = ring.queue_ref().addresses();
        let notifier = transport.setup_queue(index, size, addresses, vector)?;
        let contexts = hal.dma_alloc(usize::from(size) * CONTEXT_LEN, 4096)?;
        let mut free_list = [0u16; MAX_QUEUE_SIZE as usize];
        for (i, slot) in free_list.iter_mut().enumerate() {
            // Pop order is ascending, which keeps the device's view easy to follow in traces.
            *slot = (usize::from(size).saturating_sub(1 + i)) as u16;
        }
        Ok(Queue {
            ring,
            notifier,
            contexts,
            free_list,
            free: usize::from(size),
            context_of: [u16::MAX; MAX_QUEUE_SIZE as usize],
            tags: [(0, 0); MAX_QUEUE_SIZE as usize],
            drained: [(0, 0); MAX_QUEUE_SIZE as usize],
            drained_head: 0,
            drained_len: 0,
            interrupts_handled: 0,
            kicks: 0,
            completions: 0,
            passes: PassStats::default(),
        })
    }

    /// Queue `index`.
    ///
    /// # Errors
    /// [`DriverError::NoQueue`] if it was not set up.
    pub fn queue(&mut self, index: usize) -> Result<&mut Queue, DriverError> {
        self.queues
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(DriverError::NoQueue(index))
    }

    /// Number of request queues set up.
    #[must_use]
    pub fn request_queues(&self) -> usize {
        self.queues.iter().skip(2).filter(|q| q.is_some()).count()
    }

    /// Kicks queue `index` if needed.
    ///
    /// # Errors
    /// [`DriverError::NoQueue`].
    pub fn kick(&mut self, index: usize) -> Result<(), DriverError> {
        let queue = self
            .queues
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(DriverError::NoQueue(index))?;
        queue.kick(&self.transport);
        Ok(())
    }

    /// Returns the oldest chain drained on queue `index`; when none is drained, sleeps until the
    /// queue's MSI-X vector fires and runs one interrupt pass per wake-up until one is.
    ///
    /// # Errors
    /// When `interrupts` gives up waiting: [`DriverError::NeedsReset`] if the device stopped,
    /// [`DriverError::LostInterrupt`] if chains are used nonetheless, [`DriverError::Timeout`]
    /// otherwise; or what an interrupt pass returns.
    pub fn wait(&mut self, index: usize, interrupts: &dyn Interrupts) -> Result<Used, DriverError> {
        let queue = self
            .queues
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(DriverError::NoQueue(index))?;
        let vector = vector_of_queue(queue.index());
        loop {
            if let Some(used) = queue.take_drained() {
                return Ok(used);
            }
            let Some(count) = interrupts.wait(vector, queue.interrupts_handled) else {
                return Err(if self.transport.needs_reset() {
                    DriverError::NeedsReset
                } else if queue.ring_ref().has_used() {
                    DriverError::LostInterrupt {
                        queue: queue.index(),
                    }
                } else {
                    DriverError::Timeout {
                        queue: queue.index(),
                    }
                });
            };
            // Interrupts that arrived together are answered by one pass: it drains all they
            // announced.
            queue.interrupts_handled = count;
            queue.interrupt_pass()?;
        }
    }

    /// Adds one SCSI command on request queue `index` without kicking: a [`CmdReq`] for `lun`,
    /// `tag` and `cdb`, room for a [`CmdResp`], and `data`.
    ///
    /// # Errors
    /// [`DriverError::HeaderTooLarge`] if the CDB does not fit the request, or what
    /// [`Queue::submit`] returns.
    pub fn submit_command(
        &mut self,
        hal: &impl Hal,
        index: usize,
        (lun, tag): (Lun, u64),
        cdb: &[u8],
        data: Data,
        layout: Layout,
    ) -> Result<(), DriverError> {
        let request =
            CmdReq::new(lun, tag, cdb).map_err(|_| DriverError::HeaderTooLarge(cdb.len()))?;
        self.queue(index)?.submit(
            hal,
            request.as_bytes(),
            size_of::<CmdResp>(),
            data,
            layout,
            tag,
        )?;
        Ok(())
    }

    /// Maps the response of `used`, a command completed on queue `index`, with the data
    /// `direction` it was posted with.
    ///
    /// # Errors
    /// What [`Device::command_response`] returns.
    pub fn completion(
        &mut self,
        index: usize,
        used: Used,
        direction: DataDirection,
    ) -> Result<Completion, DriverError> {
        let response = self.command_response(index, used.context)?;
        let transfer = Transfer::new(direction, used.data_len, SENSE_SIZE as u32);
        let outcome = complete_command(&response, &transfer);
        let mut sense = [0u8; SENSE_SIZE];
        for (dst, src) in sense.iter_mut().zip(outcome.sense(&response)) {
            *dst = *src;
        }
        Ok(Completion {
            tag: used.tag,
            outcome,
            sense,
        })
    }

    /// Runs one command on request queue `index` to completion: submit, kick, sleep until the
    /// queue's interrupt, map the response.
    ///
    /// # Errors
    /// The first [`DriverError`] of those steps.
    pub fn command(
        &mut self,
        hal: &impl Hal,
        index: usize,
        address: (Lun, u64),
        cdb: &[u8],
        data: Data,
        interrupts: &dyn Interrupts,
    ) -> Result<Completion, DriverError> {
        let direction = match data {
            Data::None => DataDirection::None,
            Data::In(_) => DataDirection::FromDevice,
            Data::Out(_) => DataDirection::ToDevice,
        };
        let layout = Layout::pages(self.features);
        self.submit_command(hal, index, address, cdb, data, layout)?;
        self.kick(index)?;
        let used = self.wait(index, interrupts)?;
        self.completion(index, used, direction)
    }

    /// Reads the command response of a used context on queue `index`.
    ///
    /// # Errors
    /// [`DriverError::NoQueue`], or [`DriverError::HeaderTooLarge`] if it cannot be read.
    pub fn command_response(&mut self, index: usize, context: u16) -> Result<CmdResp, DriverError> {
        let mut raw = [0u8; size_of::<CmdResp>()];
        if !self.queue(index)?.response(context, &mut raw) {
            return Err(DriverError::HeaderTooLarge(raw.len()));
        }
        CmdResp::read_from_bytes(&raw).map_err(|_| DriverError::HeaderTooLarge(raw.len()))
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::Ordering::Relaxed;

    use virtio_core::fake::FakeHal;
    use virtio_core::fake::pci::FakeVirtioPci;
    use virtio_core::features::SCSI_DRIVER_FEATURES;
    use virtio_core::pci::DeviceStatus;
    use virtio_core::scsi::{CmdReq, Lun};
    use zerocopy::IntoBytes;

    use super::*;

    /// Interrupt counts the test raises by hand; waiting gives up at once when nothing is new.
    #[derive(Default)]
    struct TestInterrupts {
        counts: core::cell::RefCell<[u64; MAX_QUEUES + 1]>,
        /// The clock: a microsecond passes each time it is read.
        clock: core::cell::Cell<u64>,
    }

    impl TestInterrupts {
        fn raise(&self, queue: u16) {
            self.counts.borrow_mut()[usize::from(vector_of_queue(queue))] += 1;
        }
    }

    impl Interrupts for TestInterrupts {
        fn count(&self, vector: u16) -> u64 {
            self.counts.borrow()[usize::from(vector)]
        }

        fn wait(&self, vector: u16, seen: u64) -> Option<u64> {
            Some(self.count(vector)).filter(|count| *count != seen)
        }

        fn now_nanos(&self) -> u64 {
            self.clock.set(self.clock.get() + 1000);
            self.clock.get()
        }
    }

    /// Writes used-ring entry `slot` of split queue `queue` as (`id`, `len`) and publishes
    /// `new_idx`.
    fn complete_split(
        hal: &FakeHal,
        fake: &FakeVirtioPci,
        queue: u16,
        slot: usize,
        (id, len): (u32, u32),
        new_idx: u16,
    ) {
        let registers = fake.queue(queue).unwrap();
        let used = hal.memory_at(registers.device, 4 + 256 * 8).unwrap();
        used.store_u32(4 + slot * 8, id, Relaxed);
        used.store_u32(8 + slot * 8, len, Relaxed);
        used.store_u16(2, new_idx, Relaxed);
    }

    /// A device with split rings (the fake offers packed ones too).
    fn device(hal: &FakeHal) -> (FakeVirtioPci, Device<FakeVirtioPci>) {
        device_wanting(hal, SCSI_DRIVER_FEATURES - Features::RING_PACKED)
    }

    fn device_wanting(hal: &FakeHal, wanted: Features) -> (FakeVirtioPci, Device<FakeVirtioPci>) {
        let fake = FakeVirtioPci::scsi(6).build();
        let transport = PciTransport::probe(&fake, fake.clone()).unwrap();
        let device = Device::bring_up(hal, transport, wanted).unwrap();
        (fake, device)
    }

    #[test]
    fn the_ring_layout_follows_the_negotiated_features() {
        let hal = FakeHal::new();
        let (_, split) = device(&hal);
        assert!(!split.features.contains(Features::RING_PACKED));
        assert!(
            split
                .queues
                .iter()
                .flatten()
                .all(|q| matches!(q.ring, Ring::Split(_)))
        );
        let (_, packed) = device_wanting(&hal, SCSI_DRIVER_FEATURES);
        assert!(packed.features.contains(Features::RING_PACKED));
        assert!(
            packed
                .queues
                .iter()
                .flatten()
                .all(|q| matches!(q.ring, Ring::Packed(_)))
        );
    }

    #[test]
    fn page_layouts_are_indirect_only_when_negotiated_and_count_their_descriptors() {
        let all = SCSI_DRIVER_FEATURES;
        assert_eq!(Layout::pages(all), Layout::INDIRECT_PAGES);
        assert_eq!(
            Layout::pages(all - Features::INDIRECT_DESC),
            Layout::DIRECT_PAGES
        );
        let big = Layout {
            indirect: true,
            segment_len: 256 << 10,
        };
        assert_eq!(
            big.allowed_by(all - Features::INDIRECT_DESC),
            Layout {
                indirect: false,
                segment_len: 256 << 10
            }
        );
        assert_eq!(Layout::DIRECT_PAGES.allowed_by(all), Layout::DIRECT_PAGES);

        // Indirect: one ring descriptor whatever the size, so a 256-entry ring holds 256.
        assert_eq!(Layout::INDIRECT_PAGES.ring_descriptors(64 << 10), 1);
        assert_eq!(Layout::INDIRECT_PAGES.requests_per_ring(256, 4096), 256);
        // Direct: both headers plus one per started segment.
        assert_eq!(Layout::DIRECT_PAGES.ring_descriptors(0), 2);
        assert_eq!(Layout::DIRECT_PAGES.ring_descriptors(4096), 3);
        assert_eq!(Layout::DIRECT_PAGES.ring_descriptors(4097), 4);
        assert_eq!(Layout::DIRECT_PAGES.ring_descriptors(64 << 10), 18);
        assert_eq!(Layout::DIRECT_PAGES.requests_per_ring(256, 4096), 85);
        assert_eq!(Layout::DIRECT_PAGES.requests_per_ring(256, 64 << 10), 14);
        // The largest transfer: 32 MiB - 512 in 128 segments of 256 KiB, seg_max + 2 = 130.
        let max = Layout {
            indirect: false,
            segment_len: 256 << 10,
        };
        assert_eq!(max.ring_descriptors(0xffff * 512), 130);
        assert_eq!(max.requests_per_ring(256, 0xffff * 512), 1);
        assert_eq!(max.requests_per_ring(128, 0xffff * 512), 0);
    }

    #[test]
    fn without_indirect_descriptors_commands_go_out_as_direct_chains() {
        let hal = FakeHal::new();
        let fake = FakeVirtioPci::scsi(6)
            .device_features(
                Features::VERSION_1
                    | Features::EVENT_IDX
                    | Features::SCSI_HOTPLUG
                    | Features::SCSI_CHANGE,
            )
            .build();
        let transport = PciTransport::probe(&fake, fake.clone()).unwrap();
        let mut device = Device::bring_up(&hal, transport, SCSI_DRIVER_FEATURES).unwrap();
        assert!(!device.features.contains(Features::INDIRECT_DESC));
        let data = hal.dma_alloc(2 * 4096, 4096).unwrap();
        let lun = Lun::new(0, 0).unwrap();
        // An indirect table is refused by virtio-core, and nothing is taken.
        assert_eq!(
            device.submit_command(
                &hal,
                2,
                (lun, 1),
                &[0x28; 10],
                Data::In(data),
                Layout::INDIRECT_PAGES
            ),
            Err(DriverError::Queue(QueueError::IndirectNotNegotiated))
        );
        let queue = device.queue(2).unwrap();
        assert_eq!(
            (queue.in_flight(), queue.ring_ref().free_descriptors()),
            (0, 256)
        );
        // The layout chosen from the features is a direct chain: header, response, two pages.
        let layout = Layout::pages(device.features);
        device
            .submit_command(&hal, 2, (lun, 2), &[0x28; 10], Data::In(data), layout)
            .unwrap();
        let queue = device.queue(2).unwrap();
        assert_eq!(
            u64::from(256 - queue.ring_ref().free_descriptors()),
            layout.ring_descriptors(2 * 4096)
        );
        let registers = fake.queue(2).unwrap();
        let descriptors = hal.memory_at(registers.desc, 256 * 16).unwrap();
        let mut next = 0usize;
        let mut chain = std::vec::Vec::new();
        loop {
            let entry = next * 16;
            let flags = descriptors.load_u16(entry + 12, Relaxed);
            chain.push((
                descriptors.load_u64(entry, Relaxed),
                descriptors.load_u32(entry + 8, Relaxed),
                flags,
            ));
            assert_eq!(flags & 4, 0, "no INDIRECT flag");
            if flags & 1 == 0 {
                break;
            }
            next = usize::from(descriptors.load_u16(entry + 14, Relaxed));
        }
        let shape: std::vec::Vec<(u32, u16)> = chain
            .iter()
            .map(|(_, len, flags)| (*len, flags & 2))
            .collect();
        assert_eq!(shape, [(51, 0), (108, 2), (4096, 2), (4096, 2)]);
        assert_eq!(chain[2].0, data.bus_address());
        assert_eq!(chain[3].0, data.bus_address() + 4096);
    }

    #[test]
    fn bring_up_negotiates_and_sets_every_queue_up_with_its_vector() {
        let hal = FakeHal::new();
        let (fake, device) = device(&hal);
        assert!(fake.status().contains(DeviceStatus::DRIVER_OK));
        assert!(
            device
                .features
                .contains(Features::INDIRECT_DESC | Features::EVENT_IDX)
        );
        assert_eq!(fake.config_msix_vector(), 0);
        assert_eq!(device.request_queues(), MAX_REQUEST_QUEUES);
        assert_eq!(device.limits.seg_max, 254);
        for index in 0..MAX_QUEUES as u16 {
            let queue = fake.queue(index).unwrap();
            assert!(queue.enabled, "queue {index}");
            assert_eq!(queue.size, 256);
            assert_eq!(queue.msix_vector, vector_of_queue(index));
        }
        // The driver wrote its header sizes into the configuration.
        let config = fake.device_config_bytes();
        assert_eq!(config[20..28], [96, 0, 0, 0, 32, 0, 0, 0]);
    }

    #[test]
    fn a_command_goes_out_as_header_data_response_and_comes_back_by_tag() {
        let hal = FakeHal::new();
        let (fake, mut device) = device(&hal);
        let data = hal.dma_alloc(3 * 4096, 4096).unwrap();
        let request = CmdReq::new(
            Lun::new(0, 0).unwrap(),
            7,
            &[0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )
        .unwrap();
        let queue = device.queue(2).unwrap();
        let token = queue
            .submit(
                &hal,
                request.as_bytes(),
                108,
                Data::Out(data),
                Layout::INDIRECT_PAGES,
                7,
            )
            .unwrap();
        assert_eq!(queue.in_flight(), 1);
        device.kick(2).unwrap();
        assert_eq!(fake.notify_count(2), 1);

        // Play the device: the ring descriptor points at an indirect table of
        // request header, three 4 KiB data-out pages, then the response.
        let registers = fake.queue(2).unwrap();
        let descriptors = hal.memory_at(registers.desc, 256 * 16).unwrap();
        let entry = usize::from(token.0) * 16;
        let table_address = descriptors.load_u64(entry, Relaxed);
        let table_len = descriptors.load_u32(entry + 8, Relaxed) as usize;
        assert_eq!(table_len, 5 * 16);
        let table = hal.memory_at(table_address, table_len).unwrap();
        let field = |i: usize| {
            (
                table.load_u64(i * 16, Relaxed),
                table.load_u32(i * 16 + 8, Relaxed),
                table.load_u16(i * 16 + 12, Relaxed),
            )
        };
        let (header_address, header_len, header_flags) = field(0);
        assert_eq!(
            (header_len, header_flags & 2),
            (51, 0),
            "readable header first"
        );
        let mut header = [0u8; 51];
        assert!(
            hal.memory_at(header_address, 51)
                .unwrap()
                .read_bytes(0, &mut header)
        );
        assert_eq!(header, request.as_bytes());
        for page in 0..3 {
            let (address, len, flags) = field(1 + page);
            assert_eq!(
                (address, len, flags & 2),
                (data.bus_address() + 4096 * page as u64, 4096, 0)
            );
        }
        let (response_address, response_len, response_flags) = field(4);
        assert_eq!(
            (response_len, response_flags & 2),
            (108, 2),
            "writable response last"
        );

        // Complete it: response OK with a residual of 0, used length as QEMU reports writes,
        // and the interrupt.
        let response = hal.memory_at(response_address, 108).unwrap();
        response.zero();
        complete_split(&hal, &fake, 2, 0, (u32::from(token.0), 108 + 3 * 4096), 1);
        let interrupts = TestInterrupts::default();
        interrupts.raise(2);
        let done = device.wait(2, &interrupts).unwrap();
        assert_eq!((done.tag, done.written, done.data_len), (7, 108, 3 * 4096));
        let response = device.command_response(2, done.context).unwrap();
        assert_eq!(response.response, 0);
        let queue = device.queue(2).unwrap();
        assert_eq!(queue.in_flight(), 0);
        assert_eq!(
            queue.passes,
            PassStats {
                passes: 1,
                irq_completions: 1,
                ..PassStats::default()
            }
        );
        assert!(matches!(
            device.wait(2, &interrupts),
            Err(DriverError::Timeout { queue: 2 })
        ));
    }

    /// Submits a data-less request on `queue` and returns its token's descriptor id.
    fn submit_one(
        hal: &FakeHal,
        device: &mut Device<FakeVirtioPci>,
        queue: usize,
        tag: u64,
    ) -> u32 {
        let queue = device.queue(queue).unwrap();
        let token = queue
            .submit(hal, &[0; 8], 108, Data::None, Layout::DIRECT_PAGES, tag)
            .unwrap();
        u32::from(token.0)
    }

    #[test]
    fn completions_come_only_with_an_interrupt_and_one_pass_drains_all_it_announced() {
        let hal = FakeHal::new();
        let (fake, mut device) = device(&hal);
        let interrupts = TestInterrupts::default();
        let ids: [u32; 3] =
            core::array::from_fn(|tag| submit_one(&hal, &mut device, 3, tag as u64));
        device.kick(3).unwrap();
        for (slot, id) in ids.iter().enumerate() {
            complete_split(&hal, &fake, 3, slot, (*id, 0), slot as u16 + 1);
        }
        // Used chains without the interrupt the device owes are a lost interrupt, not a
        // completion: nothing is taken.
        assert_eq!(
            device.wait(3, &interrupts).unwrap_err(),
            DriverError::LostInterrupt { queue: 3 }
        );
        assert_eq!(device.queue(3).unwrap().completions, 0);
        // One interrupt: one pass drains all three, handed out in order without waiting.
        interrupts.raise(3);
        let tags: [u64; 3] = core::array::from_fn(|_| device.wait(3, &interrupts).unwrap().tag);
        assert_eq!(tags, [0, 1, 2]);
        let queue = device.queue(3).unwrap();
        assert_eq!(
            (
                queue.completions,
                queue.passes.passes,
                queue.passes.irq_completions
            ),
            (3, 1, 3)
        );
        assert!(queue.take_drained().is_none());
        // An interrupt whose chains an earlier pass drained makes an empty pass.
        interrupts.raise(3);
        assert_eq!(
            device.wait(3, &interrupts).unwrap_err(),
            DriverError::Timeout { queue: 3 }
        );
        assert_eq!(device.queue(3).unwrap().passes.empty_passes, 1);
    }

    #[test]
    fn a_device_that_needs_reset_is_reported_when_no_interrupt_comes() {
        let hal = FakeHal::new();
        let (fake, mut device) = device(&hal);
        submit_one(&hal, &mut device, 2, 1);
        device.kick(2).unwrap();
        fake.set_device_needs_reset();
        assert_eq!(
            device.wait(2, &TestInterrupts::default()).unwrap_err(),
            DriverError::NeedsReset
        );
    }

    #[test]
    fn oversized_headers_and_too_many_segments_are_errors() {
        let hal = FakeHal::new();
        let (_fake, mut device) = device(&hal);
        let queue = device.queue(2).unwrap();
        assert_eq!(
            queue.submit(&hal, &[0; 65], 108, Data::None, Layout::DIRECT_PAGES, 1),
            Err(DriverError::HeaderTooLarge(65))
        );
        assert_eq!(
            queue.submit(&hal, &[0; 8], 129, Data::None, Layout::DIRECT_PAGES, 1),
            Err(DriverError::HeaderTooLarge(129))
        );
        // More pages than a request carries (the fake HAL translates page by page) ...
        let big = hal.dma_alloc((MAX_DATA_SEGMENTS + 1) * 4096, 4096).unwrap();
        assert_eq!(
            queue.submit(&hal, &[0; 8], 108, Data::In(big), Layout::INDIRECT_PAGES, 1),
            Err(DriverError::Hal(HalError::TooManySegments {
                capacity: MAX_DATA_SEGMENTS
            }))
        );
        // ... or more segments once cut to the layout's segment length.
        let small = hal.dma_alloc((MAX_DATA_SEGMENTS + 1) * 512, 4096).unwrap();
        let layout = Layout {
            indirect: true,
            segment_len: 512,
        };
        assert_eq!(
            queue.submit(&hal, &[0; 8], 108, Data::In(small), layout, 1),
            Err(DriverError::TooManySegments(MAX_DATA_SEGMENTS + 1))
        );
        assert_eq!(queue.in_flight(), 0, "nothing was added");
        assert!(matches!(
            device.queue(MAX_QUEUES),
            Err(DriverError::NoQueue(MAX_QUEUES))
        ));
    }
}
