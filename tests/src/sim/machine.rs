//! The simulated port driver's state: the adapter's memory, the outstanding SRBs, locks, DPCs,
//! interrupts, timeouts, and the calls into the miniport.

use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use zerocopy::{FromZeros, IntoBytes};

use super::abi::{self, HwInitializationData, PortConfigurationInformation};
use super::locks::{CallContext, DISPATCH_LEVEL, LockError, LockId, SpinLock, with_cpu};
use super::{
    Completion, Contiguity, DataDirection, DmaArena, IoctlRequest, Notification, PciFunction,
    Request, SimError, SimOptions, Violation, WmiRequest,
};

pub use super::routine::{
    HwAdapterControlFn, HwBoolFn, HwDpcFn, HwFindAdapterFn, HwSrbFn, HwTimerFn, HwUlongFn,
};

/// Freed SRB memory stays quarantined for this many completions, so a second completion of the
/// same SRB is recognised as such instead of hitting a newer SRB at a reused address.
const QUARANTINE: usize = 256;

/// Work for a simulated processor's thread.
pub enum Work {
    /// HwBuildIo then HwStartIo for the SRB at this address.
    Submit(usize),
    /// MSI-X message (or INTx when the miniport has no message routine).
    Interrupt(u32),
    /// Leave the loop.
    Stop,
}

/// How an SRB was built, for reading it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrbKind {
    /// SCSI_REQUEST_BLOCK.
    Scsi,
    /// STORAGE_REQUEST_BLOCK with a CDB16 or CDB32 block at this offset.
    Extended { cdb_block: usize, cdb_size: usize },
    /// SRB_FUNCTION_WMI, as SCSI_WMI_REQUEST_BLOCK or as STORAGE_REQUEST_BLOCK (`extended`).
    Wmi { extended: bool },
    /// SRB_FUNCTION_IO_CONTROL, as SCSI_REQUEST_BLOCK or as STORAGE_REQUEST_BLOCK (`extended`).
    IoControl { extended: bool },
    /// An abort or reset function (no CDB), in either shape.
    Control { extended: bool },
}

/// The DMA memory of an adapter request (WMI, IOCTL) being built.
struct AdapterRequestMemory {
    /// The SRB's address.
    srb: usize,
    /// The SRB extension's address (0 without one).
    srb_extension: usize,
    /// The buffer's address and length (guard included).
    buffer: (usize, usize),
    /// Every allocation, freed when the SRB leaves quarantine.
    regions: Vec<(usize, usize)>,
}

impl AdapterRequestMemory {
    /// Allocates `len` bytes (at least one) aligned to `align` and records the region.
    fn alloc(
        &mut self,
        memory: &dyn DmaArena,
        len: usize,
        align: usize,
    ) -> Result<usize, SimError> {
        let address = memory
            .alloc(len.max(1), align)
            .ok_or(SimError::OutOfMemory { len })?;
        self.regions.push((address, len.max(1)));
        Ok(address)
    }
}

/// One outstanding SRB and the memory behind it.
pub struct SrbRecord {
    pub(crate) ticket: u64,
    pub(crate) kind: SrbKind,
    pub(crate) address: (u8, u8, u8),
    pub(crate) regions: Vec<(usize, usize)>,
    pub(crate) data: Option<(usize, usize)>,
    pub(crate) direction: DataDirection,
    pub(crate) sense: Option<(usize, usize)>,
    /// Its SRB extension, if it has one.
    pub(crate) srb_extension: Option<(usize, usize)>,
    /// With [`SimOptions::iommu`]: what StorPort mapped for the device while it has the SRB
    /// (its SRB extension, data and sense buffers), unmapped when the SRB completes.
    pub(crate) mappings: Vec<DmaMapping>,
    pub(crate) deadline: Instant,
    /// TimeOutValue in real time: the deadline is this long after the miniport gets the SRB.
    pub(crate) timeout: Duration,
    pub(crate) reset_deadline: Option<Instant>,
    pub(crate) scatter_gather: Option<usize>,
    /// Counted against its unit's queue depth and MaxNumberOfIO ([`PortQueue`]).
    pub(crate) counted: bool,
    /// Sent beyond the transfer limits the miniport reported ([`Request::ignore_port_limits`]):
    /// its answer must not be SUCCESS.
    pub(crate) beyond_transfer_limits: bool,
    /// Once the miniport answered it BUSY: when StorPort stops retrying it (its timeout after
    /// the first BUSY) and completes it BUSY to the class driver.
    pub(crate) retry_expiry: Option<Instant>,
    /// Not sent again before this instant (StorPort's hold-off after a BUSY answer).
    pub(crate) not_before: Option<Instant>,
    /// The simulated processor it was submitted on (a retry goes there again).
    pub(crate) processor: u32,
    /// Where the guard after each of its buffers starts ([`super::BUFFER_GUARD_LEN`] bytes of
    /// [`super::BUFFER_GUARD_BYTE`]): checked when it completes.
    pub(crate) guards: Vec<(usize, super::SrbBuffer)>,
}

/// A range StorPort mapped for the device's DMA under remapping ([`SimOptions::iommu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaMapping {
    /// Its (physical) address.
    pub(crate) address: usize,
    /// Its length.
    pub(crate) len: usize,
    /// The bus address the device uses for `address`.
    pub(crate) bus: u64,
}

impl DmaMapping {
    /// The bus address of `address` and the bytes from there to the mapping's end, if
    /// `address` lies inside it.
    fn translate(&self, address: usize) -> Option<(u64, usize)> {
        let offset = address.checked_sub(self.address)?;
        (offset < self.len).then(|| (self.bus + offset as u64, self.len - offset))
    }
}

/// How long StorPort waits before sending a request the miniport answered BUSY again.
pub(crate) const BUSY_HOLD_OFF: Duration = Duration::from_millis(1);

/// How long StorPortBusy holds requests back at most if the completions it waits for do not
/// come (the simulator's choice: Windows' own limit is not documented).
pub(crate) const BUSY_LIMIT: Duration = Duration::from_millis(100);

/// A request StorPort holds back because its unit's queue depth or the adapter's
/// `MaxNumberOfIO` is reached: the miniport has not seen it.
pub struct Waiting {
    pub(crate) processor: u32,
    pub(crate) srb: usize,
    pub(crate) record: SrbRecord,
}

/// StorPort's queues in front of the miniport. The port driver never gives the miniport more
/// SCSI requests at once than the unit's queue depth (`InitialLunQueueDepth`, or what
/// StorPortSetDeviceQueueDepth set, at most `MaxIOsPerLun`) nor, adapter-wide, than
/// `MaxNumberOfIO`; the rest wait, in order, until completions make room.
#[derive(Default)]
pub struct PortQueue {
    /// SCSI requests the miniport holds, per unit.
    pub(crate) per_unit: HashMap<(u8, u8, u8), u32>,
    /// SCSI requests the miniport holds in all.
    pub(crate) total: u32,
    /// Requests held back, oldest first.
    pub(crate) waiting: VecDeque<Waiting>,
    /// The most the miniport held at once, per unit and in all (for scenarios).
    pub(crate) peak_per_unit: HashMap<(u8, u8, u8), u32>,
    pub(crate) peak_total: u32,
    /// After StorPortBusy: completions still awaited before requests flow again, and when
    /// StorPort resumes anyway.
    pub(crate) busy: Option<(u32, Instant)>,
    /// Requests the miniport answered BUSY, each sent again.
    pub(crate) busy_retries: u64,
    /// StorPortBusy calls.
    pub(crate) busy_calls: u64,
}

/// The state behind the machine's mutex.
#[derive(Default)]
pub struct State {
    pub(crate) next_ticket: u64,
    pub(crate) outstanding: HashMap<usize, SrbRecord>,
    pub(crate) completed: HashMap<u64, Completion>,
    /// When each ticket completed.
    pub(crate) completed_at: HashMap<u64, Instant>,
    pub(crate) quarantine: VecDeque<(usize, Vec<(usize, usize)>)>,
    pub(crate) uncached: Option<(usize, usize)>,
    /// With [`SimOptions::iommu`]: the uncached extension's mapping, for the adapter's life.
    pub(crate) uncached_mapping: Option<DmaMapping>,
    /// The adapter's registry buffer (address, length), while allocated.
    pub(crate) registry_buffer: Option<(usize, usize)>,
    pub(crate) dpcs: HashMap<usize, Arc<DpcState>>,
    pub(crate) perf_flags: u32,
    /// The redirection message range the miniport gave with STOR_PERF_INTERRUPT_MESSAGE_RANGES
    /// (first, last), when StorPort accepted it.
    pub(crate) message_range: Option<(u32, u32)>,
    /// Completions of SCSI requests on the processor that submitted them, and elsewhere.
    pub(crate) completed_on_submitter: u64,
    pub(crate) completed_elsewhere: u64,
    pub(crate) passive_initialize: Option<usize>,
    pub(crate) timer: Option<(usize, Instant)>,
    pub(crate) queue_depths: HashMap<(u8, u8, u8), u32>,
    pub(crate) port_queue: PortQueue,
    pub(crate) logical_units: HashMap<(u8, u8, u8), Box<[u128]>>,
    pub(crate) rng: u64,
    /// The unit control types the miniport's query reported (`None`: no HwStorUnitControl, or
    /// not queried yet).
    pub(crate) unit_controls: Option<Vec<bool>>,
}

/// A STOR_DPC's run state: queued at most once, run by one processor at a time.
#[derive(Default)]
pub struct DpcState {
    pub(crate) queued: AtomicBool,
    pub(crate) running: Mutex<()>,
}

/// One BAR as the simulator maps it.
#[derive(Clone, Copy, Debug)]
pub struct BarMapping {
    pub(crate) bar: u8,
    pub(crate) physical: u64,
    pub(crate) cookie: usize,
    pub(crate) len: u64,
    pub(crate) io_space: bool,
}

/// The interrupt wiring decided after HwFindAdapter.
#[derive(Clone, Copy, Debug)]
pub struct InterruptWiring {
    pub(crate) message_routine: usize,
    pub(crate) line_routine: usize,
    pub(crate) per_message: bool,
}

/// The simulated port driver for one adapter.
/// A hook run each time a thread of simulated processor `processor` has released spin lock
/// `lock`, with the number of locks the thread still holds; it returns whether it stays
/// installed.
pub type LockReleaseHook = Box<dyn FnMut(u32, LockId, usize) -> bool + Send>;

pub struct Machine {
    pub(crate) options: SimOptions,
    pub(crate) pci: Arc<dyn PciFunction>,
    pub(crate) memory: Arc<dyn DmaArena>,
    pub(crate) driver_object: Box<[u64; 64]>,
    pub(crate) registry_path: Box<[u16; 32]>,
    pub(crate) hw: OnceLock<HwInitializationData>,
    pub(crate) extension: OnceLock<Box<[u128]>>,
    pub(crate) config: Mutex<PortConfigurationInformation>,
    pub(crate) srb_extended: AtomicBool,
    pub(crate) bars: Vec<BarMapping>,
    pub(crate) reservation: Reservation,
    pub(crate) message_count: u32,
    pub(crate) interrupts: OnceLock<InterruptWiring>,
    pub(crate) processors: OnceLock<Vec<Sender<Work>>>,
    pub(crate) state: Mutex<State>,
    pub(crate) completion: Condvar,
    pub(crate) start_io_lock: SpinLock,
    pub(crate) interrupt_lock: SpinLock,
    pub(crate) message_locks: Vec<SpinLock>,
    pub(crate) dpc_locks: Mutex<HashMap<usize, Arc<SpinLock>>>,
    pub(crate) violations: Mutex<Vec<Violation>>,
    pub(crate) notifications: Mutex<Vec<Notification>>,
    pub(crate) log: Mutex<Vec<String>>,
    pub(crate) stopping: AtomicBool,
    pub(crate) lost_interrupts: std::sync::atomic::AtomicU64,
    /// Called on the releasing thread each time a thread releases a spin lock
    /// ([`crate::sim::Adapter::on_lock_released`]): scenarios park a thread there to run
    /// another processor's work in the moment after a routine let go of a lock.
    pub(crate) lock_released: Mutex<Option<LockReleaseHook>>,
    /// The machine's clocks ([`SimOptions::clock_rate`]).
    pub(crate) clock: super::clock::SimClock,
    /// While StorPort holds new requests (a power transition): (processor, SRB) to send later.
    pub(crate) paused: Mutex<Option<Vec<(u32, usize)>>>,
    /// Rescans and state changes ([`super::pnp`]).
    pub(crate) pnp: super::pnp::Pnp,
}

/// An address range reserved with no access rights: register cookies point into it, so a
/// miniport that dereferences a cookie instead of calling the register routines faults.
pub struct Reservation {
    base: usize,
    len: usize,
}

impl Reservation {
    fn new(len: usize) -> Option<Self> {
        let len = len.max(4096).next_multiple_of(4096);
        // SAFETY: an anonymous PROT_NONE mapping at an address of the kernel's choosing touches
        // no existing memory; the result is checked before use and unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (base != libc::MAP_FAILED).then(|| Self {
            base: base.addr(),
            len,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: `base .. base + len` is the mapping made in `new`, owned by this value alone,
        // and nothing can legitimately access a PROT_NONE mapping.
        unsafe {
            libc::munmap(std::ptr::without_provenance_mut(self.base), self.len);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Turns a callback address from the miniport into a function pointer of type `$ty`.
macro_rules! callback {
    ($address:expr, $ty:ty) => {{
        let address: usize = $address;
        <$ty>::at(address)
    }};
}
pub(crate) use callback;

impl Machine {
    /// A machine for `pci` and `memory`, its BARs mapped, nothing called yet.
    pub(crate) fn new(
        options: SimOptions,
        pci: Arc<dyn PciFunction>,
        memory: Arc<dyn DmaArena>,
    ) -> Result<Self, SimError> {
        let mut lens = Vec::new();
        let mut bar = 0_u8;
        while bar < 6 {
            let raw = config_dword(&*pci, 0x10 + u16::from(bar) * 4);
            let is_64 = raw & 1 == 0 && (raw >> 1) & 3 == 2;
            if let Some(len) = pci.bar_len(bar).filter(|&len| len > 0) {
                lens.push((bar, len, raw & 1 == 1, is_64));
            }
            bar += if is_64 { 2 } else { 1 };
        }
        let total: u64 = lens
            .iter()
            .map(|(_, len, _, _)| len.next_multiple_of(4096))
            .sum();
        let reservation =
            Reservation::new(usize::try_from(total).map_err(|_| SimError::Resources)?)
                .ok_or(SimError::Resources)?;
        let mut bars = Vec::new();
        let mut offset = 0_usize;
        for (bar, len, io_space, is_64) in lens {
            let physical = if is_64 {
                0x0000_00E0_0000_0000 + (u64::from(bar) << 32)
            } else {
                0xF000_0000 + (u64::from(bar) << 24)
            };
            bars.push(BarMapping {
                bar,
                physical,
                cookie: reservation.base + offset,
                len,
                io_space,
            });
            offset +=
                usize::try_from(len.next_multiple_of(4096)).map_err(|_| SimError::Resources)?;
        }
        let message_count = options
            .messages
            .unwrap_or_else(|| msix_table_size(&*pci).unwrap_or(1));
        let clock = super::clock::SimClock::new(options.clock_rate);
        Ok(Self {
            message_locks: (0..message_count).map(|_| SpinLock::default()).collect(),
            options,
            pci,
            memory,
            driver_object: Box::new([0; 64]),
            registry_path: Box::new([0; 32]),
            hw: OnceLock::new(),
            extension: OnceLock::new(),
            config: Mutex::new(PortConfigurationInformation::default()),
            srb_extended: AtomicBool::new(false),
            bars,
            reservation,
            message_count,
            interrupts: OnceLock::new(),
            processors: OnceLock::new(),
            state: Mutex::new(State {
                rng: 0x9E37_79B9_7F4A_7C15,
                ..State::default()
            }),
            completion: Condvar::new(),
            start_io_lock: SpinLock::default(),
            interrupt_lock: SpinLock::default(),
            dpc_locks: Mutex::new(HashMap::new()),
            violations: Mutex::new(Vec::new()),
            notifications: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            lost_interrupts: std::sync::atomic::AtomicU64::new(0),
            lock_released: Mutex::new(None),
            clock,
            paused: Mutex::new(None),
            pnp: super::pnp::Pnp::default(),
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Records a contract violation.
    pub(crate) fn violate(&self, violation: Violation) {
        self.log(format!("VIOLATION {violation:?}"));
        lock(&self.violations).push(violation);
    }

    /// Records a notification from the miniport.
    pub(crate) fn notify(&self, notification: Notification) {
        lock(&self.notifications).push(notification);
    }

    /// Appends a line to the port driver's log.
    pub(crate) fn log(&self, line: String) {
        lock(&self.log).push(line);
    }

    pub(crate) fn violations(&self) -> Vec<Violation> {
        lock(&self.violations).clone()
    }

    pub(crate) fn notifications(&self) -> Vec<Notification> {
        lock(&self.notifications).clone()
    }

    pub(crate) fn log_lines(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// The device extension's address (0 before PnP start).
    pub(crate) fn extension_address(&self) -> usize {
        self.extension
            .get()
            .map_or(0, |extension| extension.as_ptr().addr())
    }

    pub(crate) fn extension_ptr(&self) -> *mut c_void {
        self.extension
            .get()
            .map_or(std::ptr::null_mut(), |extension| {
                extension.as_ptr().cast_mut().cast()
            })
    }

    /// Checks that an export was given this machine's device extension.
    pub(crate) fn check_extension(&self, routine: &'static str, extension: *mut c_void) -> bool {
        let expected = self.extension_address();
        if expected != 0 && extension.addr() != expected {
            self.violate(Violation::WrongDeviceExtension {
                routine,
                address: extension.addr(),
            });
            return false;
        }
        true
    }

    /// Records a violation unless the current call context is one of `allowed`.
    pub(crate) fn require_context(&self, routine: &'static str, allowed: &[CallContext]) -> bool {
        let context = with_cpu(|cpu| cpu.context);
        if allowed.contains(&context) {
            true
        } else {
            self.violate(Violation::WrongContext { routine, context });
            false
        }
    }

    /// Records a violation if the current IRQL is above `max`.
    pub(crate) fn require_irql_at_most(&self, routine: &'static str, max: u8) -> bool {
        let irql = with_cpu(|cpu| cpu.irql);
        if irql <= max {
            true
        } else {
            self.violate(Violation::WrongIrql { routine, irql });
            false
        }
    }

    fn spin_lock(&self, id: LockId) -> Option<Arc<SpinLock>> {
        match id {
            LockId::Dpc(address) => Some(Arc::clone(
                lock(&self.dpc_locks).entry(address).or_default(),
            )),
            _ => None,
        }
    }

    /// Acquires a port-driver lock for the current thread, raising its IRQL; returns the
    /// previous IRQL, or `None` if the acquisition was refused (and recorded).
    pub(crate) fn acquire(&self, id: LockId) -> Option<u8> {
        let (token, irql) = with_cpu(|cpu| (cpu.token, cpu.irql));
        // The dump port runs everything at HIGH_LEVEL, its locks included (they only keep the
        // miniport's own code from re-entering itself: there is one processor).
        if irql > id.irql() && self.options.dump.is_none() {
            self.violate(Violation::LockAboveItsIrql { lock: id, irql });
            return None;
        }
        let result = match id {
            LockId::StartIo => self.start_io_lock.acquire(token),
            LockId::Interrupt if self.interrupt_lock_is_every_message_lock() => {
                self.acquire_every_message_lock(token)
            }
            LockId::Interrupt => self.interrupt_lock.acquire(token),
            LockId::Message(message) => {
                let Some(lock) = self.message_locks.get(message as usize) else {
                    self.violate(Violation::NoSuchMessage { message });
                    return None;
                };
                lock.acquire(token)
            }
            LockId::Dpc(_) => self.spin_lock(id)?.acquire(token),
        };
        if result.is_err() {
            self.violate(Violation::RecursiveAcquire { lock: id });
            return None;
        }
        Some(with_cpu(|cpu| {
            cpu.held.push(id);
            std::mem::replace(&mut cpu.irql, id.irql().max(irql))
        }))
    }

    /// Whether StorPort's interrupt lock is the set of every message's lock: with
    /// `InterruptSynchronizePerMessage` and messages connected, "when a miniport needs to
    /// synchronize with all messages, it can use one call to StorPortAcquireSpinLock which will
    /// acquire a lock for each message in the proper order" (StorPortAcquireMSISpinLock). Holding
    /// it therefore excludes every message's ISR, and a thread that holds it (StorPort around
    /// HwInitialize and HwAdapterControl, or the miniport) and acquires a message lock, or holds
    /// a message lock and acquires it, spins on its own lock: [`Violation::RecursiveAcquire`].
    fn interrupt_lock_is_every_message_lock(&self) -> bool {
        !self.message_locks.is_empty()
            && self
                .interrupts
                .get()
                .is_some_and(|wiring| wiring.per_message && wiring.message_routine != 0)
    }

    /// Takes every message's lock for `token`, in ascending order (the proper order: the one a
    /// miniport taking several message locks must follow too). On a lock `token` holds already,
    /// gives back what it took and reports the recursion.
    fn acquire_every_message_lock(&self, token: u64) -> Result<(), LockError> {
        for (taken, lock) in self.message_locks.iter().enumerate() {
            if let Err(error) = lock.acquire(token) {
                for lock in self.message_locks.iter().take(taken).rev() {
                    let _ = lock.release(token);
                }
                return Err(error);
            }
        }
        Ok(())
    }

    /// Releases every message's lock, in descending order; `NotHeld` unless `token` holds them
    /// all (nothing changes then: a message lock taken on its own is not the interrupt lock).
    fn release_every_message_lock(&self, token: u64) -> Result<(), LockError> {
        if !self.message_locks.iter().all(|lock| lock.is_held_by(token)) {
            return Err(LockError::NotHeld);
        }
        for lock in self.message_locks.iter().rev() {
            lock.release(token)?;
        }
        Ok(())
    }

    /// Releases a port-driver lock and restores `old_irql`.
    pub(crate) fn release(&self, id: LockId, old_irql: u8) {
        let (token, acquired) = with_cpu(|cpu| (cpu.token, cpu.held.contains(&id)));
        if !acquired {
            // Not acquired as this lock by this thread: even a message lock it holds through
            // the interrupt lock is not its to release on its own.
            self.violate(Violation::ReleaseNotHeld { lock: id });
            return;
        }
        let result = match id {
            LockId::StartIo => self.start_io_lock.release(token),
            LockId::Interrupt if self.interrupt_lock_is_every_message_lock() => {
                self.release_every_message_lock(token)
            }
            LockId::Interrupt => self.interrupt_lock.release(token),
            LockId::Message(message) => self
                .message_locks
                .get(message as usize)
                .map_or(Err(LockError::NotHeld), |lock| lock.release(token)),
            LockId::Dpc(_) => self
                .spin_lock(id)
                .map_or(Err(LockError::NotHeld), |lock| lock.release(token)),
        };
        if result.is_err() {
            self.violate(Violation::ReleaseNotHeld { lock: id });
            return;
        }
        let (processor, still_held) = with_cpu(|cpu| {
            if let Some(position) = cpu.held.iter().rposition(|&held| held == id) {
                cpu.held.remove(position);
            }
            cpu.irql = old_irql;
            (cpu.processor, cpu.held.len())
        });
        // Taken out while it runs: what it waits for may release locks on this thread too.
        let hook = lock(&self.lock_released).take();
        if let Some(mut hook) = hook {
            let keep = hook(processor, id, still_held);
            let mut slot = lock(&self.lock_released);
            if keep && slot.is_none() {
                *slot = Some(hook);
            }
        }
    }

    /// Calls into the miniport in `context` at `irql`, then checks that the routine returned
    /// with no lock it took still held (and releases any it left, so the run can go on).
    pub(crate) fn call<R>(&self, context: CallContext, irql: u8, f: impl FnOnce() -> R) -> R {
        let (previous_context, previous_irql, held_before) = with_cpu(|cpu| {
            let saved = (cpu.context, cpu.irql, cpu.held.len());
            cpu.context = context;
            cpu.irql = irql;
            saved
        });
        let result = f();
        let leaked: Vec<LockId> =
            with_cpu(|cpu| cpu.held.split_off(held_before.min(cpu.held.len())));
        for id in leaked {
            self.violate(Violation::LockHeldOnReturn { lock: id, context });
            with_cpu(|cpu| cpu.held.push(id));
            self.release(id, irql);
        }
        with_cpu(|cpu| {
            if cpu.irql != irql {
                self.violate(Violation::IrqlChangedOnReturn {
                    context,
                    irql: cpu.irql,
                });
            }
            cpu.context = previous_context;
            cpu.irql = previous_irql;
        });
        result
    }

    /// Runs a miniport routine with a port-driver lock held, as StorPort does.
    pub(crate) fn call_locked<R>(
        &self,
        id: LockId,
        context: CallContext,
        f: impl FnOnce() -> R,
    ) -> Option<R> {
        let old = self.acquire(id)?;
        let result = self.call(context, id.irql(), f);
        self.release(id, old);
        Some(result)
    }

    /// Runs the DPCs queued on this thread, each at DISPATCH_LEVEL and serialised per object.
    pub(crate) fn run_pending_dpcs(&self) {
        loop {
            let Some((dpc, argument1, argument2)) =
                with_cpu(|cpu| (!cpu.pending_dpcs.is_empty()).then(|| cpu.pending_dpcs.remove(0)))
            else {
                return;
            };
            let Some(state) = self.state().dpcs.get(&dpc).cloned() else {
                continue;
            };
            let _running = lock(&state.running);
            // ORDERING: the queued flag only guards double insertion; the DPC's data is
            // published by the miniport under its own locks.
            state.queued.store(false, Ordering::SeqCst);
            let routine = read_dpc_routine(dpc);
            let Some(routine) = callback!(routine, HwDpcFn) else {
                self.violate(Violation::DpcNotInitialized { dpc });
                continue;
            };
            let extension = self.extension_ptr();
            self.call(CallContext::Dpc, DISPATCH_LEVEL, || {
                // SAFETY: the routine was registered with StorPortInitializeDpc for this STOR_DPC;
                // the DPC object and the device extension stay alive while the adapter runs.
                unsafe {
                    routine.call(
                        std::ptr::with_exposed_provenance_mut(dpc),
                        extension,
                        std::ptr::with_exposed_provenance_mut(argument1 as usize),
                        std::ptr::with_exposed_provenance_mut(argument2 as usize),
                    );
                }
            });
        }
    }

    /// The loop of a simulated processor's thread.
    pub(crate) fn processor_loop(
        self: &Arc<Self>,
        processor: u32,
        work: &std::sync::mpsc::Receiver<Work>,
    ) {
        let _attach = super::locks::Attach::new(self, processor);
        while let Ok(item) = work.recv() {
            match item {
                Work::Submit(srb) => self.start_request(srb),
                Work::Interrupt(message) => self.dispatch_interrupt(message),
                Work::Stop => return,
            }
            self.run_pending_dpcs();
        }
    }

    /// HwBuildIo without locks, then HwStartIo under the StartIo lock (or without it when the
    /// miniport enabled concurrent channels).
    fn start_request(&self, srb: usize) {
        let Some(hw) = self.hw.get() else { return };
        let proceed = self.build_io(hw, srb, |routine| {
            Some(self.call(CallContext::BuildIo, DISPATCH_LEVEL, routine))
        });
        if !proceed {
            return;
        }
        let Some(start_io) = callback!(hw.hw_start_io as usize, HwSrbFn) else {
            return;
        };
        let extension = self.extension_ptr();
        let srb_ptr: *mut c_void = std::ptr::with_exposed_provenance_mut(srb);
        // SAFETY: as for HwBuildIo.
        let run = || unsafe { start_io.call(extension, srb_ptr) };
        let concurrent = self.state().perf_flags & abi::STOR_PERF_CONCURRENT_CHANNELS != 0;
        if concurrent {
            self.call(CallContext::StartIo, DISPATCH_LEVEL, run);
        } else {
            self.call_locked(LockId::StartIo, CallContext::StartIo, run);
        }
    }

    /// HwBuildIo for the SRB at `srb`, which `call` runs with the IRQL and locks of its caller
    /// (`None`: it could not), and the checks of the answer: FALSE means the miniport completed
    /// the SRB, TRUE that it did not. Whether HwStartIo is to follow.
    pub(crate) fn build_io(
        &self,
        hw: &HwInitializationData,
        srb: usize,
        call: impl FnOnce(&dyn Fn() -> u8) -> Option<u8>,
    ) -> bool {
        if let Some(build_io) = callback!(hw.hw_build_io as usize, HwSrbFn) {
            let extension = self.extension_ptr();
            let srb_ptr: *mut c_void = std::ptr::with_exposed_provenance_mut(srb);
            // SAFETY: HwBuildIo gets the device extension and an SRB the simulator built, both
            // live until the SRB completes.
            let routine = || unsafe { build_io.call(extension, srb_ptr) };
            if call(&routine) == Some(0) {
                if self.state().outstanding.contains_key(&srb) {
                    self.violate(Violation::BuildIoFalseWithoutCompletion { srb });
                }
                return false;
            }
        }
        if !self.state().outstanding.contains_key(&srb) {
            // Completed in HwBuildIo (allowed: StorPort then skips HwStartIo only if BuildIo
            // returned FALSE, so reaching here means the miniport completed and returned TRUE).
            self.violate(Violation::CompletedInBuildIoButReturnedTrue { srb });
            return false;
        }
        true
    }

    /// Runs the miniport's interrupt routine for `message` with the lock StorPort would hold.
    pub(crate) fn dispatch_interrupt(&self, message: u32) {
        let Some(wiring) = self.interrupts.get().copied() else {
            self.lost_interrupts.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let extension = self.extension_ptr();
        if let Some(routine) = callback!(wiring.message_routine, HwUlongFn) {
            // A message the adapter was not granted (VIRTIO_MSI_NO_VECTOR among them: a queue
            // with no vector) has no MSI-X table entry the device could write to: nothing is
            // signalled, and StorPort never calls the message routine with such a number.
            if message >= self.message_count.max(1) {
                self.lost_interrupts.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let id = if wiring.per_message {
                LockId::Message(message)
            } else {
                LockId::Interrupt
            };
            // SAFETY: HwMessageSignaledInterruptRoutine gets the device extension and a message
            // number below the count the simulator reported.
            self.call_locked(id, CallContext::Interrupt, || unsafe {
                routine.call(extension, message)
            });
        } else if let Some(routine) = callback!(wiring.line_routine, HwBoolFn) {
            // SAFETY: HwInterrupt gets the device extension.
            self.call_locked(LockId::Interrupt, CallContext::Interrupt, || unsafe {
                routine.call(extension)
            });
        } else {
            self.lost_interrupts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The processor MSI-X message `message` targets. Windows spreads a device's messages over
    /// the processors (the INF's IrqPolicySpreadMessagesAcrossAllProcessors): message `m`
    /// targets processor `m mod processors`. With STOR_PERF_INTERRUPT_MESSAGE_RANGES, StorPort
    /// spreads the redirection range from processor 0: its `i`th message targets processor `i`
    /// (mod processors), and StorPortGetStartIoPerfParams names, for each processor, the
    /// message of the range that targets it.
    pub(crate) fn message_target(&self, message: u32) -> u32 {
        let count = self.processor_count();
        match self.state().message_range {
            Some((first, last)) if (first..=last).contains(&message) => (message - first) % count,
            _ => message % count,
        }
    }

    /// Simulated processors.
    pub(crate) fn processor_count(&self) -> u32 {
        self.processors.get().map_or(1, |processors| {
            u32::try_from(processors.len()).unwrap_or(1).max(1)
        })
    }

    /// StorPortGetStartIoPerfParams' MessageNumber for a request on `processor`: the message
    /// of the redirection range that targets it, or without a range the message StorPort
    /// spread onto it (0 when the adapter has no MSI-X).
    pub(crate) fn message_for_processor(&self, processor: u32) -> u32 {
        match self.state().message_range {
            Some((first, last)) => first + processor % (last - first + 1),
            None if self.message_count > 0 => processor % self.message_count,
            None => 0,
        }
    }

    /// Hands an interrupt to the processor its message targets.
    pub(crate) fn raise(&self, message: u32) {
        if self.interrupts.get().is_none() || self.stopping.load(Ordering::SeqCst) {
            self.lost_interrupts.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let target = self.message_target(message);
        if let Some(sender) = self
            .processors
            .get()
            .and_then(|processors| processors.get(target as usize))
        {
            let _ = sender.send(Work::Interrupt(message));
        }
    }

    /// Builds the SRB for `request` in DMA memory and records it outstanding.
    #[expect(
        clippy::too_many_lines,
        reason = "one SRB layout after the other, field by field; splitting scatters the mapping"
    )]
    pub(crate) fn build_srb(&self, request: &Request) -> Result<(usize, u64), SimError> {
        if request.function != abi::SRB_FUNCTION_EXECUTE_SCSI {
            return self.build_control_srb(request);
        }
        let hw = self.hw.get().ok_or(SimError::NotStarted)?;
        let srb_extension_size = lock(&self.config).srb_extension_size as usize;
        let extended = self.srb_extended.load(Ordering::SeqCst);
        let mut regions = Vec::new();
        let mut guards = Vec::new();
        let mut alloc = |len: usize, align: usize| -> Result<usize, SimError> {
            let address = self
                .memory
                .alloc(len, align)
                .ok_or(SimError::OutOfMemory { len })?;
            regions.push((address, len));
            Ok(address)
        };
        let cdb_size = if request.cdb.len() > 16 { 32 } else { 16 };
        if request.cdb.is_empty() || request.cdb.len() > 32 || (!extended && request.cdb.len() > 16)
        {
            return Err(SimError::BadCdbLength(request.cdb.len()));
        }
        let srb_len = if extended {
            size_of::<abi::StorageRequestBlock>()
                + size_of::<abi::StorAddrBtl8>()
                + if cdb_size == 16 { 40 } else { 56 }
        } else {
            size_of::<abi::ScsiRequestBlock>()
        };
        let srb = alloc(srb_len, 16)?;
        let srb_extension = if srb_extension_size > 0 {
            alloc(srb_extension_size, 16)?
        } else {
            0
        };
        let data_len = match request.direction {
            DataDirection::None => 0,
            DataDirection::In => request.data_in_len as usize,
            DataDirection::Out => request.data_out.len(),
            DataDirection::Unspecified => request.data_out.len().max(request.data_in_len as usize),
        };
        let data = if data_len > 0 {
            // Page-aligned plus an offset, so that the buffer crosses page boundaries as real
            // I/O buffers do.
            let base = alloc(
                data_len + request.data_offset as usize + super::BUFFER_GUARD_LEN,
                4096,
            )?;
            let address = base + request.data_offset as usize;
            guards.push((address + data_len, super::SrbBuffer::Data));
            if matches!(
                request.direction,
                DataDirection::Out | DataDirection::Unspecified
            ) && !self.memory.write(address, &request.data_out)
            {
                return Err(SimError::OutOfMemory { len: data_len });
            }
            Some((address, data_len))
        } else {
            None
        };
        let sense = if request.sense_len > 0 {
            let len = usize::from(request.sense_len);
            let address = alloc(len + super::BUFFER_GUARD_LEN, 8)?;
            guards.push((address + len, super::SrbBuffer::Sense));
            Some((address, len))
        } else {
            None
        };
        for &(guard, _) in &guards {
            if !self
                .memory
                .write(guard, &[super::BUFFER_GUARD_BYTE; super::BUFFER_GUARD_LEN])
            {
                return Err(SimError::OutOfMemory {
                    len: super::BUFFER_GUARD_LEN,
                });
            }
        }
        let flags = match request.direction {
            DataDirection::None => 0,
            DataDirection::In => abi::SRB_FLAGS_DATA_IN,
            DataDirection::Out => abi::SRB_FLAGS_DATA_OUT,
            DataDirection::Unspecified => abi::SRB_FLAGS_DATA_IN | abi::SRB_FLAGS_DATA_OUT,
        } | if request.queue_action.is_some() {
            abi::SRB_FLAGS_QUEUE_ACTION_ENABLE
        } else {
            0
        } | if sense.is_none() {
            abi::SRB_FLAGS_DISABLE_AUTOSENSE
        } else {
            0
        };
        let data_address = data.map_or(0, |(address, _)| address as u64);
        let sense_address = sense.map_or(0, |(address, _)| address as u64);
        let transfer =
            u32::try_from(data_len).map_err(|_| SimError::OutOfMemory { len: data_len })?;
        let kind = if extended {
            let header_len = size_of::<abi::StorageRequestBlock>();
            let address_offset = header_len;
            let cdb_block = header_len + size_of::<abi::StorAddrBtl8>();
            let header = abi::StorageRequestBlock {
                srb_flags: flags,
                request_tag: u32::from(request.queue_tag),
                request_attribute: u16::from(request.queue_action.unwrap_or(0)),
                time_out_value: request.timeout_seconds,
                address_offset: address_offset as u32,
                num_srb_ex_data: 1,
                data_transfer_length: transfer,
                data_buffer: data_address,
                miniport_context: srb_extension as u64,
                srb_ex_data_offset: [cdb_block as u32],
                ..abi::StorageRequestBlock::new(srb_len, abi::SRB_FUNCTION_EXECUTE_SCSI)
            };
            let btl = abi::StorAddrBtl8::new(request.path, request.target, request.lun);
            let mut bytes = Vec::with_capacity(srb_len);
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(btl.as_bytes());
            let cdb_length = request.cdb.len() as u8;
            // The CDB16 and CDB32 blocks differ only in their type, length and CDB array.
            macro_rules! cdb_block {
                ($block:ident, $data_type:expr, $length:expr, $size:literal) => {{
                    let mut cdb = [0; $size];
                    cdb[..request.cdb.len()].copy_from_slice(&request.cdb);
                    bytes.extend_from_slice(
                        abi::$block {
                            data_type: $data_type,
                            length: $length,
                            scsi_status: 0,
                            sense_info_buffer_length: request.sense_len,
                            cdb_length,
                            reserved: 0,
                            reserved1: 0,
                            sense_info_buffer: sense_address,
                            cdb,
                        }
                        .as_bytes(),
                    );
                }};
            }
            if cdb_size == 16 {
                cdb_block!(
                    SrbExDataScsiCdb16,
                    abi::SRBEX_DATA_TYPE_SCSI_CDB16,
                    abi::SRBEX_DATA_SCSI_CDB16_LENGTH,
                    16
                );
            } else {
                cdb_block!(
                    SrbExDataScsiCdb32,
                    abi::SRBEX_DATA_TYPE_SCSI_CDB32,
                    abi::SRBEX_DATA_SCSI_CDB32_LENGTH,
                    32
                );
            }
            if !self.memory.write(srb, &bytes) {
                return Err(SimError::OutOfMemory { len: srb_len });
            }
            SrbKind::Extended {
                cdb_block,
                cdb_size,
            }
        } else {
            let mut cdb = [0; 16];
            cdb[..request.cdb.len()].copy_from_slice(&request.cdb);
            let block = abi::ScsiRequestBlock {
                length: size_of::<abi::ScsiRequestBlock>() as u16,
                function: abi::SRB_FUNCTION_EXECUTE_SCSI,
                path_id: request.path,
                target_id: request.target,
                lun: request.lun,
                queue_tag: request.queue_tag,
                queue_action: request.queue_action.unwrap_or(0),
                cdb_length: request.cdb.len() as u8,
                sense_info_buffer_length: request.sense_len,
                srb_flags: flags,
                data_transfer_length: transfer,
                time_out_value: request.timeout_seconds,
                data_buffer: data_address,
                sense_info_buffer: sense_address,
                srb_extension: srb_extension as u64,
                cdb,
                ..abi::ScsiRequestBlock::default()
            };
            if !self.memory.write(srb, block.as_bytes()) {
                return Err(SimError::OutOfMemory { len: srb_len });
            }
            SrbKind::Scsi
        };
        let _ = hw;
        let extension_region = (srb_extension != 0).then_some((srb_extension, srb_extension_size));
        let mappings = self.map_for_device(&[extension_region, data, sense])?;
        let timeout = self
            .options
            .timeout_scale
            .saturating_mul(request.timeout_seconds.max(1));
        let mut state = self.state();
        let lu_size = hw_lu_size(self);
        state
            .logical_units
            .entry((request.path, request.target, request.lun))
            .or_insert_with(|| vec![0_u128; lu_size.div_ceil(16).max(1)].into_boxed_slice());
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        state.outstanding.insert(
            srb,
            SrbRecord {
                ticket,
                kind,
                address: (request.path, request.target, request.lun),
                regions,
                data,
                direction: request.direction,
                sense,
                srb_extension: extension_region,
                mappings,
                deadline: Instant::now() + timeout,
                timeout,
                reset_deadline: None,
                scatter_gather: None,
                counted: false,
                beyond_transfer_limits: false,
                retry_expiry: None,
                not_before: None,
                processor: 0,
                guards,
            },
        );
        Ok((srb, ticket))
    }

    /// Builds an abort or reset SRB (no CDB, no data, no sense) in DMA memory and records it
    /// outstanding. An SRB_EX has its address block and no extended data; NextSrb names the
    /// request to abort.
    fn build_control_srb(&self, request: &Request) -> Result<(usize, u64), SimError> {
        let srb_extension_size = lock(&self.config).srb_extension_size as usize;
        let extended = self.srb_extended.load(Ordering::SeqCst);
        let next_srb = match request.next_srb {
            Some(victim) => self
                .state()
                .outstanding
                .iter()
                .find(|(_, record)| record.ticket == victim.0)
                .map_or(0, |(&srb, _)| srb as u64),
            None => 0,
        };
        let mut regions = Vec::new();
        let mut alloc = |len: usize| -> Result<usize, SimError> {
            let address = self
                .memory
                .alloc(len, 16)
                .ok_or(SimError::OutOfMemory { len })?;
            regions.push((address, len));
            Ok(address)
        };
        let srb_len = if extended {
            size_of::<abi::StorageRequestBlock>() + size_of::<abi::StorAddrBtl8>()
        } else {
            size_of::<abi::ScsiRequestBlock>()
        };
        let srb = alloc(srb_len)?;
        let srb_extension = if srb_extension_size > 0 {
            alloc(srb_extension_size)?
        } else {
            0
        };
        let bytes = if extended {
            let header = abi::StorageRequestBlock {
                time_out_value: request.timeout_seconds,
                address_offset: size_of::<abi::StorageRequestBlock>() as u32,
                num_srb_ex_data: 0,
                miniport_context: srb_extension as u64,
                next_srb,
                ..abi::StorageRequestBlock::new(srb_len, request.function)
            };
            let btl = abi::StorAddrBtl8::new(request.path, request.target, request.lun);
            let mut bytes = header.as_bytes().to_vec();
            bytes.extend_from_slice(btl.as_bytes());
            bytes
        } else {
            abi::ScsiRequestBlock {
                length: size_of::<abi::ScsiRequestBlock>() as u16,
                function: request.function,
                path_id: request.path,
                target_id: request.target,
                lun: request.lun,
                time_out_value: request.timeout_seconds,
                next_srb,
                srb_extension: srb_extension as u64,
                ..abi::ScsiRequestBlock::default()
            }
            .as_bytes()
            .to_vec()
        };
        if !self.memory.write(srb, &bytes) {
            return Err(SimError::OutOfMemory { len: srb_len });
        }
        let extension_region = (srb_extension != 0).then_some((srb_extension, srb_extension_size));
        let mappings = self.map_for_device(&[extension_region])?;
        let timeout = self
            .options
            .timeout_scale
            .saturating_mul(request.timeout_seconds.max(1));
        let mut state = self.state();
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        state.outstanding.insert(
            srb,
            SrbRecord {
                ticket,
                kind: SrbKind::Control { extended },
                address: (request.path, request.target, request.lun),
                regions,
                data: None,
                direction: DataDirection::None,
                sense: None,
                srb_extension: extension_region,
                mappings,
                deadline: Instant::now() + timeout,
                timeout,
                reset_deadline: None,
                scatter_gather: None,
                counted: false,
                beyond_transfer_limits: false,
                retry_expiry: None,
                not_before: None,
                processor: 0,
                guards: Vec::new(),
            },
        );
        Ok((srb, ticket))
    }

    /// Builds an SRB_FUNCTION_WMI request in DMA memory (from the WDK's SCSI_WMI_REQUEST_BLOCK
    /// and SRBEX_DATA_WMI field lists) and records it outstanding. The buffer is followed by a
    /// guard; DataPath points to a copy of the GUID, or is 0 (WMIREGISTER) without one.
    pub(crate) fn build_wmi_srb(&self, request: &WmiRequest) -> Result<(usize, u64), SimError> {
        if request.data_transfer_length as usize > request.buffer.len() {
            return Err(SimError::WmiLength {
                length: request.data_transfer_length,
                buffer: request.buffer.len(),
            });
        }
        let extended = self.srb_extended.load(Ordering::SeqCst);
        let header_len = size_of::<abi::StorageRequestBlock>();
        let wmi_block = header_len + size_of::<abi::StorAddrBtl8>();
        let srb_len = if extended {
            wmi_block + size_of::<abi::SrbExDataWmi>()
        } else {
            size_of::<abi::ScsiWmiRequestBlock>()
        };
        let mut memory = self.alloc_adapter_request(srb_len, &request.buffer)?;
        let (srb_extension, buffer) = (memory.srb_extension, memory.buffer.0);
        let data_path = match request.data_path {
            Some(guid) => {
                let address = memory.alloc(&*self.memory, guid.len(), 8)?;
                if !self.memory.write(address, &guid) {
                    return Err(SimError::OutOfMemory { len: guid.len() });
                }
                address as u64
            }
            None => 0,
        };
        let timeout_seconds = 10;
        let bytes = if extended {
            let header = abi::StorageRequestBlock {
                time_out_value: timeout_seconds,
                address_offset: header_len as u32,
                num_srb_ex_data: 1,
                data_transfer_length: request.data_transfer_length,
                data_buffer: buffer as u64,
                miniport_context: srb_extension as u64,
                srb_ex_data_offset: [wmi_block as u32],
                ..abi::StorageRequestBlock::new(srb_len, abi::SRB_FUNCTION_WMI)
            };
            let (path, target, lun) = request.address;
            let btl = abi::StorAddrBtl8::new(path, target, lun);
            let block = abi::SrbExDataWmi {
                data_type: abi::SRBEX_DATA_TYPE_WMI,
                length: abi::SRBEX_DATA_WMI_LENGTH,
                wmi_sub_function: request.sub_function,
                wmi_flags: request.flags,
                data_path,
                ..abi::SrbExDataWmi::default()
            };
            let mut bytes = Vec::with_capacity(srb_len);
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(btl.as_bytes());
            bytes.extend_from_slice(block.as_bytes());
            bytes
        } else {
            abi::ScsiWmiRequestBlock {
                length: size_of::<abi::ScsiWmiRequestBlock>() as u16,
                function: abi::SRB_FUNCTION_WMI,
                wmi_sub_function: request.sub_function,
                path_id: request.address.0,
                target_id: request.address.1,
                lun: request.address.2,
                wmi_flags: request.flags,
                data_transfer_length: request.data_transfer_length,
                time_out_value: timeout_seconds,
                data_buffer: buffer as u64,
                data_path,
                srb_extension: srb_extension as u64,
                ..abi::ScsiWmiRequestBlock::default()
            }
            .as_bytes()
            .to_vec()
        };
        self.submit_adapter_request(memory, &bytes, SrbKind::Wmi { extended }, timeout_seconds)
    }

    /// Builds an SRB_FUNCTION_IO_CONTROL request in DMA memory as storport.sys builds one for
    /// IOCTL_SCSI_MINIPORT (see [`IoctlRequest`]) and records it outstanding.
    pub(crate) fn build_ioctl_srb(&self, request: &IoctlRequest) -> Result<(usize, u64), SimError> {
        if request.data_transfer_length as usize > request.buffer.len() {
            return Err(SimError::IoctlLength {
                length: request.data_transfer_length,
                buffer: request.buffer.len(),
            });
        }
        let extended = self.srb_extended.load(Ordering::SeqCst);
        let header_len = size_of::<abi::StorageRequestBlock>();
        let srb_len = if extended {
            header_len + size_of::<abi::StorAddrBtl8>()
        } else {
            size_of::<abi::ScsiRequestBlock>()
        };
        // The buffer is the system buffer of a METHOD_BUFFERED IOCTL: pool memory, 8-aligned.
        let memory = self.alloc_adapter_request(srb_len, &request.buffer)?;
        let (srb_extension, buffer) = (memory.srb_extension, memory.buffer.0);
        let timeout_seconds = IoctlRequest::header(&request.buffer)
            .map_or(10, |header| header.timeout)
            .max(1);
        let flags = abi::SRB_FLAGS_DATA_IN | abi::SRB_FLAGS_NO_QUEUE_FREEZE;
        let bytes = if extended {
            let header = abi::StorageRequestBlock {
                srb_flags: flags,
                time_out_value: timeout_seconds,
                address_offset: header_len as u32,
                num_srb_ex_data: 0,
                data_transfer_length: request.data_transfer_length,
                data_buffer: buffer as u64,
                miniport_context: srb_extension as u64,
                ..abi::StorageRequestBlock::new(srb_len, abi::SRB_FUNCTION_IO_CONTROL)
            };
            // IOCTL_SCSI_MINIPORT addresses the adapter: path, target and LUN 0.
            let btl = abi::StorAddrBtl8::new(0, 0, 0);
            let mut bytes = Vec::with_capacity(srb_len);
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(btl.as_bytes());
            bytes
        } else {
            abi::ScsiRequestBlock {
                length: size_of::<abi::ScsiRequestBlock>() as u16,
                function: abi::SRB_FUNCTION_IO_CONTROL,
                srb_flags: flags,
                data_transfer_length: request.data_transfer_length,
                time_out_value: timeout_seconds,
                data_buffer: buffer as u64,
                srb_extension: srb_extension as u64,
                ..abi::ScsiRequestBlock::default()
            }
            .as_bytes()
            .to_vec()
        };
        self.submit_adapter_request(
            memory,
            &bytes,
            SrbKind::IoControl { extended },
            timeout_seconds,
        )
    }

    /// Allocates an adapter request's (WMI, IOCTL) SRB of `srb_len` bytes, its SRB extension
    /// and an 8-aligned buffer holding `buffer` followed by the [`super::WMI_GUARD_LEN`] guard.
    fn alloc_adapter_request(
        &self,
        srb_len: usize,
        buffer: &[u8],
    ) -> Result<AdapterRequestMemory, SimError> {
        let srb_extension_size = lock(&self.config).srb_extension_size as usize;
        let mut memory = AdapterRequestMemory {
            srb: 0,
            srb_extension: 0,
            buffer: (0, 0),
            regions: Vec::new(),
        };
        memory.srb = memory.alloc(&*self.memory, srb_len, 16)?;
        if srb_extension_size > 0 {
            memory.srb_extension = memory.alloc(&*self.memory, srb_extension_size, 16)?;
        }
        let buffer_len = buffer.len() + super::WMI_GUARD_LEN;
        let address = memory.alloc(&*self.memory, buffer_len, 8)?;
        let mut contents = buffer.to_vec();
        contents.resize(buffer_len, super::WMI_GUARD_BYTE);
        if !self.memory.write(address, &contents) {
            return Err(SimError::OutOfMemory { len: buffer_len });
        }
        memory.buffer = (address, buffer_len);
        Ok(memory)
    }

    /// Writes an adapter request's (WMI, IOCTL) SRB `bytes` and records it outstanding: its
    /// SRB, the memory behind it, its buffer (read back whole at completion) and its deadline.
    /// Returns the SRB's address and its ticket.
    fn submit_adapter_request(
        &self,
        memory: AdapterRequestMemory,
        bytes: &[u8],
        kind: SrbKind,
        timeout_seconds: u32,
    ) -> Result<(usize, u64), SimError> {
        let srb = memory.srb;
        if !self.memory.write(srb, bytes) {
            return Err(SimError::OutOfMemory { len: bytes.len() });
        }
        let timeout = self.options.timeout_scale.saturating_mul(timeout_seconds);
        let mut state = self.state();
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        state.outstanding.insert(
            srb,
            SrbRecord {
                ticket,
                kind,
                address: (0, 0, 0),
                regions: memory.regions,
                data: Some(memory.buffer),
                direction: DataDirection::In,
                sense: None,
                srb_extension: None,
                mappings: Vec::new(),
                deadline: Instant::now() + timeout,
                timeout,
                reset_deadline: None,
                scatter_gather: None,
                counted: false,
                beyond_transfer_limits: false,
                retry_expiry: None,
                not_before: None,
                processor: 0,
                guards: Vec::new(),
            },
        );
        Ok((srb, ticket))
    }

    /// StorPortNotification(RequestComplete): reads the SRB back and retires it.
    pub(crate) fn complete(&self, srb: usize) {
        let mut state = self.state();
        let Some(record) = state.outstanding.remove(&srb) else {
            let twice = state.quarantine.iter().any(|(address, _)| *address == srb);
            drop(state);
            self.violate(if twice {
                Violation::DoubleCompletion { srb }
            } else {
                Violation::CompletionOfUnknownSrb { srb }
            });
            return;
        };
        if record.counted
            && matches!(record.kind, SrbKind::Scsi | SrbKind::Extended { .. })
            && self.read_status(srb, record.kind)
                & !(abi::SRB_STATUS_AUTOSENSE_VALID | abi::SRB_STATUS_QUEUE_FROZEN)
                == abi::SRB_STATUS_BUSY
        {
            // StorPort's answer to BUSY: the request goes back to the front of its queue and is
            // sent again after a hold-off, until its own timeout runs out.
            state.port_queue.retire(record.address);
            state.port_queue.busy_retries += 1;
            let mut record = record;
            let now = Instant::now();
            record.retry_expiry.get_or_insert(now + record.timeout);
            record.not_before = Some(now + self.clock.real(BUSY_HOLD_OFF));
            record.counted = false;
            self.prepare_retry(srb, &record);
            state.port_queue.waiting.push_front(Waiting {
                processor: record.processor,
                srb,
                record,
            });
            let limits = PortLimits::of(&lock(&self.config));
            let ready = limits.admit_waiting(&mut state);
            drop(state);
            for (processor, srb) in ready {
                let _ = self.dispatch(processor, srb);
            }
            return;
        }
        if matches!(record.kind, SrbKind::Scsi | SrbKind::Extended { .. }) {
            if with_cpu(|cpu| cpu.processor) == record.processor {
                state.completed_on_submitter += 1;
            } else {
                state.completed_elsewhere += 1;
            }
        }
        let completion = self.read_back(srb, &record);
        let record_ticket = record.ticket;
        let overruns = self.overruns(&record, &completion);
        let accepted_beyond_limits =
            record.beyond_transfer_limits && completion.status() == abi::SRB_STATUS_SUCCESS;
        let ready = if record.counted {
            state.port_queue.retire(record.address);
            if let Some((left, until)) = state.port_queue.busy {
                state.port_queue.busy = (left > 1).then_some((left - 1, until));
            }
            let limits = PortLimits::of(&lock(&self.config));
            limits.admit_waiting(&mut state)
        } else {
            Vec::new()
        };
        self.file_completion(&mut state, srb, record, completion);
        drop(state);
        if accepted_beyond_limits {
            self.violate(Violation::AcceptedBeyondTransferLimits {
                ticket: record_ticket,
            });
        }
        for overrun in overruns {
            self.violate(overrun);
        }
        for (processor, srb) in ready {
            // A processor that stopped takes no more work: the request stays outstanding and
            // shutdown reports it.
            let _ = self.dispatch(processor, srb);
        }
        self.completion.notify_all();
    }

    /// What the miniport did beyond a completed SCSI request's buffers: a guard byte changed
    /// after its data or sense buffer, or a DataTransferLength above the one StorPort sent.
    fn overruns(&self, record: &SrbRecord, completion: &Completion) -> Vec<Violation> {
        let mut found = Vec::new();
        for &(guard, buffer) in &record.guards {
            let mut bytes = [0; super::BUFFER_GUARD_LEN];
            if !self.memory.read(guard, &mut bytes)
                || bytes.iter().any(|&b| b != super::BUFFER_GUARD_BYTE)
            {
                found.push(Violation::WroteBeyondBuffer {
                    ticket: record.ticket,
                    buffer,
                });
            }
        }
        let sent = record
            .data
            .map_or(0, |(_, len)| u32::try_from(len).unwrap_or(u32::MAX));
        if matches!(record.kind, SrbKind::Scsi | SrbKind::Extended { .. })
            && completion.data_transfer_length > sent
        {
            found.push(Violation::TransferLengthGrew {
                ticket: record.ticket,
                sent,
                completed: completion.data_transfer_length,
            });
        }
        found
    }

    /// Files `completion` of the request at `srb` for its waiter, and quarantines its memory
    /// (freed later, so that a late access by the miniport still lands in mapped memory).
    fn file_completion(
        &self,
        state: &mut State,
        srb: usize,
        record: SrbRecord,
        completion: Completion,
    ) {
        // StorPort's DMA mappings of the request end with it: a device access after this faults.
        for mapping in &record.mappings {
            self.memory.unmap(mapping.bus, mapping.len);
        }
        state.completed.insert(record.ticket, completion);
        state.completed_at.insert(record.ticket, Instant::now());
        state.quarantine.push_back((srb, record.regions));
        while state.quarantine.len() > QUARANTINE {
            if let Some((_, regions)) = state.quarantine.pop_front() {
                for (address, len) in regions {
                    self.memory.free(address, len);
                }
            }
        }
    }

    /// Completes to its waiter a request StorPort gave up on while it waited in the port
    /// queue (BUSY past its timeout): the miniport does not hold it.
    fn retire(&self, srb: usize, record: SrbRecord) {
        let completion = self.read_back(srb, &record);
        let mut state = self.state();
        self.file_completion(&mut state, srb, record, completion);
        drop(state);
        self.completion.notify_all();
    }

    /// StorPortBusy: no request goes to the miniport until `requests` of those it holds
    /// complete (or [`BUSY_LIMIT`] passes).
    pub(crate) fn busy(&self, requests: u32) {
        let mut state = self.state();
        state.port_queue.busy_calls += 1;
        state.port_queue.busy = Some((
            requests.max(1),
            Instant::now() + self.clock.real(BUSY_LIMIT),
        ));
    }

    /// StorPortReady: requests flow again.
    pub(crate) fn ready(&self) {
        let mut state = self.state();
        state.port_queue.busy = None;
        let limits = PortLimits::of(&lock(&self.config));
        let ready = limits.admit_waiting(&mut state);
        drop(state);
        for (processor, srb) in ready {
            let _ = self.dispatch(processor, srb);
        }
    }

    /// The SrbStatus the miniport left in the SCSI request at `srb`.
    fn read_status(&self, srb: usize, kind: SrbKind) -> u8 {
        let offset = match kind {
            SrbKind::Extended { .. } => std::mem::offset_of!(abi::StorageRequestBlock, srb_status),
            _ => std::mem::offset_of!(abi::ScsiRequestBlock, srb_status),
        };
        let mut status = [0u8];
        let _ = self.memory.read(srb + offset, &mut status);
        status[0]
    }

    /// Makes the SCSI request at `srb` new again before StorPort resends it: SrbStatus
    /// PENDING, ScsiStatus 0 and DataTransferLength the buffer's, whatever the BUSY answer left.
    fn prepare_retry(&self, srb: usize, record: &SrbRecord) {
        let length = record
            .data
            .map_or(0, |(_, len)| u32::try_from(len).unwrap_or(u32::MAX));
        if let SrbKind::Extended { cdb_block, .. } = record.kind {
            let _ = self.memory.write(
                srb + std::mem::offset_of!(abi::StorageRequestBlock, srb_status),
                &[abi::SRB_STATUS_PENDING],
            );
            let _ = self.memory.write(
                srb + std::mem::offset_of!(abi::StorageRequestBlock, data_transfer_length),
                &length.to_le_bytes(),
            );
            let _ = self.memory.write(
                srb + cdb_block + std::mem::offset_of!(abi::SrbExDataScsiCdb16, scsi_status),
                &[0],
            );
        } else {
            let _ = self.memory.write(
                srb + std::mem::offset_of!(abi::ScsiRequestBlock, srb_status),
                &[abi::SRB_STATUS_PENDING, 0],
            );
            let _ = self.memory.write(
                srb + std::mem::offset_of!(abi::ScsiRequestBlock, data_transfer_length),
                &length.to_le_bytes(),
            );
        }
    }

    fn read_back(&self, srb: usize, record: &SrbRecord) -> Completion {
        let (srb_status, scsi_status, transfer, sense_len) = match record.kind {
            SrbKind::Scsi => {
                let mut block = abi::ScsiRequestBlock::default();
                let _ = self.memory.read(srb, block.as_mut_bytes());
                (
                    block.srb_status,
                    block.scsi_status,
                    block.data_transfer_length,
                    block.sense_info_buffer_length,
                )
            }
            SrbKind::Extended {
                cdb_block,
                cdb_size: _,
            } => {
                let mut header = abi::StorageRequestBlock::default();
                let _ = self.memory.read(srb, header.as_mut_bytes());
                let mut cdb = abi::SrbExDataScsiCdb16::new_zeroed();
                let _ = self.memory.read(srb + cdb_block, cdb.as_mut_bytes());
                (
                    header.srb_status,
                    cdb.scsi_status,
                    header.data_transfer_length,
                    cdb.sense_info_buffer_length,
                )
            }
            SrbKind::Wmi { extended: false } | SrbKind::IoControl { extended: false } => {
                // SCSI_REQUEST_BLOCK and SCSI_WMI_REQUEST_BLOCK share these fields' offsets.
                let mut block = abi::ScsiWmiRequestBlock::default();
                let _ = self.memory.read(srb, block.as_mut_bytes());
                (block.srb_status, 0, block.data_transfer_length, 0)
            }
            SrbKind::Wmi { extended: true }
            | SrbKind::IoControl { extended: true }
            | SrbKind::Control { extended: true } => {
                let mut header = abi::StorageRequestBlock::default();
                let _ = self.memory.read(srb, header.as_mut_bytes());
                (header.srb_status, 0, header.data_transfer_length, 0)
            }
            SrbKind::Control { extended: false } => {
                let mut block = abi::ScsiRequestBlock::default();
                let _ = self.memory.read(srb, block.as_mut_bytes());
                (block.srb_status, 0, block.data_transfer_length, 0)
            }
        };
        let sense = match record.sense {
            Some((address, len)) if srb_status & abi::SRB_STATUS_AUTOSENSE_VALID != 0 => {
                let mut bytes = vec![0; usize::from(sense_len).min(len)];
                let _ = self.memory.read(address, &mut bytes);
                bytes
            }
            _ => Vec::new(),
        };
        let data = match (record.kind, record.direction, record.data) {
            // The whole WMI buffer, guard included, so overruns show.
            (SrbKind::Wmi { .. } | SrbKind::IoControl { .. }, _, Some((address, len))) => {
                let mut bytes = vec![0; len];
                let _ = self.memory.read(address, &mut bytes);
                bytes
            }
            (_, DataDirection::In | DataDirection::Unspecified, Some((address, len))) => {
                let mut bytes = vec![0; (transfer as usize).min(len)];
                let _ = self.memory.read(address, &mut bytes);
                bytes
            }
            _ => Vec::new(),
        };
        Completion {
            srb_status,
            scsi_status,
            sense,
            data_transfer_length: transfer,
            data,
        }
    }

    /// The work queue of simulated processor `processor`.
    ///
    /// # Errors
    /// [`SimError::NoProcessor`] if there is no such processor (or none has started).
    pub(crate) fn processor(&self, processor: u32) -> Result<&Sender<Work>, SimError> {
        self.processors
            .get()
            .and_then(|processors| processors.get(processor as usize))
            .ok_or(SimError::NoProcessor(processor))
    }

    /// What a bus scan covers, from the scenario's `scan_targets` and the miniport's reported
    /// `MaximumNumberOfTargets` and `MaximumNumberOfLogicalUnits`.
    pub(crate) fn scan_range(&self) -> super::pnp::ScanRange {
        let config = lock(&self.config);
        super::pnp::ScanRange {
            targets: self
                .options
                .scan_targets
                .min(config.maximum_number_of_targets),
            luns: config.maximum_number_of_logical_units,
        }
    }

    /// Builds the SRB for `request` and hands it to simulated processor `processor` (HwBuildIo
    /// and HwStartIo run there), or holds it in the port driver's queue while its unit's queue
    /// depth or `MaxNumberOfIO` is reached ([`PortQueue`]); returns its ticket.
    pub(crate) fn submit(&self, processor: u32, request: &Request) -> Result<u64, SimError> {
        self.processor(processor)?;
        let scsi = request.function == abi::SRB_FUNCTION_EXECUTE_SCSI;
        let limits = PortLimits::of(&lock(&self.config));
        let beyond = match limits.check_transfer(request) {
            Ok(()) => false,
            Err(_) if request.ignore_port_limits => true,
            Err(error) => return Err(error),
        };
        let (srb, ticket) = self.build_srb(request)?;
        if scsi {
            let mut state = self.state();
            let Some(mut record) = state.outstanding.remove(&srb) else {
                return Ok(ticket);
            };
            record.beyond_transfer_limits = beyond;
            record.processor = processor;
            if request.ignore_port_limits || limits.has_room(&state, record.address) {
                state.port_queue.admit(&mut record);
                state.outstanding.insert(srb, record);
            } else {
                state.port_queue.waiting.push_back(Waiting {
                    processor,
                    srb,
                    record,
                });
                return Ok(ticket);
            }
        }
        self.dispatch(processor, srb)?;
        Ok(ticket)
    }

    /// Hands the SRB at `srb` to simulated processor `processor`, or holds it while StorPort
    /// holds new requests (a power transition).
    fn dispatch(&self, processor: u32, srb: usize) -> Result<(), SimError> {
        let sender = self.processor(processor)?;
        let mut paused = self
            .paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = paused.as_mut() {
            held.push((processor, srb));
            return Ok(());
        }
        sender
            .send(Work::Submit(srb))
            .map_err(|_| SimError::NotStarted)
    }

    /// Submits and waits (10 s).
    pub(crate) fn execute(
        &self,
        processor: u32,
        request: &Request,
    ) -> Result<Completion, SimError> {
        let ticket = self.submit(processor, request)?;
        self.wait(ticket, Duration::from_secs(10))
    }

    /// Waits until `ticket` completes or `timeout` passes.
    pub(crate) fn wait(&self, ticket: u64, timeout: Duration) -> Result<Completion, SimError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if let Some(completion) = state.completed.remove(&ticket) {
                return Ok(completion);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SimError::WaitTimedOut { ticket });
            }
            state = self
                .completion
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Maps each of `ranges` for the device (with [`SimOptions::iommu`]; nothing without it).
    fn map_for_device(
        &self,
        ranges: &[Option<(usize, usize)>],
    ) -> Result<Vec<DmaMapping>, SimError> {
        if !self.options.iommu {
            return Ok(Vec::new());
        }
        ranges
            .iter()
            .flatten()
            .filter(|(_, len)| *len > 0)
            .map(|&(address, len)| {
                self.memory
                    .map(address, len)
                    .map(|bus| DmaMapping { address, len, bus })
                    .ok_or(SimError::OutOfMemory { len })
            })
            .collect()
    }

    /// Maps the uncached extension for the device, for the adapter's life (with
    /// [`SimOptions::iommu`]); `false` if it cannot be mapped.
    pub(crate) fn map_uncached(&self, address: usize, len: usize) -> bool {
        let Ok(mut mappings) = self.map_for_device(&[Some((address, len))]) else {
            return false;
        };
        self.state().uncached_mapping = mappings.pop();
        true
    }

    /// StorPortGetPhysicalAddress: the bus address of `address` and the bytes contiguous from
    /// there, `srb` being the SRB argument (if not NULL). `None` for memory StorPort never
    /// gave out; `(0, 0)` for memory it gave out but cannot translate.
    ///
    /// Without an IOMMU, bus addresses are physical ones and any DMA memory translates. With
    /// one ([`SimOptions::iommu`]), the uncached extension translates, and an SRB's extension,
    /// data and sense buffers translate only when that SRB is passed: StorPort finds the
    /// logical address of SRB memory through its SRB, and "if you pass NULL as the SRB when
    /// getting the physical address of the SrbExtension the API will just return zero if an
    /// IOMMU is active" (MicrosoftDocs/windows-driver-docs-ddi pull request 1640).
    pub(crate) fn physical_address(
        &self,
        srb: Option<usize>,
        address: usize,
    ) -> Option<(u64, u32)> {
        let state = self.state();
        let inside = |&(start, len): &(usize, usize)| address >= start && address < start + len;
        // The uncached extension is a common buffer, physically contiguous on every machine;
        // only pool memory (SRBs, their extensions and buffers) is fragmented.
        let uncached = state.uncached.filter(inside);
        let (bus, mut contiguous) = if self.options.iommu {
            let mapped = match uncached {
                Some(_) => state
                    .uncached_mapping
                    .and_then(|mapping| mapping.translate(address)),
                None => srb
                    .and_then(|srb| state.outstanding.get(&srb))
                    .and_then(|record| {
                        record
                            .mappings
                            .iter()
                            .find_map(|mapping| mapping.translate(address))
                    }),
            };
            let known = uncached.is_some()
                || state
                    .outstanding
                    .values()
                    .any(|record| record.regions.iter().any(inside));
            drop(state);
            match mapped {
                Some(found) => found,
                None if known => return Some((0, 0)),
                None => return None,
            }
        } else {
            let region = uncached.or_else(|| {
                state
                    .outstanding
                    .values()
                    .flat_map(|record| record.regions.iter().copied())
                    .find(inside)
            })?;
            drop(state);
            (address as u64, region.0 + region.1 - address)
        };
        if self.options.contiguity == Contiguity::PageBoundary && uncached.is_none() {
            contiguous = contiguous.min(4096 - address % 4096);
        }
        Some((bus, u32::try_from(contiguous).unwrap_or(u32::MAX)))
    }

    /// Whether `address` lies in the SRB extension of an SRB StorPort has given out.
    pub(crate) fn in_srb_extension(&self, address: usize) -> bool {
        self.state().outstanding.values().any(|record| {
            record
                .srb_extension
                .is_some_and(|(start, len)| address >= start && address < start + len)
        })
    }

    /// StorPortGetVirtualAddress: the address whose bus address is `bus`, if it is DMA memory
    /// StorPort gave out (with an IOMMU, mapped memory only).
    pub(crate) fn virtual_address(&self, bus: u64) -> Option<usize> {
        if !self.options.iommu {
            let address = usize::try_from(bus).ok()?;
            return self.physical_address(None, address).map(|_| address);
        }
        let state = self.state();
        let reverse = |mapping: &DmaMapping| {
            let offset = usize::try_from(bus.checked_sub(mapping.bus)?).ok()?;
            (offset < mapping.len).then_some(mapping.address + offset)
        };
        state
            .uncached_mapping
            .as_ref()
            .and_then(reverse)
            .or_else(|| {
                state
                    .outstanding
                    .values()
                    .flat_map(|record| record.mappings.iter())
                    .find_map(reverse)
            })
    }

    /// StorPortGetScatterGatherList: builds (once per SRB) the list for its data buffer.
    pub(crate) fn scatter_gather_list(&self, srb: usize) -> Option<usize> {
        let mut state = self.state();
        let merge = self.options.merge_adjacent_pages;
        let mut rng = state.rng;
        let record = state.outstanding.get_mut(&srb)?;
        if let Some(list) = record.scatter_gather {
            return Some(list);
        }
        let (address, len) = record.data?;
        // Under remapping the elements carry the data buffer's bus (logical) addresses.
        let bus_of = |at: usize| {
            record
                .mappings
                .iter()
                .find_map(|mapping| mapping.translate(at))
                .map_or(at as u64, |(bus, _)| bus)
        };
        let mut elements: Vec<abi::StorScatterGatherElement> = Vec::new();
        let mut at = address;
        let end = address + len;
        while at < end {
            let piece = (4096 - at % 4096).min(end - at);
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            match elements.last_mut() {
                Some(last) if merge && rng & 1 == 1 => last.length += piece as u32,
                _ => elements.push(abi::StorScatterGatherElement {
                    physical_address: bus_of(at),
                    length: piece as u32,
                    ..abi::StorScatterGatherElement::default()
                }),
            }
            at += piece;
        }
        let header = abi::StorScatterGatherListHeader {
            number_of_elements: elements.len() as u32,
            ..abi::StorScatterGatherListHeader::default()
        };
        let mut bytes = header.as_bytes().to_vec();
        for element in &elements {
            bytes.extend_from_slice(element.as_bytes());
        }
        let list = self.memory.alloc(bytes.len(), 16)?;
        if !self.memory.write(list, &bytes) {
            self.memory.free(list, bytes.len());
            return None;
        }
        record.regions.push((list, bytes.len()));
        record.scatter_gather = Some(list);
        state.rng = rng;
        Some(list)
    }

    /// StorPortCompleteRequest: completes every outstanding SRB matching the address with
    /// `status` (SP_UNTAGGED is a wildcard for target and LUN).
    pub(crate) fn complete_matching(&self, path: u8, target: u8, lun: u8, status: u8) {
        let matching: Vec<(usize, SrbKind)> = self
            .state()
            .outstanding
            .iter()
            .filter(|(_, record)| {
                let (p, t, l) = record.address;
                p == path
                    && (target == abi::SP_UNTAGGED || t == target)
                    && (lun == abi::SP_UNTAGGED || l == lun)
            })
            .map(|(&srb, record)| (srb, record.kind))
            .collect();
        for (srb, kind) in matching {
            let offset = match kind {
                SrbKind::Scsi
                | SrbKind::Wmi { extended: false }
                | SrbKind::IoControl { extended: false }
                | SrbKind::Control { extended: false } => {
                    std::mem::offset_of!(abi::ScsiRequestBlock, srb_status)
                }
                SrbKind::Extended { .. }
                | SrbKind::Wmi { extended: true }
                | SrbKind::IoControl { extended: true }
                | SrbKind::Control { extended: true } => {
                    std::mem::offset_of!(abi::StorageRequestBlock, srb_status)
                }
            };
            let _ = self.memory.write(srb + offset, &[status]);
            self.complete(srb);
        }
    }

    /// One pass of the port driver's timer: SRB timeouts -> HwResetBus, and HwTimer.
    pub(crate) fn watchdog_tick(&self) {
        let now = Instant::now();
        let grace = self
            .options
            .reset_grace
            .unwrap_or_else(|| self.options.timeout_scale.saturating_mul(2));
        let mut expired_paths = Vec::new();
        let mut state = self.state();
        for record in state.outstanding.values_mut() {
            match record.reset_deadline {
                None if now >= record.deadline => {
                    record.reset_deadline = Some(now + grace);
                    expired_paths.push((record.address.0, record.ticket));
                }
                Some(deadline) if now >= deadline => {
                    record.reset_deadline = Some(now + Duration::from_hours(1));
                    self.violate(Violation::NotCompletedAfterReset {
                        ticket: record.ticket,
                    });
                }
                _ => {}
            }
        }
        let timer = state.timer.filter(|&(_, due)| now >= due);
        if timer.is_some() {
            state.timer = None;
        }
        // Requests answered BUSY past their own timeout go back to the class driver BUSY;
        // the others are sent again once their hold-off (or StorPortBusy's) is over.
        let (expired, waiting): (VecDeque<Waiting>, VecDeque<Waiting>) =
            std::mem::take(&mut state.port_queue.waiting)
                .into_iter()
                .partition(|waiting| waiting.record.retry_expiry.is_some_and(|at| now >= at));
        state.port_queue.waiting = waiting;
        let limits = PortLimits::of(&lock(&self.config));
        let ready = limits.admit_waiting(&mut state);
        drop(state);
        for waiting in expired {
            self.log(format!(
                "ticket {}: BUSY past its timeout, failed to the class driver",
                waiting.record.ticket
            ));
            // The miniport's last answer, BUSY, is what the class driver gets.
            let _ = self.memory.write(
                waiting.srb
                    + match waiting.record.kind {
                        SrbKind::Extended { .. } => {
                            std::mem::offset_of!(abi::StorageRequestBlock, srb_status)
                        }
                        _ => std::mem::offset_of!(abi::ScsiRequestBlock, srb_status),
                    },
                &[abi::SRB_STATUS_BUSY],
            );
            self.retire(waiting.srb, waiting.record);
        }
        for (processor, srb) in ready {
            let _ = self.dispatch(processor, srb);
        }
        let extension = self.extension_ptr();
        if let Some((path, ticket)) = expired_paths.first().copied() {
            self.log(format!("ticket {ticket} timed out: HwResetBus({path})"));
            self.notify(Notification::TimeoutReset { path, ticket });
            if let Some(reset) = self
                .hw
                .get()
                .and_then(|hw| callback!(hw.hw_reset_bus as usize, HwUlongFn))
            {
                // SAFETY: HwResetBus gets the device extension and a path id.
                self.call_locked(LockId::StartIo, CallContext::ResetBus, || unsafe {
                    reset.call(extension, u32::from(path))
                });
            }
        }
        if let Some((routine, _)) = timer
            && let Some(routine) = callback!(routine, HwTimerFn)
        {
            // SAFETY: HwTimer was registered with RequestTimerCall and gets the extension.
            self.call_locked(LockId::StartIo, CallContext::Timer, || unsafe {
                routine.call(extension);
            });
        }
        self.run_pending_dpcs();
    }

    /// The register cookie range for `address`, as (bar, offset).
    pub(crate) fn register(&self, address: usize, width: u8) -> Option<(u8, u64)> {
        let found = self.bars.iter().find_map(|bar| {
            let offset = address.checked_sub(bar.cookie)? as u64;
            (offset + u64::from(width) <= bar.len).then_some((bar.bar, offset))
        });
        if found.is_none() {
            self.violate(Violation::RegisterOutsideBars { address });
        }
        found
    }

    /// StorPortGetDeviceBase: the cookie for a physical range inside a BAR.
    pub(crate) fn device_base(&self, physical: u64, len: u32, io_space: bool) -> Option<usize> {
        self.bars.iter().find_map(|bar| {
            let offset = physical.checked_sub(bar.physical)?;
            (offset + u64::from(len) <= bar.len && bar.io_space == io_space)
                .then(|| bar.cookie + offset as usize)
        })
    }

    /// PCI configuration space with the BARs showing the addresses the simulator assigned.
    pub(crate) fn config_read(&self, offset: u16, out: &mut [u8]) {
        self.pci.config_read(offset, out);
        for bar in &self.bars {
            let register = 0x10 + u16::from(bar.bar) * 4;
            let raw = config_dword(&*self.pci, register);
            let low = (bar.physical as u32 & !0xF) | (raw & 0xF);
            let mut dwords = vec![(register, low)];
            if !bar.io_space && (raw >> 1) & 3 == 2 {
                dwords.push((register + 4, (bar.physical >> 32) as u32));
            }
            for (at, value) in dwords {
                for (i, byte) in value.to_le_bytes().iter().enumerate() {
                    let position = usize::from(at) + i;
                    if let Some(index) = position.checked_sub(usize::from(offset))
                        && let Some(slot) = out.get_mut(index)
                    {
                        *slot = *byte;
                    }
                }
            }
        }
    }

    pub(crate) fn reservation_base(&self) -> usize {
        self.reservation.base
    }
}

fn hw_lu_size(machine: &Machine) -> usize {
    machine
        .hw
        .get()
        .map_or(0, |hw| hw.specific_lu_extension_size as usize)
}

fn read_dpc_routine(dpc: usize) -> usize {
    let at = dpc + std::mem::offset_of!(abi::StorDpc, deferred_routine);
    let pointer: *const u64 = std::ptr::with_exposed_provenance(at);
    // SAFETY: `dpc` is a STOR_DPC the miniport registered with StorPortInitializeDpc and keeps
    // alive (it lives in its device extension); DeferredRoutine was written there at
    // initialisation. An unaligned read tolerates any placement.
    unsafe { pointer.read_unaligned() as usize }
}

/// Reads a dword of configuration space through a device.
pub(crate) fn config_dword(pci: &dyn PciFunction, offset: u16) -> u32 {
    let mut bytes = [0; 4];
    pci.config_read(offset, &mut bytes);
    u32::from_le_bytes(bytes)
}

/// The MSI-X table size from the device's capability list, if it has an MSI-X capability.
fn msix_table_size(pci: &dyn PciFunction) -> Option<u32> {
    let status = config_dword(pci, 0x04) >> 16;
    if status & 0x10 == 0 {
        return None;
    }
    let mut pointer = (config_dword(pci, 0x34) & 0xFC) as u16;
    for _ in 0..48 {
        if pointer == 0 {
            return None;
        }
        let header = config_dword(pci, pointer);
        if header & 0xFF == 0x11 {
            return Some(((header >> 16) & 0x7FF) + 1);
        }
        pointer = ((header >> 8) & 0xFC) as u16;
    }
    None
}

/// The limits StorPort applies to the requests it sends, as the miniport reported them in
/// find-adapter.
pub(crate) struct PortLimits {
    max_transfer_length: u32,
    physical_breaks: u32,
    max_ios: u32,
    max_ios_per_lun: u32,
    initial_lun_queue_depth: u32,
}

impl PortLimits {
    pub(crate) fn of(config: &PortConfigurationInformation) -> Self {
        Self {
            max_transfer_length: config.maximum_transfer_length,
            physical_breaks: config.number_of_physical_breaks,
            max_ios: config.max_number_of_io.max(1),
            max_ios_per_lun: config.max_ios_per_lun.max(1),
            initial_lun_queue_depth: config.initial_lun_queue_depth.max(1),
        }
    }

    /// Whether StorPort would build `request`: its transfer within `MaximumTransferLength`
    /// and its buffer within `NumberOfPhysicalBreaks + 1` pages at the offset it has (the
    /// class driver splits anything larger, so the miniport never sees it).
    pub(crate) fn check_transfer(&self, request: &Request) -> Result<(), SimError> {
        let length = match request.direction {
            DataDirection::None => 0,
            DataDirection::In => request.data_in_len,
            DataDirection::Out => u32::try_from(request.data_out.len()).unwrap_or(u32::MAX),
            DataDirection::Unspecified => u32::try_from(request.data_out.len())
                .unwrap_or(u32::MAX)
                .max(request.data_in_len),
        };
        if request.function != abi::SRB_FUNCTION_EXECUTE_SCSI || length == 0 {
            return Ok(());
        }
        let offset = u64::from(request.data_offset % 4096);
        let pages = (offset + u64::from(length)).div_ceil(4096);
        let max_pages = u64::from(self.physical_breaks).saturating_add(1);
        if length > self.max_transfer_length || pages > max_pages {
            return Err(SimError::BeyondTransferLimits {
                length,
                pages: u32::try_from(pages).unwrap_or(u32::MAX),
                max_transfer_length: self.max_transfer_length,
                physical_breaks: self.physical_breaks,
            });
        }
        Ok(())
    }

    /// The queue depth of `unit`: what StorPortSetDeviceQueueDepth set, else
    /// `InitialLunQueueDepth`, never above `MaxIOsPerLun`.
    fn unit_depth(&self, state: &State, unit: (u8, u8, u8)) -> u32 {
        state
            .queue_depths
            .get(&unit)
            .copied()
            .unwrap_or(self.initial_lun_queue_depth)
            .min(self.max_ios_per_lun)
            .max(1)
    }

    /// Moves the waiting requests that now fit into the miniport's hands, oldest first (a unit
    /// at its depth does not hold back the others), and returns them to dispatch.
    fn admit_waiting(&self, state: &mut State) -> Vec<(u32, usize)> {
        let mut ready = Vec::new();
        let now = Instant::now();
        match state.port_queue.busy {
            Some((_, until)) if now < until => return ready,
            Some(_) => state.port_queue.busy = None,
            None => {}
        }
        let mut index = 0;
        while index < state.port_queue.waiting.len() && state.port_queue.total < self.max_ios {
            let waiting = &state.port_queue.waiting[index];
            let unit = waiting.record.address;
            if waiting.record.not_before.is_some_and(|at| now < at) || !self.has_room(state, unit) {
                index += 1;
                continue;
            }
            let Some(mut waiting) = state.port_queue.waiting.remove(index) else {
                break;
            };
            // StorPort starts an SRB's timer when it hands the SRB to the miniport.
            waiting.record.deadline = Instant::now() + waiting.record.timeout;
            state.port_queue.admit(&mut waiting.record);
            state.outstanding.insert(waiting.srb, waiting.record);
            ready.push((waiting.processor, waiting.srb));
        }
        ready
    }

    /// Whether the miniport may get one more SCSI request for `unit` now.
    fn has_room(&self, state: &State, unit: (u8, u8, u8)) -> bool {
        let queue = &state.port_queue;
        queue.total < self.max_ios
            && queue.per_unit.get(&unit).copied().unwrap_or(0) < self.unit_depth(state, unit)
    }
}

impl PortQueue {
    /// Counts `record` as held by the miniport.
    fn admit(&mut self, record: &mut SrbRecord) {
        record.counted = true;
        let held = self.per_unit.entry(record.address).or_default();
        *held += 1;
        let peak = self.peak_per_unit.entry(record.address).or_default();
        *peak = (*peak).max(*held);
        self.total += 1;
        self.peak_total = self.peak_total.max(self.total);
    }

    /// A counted request of `unit` completed.
    fn retire(&mut self, unit: (u8, u8, u8)) {
        if let Some(held) = self.per_unit.get_mut(&unit) {
            *held = held.saturating_sub(1);
        }
        self.total = self.total.saturating_sub(1);
    }
}
