//! Our split virtqueue (driver side) against rust-vmm's `virtio-queue` (device side) in
//! `vm-memory` guest memory: data integrity, tokens, lengths and notifications both ways.
//!
//! The device plays QEMU: on a kick it disables notifications, pops every available chain,
//! re-enables them and pops again if more arrived; when it completes chains it publishes them
//! with `add_used` and interrupts only if `needs_notification` (and, without `EVENT_IDX`, the
//! driver's `NO_INTERRUPT` flag) says so. The driver plays the miniport: it adds batches, kicks
//! when `kick_prepare` says so, and in its interrupt handler disables interrupts, drains,
//! and re-enables until the re-check finds nothing. Between steps the test asserts that no
//! notification was lost: available chains the sleeping device has not seen imply a pending
//! kick, used chains the driver has not seen imply a pending interrupt.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use virtio_core::dma::DmaMemory;
use virtio_core::fake::RegionHal;
use virtio_core::hal::{Hal, Segment};
use virtio_core::queue::split::SplitQueue;
use virtio_core::queue::{
    IndirectWriter, QueueError, QueueFeatures, RingFormat, Slot, Token, Virtqueue,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest memory size: room for the largest ring and a request area per slot.
const MEMORY_SIZE: usize = 8 << 20;
/// Bytes of data area per request slot.
const AREA: usize = 8192;
const MAX_READABLE: u64 = 4;
const MAX_WRITABLE: u64 = 4;
/// Indirect table entries per request slot.
const TABLE_ENTRIES: usize = 8;
/// What the driver puts in writable buffers, so bytes the device did not write can be checked.
const UNWRITTEN: u8 = 0xee;

/// Guest memory for the device side, and virtio-core's shared [`RegionHal`] carving the
/// driver's DMA memory from it: the bus address is the guest physical address, which is exactly
/// what `virtio-queue` dereferences.
struct Guest {
    memory: GuestMemoryMmap,
    hal: RegionHal,
}

impl Guest {
    fn new() -> Self {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY_SIZE)]).unwrap();
        // Guest address 0 stays unused, so a zero address in a descriptor cannot look valid.
        let first = GuestAddress(0x1000);
        let host = NonNull::new(memory.get_host_address(first).unwrap()).unwrap();
        // SAFETY: the range is the tail of the one mmap region of `memory`, which lives in the
        // same struct as the HAL and outlives every `DmaMemory` in these tests; the driver side
        // reaches it only through `DmaMemory` and the device side only through `vm-memory`'s
        // volatile and atomic accessors; byte `i` is at guest physical address `0x1000 + i`.
        let hal = unsafe { RegionHal::new(host, MEMORY_SIZE - 0x1000, first.0) }.unwrap();
        Self { memory, hal }
    }
}

/// splitmix64: a small deterministic generator, so every run checks the same sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform-enough in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Direct,
    Indirect,
    Mixed,
    /// Indirect tables written by `IndirectWriter` (outside any lock, as the miniport's
    /// BuildIo does) and added with `add_table`, mixed with direct chains and `add`'s own
    /// indirect ones.
    Written,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    size: u16,
    event_idx: bool,
    mode: Mode,
    chains: u32,
    max_len: u64,
    seed: u64,
}

/// What the driver posted for one chain in flight (the test's oracle, indexed by token).
struct Posted {
    area: usize,
    readable: Vec<(Segment, Vec<u8>)>,
    writable: Vec<Segment>,
    indirect: bool,
}

/// A chain the device has taken and not yet completed.
struct Taken {
    head: u16,
    writable: Vec<(GuestAddress, u32)>,
}

/// What the device wrote for a completed chain, for the driver to check.
struct Completion {
    written: u32,
    salt: u8,
}

#[derive(Debug, Default)]
struct Stats {
    chains: u32,
    kicks: u32,
    interrupts: u32,
    full: u32,
}

fn pattern(salt: u8, offset: usize) -> u8 {
    salt.wrapping_add((offset as u8).wrapping_mul(7)) ^ (offset >> 8) as u8
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "the four flags are independent states of the simulated driver and device"
)]
struct Harness {
    guest: Guest,
    config: Config,
    rng: Rng,
    driver: SplitQueue<Vec<Slot>>,
    device: Queue,
    areas: Vec<DmaMemory>,
    tables: Vec<DmaMemory>,
    free_areas: Vec<usize>,
    posted: Vec<Option<Posted>>,
    taken: Vec<Taken>,
    completions: Vec<Option<Completion>>,
    /// The device has been notified and not run since.
    kick_pending: bool,
    /// The driver added chains and has not called `kick_prepare` since.
    kick_owed: bool,
    interrupt_pending: bool,
    /// The device is between `disable_notification` and an `enable_notification` that found
    /// nothing new: it will look at the available ring again without a kick.
    device_awake: bool,
    /// The driver's interrupt handler is between `disable_interrupts` and an
    /// `enable_interrupts` that found nothing new.
    in_interrupt: bool,
    added: u32,
    popped: u32,
    stats: Stats,
}

impl Harness {
    fn new(config: Config) -> Self {
        let guest = Guest::new();
        let hal = &guest.hal;
        let size = config.size;
        let ring = hal
            .dma_alloc(SplitQueue::<Vec<Slot>>::ring_len(size), 16)
            .unwrap();
        let features = QueueFeatures {
            event_idx: config.event_idx,
            indirect: config.mode != Mode::Direct,
        };
        let driver = SplitQueue::new(
            0,
            size,
            ring,
            vec![Slot::EMPTY; usize::from(size)],
            features,
        )
        .unwrap();

        let addresses = driver.addresses();
        let mut device = Queue::new(size).unwrap();
        device.set_desc_table_address(
            Some(addresses.descriptors as u32),
            Some((addresses.descriptors >> 32) as u32),
        );
        device.set_avail_ring_address(
            Some(addresses.driver as u32),
            Some((addresses.driver >> 32) as u32),
        );
        device.set_used_ring_address(
            Some(addresses.device as u32),
            Some((addresses.device >> 32) as u32),
        );
        device.set_event_idx(config.event_idx);
        device.set_ready(true);
        assert!(device.is_valid(&guest.memory));
        assert_eq!(device.desc_table(), addresses.descriptors);

        let areas = (0..size)
            .map(|_| hal.dma_alloc(AREA, 64).unwrap())
            .collect();
        let tables = (0..size)
            .map(|_| hal.dma_alloc(16 * TABLE_ENTRIES, 16).unwrap())
            .collect();
        Self {
            guest,
            config,
            rng: Rng(config.seed),
            driver,
            device,
            areas,
            tables,
            free_areas: (0..usize::from(size)).collect(),
            posted: (0..size).map(|_| None).collect(),
            taken: Vec::new(),
            completions: (0..size).map(|_| None).collect(),
            kick_pending: false,
            kick_owed: false,
            interrupt_pending: false,
            device_awake: false,
            in_interrupt: false,
            added: 0,
            popped: 0,
            stats: Stats::default(),
        }
    }

    /// Driver: builds one random chain in a free request area and adds it. Returns false when
    /// the queue (or the request pool) is full.
    fn driver_add_one(&mut self) -> bool {
        let Some(area_index) = self.free_areas.pop() else {
            return false;
        };
        let area = self.areas[area_index];
        let mut readable_count = self.rng.below(MAX_READABLE + 1) as usize;
        let writable_count = self.rng.below(MAX_WRITABLE + 1) as usize;
        if readable_count + writable_count == 0 {
            readable_count = 1;
        }
        let indirect = match self.config.mode {
            Mode::Direct => false,
            Mode::Indirect => true,
            Mode::Mixed | Mode::Written => self.rng.chance(1, 2),
        };
        let written = self.config.mode == Mode::Written && indirect && self.rng.chance(2, 3);
        let mut offset = self.rng.below(64) as usize;
        let mut readable = Vec::new();
        let mut writable = Vec::new();
        for i in 0..readable_count + writable_count {
            let len = 1 + self.rng.below(self.config.max_len) as usize;
            let segment = Segment::new(area.bus_address() + offset as u64, len as u32);
            if i < readable_count {
                let data: Vec<u8> = (0..len).map(|_| self.rng.next() as u8).collect();
                assert!(area.write_bytes(offset, &data));
                readable.push((segment, data));
            } else {
                assert!(area.write_bytes(offset, &vec![UNWRITTEN; len]));
                writable.push(segment);
            }
            offset += len + self.rng.below(32) as usize;
        }
        assert!(offset <= AREA);
        let readable_segments: Vec<Segment> = readable.iter().map(|(s, _)| *s).collect();
        let table = indirect.then_some(&self.tables[area_index]);
        let added = match table {
            Some(table) if written => {
                let mut writer = IndirectWriter::new(table, RingFormat::Split).unwrap();
                for segment in &readable_segments {
                    writer.push_readable(*segment).unwrap();
                }
                for segment in &writable {
                    writer.push_writable(*segment).unwrap();
                }
                let chain = writer.finish().unwrap();
                self.driver.add_table(&chain)
            }
            _ => self.driver.add(&readable_segments, &writable, table),
        };
        match added {
            Ok(Token(token)) => {
                let slot = &mut self.posted[usize::from(token)];
                assert!(slot.is_none(), "token {token} handed out while in flight");
                *slot = Some(Posted {
                    area: area_index,
                    readable,
                    writable,
                    indirect,
                });
                self.added += 1;
                self.kick_owed = true;
                true
            }
            Err(QueueError::Full { needed, free }) => {
                assert!(needed > free && (!indirect || free == 0));
                assert_eq!(free, self.driver.free_descriptors());
                self.free_areas.push(area_index);
                self.stats.full += 1;
                false
            }
            Err(error) => panic!("add failed: {error:?}"),
        }
    }

    fn driver_kick(&mut self) {
        self.kick_owed = false;
        if self.driver.kick_prepare() {
            self.kick_pending = true;
            self.stats.kicks += 1;
        }
    }

    /// Driver: pops and checks one used chain.
    fn driver_pop(&mut self) -> bool {
        let Some(used) = self
            .driver
            .pop_used()
            .expect("virtio-queue wrote a bad used entry")
        else {
            return false;
        };
        let token = usize::from(used.token.0);
        let posted = self.posted[token].take().expect("used token not in flight");
        let completion = self.completions[token]
            .take()
            .expect("used before the device completed it");
        assert_eq!(used.written, completion.written);
        // The device's bytes, then the untouched remainder, in segment order.
        let area = self.areas[posted.area];
        let mut position = 0usize;
        for segment in &posted.writable {
            let mut bytes = vec![0; segment.len as usize];
            assert!(area.read_bytes((segment.address - area.bus_address()) as usize, &mut bytes));
            for byte in bytes {
                let expected = if position < completion.written as usize {
                    pattern(completion.salt, position)
                } else {
                    UNWRITTEN
                };
                assert_eq!(byte, expected, "token {token} byte {position}");
                position += 1;
            }
        }
        self.free_areas.push(posted.area);
        self.popped += 1;
        true
    }

    /// Driver interrupt handler, first half: disable interrupts and drain. The device may run
    /// before the second half, which is the race `enable_interrupts` must close.
    fn driver_interrupt(&mut self) {
        self.interrupt_pending = false;
        self.stats.interrupts += 1;
        self.driver.disable_interrupts();
        while self.driver_pop() {}
        self.in_interrupt = true;
    }

    /// Driver interrupt handler, second half: re-enable; if the re-check finds used chains,
    /// drain them and stay in the handler for another round.
    fn driver_interrupt_finish(&mut self) {
        if self.driver.enable_interrupts() {
            while self.driver_pop() {}
        } else {
            self.in_interrupt = false;
        }
    }

    /// Device: a notification wakes it; it disables notifications while it works.
    fn device_wake(&mut self) {
        self.kick_pending = false;
        self.device_awake = true;
        self.device
            .disable_notification(&self.guest.memory)
            .unwrap();
        let count = 1 + self.rng.below(4);
        self.device_fetch(count);
    }

    /// Device, awake: fetches some chains, and sometimes re-enables notifications and goes to
    /// sleep, unless the re-check finds more (QEMU's `virtio_queue_set_notification` loop).
    fn device_work(&mut self) {
        // Often take everything, so the device also goes to sleep with an empty ring and the
        // next chain must kick it.
        let count = if self.rng.chance(1, 2) {
            u64::MAX
        } else {
            self.rng.below(4)
        };
        self.device_fetch(count);
        if self.rng.chance(1, 2) {
            if self.device.enable_notification(&self.guest.memory).unwrap() {
                self.device
                    .disable_notification(&self.guest.memory)
                    .unwrap();
            } else {
                self.device_awake = false;
            }
        }
    }

    /// Device: pops up to `count` available chains and checks each against what the driver
    /// posted.
    fn device_fetch(&mut self, count: u64) {
        let memory = &self.guest.memory;
        for _ in 0..count {
            let Some(chain) = self.device.pop_descriptor_chain(memory) else {
                break;
            };
            {
                let head = chain.head_index();
                let descriptors: Vec<_> = chain.collect();
                let posted = self.posted[usize::from(head)]
                    .as_ref()
                    .expect("device got a chain not in flight");
                assert!(self.completions[usize::from(head)].is_none());
                assert_eq!(
                    descriptors.len(),
                    posted.readable.len() + posted.writable.len(),
                    "head {head}"
                );
                let (readable, writable) = descriptors.split_at(posted.readable.len());
                for (descriptor, (segment, data)) in readable.iter().zip(&posted.readable) {
                    assert!(!descriptor.is_write_only());
                    assert_eq!(
                        (descriptor.addr().0, descriptor.len()),
                        (segment.address, segment.len)
                    );
                    let mut bytes = vec![0; data.len()];
                    memory.read_slice(&mut bytes, descriptor.addr()).unwrap();
                    assert_eq!(&bytes, data, "head {head}: readable bytes differ");
                }
                for (descriptor, segment) in writable.iter().zip(&posted.writable) {
                    assert!(descriptor.is_write_only());
                    assert_eq!(
                        (descriptor.addr().0, descriptor.len()),
                        (segment.address, segment.len)
                    );
                }
                // virtio-queue follows indirect tables transparently; check the ring itself.
                let flags_address = self.device.desc_table() + 16 * u64::from(head) + 12;
                let flags: u16 = memory.read_obj(GuestAddress(flags_address)).unwrap();
                assert_eq!(u16::from_le(flags) & 4 != 0, posted.indirect, "head {head}");
                let writable = writable.iter().map(|d| (d.addr(), d.len())).collect();
                self.taken.push(Taken { head, writable });
            }
        }
    }

    /// Device: completes up to `count` taken chains in random order, then decides whether to
    /// interrupt.
    fn device_complete(&mut self, count: u64) {
        let mut completed = 0;
        for _ in 0..count {
            if self.taken.is_empty() {
                break;
            }
            let pick = self.rng.below(self.taken.len() as u64) as usize;
            let taken = self.taken.swap_remove(pick);
            let total: u32 = taken.writable.iter().map(|&(_, len)| len).sum();
            let written = match self.rng.below(4) {
                0 => total,
                1 => 0,
                _ => self.rng.below(u64::from(total) + 1) as u32,
            };
            let salt = self.rng.next() as u8;
            let mut position = 0usize;
            for &(address, len) in &taken.writable {
                let remaining = (written as usize)
                    .saturating_sub(position)
                    .min(len as usize);
                let bytes: Vec<u8> = (0..remaining)
                    .map(|i| pattern(salt, position + i))
                    .collect();
                self.guest.memory.write_slice(&bytes, address).unwrap();
                position += len as usize;
            }
            self.completions[usize::from(taken.head)] = Some(Completion { written, salt });
            self.device
                .add_used(&self.guest.memory, taken.head, written)
                .unwrap();
            completed += 1;
        }
        if completed == 0 {
            return;
        }
        let mut notify = self.device.needs_notification(&self.guest.memory).unwrap();
        if !self.config.event_idx {
            // virtio-queue leaves VIRTQ_AVAIL_F_NO_INTERRUPT to the device model; QEMU honours it.
            let flags: u16 = self
                .guest
                .memory
                .load(GuestAddress(self.device.avail_ring()), Ordering::Acquire)
                .unwrap();
            notify = u16::from_le(flags) & 1 == 0;
        }
        if notify {
            self.interrupt_pending = true;
        }
    }

    /// No notification was lost: a sleeping device with unseen chains has a kick coming, a
    /// driver with unseen used chains has an interrupt coming.
    fn check_no_lost_notification(&self) {
        if !self.kick_owed && !self.device_awake {
            let avail = self
                .device
                .avail_idx(&self.guest.memory, Ordering::Acquire)
                .unwrap()
                .0;
            assert!(
                avail == self.device.next_avail() || self.kick_pending,
                "lost kick: avail.idx {avail}, device at {}",
                self.device.next_avail()
            );
        }
        assert!(
            self.interrupt_pending || self.in_interrupt || !self.driver.has_used(),
            "lost interrupt"
        );
    }

    fn step(&mut self) {
        match self.rng.below(12) {
            0..=3 if self.added < self.config.chains => {
                let batch = 1 + self.rng.below(4);
                for _ in 0..batch {
                    if self.added == self.config.chains || !self.driver_add_one() {
                        break;
                    }
                }
                // Usually kick right away; sometimes let the device run first.
                if self.rng.chance(3, 4) {
                    self.driver_kick();
                }
            }
            4 if self.kick_owed => self.driver_kick(),
            4..=5 if self.kick_pending => self.device_wake(),
            4..=5 if self.device_awake => self.device_work(),
            6..=7 => {
                let count = 1 + self.rng.below(3);
                self.device_complete(count);
            }
            8..=9 if self.in_interrupt => self.driver_interrupt_finish(),
            8..=9 if self.interrupt_pending => self.driver_interrupt(),
            10 if !self.in_interrupt && self.rng.chance(1, 4) => {
                // Polling outside the interrupt handler, as a submission path might.
                for _ in 0..self.rng.below(3) {
                    self.driver_pop();
                }
            }
            _ => {}
        }
        self.check_no_lost_notification();
    }

    fn run(mut self) -> Stats {
        while self.added < self.config.chains {
            self.step();
        }
        // Drain: no more adds; everything must come back through kicks and interrupts alone.
        if self.kick_owed {
            self.driver_kick();
        }
        while self.popped < self.added {
            let progress = self.kick_pending
                || self.device_awake
                || self.interrupt_pending
                || self.in_interrupt
                || !self.taken.is_empty();
            assert!(
                progress,
                "stalled with {} chains in flight",
                self.added - self.popped
            );
            if self.kick_pending {
                self.device_wake();
            }
            if self.device_awake {
                self.device_work();
            }
            self.device_complete(u64::MAX);
            if self.in_interrupt {
                self.driver_interrupt_finish();
            } else if self.interrupt_pending {
                self.driver_interrupt();
            }
            self.check_no_lost_notification();
        }
        assert_eq!(self.driver.in_flight(), 0);
        assert_eq!(self.driver.free_descriptors(), self.config.size);
        assert_eq!(self.free_areas.len(), usize::from(self.config.size));
        assert!(self.posted.iter().all(Option::is_none));
        let used = self
            .device
            .used_idx(&self.guest.memory, Ordering::Acquire)
            .unwrap()
            .0;
        assert_eq!(used, self.config.chains as u16);
        assert_eq!(self.device.next_avail(), self.config.chains as u16);
        self.stats.chains = self.popped;
        self.stats
    }
}

fn run(config: Config) -> Stats {
    let stats = Harness::new(config).run();
    // Sanity: the run exercised both notification paths, so the lost-notification checks bit.
    assert!(
        stats.kicks > 0 && stats.interrupts > 0,
        "{config:?}: {stats:?}"
    );
    stats
}

#[test]
fn direct_and_indirect_chains_with_and_without_event_idx() {
    let mut total = 0;
    let mut seed = 1;
    for event_idx in [false, true] {
        for mode in [Mode::Direct, Mode::Indirect, Mode::Mixed, Mode::Written] {
            for size in [16, 64, 256] {
                seed += 1;
                let config = Config {
                    size,
                    event_idx,
                    mode,
                    chains: 1500,
                    max_len: 1000,
                    seed,
                };
                let stats = run(config);
                assert_eq!(stats.chains, 1500);
                if mode == Mode::Direct && size == 16 {
                    assert!(
                        stats.full > 0,
                        "{config:?}: the small direct queue never filled up"
                    );
                }
                total += stats.chains;
            }
        }
    }
    assert_eq!(total, 36_000);
}

#[test]
fn indices_wrap_past_65535_with_event_idx() {
    for mode in [Mode::Direct, Mode::Indirect, Mode::Written] {
        let config = Config {
            size: 64,
            event_idx: true,
            mode,
            chains: 70_000,
            max_len: 48,
            seed: 100,
        };
        assert_eq!(run(config).chains, 70_000);
    }
}

#[test]
fn indices_wrap_past_65535_without_event_idx() {
    for mode in [Mode::Direct, Mode::Indirect] {
        let config = Config {
            size: 64,
            event_idx: false,
            mode,
            chains: 70_000,
            max_len: 48,
            seed: 200,
        };
        assert_eq!(run(config).chains, 70_000);
    }
}

#[test]
fn guest_hal_translates_back_to_guest_physical_addresses() {
    let guest = Guest::new();
    let hal = &guest.hal;
    let memory = hal.dma_alloc(3 * 4096, 4096).unwrap();
    let mut out = [Segment::default(); 4];
    let count = hal
        .translate(memory.cpu_address() + 100, 2 * 4096, &mut out)
        .unwrap();
    assert_eq!(count, 3);
    assert_eq!(out[0], Segment::new(memory.bus_address() + 100, 4096 - 100));
    assert_eq!(
        out[2].address + u64::from(out[2].len),
        memory.bus_address() + 100 + 2 * 4096
    );
    // What the driver writes through the DmaMemory is what the guest sees at the bus address.
    assert!(memory.write_bytes(5, b"virtio"));
    let mut seen = [0u8; 6];
    guest
        .memory
        .read_slice(&mut seen, GuestAddress(memory.bus_address() + 5))
        .unwrap();
    assert_eq!(&seen, b"virtio");
}
