//! Ring benchmark: submit and complete 3-segment 4 KiB reads through a virtqueue against an
//! in-process device that drains in batches, counting kicks and interrupts per I/O.
//!
//! Instructions per I/O are counted by `cargo xtask bench`, which runs this binary under
//! `valgrind --tool=callgrind` collecting only inside the driver-side functions
//! (`driver_submit`, `driver_complete`, `peer_submit`, `peer_complete`), so the device model
//! and the harness are not counted. No timing is asserted anywhere.

mod memory;
mod packed_device;
mod peer;
mod split_device;

use std::hint::black_box;
use std::ptr::NonNull;

use virtio_core::dma::DmaMemory;
use virtio_core::hal::Segment;
use virtio_core::queue::packed::PackedQueue;
use virtio_core::queue::split::SplitQueue;
use virtio_core::queue::{QueueFeatures, Slot, Token, Virtqueue};
use virtio_drivers::queue::VirtQueue;

use memory::ram;
use packed_device::PackedDevice;
use peer::{PeerHal, RecordingTransport};
use split_device::SplitDevice;

/// Queue size for every ring (QEMU's default `virtqueue_size`).
const QUEUE_SIZE: u16 = 256;
/// Bytes of the virtio-scsi command request and response (virtio 1.x section 5.6.6).
const REQUEST_LEN: usize = 51;
const RESPONSE_LEN: usize = 108;
const DATA_LEN: usize = 4096;

/// Which driver runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ring {
    Split,
    Packed,
    Peer,
}

/// What one run measures.
#[derive(Clone, Copy, Debug)]
struct Config {
    ring: Ring,
    depth: usize,
    ios: u64,
    indirect: bool,
    event_idx: bool,
}

/// What one run counted.
struct Counts {
    kicks: u64,
    interrupts: u64,
}

/// The device side, whatever the ring kind.
trait Device {
    fn notify(&mut self);
    fn process(&mut self) -> bool;
    fn counts(&self) -> Counts;
}

impl Device for SplitDevice {
    fn notify(&mut self) {
        SplitDevice::notify(self);
    }
    fn process(&mut self) -> bool {
        SplitDevice::process(self)
    }
    fn counts(&self) -> Counts {
        Counts {
            kicks: self.kicks,
            interrupts: self.interrupts,
        }
    }
}

impl Device for PackedDevice {
    fn notify(&mut self) {
        PackedDevice::notify(self);
    }
    fn process(&mut self) -> bool {
        PackedDevice::process(self)
    }
    fn counts(&self) -> Counts {
        Counts {
            kicks: self.kicks,
            interrupts: self.interrupts,
        }
    }
}

/// The buffers of one request: command, response, data, and room for an indirect table.
struct RequestBuffers {
    request: (NonNull<u8>, u64),
    response: (NonNull<u8>, u64),
    data: (NonNull<u8>, u64),
    indirect: DmaMemory,
}

impl RequestBuffers {
    fn new() -> Self {
        let memory = ram();
        Self {
            request: memory.alloc(REQUEST_LEN, 8),
            response: memory.alloc(RESPONSE_LEN, 8),
            data: memory.alloc(DATA_LEN, 4096),
            indirect: memory.dma(3 * 16, 16),
        }
    }

    fn readable(&self) -> [Segment; 1] {
        [Segment::new(self.request.1, REQUEST_LEN as u32)]
    }

    fn writable(&self) -> [Segment; 2] {
        [
            Segment::new(self.response.1, RESPONSE_LEN as u32),
            Segment::new(self.data.1, DATA_LEN as u32),
        ]
    }
}

/// Driver side of one submission: add the chain, decide on the kick. Counted by callgrind.
#[inline(never)]
fn driver_submit<Q: Virtqueue>(
    queue: &mut Q,
    readable: &[Segment],
    writable: &[Segment],
    indirect: Option<&DmaMemory>,
) -> (Token, bool) {
    let token = queue
        .add(readable, writable, indirect)
        .expect("queue has room at this depth");
    (token, queue.kick_prepare())
}

/// Driver side of one interrupt: drain the used ring, re-arm, drain again if the re-check says
/// so. Counted by callgrind.
#[inline(never)]
fn driver_complete<Q: Virtqueue>(queue: &mut Q, done: &mut Vec<Token>) {
    loop {
        while let Some(used) = queue.pop_used().expect("device follows the protocol") {
            debug_assert_eq!(used.written, split_device::WRITTEN_PER_REQUEST);
            done.push(used.token);
        }
        if !queue.enable_interrupts() {
            break;
        }
    }
}

/// Runs `config.ios` requests through our queue, keeping `config.depth` in flight, and returns
/// what the device counted.
fn run_ours<Q: Virtqueue, D: Device>(queue: &mut Q, mut device: D, config: Config) -> Counts {
    let buffers: Vec<RequestBuffers> = (0..config.depth).map(|_| RequestBuffers::new()).collect();
    let mut free_sets: Vec<usize> = (0..config.depth).collect();
    let mut owner = vec![usize::MAX; usize::from(QUEUE_SIZE)];
    let mut done = Vec::with_capacity(usize::from(QUEUE_SIZE));
    let (mut submitted, mut completed) = (0u64, 0u64);
    while completed < config.ios {
        while let Some(set) = free_sets.pop().filter(|_| submitted < config.ios) {
            let request = &buffers[set];
            let indirect = config.indirect.then_some(&request.indirect);
            let (token, kick) =
                driver_submit(queue, &request.readable(), &request.writable(), indirect);
            owner[token.index()] = set;
            submitted += 1;
            if kick {
                device.notify();
            }
        }
        if !device.process() {
            eprintln!(
                "stalled: {} in flight, no interrupt (lost kick or re-arm)",
                submitted - completed
            );
            std::process::exit(3);
        }
        done.clear();
        driver_complete(queue, &mut done);
        for token in &done {
            free_sets.push(std::mem::replace(&mut owner[token.index()], usize::MAX));
        }
        completed += done.len() as u64;
    }
    device.counts()
}

/// The peer's submission. Counted by callgrind.
#[inline(never)]
fn peer_submit<'buffer>(
    queue: &mut VirtQueue<PeerHal, { QUEUE_SIZE as usize }>,
    inputs: &[&'buffer [u8]],
    outputs: &mut [&'buffer mut [u8]],
) -> (u16, bool) {
    // SAFETY: the buffers live in guest memory for the whole run and are passed unchanged to
    // `pop_used` with this token before being reused.
    let token = unsafe { queue.add(inputs, outputs) }.expect("queue has room at this depth");
    (token, queue.should_notify())
}

/// The peer's interrupt handling: pop every used chain. Counted by callgrind.
#[inline(never)]
fn peer_complete(
    queue: &mut VirtQueue<PeerHal, { QUEUE_SIZE as usize }>,
    slices: &mut [(&'static [u8], &'static mut [u8], &'static mut [u8])],
    owner: &[usize],
    done: &mut Vec<u16>,
) {
    while let Some(token) = queue.peek_used() {
        let (request, response, data) = &mut slices[owner[usize::from(token)]];
        let inputs = [&**request];
        let mut outputs = [&mut **response, &mut **data];
        // SAFETY: these are exactly the buffers added with this token.
        let written = unsafe { queue.pop_used(token, &inputs, &mut outputs) }.expect("pop");
        debug_assert_eq!(written, split_device::WRITTEN_PER_REQUEST);
        done.push(token);
    }
}

/// A byte slice over guest memory for the peer's API.
fn guest_slice(host: NonNull<u8>, len: usize) -> &'static mut [u8] {
    // SAFETY: the range was carved from the process-lifetime guest mmap for this request only;
    // the device model never writes data buffers, so nothing else mutates it while borrowed.
    unsafe { std::slice::from_raw_parts_mut(host.as_ptr(), len) }
}

fn run_peer(config: Config) -> Counts {
    let mut transport = RecordingTransport::default();
    let mut queue = VirtQueue::<PeerHal, { QUEUE_SIZE as usize }>::new(
        &mut transport,
        0,
        config.indirect,
        config.event_idx,
    )
    .expect("peer queue");
    let (descriptors, driver, device_area) = transport.queue.expect("queue programmed");
    let mut device = SplitDevice::new(
        QUEUE_SIZE,
        descriptors,
        driver,
        device_area,
        config.event_idx,
    );
    let buffers: Vec<RequestBuffers> = (0..config.depth).map(|_| RequestBuffers::new()).collect();
    let mut slices: Vec<(&'static [u8], &'static mut [u8], &'static mut [u8])> = buffers
        .iter()
        .map(|b| {
            (
                &*guest_slice(b.request.0, REQUEST_LEN),
                guest_slice(b.response.0, RESPONSE_LEN),
                guest_slice(b.data.0, DATA_LEN),
            )
        })
        .collect();
    let mut free_sets: Vec<usize> = (0..config.depth).collect();
    let mut owner = vec![usize::MAX; usize::from(QUEUE_SIZE)];
    let mut done = Vec::with_capacity(usize::from(QUEUE_SIZE));
    let (mut submitted, mut completed) = (0u64, 0u64);
    while completed < config.ios {
        while let Some(set) = free_sets.pop().filter(|_| submitted < config.ios) {
            let (request, response, data) = &mut slices[set];
            let inputs = [&**request];
            let mut outputs = [&mut **response, &mut **data];
            let (token, kick) = peer_submit(&mut queue, &inputs, &mut outputs);
            owner[usize::from(token)] = set;
            submitted += 1;
            if kick {
                device.notify();
            }
        }
        if !device.process() {
            eprintln!(
                "peer stalled: {} in flight, no interrupt",
                submitted - completed
            );
            std::process::exit(3);
        }
        done.clear();
        peer_complete(&mut queue, &mut slices, &owner, &mut done);
        for token in &done {
            free_sets.push(std::mem::replace(
                &mut owner[usize::from(*token)],
                usize::MAX,
            ));
        }
        completed += done.len() as u64;
    }
    Counts {
        kicks: device.kicks,
        interrupts: device.interrupts,
    }
}

fn run(config: Config) -> Counts {
    let features = QueueFeatures {
        event_idx: config.event_idx,
        indirect: config.indirect,
    };
    let slots = vec![Slot::EMPTY; usize::from(QUEUE_SIZE)];
    match config.ring {
        Ring::Split => {
            let ring = ram().dma(SplitQueue::<Vec<Slot>>::ring_len(QUEUE_SIZE), 4096);
            let mut queue = SplitQueue::new(0, QUEUE_SIZE, ring, slots, features).expect("split");
            let a = queue.addresses();
            let device = SplitDevice::new(
                QUEUE_SIZE,
                a.descriptors,
                a.driver,
                a.device,
                config.event_idx,
            );
            run_ours(&mut queue, device, config)
        }
        Ring::Packed => {
            let ring = ram().dma(PackedQueue::<Vec<Slot>>::ring_len(QUEUE_SIZE), 4096);
            let mut queue = PackedQueue::new(0, QUEUE_SIZE, ring, slots, features).expect("packed");
            let a = queue.addresses();
            let device = PackedDevice::new(
                QUEUE_SIZE,
                virtio_core::fake::packed_device::PackedAreas {
                    descriptors: a.descriptors,
                    driver_event: a.driver,
                    device_event: a.device,
                },
                virtio_core::fake::packed_device::PackedFeatures {
                    indirect: features.indirect,
                    event_idx: features.event_idx,
                },
            );
            run_ours(&mut queue, device, config)
        }
        Ring::Peer => run_peer(config),
    }
}

fn parse(args: &[String]) -> Result<Config, String> {
    let mut config = Config {
        ring: Ring::Split,
        depth: 1,
        ios: 10_000,
        indirect: false,
        event_idx: true,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--ring" => {
                config.ring = match value()?.as_str() {
                    "split" => Ring::Split,
                    "packed" => Ring::Packed,
                    "peer" => Ring::Peer,
                    other => return Err(format!("unknown ring {other}")),
                }
            }
            "--depth" => config.depth = value()?.parse().map_err(|e| format!("--depth: {e}"))?,
            "--ios" => config.ios = value()?.parse().map_err(|e| format!("--ios: {e}"))?,
            "--indirect" => config.indirect = true,
            "--no-event-idx" => config.event_idx = false,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if config.ring == Ring::Peer && config.indirect {
        // virtio-drivers allocates indirect tables on the Rust heap and hands the device their
        // CPU address (it assumes identity mapping), which this harness's guest memory is not.
        return Err("the peer's indirect tables live on the heap, outside guest memory".into());
    }
    let per_request = if config.indirect { 1 } else { 3 };
    if config.depth == 0 || config.depth * per_request > usize::from(QUEUE_SIZE) {
        return Err(format!(
            "depth must be 1..={}",
            usize::from(QUEUE_SIZE) / per_request
        ));
    }
    Ok(config)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!(
                "rvscsi-bench: {message}\nusage: rvscsi-bench [--ring split|packed|peer] [--depth N] [--ios N] [--indirect] [--no-event-idx]"
            );
            std::process::exit(2);
        }
    };
    let counts = black_box(run(config));
    #[expect(
        clippy::cast_precision_loss,
        reason = "ratios of counts far below 2^52"
    )]
    let per_io = |n: u64| n as f64 / config.ios as f64;
    println!(
        "ring={:?} depth={} indirect={} event_idx={} ios={} kicks={} interrupts={} kicks_per_io={:.4} interrupts_per_io={:.4}",
        config.ring,
        config.depth,
        config.indirect,
        config.event_idx,
        config.ios,
        counts.kicks,
        counts.interrupts,
        per_io(counts.kicks),
        per_io(counts.interrupts),
    );
}
