//! The device driven by virtio-core's own driver side (PCI transport, split or packed queues),
//! so the tests prove that device and driver agree on the protocol.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use virtio_core::dma::DmaMemory;
use virtio_core::features::{Features, SCSI_DRIVER_FEATURES};
use virtio_core::hal::{RegisterIo, Segment};
use virtio_core::pci::PciTransport;
use virtio_core::queue::packed::PackedQueue;
use virtio_core::queue::split::{SplitLayout, SplitQueue};
use virtio_core::queue::{DeviceError, QueueFeatures, Slot, Token, Virtqueue};
use virtio_core::scsi::{
    AnEvents, AnReq, CmdReq, CmdResp, Event, EventType, Lun as WireLun, ResetReason, Response,
    TmfReq, TmfSubtype,
};
use zerocopy::{FromBytes, IntoBytes};

use super::reservations::RESERVATION_CONFLICT;
use super::target::{self, LunIdentity, opcode};
use super::*;
use crate::scenario::rw10;

/// `RegisterIo` onto the device's MMIO entry points, as the simulator's register routines are.
#[derive(Clone)]
struct Mmio(VirtioScsiDevice);

impl RegisterIo for Mmio {
    fn bar_len(&self, bar: u8) -> Option<u64> {
        self.0.bar_len(bar)
    }
    fn read8(&self, bar: u8, offset: u64) -> u8 {
        self.0.mmio_read(bar, offset, 1) as u8
    }
    fn read16(&self, bar: u8, offset: u64) -> u16 {
        self.0.mmio_read(bar, offset, 2) as u16
    }
    fn read32(&self, bar: u8, offset: u64) -> u32 {
        self.0.mmio_read(bar, offset, 4) as u32
    }
    fn write8(&self, bar: u8, offset: u64, value: u8) {
        self.0.mmio_write(bar, offset, 1, value.into());
    }
    fn write16(&self, bar: u8, offset: u64, value: u16) {
        self.0.mmio_write(bar, offset, 2, value.into());
    }
    fn write32(&self, bar: u8, offset: u64, value: u32) {
        self.0.mmio_write(bar, offset, 4, value.into());
    }
}

/// Records every interrupt.
#[derive(Default)]
struct Recorder {
    vectors: Mutex<Vec<u16>>,
    count: AtomicU64,
}

impl InterruptSink for Recorder {
    fn raise(&self, msix_vector: u16) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.vectors.lock().unwrap().push(msix_vector);
    }
}

/// DMA memory from the simulated physical memory (bus address = process address).
/// Allocates `len` bytes and maps them for the device: behind an IOMMU at a fresh bus address,
/// else at their physical one.
fn dma(memory: &PhysicalMemory, len: usize, align: usize) -> DmaMemory {
    let ptr = memory.alloc(len, align).unwrap();
    let bus = memory.map(ptr.as_ptr().addr(), len).unwrap();
    dma_at_bus(ptr, len, bus)
}

#[expect(
    unsafe_code,
    reason = "the test driver's DMA boundary: describing allocated memory"
)]
fn dma_at_bus(ptr: NonNull<u8>, len: usize, bus: u64) -> DmaMemory {
    // SAFETY: as in `dma_at`; the device reaches the memory at `bus`, which `PhysicalMemory::map`
    // returned for it.
    unsafe { DmaMemory::new(ptr, len, bus) }.unwrap()
}

#[expect(
    unsafe_code,
    reason = "the test driver's DMA boundary: describing allocated memory"
)]
fn dma_at(ptr: NonNull<u8>, len: usize) -> DmaMemory {
    // SAFETY: `ptr .. ptr + len` was carved from the simulated memory, which stays mapped while
    // the test's `PhysicalMemory` lives; the test never frees it while the view is used, and
    // touches it only through `DmaMemory` and the device (vm-memory). Bus address = CPU address.
    unsafe { DmaMemory::new(ptr, len, ptr.as_ptr().addr() as u64) }.unwrap()
}

fn segment(memory: &DmaMemory) -> Segment {
    Segment::new(memory.bus_address(), memory.len() as u32)
}

/// One command in flight: its buffers.
struct InFlight {
    resp: DmaMemory,
    data_in: Option<DmaMemory>,
}

/// A completed command as the driver sees it.
#[derive(Debug)]
struct Done {
    token: Token,
    written: u32,
    resp: CmdResp,
    data: Vec<u8>,
}

/// virtio-core's driver side of one queue, in the layout the device negotiated. Derefs to the
/// layout-independent [`Virtqueue`].
enum DriverRing {
    Split(SplitQueue<Vec<Slot>>),
    Packed(PackedQueue<Vec<Slot>>),
}

impl DriverRing {
    /// The split ring's layout, for tests that write descriptors by hand.
    fn layout(&self) -> SplitLayout {
        match self {
            Self::Split(queue) => queue.layout(),
            Self::Packed(_) => panic!("a split-ring test on a packed ring"),
        }
    }
}

impl std::ops::Deref for DriverRing {
    type Target = dyn Virtqueue;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Split(queue) => queue,
            Self::Packed(queue) => queue,
        }
    }
}

impl std::ops::DerefMut for DriverRing {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Self::Split(queue) => queue,
            Self::Packed(queue) => queue,
        }
    }
}

/// One driver-side queue with its notification address.
struct DriverQueue {
    index: u16,
    queue: DriverRing,
    notify_bar: u8,
    notify_offset: u64,
    device: VirtioScsiDevice,
    memory: PhysicalMemory,
    in_flight: HashMap<Token, InFlight>,
}

impl DriverQueue {
    fn start(
        &mut self,
        lun: WireLun,
        tag: u64,
        cdb: &[u8],
        data_out: &[u8],
        data_in: usize,
        indirect: bool,
    ) -> Result<Token, virtio_core::queue::QueueError> {
        let req = dma(&self.memory, size_of::<CmdReq>(), 8);
        assert!(req.write_bytes(0, CmdReq::new(lun, tag, cdb).unwrap().as_bytes()));
        let resp = dma(&self.memory, size_of::<CmdResp>(), 8);
        let mut readable = vec![segment(&req)];
        let mut writable = vec![segment(&resp)];
        if !data_out.is_empty() {
            let out = dma(&self.memory, data_out.len(), 512);
            assert!(out.write_bytes(0, data_out));
            readable.push(segment(&out));
        }
        let data_in = (data_in > 0).then(|| dma(&self.memory, data_in, 512));
        if let Some(buffer) = &data_in {
            writable.push(segment(buffer));
        }
        let table = indirect.then(|| dma(&self.memory, 16 * 8, 16));
        let token = self.queue.add(&readable, &writable, table.as_ref())?;
        self.in_flight.insert(token, InFlight { resp, data_in });
        Ok(token)
    }

    /// Starts a one-block READ(10) of LBA `lba` on LUN 0:0, tagged `lba` (not kicked).
    fn start_read(&mut self, lba: u32, indirect: bool) -> Token {
        self.start(
            lun0(),
            lba.into(),
            &rw10(opcode::READ_10, lba, 1),
            &[],
            512,
            indirect,
        )
        .unwrap()
    }

    fn kick(&mut self) {
        if self.queue.kick_prepare() {
            self.device
                .mmio_write(self.notify_bar, self.notify_offset, 2, self.index.into());
        }
    }

    fn reap(&mut self) -> Result<Vec<Done>, DeviceError> {
        let mut done = Vec::new();
        while let Some(used) = self.queue.pop_used()? {
            let flight = self.in_flight.remove(&used.token).unwrap();
            let mut bytes = [0u8; size_of::<CmdResp>()];
            assert!(flight.resp.read_bytes(0, &mut bytes));
            let resp = CmdResp::read_from_bytes(&bytes).unwrap();
            let data = flight.data_in.map_or_else(Vec::new, |buffer| {
                let mut data = vec![0; buffer.len()];
                assert!(buffer.read_bytes(0, &mut data));
                data
            });
            done.push(Done {
                token: used.token,
                written: used.written,
                resp,
                data,
            });
        }
        Ok(done)
    }

    /// Submits one command, waits for it and returns it.
    fn command(&mut self, lun: WireLun, cdb: &[u8], data_out: &[u8], data_in: usize) -> Done {
        let token = self.start(lun, 7, cdb, data_out, data_in, false).unwrap();
        self.kick();
        self.device.quiesce();
        let mut done = self.reap().unwrap();
        assert_eq!(done.len(), 1);
        let done = done.remove(0);
        assert_eq!(done.token, token);
        done
    }
}

struct Harness {
    device: VirtioScsiDevice,
    memory: PhysicalMemory,
    sink: Arc<Recorder>,
    transport: PciTransport<Mmio>,
    queues: Vec<Option<DriverQueue>>,
    features: Features,
}

const QUEUE_SIZE: u16 = 64;

impl Harness {
    fn new(options: DeviceOptions, wanted: Features) -> Self {
        Self::on(PhysicalMemory::new(256 << 20).unwrap(), options, wanted)
    }

    /// A harness whose device reaches `memory` (perhaps through an IOMMU).
    fn on(memory: PhysicalMemory, options: DeviceOptions, wanted: Features) -> Self {
        let sink = Arc::new(Recorder::default());
        let device = VirtioScsiDevice::new(options, memory.clone(), sink.clone());
        device
            .add_lun(0, 0, Lun::memory(1 << 16, 512).unwrap())
            .unwrap();
        let transport = PciTransport::probe(device.pci_config(), Mmio(device.clone())).unwrap();
        let mut harness = Self {
            device,
            memory,
            sink,
            transport,
            queues: Vec::new(),
            features: Features::empty(),
        };
        harness.init(wanted);
        harness
    }

    fn default() -> Self {
        Self::new(DeviceOptions::default(), SCSI_DRIVER_FEATURES)
    }

    /// The driver's initialisation: reset, negotiate, set up every queue, DRIVER_OK.
    fn init(&mut self, wanted: Features) {
        self.features = self.transport.begin_init(wanted).unwrap();
        let queue_features = QueueFeatures {
            event_idx: self.features.contains(Features::EVENT_IDX),
            indirect: self.features.contains(Features::INDIRECT_DESC),
        };
        let count = self.transport.num_queues();
        self.queues.clear();
        let packed = self.features.contains(Features::RING_PACKED);
        for index in 0..count {
            let slots = vec![Slot::EMPTY; usize::from(QUEUE_SIZE)];
            let queue = if packed {
                let ring = dma(
                    &self.memory,
                    PackedQueue::<Vec<Slot>>::ring_len(QUEUE_SIZE),
                    4096,
                );
                DriverRing::Packed(
                    PackedQueue::new(index, QUEUE_SIZE, ring, slots, queue_features).unwrap(),
                )
            } else {
                let ring = dma(
                    &self.memory,
                    SplitQueue::<Vec<Slot>>::ring_len(QUEUE_SIZE),
                    4096,
                );
                DriverRing::Split(
                    SplitQueue::new(index, QUEUE_SIZE, ring, slots, queue_features).unwrap(),
                )
            };
            let notifier = self
                .transport
                .setup_queue(index, QUEUE_SIZE, queue.addresses(), Some(index))
                .unwrap();
            self.queues.push(Some(DriverQueue {
                index,
                queue,
                notify_bar: self.transport.layout().notify.bar,
                notify_offset: notifier.offset(),
                device: self.device.clone(),
                memory: self.memory.clone(),
                in_flight: HashMap::new(),
            }));
        }
        self.transport.set_config_msix_vector(Some(count)).unwrap();
        self.transport.driver_ok().unwrap();
    }

    fn queue(&mut self, index: u16) -> &mut DriverQueue {
        self.queues[usize::from(index)].as_mut().unwrap()
    }

    /// Sends one controlq request with `readable` bytes and `writable` response bytes.
    fn control(&mut self, request: &[u8], response_len: usize) -> Vec<u8> {
        let memory = self.memory.clone();
        let queue = self.queue(0);
        let req = dma(&memory, request.len(), 8);
        assert!(req.write_bytes(0, request));
        let resp = dma(&memory, response_len, 8);
        queue
            .queue
            .add(&[segment(&req)], &[segment(&resp)], None)
            .unwrap();
        // The controlq answers inline, whatever the completion mode.
        queue.kick();
        let used = queue.queue.pop_used().unwrap().unwrap();
        assert_eq!(used.written as usize, response_len);
        let mut bytes = vec![0; response_len];
        assert!(resp.read_bytes(0, &mut bytes));
        bytes
    }
}

fn lun0() -> WireLun {
    WireLun::new(0, 0).unwrap()
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed) as u8)
        .collect()
}

#[test]
fn init_handshake_negotiates_what_the_device_implements() {
    let h = Harness::default();
    assert_eq!(
        h.features,
        Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX
    );
    assert_eq!(h.transport.num_queues(), 6);
    assert!(h.device.registers().violations().is_empty());
    let config = virtio_core::scsi::read_config(&h.transport).unwrap();
    let limits = virtio_core::scsi::Limits::from_config(&config).unwrap();
    assert_eq!(config.num_queues.get(), 4);
    assert_eq!(config.seg_max.get(), 254);
    assert_eq!(limits.target_count(), 256);
}

#[test]
fn write_then_read_round_trips_direct_and_indirect() {
    let mut h = Harness::default();
    let data = pattern(3, 8 * 512);
    let q = h.queue(2);
    q.start(lun0(), 1, &rw10(opcode::WRITE_10, 100, 8), &data, 0, true)
        .unwrap();
    q.kick();
    let done = q.reap().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (
            done[0].resp.response,
            done[0].resp.status,
            done[0].resp.resid.get()
        ),
        (0, 0, 0)
    );
    let read = q.command(lun0(), &rw10(opcode::READ_10, 100, 8), &[], 8 * 512);
    assert_eq!(read.resp.status, 0);
    assert_eq!(read.data, data);
    assert_eq!(read.written as usize, 108 + data.len());
    // The driver never re-armed (EVENT_IDX, used_event still 0): one interrupt only.
    assert_eq!(h.sink.count.load(Ordering::SeqCst), 1);
    assert!(h.sink.vectors.lock().unwrap().iter().all(|&v| v == 2));
}

#[test]
fn inquiry_vpd_pages_and_read_capacity() {
    let mut h = Harness::default();
    h.device
        .add_lun(
            0,
            1,
            Lun::memory(5000, 4096).unwrap().with_identity(LunIdentity {
                serial: "SERIAL42".into(),
                naa_id: None,
                ..LunIdentity::default()
            }),
        )
        .unwrap();
    let lun1 = WireLun::new(0, 1).unwrap();
    let q = h.queue(3);
    let std = q.command(lun1, &[opcode::INQUIRY, 0, 0, 0, 96, 0], &[], 96);
    assert_eq!(std.resp.resid.get(), 96 - 36);
    assert_eq!(&std.data[16..24], b"SIM DISK");
    let pages = q.command(lun1, &[opcode::INQUIRY, 1, 0, 0, 64, 0], &[], 64);
    assert_eq!(&pages.data[..7], &[0, 0, 0, 3, 0, 0x80, 0x83]);
    let serial = q.command(lun1, &[opcode::INQUIRY, 1, 0x80, 0, 64, 0], &[], 64);
    assert_eq!(&serial.data[4..12], b"SERIAL42");
    let ids = q.command(lun1, &[opcode::INQUIRY, 1, 0x83, 0, 64, 0], &[], 64);
    assert_eq!(&ids.data[..4], &[0, 0x83, 0, 0]);
    assert_eq!(ids.resp.resid.get(), 60);
    let ids0 = q.command(lun0(), &[opcode::INQUIRY, 1, 0x83, 0, 64, 0], &[], 64);
    assert_eq!(&ids0.data[..8], &[0, 0x83, 0, 20, 1, 3, 0, 16]);
    let cap = q.command(
        lun1,
        &[opcode::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
        8,
    );
    assert_eq!(cap.data, [0, 0, 0x13, 0x87, 0, 0, 0x10, 0]);
    let mut sai = vec![opcode::SERVICE_ACTION_IN_16, target::SAI_READ_CAPACITY_16];
    sai.extend_from_slice(&[0; 8]);
    sai.extend_from_slice(&32u32.to_be_bytes());
    sai.extend_from_slice(&[0, 0]);
    let cap16 = q.command(lun1, &sai, &[], 32);
    assert_eq!(
        &cap16.data[..12],
        &[0, 0, 0, 0, 0, 0, 0x13, 0x87, 0, 0, 0x10, 0]
    );
    // A buffer bigger than the allocation length: the residual covers the difference.
    let short = q.command(lun1, &[opcode::INQUIRY, 0, 0, 0, 8, 0], &[], 0);
    assert_eq!(short.resp.response, Response::Overrun.raw());
}

#[test]
fn bad_lba_bad_target_and_absent_luns() {
    let mut h = Harness::default();
    h.device
        .add_lun(1, 5, Lun::memory(10, 512).unwrap())
        .unwrap();
    let q = h.queue(2);
    let bad = q.command(lun0(), &rw10(opcode::READ_10, 1 << 16, 1), &[], 512);
    assert_eq!(
        (bad.resp.response, bad.resp.status),
        (0, target::CHECK_CONDITION)
    );
    assert_eq!(bad.resp.sense_len.get(), 18);
    assert_eq!((bad.resp.sense[2], bad.resp.sense[12]), (5, 0x21));
    assert_eq!(bad.resp.resid.get(), 512);
    let unknown = q.command(lun0(), &[0xC5, 0, 0, 0, 0, 0], &[], 0);
    assert_eq!(unknown.resp.sense[12], 0x20);
    let no_target = q.command(WireLun::new(9, 0).unwrap(), &[0; 6], &[], 0);
    assert_eq!(no_target.resp.response, Response::BadTarget.raw());
    // Target 1 exists without LUN 0: INQUIRY says "no unit here", other commands fail.
    let absent = WireLun::new(1, 0).unwrap();
    let inquiry = q.command(absent, &[opcode::INQUIRY, 0, 0, 0, 36, 0], &[], 36);
    assert_eq!((inquiry.resp.status, inquiry.data[0]), (0, 0x7F));
    let tur = q.command(absent, &[0; 6], &[], 0);
    assert_eq!((tur.resp.sense[2], tur.resp.sense[12]), (5, 0x25));
    let mut report = vec![opcode::REPORT_LUNS, 0, 0, 0, 0, 0];
    report.extend_from_slice(&64u32.to_be_bytes());
    report.extend_from_slice(&[0, 0]);
    let luns = q.command(absent, &report, &[], 64);
    assert_eq!(
        &luns.data[..16],
        &[0, 0, 0, 8, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(luns.resp.resid.get(), 64 - 16);
    // Removing the target's last LUN removes the target.
    assert!(h.device.remove_lun(1, 5).is_some());
    let gone = h.queue(2).command(absent, &[0; 6], &[], 0);
    assert_eq!(gone.resp.response, Response::BadTarget.raw());
}

#[test]
fn sense_is_truncated_to_the_configured_sense_size() {
    let mut h = Harness::default();
    h.transport
        .write_device_config_u32(virtio_core::scsi::Config::SENSE_SIZE_OFFSET as u32, 8)
        .unwrap();
    let q = h.queue(2);
    let bad = q.command(lun0(), &rw10(opcode::READ_10, 1 << 16, 1), &[], 512);
    assert_eq!(bad.resp.sense_len.get(), 8);
    // The response header is 12 + 8 bytes now, so data-in would start at byte 20: the rest
    // of the 108-byte response buffer is device-writable data space and stays untouched.
    assert_eq!(
        bad.resp.sense[..8],
        target::fixed_sense(5, target::asc::LBA_OUT_OF_RANGE)[..8]
    );
}

#[test]
fn delayed_completion_is_out_of_order() {
    let options = DeviceOptions {
        completion: CompletionMode::Delayed {
            max_delay: Duration::from_millis(30),
            shuffle: true,
        },
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, SCSI_DRIVER_FEATURES);
    let q = h.queue(2);
    let tokens: Vec<Token> = (0..32).map(|lba| q.start_read(lba, true)).collect();
    q.kick();
    q.device.quiesce();
    let done = q.reap().unwrap();
    assert_eq!(done.len(), 32);
    let order: Vec<Token> = done.iter().map(|d| d.token).collect();
    assert_ne!(
        order, tokens,
        "32 random delays completed in submission order"
    );
    assert!(
        done.iter()
            .all(|d| d.resp.status == 0 && d.resp.response == 0)
    );
}

/// Interrupts raised for 32 requests completing one by one (each in its own worker batch),
/// with or without EVENT_IDX, when the driver does not re-arm (it neither pops nor re-enables).
fn interrupts_at_depth(wanted: Features) -> u64 {
    let options = DeviceOptions {
        completion: CompletionMode::Delayed {
            max_delay: Duration::from_micros(100),
            shuffle: false,
        },
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, wanted);
    let q = h.queue(2);
    for lba in 0..32 {
        q.start_read(lba, true);
        q.kick();
        q.device.quiesce();
    }
    assert_eq!(q.reap().unwrap().len(), 32);
    let stats = h.device.stats();
    assert_eq!(stats.queues[2].requests, 32);
    assert_eq!(
        h.sink.count.load(Ordering::SeqCst),
        stats.queues[2].interrupts
    );
    stats.queues[2].interrupts
}

#[test]
fn event_idx_suppresses_interrupts_at_depth() {
    // With EVENT_IDX the driver's used_event stays 0, so only the first completion crosses it.
    assert_eq!(interrupts_at_depth(SCSI_DRIVER_FEATURES), 1);
    assert_eq!(
        interrupts_at_depth(SCSI_DRIVER_FEATURES - Features::EVENT_IDX),
        32
    );
}

fn tmf(subtype: TmfSubtype, lun: WireLun, tag: u64) -> Vec<u8> {
    TmfReq::new(subtype, lun, tag).as_bytes().to_vec()
}

/// A device that holds every request (its completions wait ten minutes) until a reset or a task
/// management function takes it back.
fn holding_harness() -> Harness {
    let options = DeviceOptions {
        completion: CompletionMode::Delayed {
            max_delay: Duration::from_mins(10),
            shuffle: false,
        },
        ..DeviceOptions::default()
    };
    Harness::new(options, SCSI_DRIVER_FEATURES)
}

/// Starts `count` reads on the first request queue and kicks it.
fn held_reads(h: &mut Harness, count: u32) {
    let q = h.queue(2);
    for lba in 0..count {
        q.start_read(lba, false);
    }
    q.kick();
}

#[test]
fn lun_reset_completes_pending_requests_before_answering() {
    let mut h = holding_harness();
    held_reads(&mut h, 3);
    assert!(h.queue(2).reap().unwrap().is_empty());
    assert_eq!(h.device.stats().pending, 3);
    let before = h.sink.vectors.lock().unwrap().len();
    let answer = h.control(&tmf(TmfSubtype::LogicalUnitReset, lun0(), 0), 1);
    assert_eq!(answer, [Response::FUNCTION_COMPLETE.raw()]);
    let vectors = h.sink.vectors.lock().unwrap().clone();
    assert_eq!(
        vectors[before..],
        [2, 0],
        "request queue interrupt first, then controlq"
    );
    let done = h.queue(2).reap().unwrap();
    assert_eq!(done.len(), 3);
    assert!(
        done.iter()
            .all(|d| d.resp.response == Response::Reset.raw())
    );
    assert_eq!(h.device.stats().queues[0].tmfs, 1);
    assert_eq!(h.device.stats().pending, 0);
}

#[test]
fn abort_task_aborts_only_the_named_request_and_bad_luns_are_answered() {
    let mut h = holding_harness();
    let q = h.queue(3);
    q.start(lun0(), 11, &rw10(opcode::READ_10, 0, 1), &[], 512, false)
        .unwrap();
    q.start(lun0(), 12, &rw10(opcode::READ_10, 1, 1), &[], 512, false)
        .unwrap();
    q.kick();
    let answer = h.control(&tmf(TmfSubtype::QueryTask, lun0(), 12), 1);
    assert_eq!(answer, [Response::FunctionSucceeded.raw()]);
    let answer = h.control(&tmf(TmfSubtype::AbortTask, lun0(), 12), 1);
    assert_eq!(answer, [Response::FUNCTION_COMPLETE.raw()]);
    let done = h.queue(3).reap().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].resp.response, Response::Aborted.raw());
    assert_eq!(h.device.stats().pending, 1);
    let answer = h.control(&tmf(TmfSubtype::ITNexusReset, lun0(), 0), 1);
    assert_eq!(answer, [0]);
    assert_eq!(
        h.queue(3).reap().unwrap()[0].resp.response,
        Response::Reset.raw()
    );
    let answer = h.control(
        &tmf(TmfSubtype::LogicalUnitReset, WireLun::new(4, 0).unwrap(), 0),
        1,
    );
    assert_eq!(answer, [Response::BadTarget.raw()]);
    let answer = h.control(
        &tmf(TmfSubtype::LogicalUnitReset, WireLun::new(0, 9).unwrap(), 0),
        1,
    );
    assert_eq!(answer, [Response::IncorrectLun.raw()]);
    let answer = h.control(&tmf(TmfSubtype::ClearAca, lun0(), 0), 1);
    assert_eq!(answer, [Response::FunctionRejected.raw()]);
    let an = h.control(AnReq::query(lun0(), AnEvents::all()).as_bytes(), 5);
    assert_eq!(an, [0, 0, 0, 0, 0]);
    let unknown = h.control(&[9, 0, 0, 0, 0, 0, 0, 0], 1);
    assert_eq!(unknown, [Response::Failure.raw()]);
}

#[test]
fn the_tmf_hook_fails_ignores_or_answers_without_cancelling() {
    let mut h = holding_harness();
    held_reads(&mut h, 2);
    let reset = tmf(TmfSubtype::LogicalUnitReset, lun0(), 0);
    let set = |h: &Harness, action: TmfAction| {
        h.device
            .set_tmf_hook(Some(Arc::new(move |_: &TmfInfo| action)));
    };
    set(&h, TmfAction::Respond(Response::FunctionRejected));
    assert_eq!(h.control(&reset, 1), [Response::FunctionRejected.raw()]);
    set(&h, TmfAction::AnswerWithoutCancelling);
    assert_eq!(h.control(&reset, 1), [Response::FUNCTION_COMPLETE.raw()]);
    assert_eq!(h.device.stats().pending, 2, "nothing was taken back");
    assert!(h.queue(2).reap().unwrap().is_empty());
    // Ignored: the chain stays with the device, no used element, no interrupt.
    set(&h, TmfAction::Ignore);
    let memory = h.memory.clone();
    let req = dma(&memory, reset.len(), 8);
    assert!(req.write_bytes(0, &reset));
    let resp = dma(&memory, 1, 8);
    let control = h.queue(0);
    control
        .queue
        .add(&[segment(&req)], &[segment(&resp)], None)
        .unwrap();
    control.kick();
    assert_eq!(control.queue.pop_used().unwrap(), None);
    h.device.set_tmf_hook(None);
    let log: Vec<_> = h.device.tmf_log().iter().map(|r| r.response).collect();
    assert_eq!(
        log,
        [
            Some(Response::FunctionRejected),
            Some(Response::FUNCTION_COMPLETE),
            None
        ]
    );
    assert_eq!(h.device.tmf_log()[0].info.subtype, 5);
    // Performed normally, the reset takes both reads back.
    h.init(SCSI_DRIVER_FEATURES);
    held_reads(&mut h, 2);
    assert_eq!(h.control(&reset, 1), [Response::FUNCTION_COMPLETE.raw()]);
    assert_eq!(h.queue(2).reap().unwrap().len(), 2);
}

#[test]
fn suppressed_interrupts_complete_without_interrupting() {
    let mut h = Harness::default();
    h.device.suppress_interrupts(true);
    let before = h.sink.vectors.lock().unwrap().len();
    let read = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!(read.resp.response, 0, "completed on the used ring");
    assert_eq!(h.sink.vectors.lock().unwrap().len(), before, "no interrupt");
    assert_eq!(h.device.stats().suppressed_interrupts, 1);
    h.device.suppress_interrupts(false);
    h.queue(2).queue.enable_interrupts();
    h.queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!(h.sink.vectors.lock().unwrap().len(), before + 1);
}

#[test]
fn a_device_needing_a_reset_interrupts_and_stops_until_reset() {
    let mut h = Harness::default();
    h.device.raise_needs_reset();
    assert!(h.transport.needs_reset());
    let config_vector = h.transport.num_queues();
    assert_eq!(h.sink.vectors.lock().unwrap().last(), Some(&config_vector));
    let q = h.queue(2);
    q.start(lun0(), 1, &rw10(opcode::READ_10, 0, 1), &[], 512, false)
        .unwrap();
    q.kick();
    assert!(
        q.reap().unwrap().is_empty(),
        "a broken device processes nothing"
    );
    h.init(SCSI_DRIVER_FEATURES);
    assert!(!h.transport.needs_reset());
    let read = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!(read.resp.status, 0);
}

#[test]
fn the_write_journal_records_executed_writes_only() {
    let mut h = Harness::default();
    h.device.journal_writes(true);
    let data = pattern(9, 1024);
    let write = h
        .queue(2)
        .command(lun0(), &rw10(opcode::WRITE_10, 4, 2), &data, 0);
    assert_eq!(write.resp.status, 0);
    // A dropped write never executes: the reset takes it back.
    h.device
        .set_fault_hook(Some(Arc::new(|_: &RequestInfo| FaultAction::Drop)));
    let q = h.queue(2);
    q.start(
        lun0(),
        2,
        &rw10(opcode::WRITE_10, 8, 1),
        &pattern(3, 512),
        0,
        false,
    )
    .unwrap();
    q.kick();
    h.device.set_fault_hook(None);
    h.init(SCSI_DRIVER_FEATURES);
    let journal = h.device.write_journal();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(
        (journal[0].target, journal[0].lun, journal[0].tag),
        (0, 0, 7)
    );
    assert_eq!(journal[0].stamp[..], data[..8]);
}

fn with_hook(h: &Harness, action: FaultAction) {
    h.device
        .set_fault_hook(Some(Arc::new(move |info: &RequestInfo| {
            if info.cdb.first() == Some(&opcode::READ_10) {
                action.clone()
            } else {
                FaultAction::Normal
            }
        })));
}

#[test]
fn fault_actions_respond_status_delay_and_drop() {
    let mut h = Harness::default();
    with_hook(&h, FaultAction::Respond(Response::Busy));
    let busy = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!(
        (busy.resp.response, busy.resp.resid.get()),
        (Response::Busy.raw(), 512)
    );

    let ua = target::fixed_sense(
        target::sense_key::UNIT_ATTENTION,
        target::asc::POWER_ON_RESET,
    );
    with_hook(
        &h,
        FaultAction::ScsiStatus {
            status: 0x18,
            sense: Vec::new(),
        },
    );
    let conflict = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!((conflict.resp.response, conflict.resp.status), (0, 0x18));
    with_hook(
        &h,
        FaultAction::ScsiStatus {
            status: 2,
            sense: ua.clone(),
        },
    );
    let attention = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!(attention.resp.sense[..18], ua[..]);

    with_hook(&h, FaultAction::Delay(Duration::from_millis(20)));
    let q = h.queue(2);
    q.start(lun0(), 1, &rw10(opcode::READ_10, 0, 1), &[], 512, false)
        .unwrap();
    q.kick();
    assert!(q.reap().unwrap().is_empty(), "completed before its delay");
    q.device.quiesce();
    assert_eq!(q.reap().unwrap().len(), 1);

    with_hook(&h, FaultAction::Drop);
    let q = h.queue(2);
    q.start(lun0(), 2, &rw10(opcode::READ_10, 0, 1), &[], 512, false)
        .unwrap();
    q.kick();
    q.device.quiesce();
    assert!(q.reap().unwrap().is_empty());
    assert_eq!(h.device.stats().pending, 1);
    // A device reset takes the dropped request back without completing it.
    h.device.set_fault_hook(None);
    h.init(SCSI_DRIVER_FEATURES);
    assert_eq!(h.device.stats().pending, 0);
    let read = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!(read.resp.status, 0);
}

/// Sends PERSISTENT RESERVE OUT `action` with TYPE `kind`, RESERVATION KEY `key` and SERVICE
/// ACTION RESERVATION KEY `sa_key` (a 24-byte parameter list) on `queue`.
fn pr_out(queue: &mut DriverQueue, action: u8, kind: u8, key: u64, sa_key: u64) -> Done {
    let cdb = [
        opcode::PERSISTENT_RESERVE_OUT,
        action,
        kind,
        0,
        0,
        0,
        0,
        0,
        24,
        0,
    ];
    let mut parameters = key.to_be_bytes().to_vec();
    parameters.extend_from_slice(&sa_key.to_be_bytes());
    parameters.resize(24, 0);
    queue.command(WireLun::new(0, 1).unwrap(), &cdb, &parameters, 0)
}

/// Two nodes (devices with nexus 1 and 2; node A completes after a delay) with one shared
/// disk as LUN 0:1 of both.
fn two_nodes() -> (Harness, Harness, Lun) {
    let node = |id, completion| {
        Harness::new(
            DeviceOptions {
                nexus: Some(Nexus::new(id)),
                completion,
                ..DeviceOptions::default()
            },
            SCSI_DRIVER_FEATURES,
        )
    };
    let delayed = CompletionMode::Delayed {
        max_delay: Duration::from_millis(1),
        shuffle: false,
    };
    let (a, b) = (node(1, delayed), node(2, CompletionMode::Inline));
    let disk = Lun::memory(1 << 12, 512).unwrap();
    a.device.add_lun(0, 1, disk.clone()).unwrap();
    b.device.add_lun(0, 1, disk.clone()).unwrap();
    (a, b, disk)
}

fn block(disk: &Lun, lba: u64) -> Vec<u8> {
    let mut block = vec![0u8; 512];
    disk.read_at(lba * 512, &mut block).unwrap();
    block
}

#[test]
fn two_devices_sharing_a_lun_are_two_nexuses_of_its_reservations() {
    use super::reservations::{pr_in, pr_out as action};
    let (mut a, mut b, disk) = two_nodes();
    assert_eq!(
        (a.device.nexus(), b.device.nexus()),
        (Nexus::new(1), Nexus::new(2))
    );
    // Devices made without a nexus are distinct initiators.
    assert_ne!(
        Harness::default().device.nexus(),
        Harness::default().device.nexus()
    );
    let lun1 = WireLun::new(0, 1).unwrap();
    // Node A registers and takes Write Exclusive - Registrants Only through its queue.
    let done = pr_out(a.queue(2), action::REGISTER, 0, 0, 0xA);
    assert_eq!(
        (done.resp.response, done.resp.status, done.resp.resid.get()),
        (0, 0, 0)
    );
    assert_eq!(
        pr_out(a.queue(2), action::RESERVE, 0x5, 0xA, 0).resp.status,
        0
    );
    // Node B, unregistered, is refused writes, and the medium keeps its zeroes ...
    let data = pattern(9, 512);
    let write = rw10(opcode::WRITE_10, 8, 1);
    let refused = b.queue(2).command(lun1, &write, &data, 0);
    let resp = refused.resp;
    assert_eq!(
        (resp.response, resp.status, resp.resid.get()),
        (0, RESERVATION_CONFLICT, 512)
    );
    assert_eq!(block(&disk, 8), [0; 512]);
    // ... but reads, and sees A in READ FULL STATUS through a data-in buffer.
    let mut full_status = [0u8; 10];
    full_status[..2].copy_from_slice(&[opcode::PERSISTENT_RESERVE_IN, pr_in::READ_FULL_STATUS]);
    full_status[8] = 128;
    let full = b.queue(3).command(lun1, &full_status, &[], 128);
    assert_eq!((full.resp.status, full.resp.resid.get()), (0, 128 - 56));
    assert_eq!(&full.data[8..16], &0xAu64.to_be_bytes());
    assert_eq!(full.data[20], 0x01); // R_HOLDER
    assert_eq!(&full.data[32..56], &Nexus::new(1).transport_id());
    assert_eq!(
        b.queue(2)
            .command(lun1, &rw10(opcode::READ_10, 8, 1), &[], 512)
            .resp
            .status,
        0
    );
}

#[test]
fn preempt_and_abort_from_one_device_aborts_the_other_devices_held_write() {
    use super::reservations::pr_out as action;
    let (mut a, mut b, disk) = two_nodes();
    let lun1 = WireLun::new(0, 1).unwrap();
    assert_eq!(
        pr_out(a.queue(2), action::REGISTER, 0, 0, 0xA).resp.status,
        0
    );
    assert_eq!(
        pr_out(a.queue(2), action::RESERVE, 0x5, 0xA, 0).resp.status,
        0
    );
    // A write of A's is held in its device while B registers and preempts A's key with
    // PREEMPT AND ABORT: the write completes as aborted and never reaches the medium.
    a.device.set_fault_hook(Some(Arc::new(|info: &RequestInfo| {
        if info.cdb.first() == Some(&opcode::WRITE_10) {
            // Long enough that B's two inline commands surely come first.
            FaultAction::Delay(Duration::from_secs(2))
        } else {
            FaultAction::Normal
        }
    })));
    let data = pattern(5, 512);
    let write = rw10(opcode::WRITE_10, 8, 1);
    let q = a.queue(2);
    q.start(lun1, 40, &write, &data, 0, false).unwrap();
    q.kick();
    assert_eq!(
        pr_out(b.queue(2), action::REGISTER, 0, 0, 0xB).resp.status,
        0
    );
    let preempt = pr_out(b.queue(2), action::PREEMPT_AND_ABORT, 0x5, 0xB, 0xA);
    assert_eq!(preempt.resp.status, 0);
    a.device.quiesce();
    let aborted = a.queue(2).reap().unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].resp.response, Response::Aborted.raw());
    assert_eq!(block(&disk, 8), [0; 512]);
    assert_eq!(disk.pr_status().key_of(Nexus::new(1)), None);
    // A's next command reports REGISTRATIONS PREEMPTED; after that its writes conflict.
    a.device.set_fault_hook(None);
    let attention = a.queue(2).command(lun1, &write, &data, 0).resp;
    assert_eq!(attention.status, target::CHECK_CONDITION);
    assert_eq!(
        (attention.sense[2], attention.sense[12], attention.sense[13]),
        (6, 0x2A, 0x05)
    );
    let refused = a.queue(2).command(lun1, &write, &data, 0);
    assert_eq!(refused.resp.status, RESERVATION_CONFLICT);
    // B, the holder now, writes.
    assert_eq!(b.queue(2).command(lun1, &write, &data, 0).resp.status, 0);
    assert_eq!(block(&disk, 8), data);
}

#[test]
fn corrupt_used_elements_are_caught_by_the_driver() {
    let mut h = Harness::default();
    with_hook(&h, FaultAction::CorruptUsedLen(1 << 20));
    let q = h.queue(2);
    q.start(lun0(), 1, &rw10(opcode::READ_10, 0, 1), &[], 512, false)
        .unwrap();
    q.kick();
    assert!(matches!(
        q.reap(),
        Err(DeviceError::UsedLengthTooLarge {
            written: 0x10_0000,
            ..
        })
    ));
    h.init(SCSI_DRIVER_FEATURES);
    with_hook(&h, FaultAction::CorruptUsedId(999));
    let q = h.queue(2);
    q.start(lun0(), 1, &rw10(opcode::READ_10, 0, 1), &[], 512, false)
        .unwrap();
    q.kick();
    assert_eq!(
        q.reap().unwrap_err(),
        DeviceError::UsedIdOutOfRange { id: 999 }
    );
}

/// Adds a raw chain of (length, writable) descriptors to queue 2 and kicks.
fn raw_chain(h: &mut Harness, readable: &[Segment], writable: &[Segment]) {
    let q = h.queue(2);
    q.queue.add(readable, writable, None).unwrap();
    q.kick();
}

#[test]
fn behind_an_iommu_the_device_reaches_mapped_memory_only() {
    let memory = PhysicalMemory::with_iommu(256 << 20).unwrap();
    let mut h = Harness::on(
        memory.clone(),
        DeviceOptions::default(),
        SCSI_DRIVER_FEATURES,
    );
    // Rings and buffers mapped: a write and a read round-trip through I/O virtual addresses.
    let block = [0x5A; 512];
    let write = h
        .queue(2)
        .command(lun0(), &rw10(opcode::WRITE_10, 3, 1), &block, 0);
    assert_eq!(write.resp.response, 0);
    let read = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 3, 1), &[], 512);
    assert_eq!((read.resp.response, read.data), (0, block.to_vec()));
    assert_eq!(memory.iommu_faults(), Vec::new());
    // A response buffer handed over at its physical address, which no mapping covers: the
    // IOMMU refuses the device's write, which treats the buffer as unmapped and needs a reset.
    let req = dma(&memory, size_of::<CmdReq>(), 8);
    assert!(req.write_bytes(0, CmdReq::new(lun0(), 9, &[0; 6]).unwrap().as_bytes()));
    let resp = memory.alloc(size_of::<CmdResp>(), 8).unwrap();
    let physical = resp.as_ptr().addr() as u64;
    raw_chain(
        &mut h,
        &[segment(&req)],
        &[Segment::new(physical, size_of::<CmdResp>() as u32)],
    );
    h.device.quiesce();
    assert!(h.transport.needs_reset());
    let faults = memory.iommu_faults();
    assert!(
        faults.iter().any(|fault| fault.address == physical),
        "{faults:?}"
    );
}

#[test]
fn malformed_chains_make_the_device_need_a_reset_not_panic() {
    let mut h = Harness::default();
    let memory = h.memory.clone();
    let resp = dma(&memory, 108, 8);
    // A request header shorter than 19 + cdb_size bytes.
    let short = dma(&memory, 20, 8);
    raw_chain(&mut h, &[segment(&short)], &[segment(&resp)]);
    assert!(h.transport.needs_reset());
    assert_eq!(h.device.stats().device_errors, 1);
    assert_eq!(
        h.sink.vectors.lock().unwrap().last(),
        Some(&6),
        "config vector"
    );
    // Nothing more is processed until the driver resets.
    let q = h.queue(2);
    q.start(lun0(), 1, &[0; 6], &[], 0, false).unwrap();
    q.kick();
    assert!(q.reap().unwrap().is_empty());

    // After a reset the device works again; then a descriptor outside memory.
    h.init(SCSI_DRIVER_FEATURES);
    assert!(!h.transport.needs_reset());
    let req = dma(&memory, 51, 8);
    raw_chain(&mut h, &[segment(&req)], &[Segment::new(0x10, 108)]);
    assert!(h.transport.needs_reset());

    // A response buffer too small for the response header.
    h.init(SCSI_DRIVER_FEATURES);
    let tiny = dma(&memory, 4, 8);
    raw_chain(&mut h, &[segment(&req)], &[segment(&tiny)]);
    assert!(h.transport.needs_reset());
    assert_eq!(h.device.stats().device_errors, 3);
    h.init(SCSI_DRIVER_FEATURES);
    let ok = h.queue(2).command(lun0(), &[0; 6], &[], 0);
    assert_eq!(ok.resp.response, 0);
}

#[test]
fn a_readable_descriptor_after_a_writable_one_is_refused() {
    let mut h = Harness::default();
    let memory = h.memory.clone();
    let req = dma(&memory, 51, 8);
    let resp = dma(&memory, 108, 8);
    let data = dma(&memory, 512, 8);
    // Build the descriptors by hand: virtio-core's driver never orders them this way.
    let q = h.queue(2);
    let layout = q.queue.layout();
    let ring = q.queue.addresses();
    let table = dma_at(
        NonNull::new(ring.descriptors as usize as *mut u8).unwrap(),
        layout.ring_len(),
    );
    let descriptor = |index: u16, seg: &DmaMemory, flags: u16, next: u16| {
        let at = layout.descriptor(index);
        table.store_u64(at, seg.bus_address(), Ordering::Relaxed);
        table.store_u32(at + 8, seg.len() as u32, Ordering::Relaxed);
        table.store_u16(at + 12, flags, Ordering::Relaxed);
        table.store_u16(at + 14, next, Ordering::Relaxed);
    };
    descriptor(0, &req, 1, 1);
    descriptor(1, &resp, 1 | 2, 2);
    descriptor(2, &data, 0, 0);
    table.store_u16(layout.avail_ring(0), 0, Ordering::Relaxed);
    table.store_u16(layout.avail_idx(), 1, Ordering::Release);
    let (bar, offset) = (q.notify_bar, q.notify_offset);
    h.device.mmio_write(bar, offset, 2, 2);
    assert!(h.transport.needs_reset());
}

fn hotplug_harness() -> Harness {
    Harness::new(
        DeviceOptions {
            hotplug: true,
            ..DeviceOptions::default()
        },
        SCSI_DRIVER_FEATURES,
    )
}

/// Posts `buffer` (16 bytes) on the eventq.
fn post_event_buffer(h: &mut Harness, buffer: &DmaMemory) {
    let q = h.queue(1);
    q.queue.add(&[], &[segment(buffer)], None).unwrap();
    q.kick();
}

/// The event the device wrote into `buffer`, the next used element of the eventq.
fn used_event(h: &mut Harness, buffer: &DmaMemory) -> Event {
    let used = h.queue(1).queue.pop_used().unwrap().unwrap();
    assert_eq!(used.written, 16);
    let mut bytes = [0u8; 16];
    assert!(buffer.read_bytes(0, &mut bytes));
    Event::read_from_bytes(&bytes).unwrap()
}

#[test]
fn events_are_posted_into_eventq_buffers_and_missed_ones_flagged() {
    let mut h = hotplug_harness();
    assert!(h.features.contains(Features::SCSI_HOTPLUG));
    let mut event = Event::read_from_bytes(&[0; 16]).unwrap();
    event.event = EventType::TransportReset.raw().into();
    event.lun = WireLun::new(0, 3).unwrap().encode();
    event.reason = ResetReason::Rescan.raw().into();
    assert!(!h.device.post_event(event), "no buffer posted yet");
    let memory = h.memory.clone();
    let buffer = dma(&memory, 16, 8);
    post_event_buffer(&mut h, &buffer);
    // As QEMU's `virtio_scsi_handle_event_vq`: the first buffer after a loss reports it at
    // once, in a NO_EVENT.
    let got = used_event(&mut h, &buffer);
    assert!(got.events_missed());
    assert_eq!(
        got.decode().unwrap().kind,
        virtio_core::scsi::EventKind::NoEvent
    );
    // The loss is reported once: the next event comes without the flag.
    post_event_buffer(&mut h, &buffer);
    assert!(h.device.post_event(event));
    let got = used_event(&mut h, &buffer);
    assert!(!got.events_missed());
    let decoded = got.decode().unwrap();
    assert_eq!(
        decoded.kind,
        virtio_core::scsi::EventKind::TransportReset {
            lun: WireLun::new(0, 3).unwrap(),
            reason: ResetReason::Rescan
        }
    );
    assert_eq!(h.sink.vectors.lock().unwrap().last(), Some(&1));
}

#[test]
fn hot_unplug_aborts_what_the_device_holds_and_later_commands_find_no_unit() {
    let mut h = hotplug_harness();
    let lun1 = WireLun::new(0, 1).unwrap();
    h.device
        .add_lun(0, 1, Lun::memory(64, 512).unwrap())
        .unwrap();
    // The device holds a write to 0:1 (as a slow backend would) when the LUN goes.
    h.device.set_fault_hook(Some(Arc::new(|info: &RequestInfo| {
        if info.lun == 1 {
            FaultAction::Drop
        } else {
            FaultAction::Normal
        }
    })));
    let q = h.queue(2);
    q.start(
        lun1,
        1,
        &rw10(opcode::WRITE_10, 3, 1),
        &pattern(9, 512),
        0,
        false,
    )
    .unwrap();
    q.kick();
    assert_eq!(h.device.stats().pending, 1);
    // No eventq buffer is posted: the event is dropped (and remembered as missed).
    let unplugged = h.device.hot_unplug(0, 1).unwrap();
    assert!(!unplugged.event_posted);
    assert_eq!(unplugged.cancelled, 1);
    let done = h.queue(2).reap().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].resp.response, Response::Aborted.raw());
    let mut block = vec![0u8; 512];
    unplugged.unit.read_at(3 * 512, &mut block).unwrap();
    assert!(block.iter().all(|&b| b == 0), "the aborted write never ran");
    assert_eq!(h.device.stats().pending, 0);
    // Later commands: the target still has LUN 0, so it answers for the absent LUN itself.
    let absent = h
        .queue(2)
        .command(lun1, &rw10(opcode::WRITE_10, 3, 1), &pattern(9, 512), 0);
    assert_eq!(absent.resp.response, Response::Ok.raw());
    assert_eq!(absent.resp.status, target::CHECK_CONDITION);
    assert_eq!(
        (absent.resp.sense[2] & 0x0F, absent.resp.sense[12]),
        (5, 0x25)
    );
    // With no LUN left the target is gone: BAD_TARGET.
    assert!(h.device.hot_unplug(0, 0).is_some());
    let gone = h
        .queue(3)
        .command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!(gone.resp.response, Response::BadTarget.raw());
    // A resize of a missing LUN does nothing.
    assert_eq!(h.device.resize_lun(0, 0, 8), None);
}

#[test]
fn a_resized_lun_reports_its_new_capacity_and_posts_a_param_change() {
    let mut h = Harness::new(
        DeviceOptions {
            change: true,
            ..DeviceOptions::default()
        },
        SCSI_DRIVER_FEATURES,
    );
    assert!(h.features.contains(Features::SCSI_CHANGE));
    let memory = h.memory.clone();
    let buffer = dma(&memory, 16, 8);
    post_event_buffer(&mut h, &buffer);
    assert_eq!(h.device.resize_lun(0, 0, 1 << 17), Some(true));
    let event = used_event(&mut h, &buffer);
    assert_eq!(
        event.decode().unwrap().kind,
        virtio_core::scsi::EventKind::ParamChange {
            lun: lun0(),
            asc: 0x2A,
            ascq: 0x09
        }
    );
    let capacity = h.queue(2).command(
        lun0(),
        &[opcode::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
        8,
    );
    assert_eq!(capacity.data[..4], ((1u32 << 17) - 1).to_be_bytes());
    // The new blocks exist; the ones past them do not.
    let last = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, (1 << 17) - 1, 1), &[], 512);
    assert_eq!(last.resp.status, target::GOOD);
    let past = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 1 << 17, 1), &[], 512);
    assert_eq!(past.resp.status, target::CHECK_CONDITION);
}

#[test]
fn submissions_from_several_threads_on_different_queues() {
    let options = DeviceOptions {
        completion: CompletionMode::Delayed {
            max_delay: Duration::from_micros(200),
            shuffle: true,
        },
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, SCSI_DRIVER_FEATURES);
    let queues: Vec<DriverQueue> = (2..6).map(|i| h.queues[i].take().unwrap()).collect();
    let threads: Vec<_> = queues
        .into_iter()
        .map(|mut q| {
            std::thread::spawn(move || {
                let base = u32::from(q.index) * 1000;
                for round in 0..25u32 {
                    let data = pattern(base + round, 4 * 512);
                    let lba = base + round * 4;
                    let w = q.command(lun0(), &rw10(opcode::WRITE_10, lba, 4), &data, 0);
                    assert_eq!(w.resp.status, 0);
                    let r = q.command(lun0(), &rw10(opcode::READ_10, lba, 4), &[], 4 * 512);
                    assert_eq!(r.data, data);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = h.device.stats();
    assert!(stats.queues[2..6].iter().all(|q| q.requests == 50));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_reads_and_writes_match_a_shadow_copy(
        ops in proptest::collection::vec((any::<bool>(), 0u32..60, 1u16..5, any::<u32>(), 2u16..6), 1..40)
    ) {
        let mut h = Harness::default();
        let mut shadow = vec![0u8; 64 * 512];
        for (write, lba, blocks, seed, queue) in ops {
            let range = lba as usize * 512..(lba as usize + usize::from(blocks)) * 512;
            let len = range.len();
            let q = h.queue(queue);
            if write {
                let data = pattern(seed, len);
                let done = q.command(lun0(), &rw10(opcode::WRITE_10, lba, blocks), &data, 0);
                prop_assert_eq!(done.resp.status, 0);
                shadow[range].copy_from_slice(&data);
            } else {
                let done = q.command(lun0(), &rw10(opcode::READ_10, lba, blocks), &[], len);
                prop_assert_eq!(done.resp.status, 0);
                prop_assert_eq!(&done.data[..], &shadow[range]);
            }
        }
    }
}

/// Adds a chain of `readable` then `writable` segments on the first request queue (through an
/// indirect table of just the right size with `indirect`), kicks and waits for the device;
/// returns the bytes the device reported written, `None` if it used nothing.
fn submit(
    h: &mut Harness,
    readable: &[Segment],
    writable: &[Segment],
    indirect: bool,
) -> Option<u32> {
    let memory = h.memory.clone();
    let table = indirect.then(|| dma(&memory, 16 * (readable.len() + writable.len()), 16));
    let q = h.queue(2);
    q.queue.add(readable, writable, table.as_ref()).unwrap();
    q.kick();
    q.device.quiesce();
    q.queue.pop_used().unwrap().map(|used| used.written)
}

fn response(resp: &DmaMemory) -> CmdResp {
    let mut bytes = [0u8; size_of::<CmdResp>()];
    assert!(resp.read_bytes(0, &mut bytes));
    CmdResp::read_from_bytes(&bytes).unwrap()
}

/// Writes `blocks` blocks of a pattern at `lba` of LUN 0:0, one data segment per block; with
/// `shared`, the first block shares the request header's descriptor. Returns the response.
fn write_in_segments(h: &mut Harness, lba: u32, blocks: u16, shared: bool) -> CmdResp {
    let memory = h.memory.clone();
    let header = CmdReq::new(lun0(), lba.into(), &rw10(opcode::WRITE_10, lba, blocks)).unwrap();
    let header = header.as_bytes();
    let data = pattern(lba, usize::from(blocks) * 512);
    let mut buffers = Vec::new();
    let first = if shared {
        let both = dma(&memory, header.len() + 512, 8);
        assert!(both.write_bytes(0, header));
        assert!(both.write_bytes(header.len(), &data[..512]));
        buffers.push(both);
        1
    } else {
        let alone = dma(&memory, header.len(), 8);
        assert!(alone.write_bytes(0, header));
        buffers.push(alone);
        0
    };
    for block in data.chunks(512).skip(first) {
        let segment = dma(&memory, 512, 512);
        assert!(segment.write_bytes(0, block));
        buffers.push(segment);
    }
    let resp = dma(&memory, size_of::<CmdResp>(), 8);
    let readable: Vec<Segment> = buffers.iter().map(segment).collect();
    let written = submit(h, &readable, &[segment(&resp)], false);
    assert_eq!(written, Some(size_of::<CmdResp>() as u32));
    response(&resp)
}

#[test]
fn a_command_over_seg_max_is_recorded_and_fails_unexecuted() {
    let options = DeviceOptions {
        seg_max: 4,
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, SCSI_DRIVER_FEATURES);
    // Four data segments after a header-only descriptor: at the limit.
    let at_limit = write_in_segments(&mut h, 0, 4, false);
    assert_eq!((at_limit.response, at_limit.status), (0, target::GOOD));
    // The header's descriptor carries the first block: it counts once, as a data segment.
    let shared = write_in_segments(&mut h, 8, 4, true);
    assert_eq!((shared.response, shared.status), (0, target::GOOD));
    assert_eq!(h.device.violations(), []);

    let over = write_in_segments(&mut h, 16, 5, false);
    assert_eq!(over.response, Response::Failure.raw());
    let shared_over = write_in_segments(&mut h, 24, 5, true);
    assert_eq!(shared_over.response, Response::Failure.raw());
    assert_eq!(
        h.device.violations(),
        [DeviceViolation::SegmentsOverSegMax {
            queue: 2,
            segments: 5,
            seg_max: 4
        }; 2]
    );
    // Neither offender reached the medium; the commands within the limit did.
    let q = h.queue(2);
    let written = q.command(lun0(), &rw10(opcode::READ_10, 0, 32), &[], 32 * 512);
    assert_eq!(&written.data[..4 * 512], &pattern(0, 4 * 512)[..]);
    assert_eq!(&written.data[8 * 512..12 * 512], &pattern(8, 4 * 512)[..]);
    assert!(written.data[16 * 512..].iter().all(|&byte| byte == 0));
    assert!(!h.transport.needs_reset());
}

#[test]
fn a_transfer_over_max_sectors_is_recorded_and_fails_unexecuted() {
    let options = DeviceOptions {
        max_sectors: 8,
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, SCSI_DRIVER_FEATURES);
    let q = h.queue(2);
    let at_limit = q.command(lun0(), &rw10(opcode::READ_10, 0, 8), &[], 8 * 512);
    assert_eq!((at_limit.resp.response, at_limit.resp.status), (0, 0));
    assert_eq!(q.device.violations(), []);
    let over = q.command(lun0(), &rw10(opcode::READ_10, 0, 9), &[], 9 * 512);
    assert_eq!(over.resp.response, Response::Failure.raw());
    // The buffers count, not the CDB: one block read into nine sectors of buffer is over too,
    // and a partial sector is a whole one.
    let big_buffer = q.command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 8 * 512 + 1);
    assert_eq!(big_buffer.resp.response, Response::Failure.raw());
    assert_eq!(
        q.device.violations(),
        [DeviceViolation::TransferOverMaxSectors {
            queue: 2,
            sectors: 9,
            max_sectors: 8
        }; 2]
    );
    assert!(!h.transport.needs_reset());
}

#[test]
fn max_sectors_zero_is_no_limit() {
    let options = DeviceOptions {
        max_sectors: 0,
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, SCSI_DRIVER_FEATURES);
    let q = h.queue(2);
    let big = q.command(lun0(), &rw10(opcode::READ_10, 0, 1024), &[], 1024 * 512);
    assert_eq!((big.resp.response, big.resp.status), (0, 0));
    assert_eq!(q.device.violations(), []);
}

#[test]
fn commands_over_cmd_per_lun_are_recorded_and_answered_task_set_full() {
    let options = DeviceOptions {
        cmd_per_lun: 3,
        enforce_cmd_per_lun: true,
        completion: CompletionMode::Delayed {
            max_delay: Duration::from_millis(300),
            shuffle: false,
        },
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, SCSI_DRIVER_FEATURES);
    h.device
        .add_lun(0, 1, Lun::memory(1 << 10, 512).unwrap())
        .unwrap();
    let lun1 = WireLun::new(0, 1).unwrap();
    let q = h.queue(2);
    // Three on each of two LUNs, all held together: at the limit on both.
    for lba in 0..3 {
        q.start_read(lba, false);
        q.start(
            lun1,
            100 + u64::from(lba),
            &rw10(opcode::READ_10, lba, 1),
            &[],
            512,
            false,
        )
        .unwrap();
    }
    q.kick();
    assert_eq!(q.device.violations(), []);
    // A fourth on LUN 0 while the three are held.
    let fourth = q.start_read(3, false);
    q.kick();
    q.device.quiesce();
    let done = q.reap().unwrap();
    assert_eq!(done.len(), 7);
    for command in &done {
        let expected = if command.token == fourth {
            target::TASK_SET_FULL
        } else {
            target::GOOD
        };
        assert_eq!(
            (command.resp.response, command.resp.status),
            (0, expected),
            "{command:?}"
        );
    }
    assert_eq!(
        q.device.violations(),
        [DeviceViolation::CommandsOverCmdPerLun {
            queue: 2,
            target: 0,
            lun: 0,
            outstanding: 4,
            cmd_per_lun: 3
        }]
    );
    // Completed commands no longer count, and a reset forgets the held ones.
    with_hook(&h, FaultAction::Drop);
    held_reads(&mut h, 3);
    assert_eq!(h.device.stats().pending, 3);
    h.init(SCSI_DRIVER_FEATURES);
    held_reads(&mut h, 3);
    assert_eq!(h.device.stats().pending, 3);
    assert_eq!(h.device.violations().len(), 1);
}

#[test]
fn cmd_per_lun_enforcement_can_be_turned_off() {
    let options = DeviceOptions {
        cmd_per_lun: 1,
        enforce_cmd_per_lun: false,
        completion: CompletionMode::Delayed {
            max_delay: Duration::from_millis(50),
            shuffle: false,
        },
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, SCSI_DRIVER_FEATURES);
    held_reads(&mut h, 4);
    h.device.quiesce();
    let done = h.queue(2).reap().unwrap();
    assert!(
        done.iter()
            .all(|command| command.resp.status == target::GOOD)
    );
    assert_eq!(done.len(), 4);
    assert_eq!(h.device.violations(), []);
}

/// Writes descriptor `index` of queue 2's ring by hand, for chains virtio-core's driver refuses
/// to build.
fn plant_descriptor(h: &mut Harness, index: u16, address: u64, len: u32, flags: u16, next: u16) {
    let q = h.queue(2);
    let layout = q.queue.layout();
    let ring = dma_at(
        NonNull::new(q.queue.addresses().descriptors as usize as *mut u8).unwrap(),
        layout.ring_len(),
    );
    let at = layout.descriptor(index);
    ring.store_u64(at, address, Ordering::Relaxed);
    ring.store_u32(at + 8, len, Ordering::Relaxed);
    ring.store_u16(at + 12, flags, Ordering::Relaxed);
    ring.store_u16(at + 14, next, Ordering::Relaxed);
}

/// Makes the chain at ring descriptor 0 the first available one of a fresh queue 2 and
/// notifies the device.
fn publish_head_zero(h: &mut Harness) {
    let q = h.queue(2);
    let layout = q.queue.layout();
    let ring = dma_at(
        NonNull::new(q.queue.addresses().descriptors as usize as *mut u8).unwrap(),
        layout.ring_len(),
    );
    ring.store_u16(layout.avail_ring(0), 0, Ordering::Relaxed);
    ring.store_u16(layout.avail_idx(), 1, Ordering::Release);
    let (bar, offset) = (q.notify_bar, q.notify_offset);
    h.device.mmio_write(bar, offset, 2, 2);
}

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

#[test]
fn an_indirect_descriptor_without_the_feature_is_a_violation() {
    let options = DeviceOptions {
        indirect_desc: false,
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, SCSI_DRIVER_FEATURES);
    assert!(!h.features.contains(Features::INDIRECT_DESC));
    let memory = h.memory.clone();
    let req = dma(&memory, size_of::<CmdReq>(), 8);
    assert!(req.write_bytes(0, CmdReq::new(lun0(), 1, &[0; 6]).unwrap().as_bytes()));
    let resp = dma(&memory, size_of::<CmdResp>(), 8);
    // A well-formed two-entry indirect table: only the missing feature is wrong.
    let table = dma(&memory, 32, 16);
    for (at, seg, flags, next) in [(0, &req, F_NEXT, 1), (16, &resp, F_WRITE, 0)] {
        table.store_u64(at, seg.bus_address(), Ordering::Relaxed);
        table.store_u32(at + 8, seg.len() as u32, Ordering::Relaxed);
        table.store_u16(at + 12, flags, Ordering::Relaxed);
        table.store_u16(at + 14, next, Ordering::Relaxed);
    }
    plant_descriptor(&mut h, 0, table.bus_address(), 32, F_INDIRECT, 0);
    publish_head_zero(&mut h);
    assert_eq!(
        h.device.violations(),
        [DeviceViolation::IndirectWithoutFeature { queue: 2, head: 0 }]
    );
    assert!(h.transport.needs_reset());
    assert_eq!(response(&resp).response, 0, "nothing written");
    // The same chain with the feature negotiated is served.
    let mut h = Harness::default();
    let q = h.queue(2);
    q.start(lun0(), 1, &[0; 6], &[], 0, true).unwrap();
    q.kick();
    assert_eq!(q.reap().unwrap().len(), 1);
    assert_eq!(h.device.violations(), []);
}

#[test]
fn a_chain_longer_than_the_queue_is_a_violation() {
    // The harness's driver sets every queue to 64 entries (of 256 offered): its size counts.
    let mut h = Harness::default();
    let memory = h.memory.clone();
    let read = |h: &mut Harness, blocks: u16| {
        let req = dma(&memory, size_of::<CmdReq>(), 8);
        let cdb = rw10(opcode::READ_10, 0, blocks);
        assert!(req.write_bytes(0, CmdReq::new(lun0(), 1, &cdb).unwrap().as_bytes()));
        let resp = dma(&memory, size_of::<CmdResp>(), 8);
        let data: Vec<DmaMemory> = (0..blocks).map(|_| dma(&memory, 512, 512)).collect();
        let mut writable = vec![segment(&resp)];
        writable.extend(data.iter().map(segment));
        // virtio-core's driver bounds an indirect chain by its table only.
        submit(h, &[segment(&req)], &writable, true).map(|_| response(&resp))
    };
    // Header, response and 62 data segments: 64 descriptors, the queue's size.
    let fits = read(&mut h, 62).unwrap();
    assert_eq!((fits.response, fits.status), (0, 0));
    assert_eq!(h.device.violations(), []);
    assert_eq!(read(&mut h, 63), None);
    assert_eq!(
        h.device.violations(),
        [DeviceViolation::ChainLongerThanQueue {
            queue: 2,
            descriptors: 65,
            queue_size: 64
        }]
    );
    assert!(h.transport.needs_reset());

    // A direct chain that loops (0 -> 1 -> 0) never ends: a malformed chain, caught.
    h.init(SCSI_DRIVER_FEATURES);
    let req = dma(&memory, size_of::<CmdReq>(), 8);
    plant_descriptor(&mut h, 0, req.bus_address(), 51, F_NEXT, 1);
    plant_descriptor(&mut h, 1, req.bus_address(), 51, F_NEXT, 0);
    publish_head_zero(&mut h);
    assert!(h.transport.needs_reset());
    assert_eq!(
        h.device.violations().last(),
        Some(&DeviceViolation::MalformedChain {
            queue: 2,
            error: ChainError::Loop
        })
    );
}

#[test]
fn each_optional_feature_is_offered_only_when_on_and_packed_never() {
    let none = DeviceOptions {
        indirect_desc: false,
        event_idx: false,
        any_layout: false,
        hotplug: false,
        change: false,
        ..DeviceOptions::default()
    };
    let toggles = [
        (
            Features::INDIRECT_DESC,
            DeviceOptions {
                indirect_desc: true,
                ..none
            },
        ),
        (
            Features::EVENT_IDX,
            DeviceOptions {
                event_idx: true,
                ..none
            },
        ),
        (
            Features::ANY_LAYOUT,
            DeviceOptions {
                any_layout: true,
                ..none
            },
        ),
        (
            Features::SCSI_HOTPLUG,
            DeviceOptions {
                hotplug: true,
                ..none
            },
        ),
        (
            Features::SCSI_CHANGE,
            DeviceOptions {
                change: true,
                ..none
            },
        ),
    ];
    // A driver that accepts every bit it knows reads exactly what the registers offer.
    assert_eq!(
        Harness::new(none, Features::all()).features,
        Features::VERSION_1
    );
    let mut all = none;
    for (feature, options) in toggles {
        assert_eq!(options.offered_features(), Features::VERSION_1 | feature);
        let h = Harness::new(options, Features::all());
        assert_eq!(h.features, Features::VERSION_1 | feature, "{feature:?}");
        all.indirect_desc |= options.indirect_desc;
        all.event_idx |= options.event_idx;
        all.any_layout |= options.any_layout;
        all.hotplug |= options.hotplug;
        all.change |= options.change;
    }
    let everything = Harness::new(all, Features::all()).features;
    assert_eq!(
        everything,
        Features::VERSION_1
            | Features::INDIRECT_DESC
            | Features::EVENT_IDX
            | Features::ANY_LAYOUT
            | Features::SCSI_HOTPLUG
            | Features::SCSI_CHANGE
    );
    assert!(!everything.intersects(
        Features::RING_PACKED
            | Features::SCSI_INOUT
            | Features::SCSI_T10_PI
            | Features::ACCESS_PLATFORM
    ));
    // Today's defaults: indirect descriptors and event indices, as QEMU offers.
    assert_eq!(
        DeviceOptions::default().offered_features(),
        Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX
    );
}

#[test]
fn each_queue_can_have_its_own_maximum_size() {
    let options = DeviceOptions {
        request_queues: 3,
        queue_size: 128,
        queue_size_overrides: QueueSizeOverrides::NONE
            .with(0, 16)
            .with(3, 1024)
            .with(3, 512)
            .with(4, 0),
        ..DeviceOptions::default()
    };
    let memory = PhysicalMemory::new(16 << 20).unwrap();
    let device = VirtioScsiDevice::new(options, memory, Arc::new(Recorder::default()));
    let mut transport = PciTransport::probe(device.pci_config(), Mmio(device.clone())).unwrap();
    transport.begin_init(SCSI_DRIVER_FEATURES).unwrap();
    let sizes: Vec<_> = (0..5)
        .map(|index| transport.queue_max_size(index).ok())
        .collect();
    assert_eq!(sizes, [Some(16), Some(128), Some(128), Some(512), None]);
    assert_eq!(device.registers().queue(4).unwrap().max_size, 0);
    assert_eq!(options.queue_max_size(2), 128);
}

#[test]
fn sense_and_cdb_sizes_start_as_configured_and_the_current_value_rules() {
    let options = DeviceOptions {
        sense_size: 64,
        cdb_size: 16,
        ..DeviceOptions::default()
    };
    let mut h = Harness::new(options, SCSI_DRIVER_FEATURES);
    let config = |h: &Harness| {
        let mut bytes = [0u8; 36];
        h.transport.read_device_config(0, &mut bytes).unwrap();
        let config = virtio_core::scsi::Config::read_from_bytes(&bytes).unwrap();
        (config.sense_size.get(), config.cdb_size.get())
    };
    assert_eq!(config(&h), (64, 16));
    // A READ(10) past the end framed for these sizes: 19 + 16 request bytes, 12 + 64 response
    // bytes, then the data-in buffer.
    let memory = h.memory.clone();
    let cdb = rw10(opcode::READ_10, 1 << 16, 1);
    let full = CmdReq::new(lun0(), 9, &cdb).unwrap();
    let req = dma(&memory, 19 + 16, 8);
    assert!(req.write_bytes(0, &full.as_bytes()[..19 + 16]));
    let resp = dma(&memory, 12 + 64, 8);
    let data = dma(&memory, 512, 512);
    let written = submit(
        &mut h,
        &[segment(&req)],
        &[segment(&resp), segment(&data)],
        false,
    );
    assert_eq!(written, Some(12 + 64));
    let mut header = [0u8; 12 + 64];
    assert!(resp.read_bytes(0, &mut header));
    let sense_len = u32::from_le_bytes(header[..4].try_into().unwrap());
    let resid = u32::from_le_bytes(header[4..8].try_into().unwrap());
    assert_eq!(
        (header[10], header[11]),
        (target::CHECK_CONDITION, 0),
        "status, response"
    );
    assert_eq!((sense_len, resid), (18, 512));
    assert_eq!((header[12 + 2], header[12 + 12]), (5, 0x21));

    // The driver writes QEMU's sizes: the device follows the current values.
    let sense_at = virtio_core::scsi::Config::SENSE_SIZE_OFFSET as u32;
    let cdb_at = virtio_core::scsi::Config::CDB_SIZE_OFFSET as u32;
    h.transport.write_device_config_u32(sense_at, 96).unwrap();
    h.transport.write_device_config_u32(cdb_at, 32).unwrap();
    assert_eq!(config(&h), (96, 32));
    let ok = h
        .queue(2)
        .command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!(
        (ok.resp.response, ok.resp.status, ok.written),
        (0, 0, 108 + 512)
    );
    // A reset brings back the device's own defaults.
    h.init(SCSI_DRIVER_FEATURES);
    assert_eq!(config(&h), (64, 16));
    assert_eq!(h.device.violations(), []);
}

/// A harness whose device offers `VIRTIO_F_RING_PACKED` (virtio-core's driver takes it).
fn packed_harness() -> Harness {
    Harness::new(
        DeviceOptions {
            packed: true,
            ..DeviceOptions::default()
        },
        SCSI_DRIVER_FEATURES,
    )
}

/// The ring memory of queue `q` as the test (playing a misbehaving driver) writes it.
fn packed_ring_memory(q: &DriverQueue) -> DmaMemory {
    let ring = q.queue.addresses();
    dma_at(
        NonNull::new(ring.descriptors as usize as *mut u8).unwrap(),
        PackedQueue::<Vec<Slot>>::ring_len(QUEUE_SIZE),
    )
}

#[test]
fn the_packed_ring_is_offered_only_on_request_and_serves_every_request_across_wraps() {
    assert!(!Harness::default().features.contains(Features::RING_PACKED));
    let mut h = packed_harness();
    assert!(h.features.contains(Features::RING_PACKED));
    let data = pattern(3, 512);
    let q = h.queue(2);
    let write = q.command(lun0(), &rw10(opcode::WRITE_10, 5, 1), &data, 0);
    assert_eq!((write.resp.response, write.resp.status), (0, 0));
    let read = q.command(lun0(), &rw10(opcode::READ_10, 5, 1), &[], 512);
    assert_eq!(read.data, data);
    // Direct (three ring descriptors) and indirect (one) chains, many laps of the 64-slot ring,
    // so both wrap counters flip many times.
    for round in 0..12u32 {
        let q = h.queue(2);
        let tokens: Vec<Token> = (0..15)
            .map(|i| q.start_read(round * 15 + i, i % 2 == 0))
            .collect();
        q.kick();
        h.device.quiesce();
        let done = h.queue(2).reap().unwrap();
        assert_eq!(done.len(), tokens.len(), "round {round}");
        assert!(
            done.iter()
                .all(|d| d.resp.response == 0 && d.written == 108 + 512)
        );
    }
    assert!(h.sink.vectors.lock().unwrap().contains(&2), "interrupts");
    assert_eq!(h.device.violations(), []);
}

#[test]
fn a_packed_chain_that_runs_into_a_descriptor_not_available_needs_a_reset() {
    let mut h = packed_harness();
    let memory = h.memory.clone();
    let req = dma(&memory, 51, 8);
    let q = h.queue(2);
    let ring = packed_ring_memory(q);
    // Descriptor 0 is available and says NEXT; descriptor 1 was never made available.
    ring.store_u64(0, req.bus_address(), Ordering::Relaxed);
    ring.store_u32(8, 51, Ordering::Relaxed);
    ring.store_u16(12, 0, Ordering::Relaxed);
    ring.store_u16(14, (1 << 7) | 1, Ordering::Release);
    let (bar, offset) = (q.notify_bar, q.notify_offset);
    h.device.mmio_write(bar, offset, 2, 2);
    assert!(h.transport.needs_reset());
    assert_eq!(
        h.device.violations(),
        [DeviceViolation::MalformedChain {
            queue: 2,
            error: ChainError::NextNotAvailable {
                position: 1,
                flags: 0
            },
        }]
    );
}

/// The hostile mode's unseen used descriptor (flags the driver must ignore) is written at the
/// device's used position; with nothing in flight that slot is the driver's, which may be
/// half-way through writing its next chain there (address, length and id stored, flags not
/// yet): a write there would hand the device the lie's length for the driver's buffer (the
/// fuzz runs' rare packed `TooShort` findings). The device keeps such a lie out of the slot.
#[test]
fn an_unseen_used_descriptor_never_lands_on_a_slot_the_driver_is_filling() {
    let mut h = packed_harness();
    let memory = h.memory.clone();
    // TEST UNIT READY: a request header and a response, no data.
    let header = CmdReq::new(lun0(), 7, &[0; 6]).unwrap();
    let req = dma(&memory, size_of::<CmdReq>(), 8);
    assert!(req.write_bytes(0, header.as_bytes()));
    let resp = dma(&memory, size_of::<CmdResp>(), 8);
    assert!(resp.write_bytes(0, &[0xff; size_of::<CmdResp>()]));
    let q = h.queue(2);
    let ring = packed_ring_memory(q);
    let (bar, offset) = (q.notify_bar, q.notify_offset);
    // Slot 1 (the response) complete; slot 0 (the head) all but its flags, stored last.
    ring.store_u64(16, resp.bus_address(), Ordering::Relaxed);
    ring.store_u32(24, size_of::<CmdResp>() as u32, Ordering::Relaxed);
    ring.store_u16(28, 0, Ordering::Relaxed);
    ring.store_u16(30, (1 << 7) | 2, Ordering::Release);
    ring.store_u64(0, req.bus_address(), Ordering::Relaxed);
    ring.store_u32(8, size_of::<CmdReq>() as u32, Ordering::Relaxed);
    ring.store_u16(12, 0, Ordering::Relaxed);
    // An unseen used descriptor (flags 0: neither bit of the first lap) with a 3-byte length.
    assert!(!h.device.hostile_publish_raw(2, 9, 3, Some(0), false));
    ring.store_u16(14, (1 << 7) | 1, Ordering::Release);
    h.device.mmio_write(bar, offset, 2, 2);
    h.device.quiesce();
    assert_eq!(h.device.violations(), []);
    let mut response = [0u8; size_of::<CmdResp>()];
    assert!(resp.read_bytes(0, &mut response));
    let response = CmdResp::read_from_bytes(&response).unwrap();
    assert_eq!(response.response, 0, "the command ran");
}

/// A chain the hostile mode took off its books before a reset (the queue locks are not held
/// from the release to the publication) is not the device's on the ring the reset brought:
/// naming it is a lie about an id the device does not hold, so the chain errors that follow on
/// that queue are the lie's consequence, not the driver's. Here the old chain was indirect (one
/// slot) and the new ring's chain direct (three), so the lie leaves the used position behind
/// the available one and only the epoch tells the chain is stale.
#[test]
fn a_chain_released_before_a_reset_is_a_lie_about_an_id_the_device_does_not_hold() {
    let mut h = packed_harness();
    h.device.set_hostile(true);
    let q = h.queue(2);
    q.start_read(0, true);
    q.kick();
    h.device.hostile_take();
    let [(2, id)] = h.device.hostile_held_ids()[..] else {
        panic!("one chain held on queue 2");
    };
    let released = h.device.hostile_release(2, id);
    assert!(released.is_some());
    let features = h.features;
    h.init(features);
    let q = h.queue(2);
    q.start_read(0, false);
    q.kick();
    h.device.hostile_take();
    assert_eq!(
        h.device.hostile_held_ids(),
        [(2, id)],
        "the new ring's chain, same id"
    );
    assert!(
        h.device
            .hostile_publish_released(2, released, id, 0, None, false)
    );
    // A chain that runs into a descriptor never made available (slot 3 says NEXT, slot 4 is
    // not available): a chain error on the queue the lie spoiled.
    let q = h.queue(2);
    let ring = packed_ring_memory(q);
    let (bar, offset) = (q.notify_bar, q.notify_offset);
    let header = dma(&h.memory, size_of::<CmdReq>(), 8);
    ring.store_u64(48, header.bus_address(), Ordering::Relaxed);
    ring.store_u32(56, size_of::<CmdReq>() as u32, Ordering::Relaxed);
    ring.store_u16(60, 1, Ordering::Relaxed);
    ring.store_u16(62, (1 << 7) | 1, Ordering::Release);
    h.device.mmio_write(bar, offset, 2, 2);
    h.device.hostile_take();
    assert!(h.transport.needs_reset());
    assert_eq!(h.device.violations(), []);
}

/// A control request the hostile mode held when the driver reset the device was forgotten by
/// the reset: once the driver has its buffer back it may hold another request (here a TMF
/// header over an AN query's 16 bytes), and executing the old chain then would blame the
/// driver for a chain too short for it (the fuzz runs' controlq `TooShort`). Leaving the
/// hostile mode forgets it instead.
#[test]
fn a_control_request_held_across_a_reset_is_forgotten_not_executed() {
    let mut h = Harness::default();
    h.device.set_hostile(true);
    let memory = h.memory.clone();
    let request = dma(&memory, AN_REQ_SIZE, 8);
    assert!(request.write_bytes(0, &1u32.to_le_bytes()), "AN query");
    let response = dma(&memory, size_of::<AnResp>(), 8);
    let q = h.queue(0);
    q.queue
        .add(&[segment(&request)], &[segment(&response)], None)
        .unwrap();
    q.kick();
    h.device.hostile_take();
    assert_eq!(h.device.hostile_held(), (0, 1));
    let features = h.features;
    h.init(features);
    // The driver's buffer again: a TMF (type 0) now.
    assert!(request.write_bytes(0, &0u32.to_le_bytes()));
    h.device.set_hostile(false);
    assert_eq!(h.device.violations(), []);
    assert!(!h.transport.needs_reset());
    assert_eq!(h.device.hostile_held(), (0, 0));
}

#[test]
fn reserved_packed_event_suppression_flags_are_a_violation_and_still_interrupt() {
    let mut h = packed_harness();
    let q = h.queue(2);
    let ring = packed_ring_memory(q);
    let driver_event = (q.queue.addresses().driver - q.queue.addresses().descriptors) as usize;
    // The driver event suppression structure's flags: 3 is reserved (virtio 1.x 2.8.10).
    ring.store_u16(driver_event + 2, 3, Ordering::Release);
    let before = h.sink.vectors.lock().unwrap().len();
    let q = h.queue(2);
    let done = q.command(lun0(), &rw10(opcode::READ_10, 0, 1), &[], 512);
    assert_eq!(done.resp.response, 0);
    assert!(h.sink.vectors.lock().unwrap().len() > before, "interrupted");
    assert_eq!(
        h.device.violations(),
        [DeviceViolation::MalformedChain {
            queue: 2,
            error: ChainError::EventFlags { flags: 3 },
        }]
    );
}

/// A harness whose request queues are served by QEMU-like iothreads.
fn iothread_harness(poll_rounds: u32, wanted: Features) -> Harness {
    let options = DeviceOptions {
        completion: CompletionMode::IoThread { poll_rounds },
        ..DeviceOptions::default()
    };
    Harness::new(options, wanted)
}

/// Waits (up to ten seconds) until the driver side of `q` sees a used element.
fn wait_for_used(q: &DriverQueue) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !q.queue.has_used() {
        assert!(
            std::time::Instant::now() < deadline,
            "the iothread completed nothing"
        );
        std::thread::yield_now();
    }
}

#[test]
fn an_iothread_drains_a_burst_after_one_kick_with_one_interrupt() {
    let mut h = iothread_harness(0, SCSI_DRIVER_FEATURES);
    let q = h.queue(2);
    for lba in 0..32 {
        q.start_read(lba, true);
    }
    q.kick();
    q.device.quiesce();
    let done = q.reap().unwrap();
    assert_eq!(done.len(), 32);
    assert!(
        done.iter()
            .all(|d| d.resp.response == 0 && d.resp.status == 0)
    );
    let stats = h.device.stats();
    assert_eq!(stats.queues[2].notifications, 1);
    assert_eq!(stats.queues[2].requests, 32);
    assert_eq!(stats.queues[2].interrupts, 1, "one interrupt for the batch");
}

#[test]
fn a_driver_that_adds_while_the_iothread_polls_need_not_kick() {
    // A poll window far longer than this test's few adds.
    let mut h = iothread_harness(200_000, SCSI_DRIVER_FEATURES);
    let q = h.queue(2);
    q.start_read(0, true);
    assert!(
        q.queue.kick_prepare(),
        "an idle device wants the first kick"
    );
    q.device
        .mmio_write(q.notify_bar, q.notify_offset, 2, q.index.into());
    wait_for_used(q);
    assert_eq!(q.reap().unwrap().len(), 1);
    // The device is polling with notifications off: avail_event stays where it was, so the
    // driver's next add does not cross it, and the device finds the request anyway.
    q.start_read(1, true);
    assert!(
        !q.queue.kick_prepare(),
        "the polling device's avail_event still asked for a kick"
    );
    wait_for_used(q);
    assert_eq!(q.reap().unwrap().len(), 1);
    // When the window closes, notifications are on again and the next add kicks.
    q.device.quiesce();
    q.start_read(2, true);
    assert!(
        q.queue.kick_prepare(),
        "the sleeping device asks for a kick"
    );
    q.device
        .mmio_write(q.notify_bar, q.notify_offset, 2, q.index.into());
    q.device.quiesce();
    assert_eq!(q.reap().unwrap().len(), 1);
    let stats = h.device.stats();
    assert_eq!(
        (stats.queues[2].requests, stats.queues[2].notifications),
        (3, 2)
    );
}

/// Interrupts for three bursts of four reads, each burst drained as one batch, when the driver
/// never re-arms (it neither pops nor moves `used_event`).
fn iothread_interrupts_without_rearm(wanted: Features) -> u64 {
    let mut h = iothread_harness(0, wanted);
    let q = h.queue(2);
    for burst in 0..3 {
        for lba in 0..4 {
            q.start_read(burst * 4 + lba, true);
        }
        q.device
            .mmio_write(q.notify_bar, q.notify_offset, 2, q.index.into());
        q.device.quiesce();
    }
    assert_eq!(q.reap().unwrap().len(), 12);
    let stats = h.device.stats();
    assert_eq!(stats.queues[2].requests, 12);
    stats.queues[2].interrupts
}

#[test]
fn an_iothread_interrupts_once_per_batch_and_only_as_used_event_allows() {
    // The planted offender is the driver that never re-arms: with EVENT_IDX its used_event
    // stays 0, so only the first batch crosses it; without, every batch interrupts once (not
    // every request).
    assert_eq!(iothread_interrupts_without_rearm(SCSI_DRIVER_FEATURES), 1);
    assert_eq!(
        iothread_interrupts_without_rearm(SCSI_DRIVER_FEATURES - Features::EVENT_IDX),
        3
    );
}
