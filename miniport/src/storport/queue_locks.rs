//! The StorPort spin locks that guard the virtqueues, and the only way to reach a queue's state
//! or the state every queue shares (the transport): a guard proving the right lock is held.
//!
//! Which lock guards which virtqueue depends on the [`InterruptMode`] HwInitialize chose: in
//! per-queue mode the spin lock of the queue's MSI-X message (the lock StorPort itself holds
//! while running that message's ISR), in shared mode the one message's lock, in line mode
//! StorPort's interrupt lock. StorPort's interrupt lock is also every message's lock at once
//! (with `InterruptSynchronizePerMessage`: "When a miniport needs to synchronize with all
//! messages, it can use one call to StorPortAcquireSpinLock which will acquire a lock for each
//! message in the proper order", Microsoft, StorPortAcquireMSISpinLock), so its holder may
//! reach every queue and mutate the shared state; a holder of one message lock may only read
//! the shared state.
//!
//! A guard comes either from acquiring the lock here ([`QueueLocks::lock`],
//! [`QueueLocks::lock_all`]) or from a [`HeldByStorPort`] proof, which only the trampolines
//! create (unsafely), for routines StorPort runs under a lock. Either way the guard checks that
//! its lock covers the queue asked for, so the safe layers above cannot reach a queue under
//! the wrong lock.

use core::borrow::Borrow;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use crate::storport::StorLockHandle;
use crate::storport::dma::Carved;
use crate::storport::port::DeviceExtension;

/// How interrupts reach the queues, decided in HwInitialize from the messages granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InterruptMode {
    /// One MSI-X message per virtqueue (message 0 for configuration changes): the normal case.
    PerQueue = 1,
    /// One MSI/MSI-X message for everything.
    Shared = 2,
    /// Line-based (INTx): the ISR reads the ISR status register.
    Line = 3,
}

impl InterruptMode {
    /// The MSI-X message of virtqueue `index` in per-queue mode (message 0 is configuration).
    #[must_use]
    pub const fn vector_of_queue(index: u16) -> u16 {
        index + 1
    }

    /// The mode for `messages` connected MSI/MSI-X messages and the request queues it serves
    /// of the `prepared` ones: a message per virtqueue takes 3 besides the request queues'
    /// (configuration, controlq, eventq) and at least one request queue; fewer messages are
    /// shared by everything; none means the line interrupt.
    #[must_use]
    pub fn choose(messages: u16, prepared: u16) -> (Self, u16) {
        if messages >= 4 {
            (Self::PerQueue, prepared.min(messages - 3))
        } else if messages >= 1 {
            (Self::Shared, prepared)
        } else {
            (Self::Line, prepared)
        }
    }

    /// The lock that guards virtqueue `index` in this mode.
    #[must_use]
    pub const fn lock_of(self, index: u16) -> Lock {
        match self {
            Self::PerQueue => Lock::Message(Self::vector_of_queue(index) as u32),
            Self::Shared => Lock::Message(0),
            Self::Line => Lock::Interrupt,
        }
    }

    /// The mode reduced to what acquiring a queue's lock needs, fixed from HwInitialize on
    /// ([`LockPlan`]).
    #[must_use]
    pub const fn plan(self) -> LockPlan {
        match self {
            Self::PerQueue => LockPlan(LockPlan::MESSAGE_PER_QUEUE),
            Self::Shared => LockPlan(LockPlan::ONE_MESSAGE),
            Self::Line => LockPlan(LockPlan::INTERRUPT),
        }
    }

    /// The mode stored as `raw` (per-queue for anything else: the value before HwInitialize).
    #[must_use]
    pub const fn from_raw(raw: u8) -> Self {
        match raw {
            2 => Self::Shared,
            3 => Self::Line,
            _ => Self::PerQueue,
        }
    }
}

/// Which lock guards virtqueue `index`, as one word decided once by the [`InterruptMode`], so
/// that taking a queue's lock (on every I/O) is one sign test, not a match on the mode: a mask
/// the queue's message (`index + 1`) is reduced by, all ones but the top bit in per-queue mode
/// (the message itself) and zero in shared mode (message 0), or the top bit alone for the
/// interrupt lock (line mode). Virtqueue indexes are 16-bit, so a message never reaches the
/// top bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockPlan(u32);

impl LockPlan {
    const MESSAGE_PER_QUEUE: u32 = !Self::INTERRUPT;
    const ONE_MESSAGE: u32 = 0;
    const INTERRUPT: u32 = 1 << 31;

    /// The lock that guards virtqueue `index`: the message lock, or `None` for the interrupt
    /// lock.
    #[must_use]
    #[inline]
    pub const fn message_of(self, index: u16) -> Option<u32> {
        if self.0 & Self::INTERRUPT != 0 {
            None
        } else {
            Some((index as u32 + 1) & self.0)
        }
    }

    /// [`Self::message_of`] as a [`Lock`].
    #[must_use]
    #[inline]
    pub const fn lock_of(self, index: u16) -> Lock {
        match self.message_of(index) {
            Some(message) => Lock::Message(message),
            None => Lock::Interrupt,
        }
    }
}

/// One of StorPort's spin locks that guard virtqueues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// The spin lock of an MSI/MSI-X message (the one StorPort holds around its ISR).
    Message(u32),
    /// StorPort's interrupt lock: every message's lock at once, and line mode's one lock.
    Interrupt,
}

impl Lock {
    /// Whether holding `self` gives exclusive access to what `other` guards.
    #[must_use]
    pub fn covers(self, other: Self) -> bool {
        self == Self::Interrupt || self == other
    }
}

/// Proof that StorPort holds a lock around the routine running now (an ISR for its message,
/// or the interrupt lock around HwInitialize, HwInterrupt and the stop/restart adapter
/// controls). Neither `Clone` nor `Copy`: a guard made from it borrows it mutably, so one
/// proof never gives two guards at once.
#[derive(Debug)]
pub struct HeldByStorPort {
    lock: Lock,
}

impl HeldByStorPort {
    /// The proof for the ISR of MSI message `message`.
    ///
    /// # Safety
    /// The caller runs inside HwMSInterruptRoutine for `message` (StorPort holds that
    /// message's lock for the whole call), makes one proof per call and does not keep it past
    /// the call.
    #[must_use]
    pub const unsafe fn message(message: u32) -> Self {
        Self {
            lock: Lock::Message(message),
        }
    }

    /// The proof for a routine StorPort runs holding its interrupt lock.
    ///
    /// # Safety
    /// The caller runs inside a routine StorPort calls with its interrupt lock held (the HW
    /// routine's documented contract), makes one proof per call and does not keep it past the
    /// call.
    #[must_use]
    pub const unsafe fn interrupt_lock() -> Self {
        Self {
            lock: Lock::Interrupt,
        }
    }

    /// The lock held.
    #[must_use]
    pub const fn lock(&self) -> Lock {
        self.lock
    }
}

/// The per-virtqueue states (`T`) and the state every queue shares (`S`, the transport), each
/// reached only through a guard of the lock that guards it.
#[derive(Debug)]
pub struct QueueLocks<T, S> {
    port: DeviceExtension,
    cells: Carved<UnsafeCell<Option<T>>>,
    shared: UnsafeCell<S>,
    /// [`InterruptMode`] as a byte (set in HwInitialize, under the interrupt lock).
    mode: AtomicU8,
    /// The mode's [`LockPlan`], set with it: what [`Self::lock`] reads.
    plan: AtomicU32,
    /// Lock handle for StorPort's interrupt lock; only its holder touches it.
    interrupt_lock: UnsafeCell<StorLockHandle>,
}

impl<T, S> QueueLocks<T, S> {
    /// The locks of `port` over `cells` (one per virtqueue, filled by the caller through
    /// [`Self::parts_mut`] before anyone can lock them) and `shared`, in per-queue mode until
    /// HwInitialize decides.
    #[must_use]
    pub fn new(port: DeviceExtension, cells: Carved<UnsafeCell<Option<T>>>, shared: S) -> Self {
        Self {
            port,
            cells,
            shared: UnsafeCell::new(shared),
            mode: AtomicU8::new(InterruptMode::PerQueue as u8),
            plan: AtomicU32::new(InterruptMode::PerQueue.plan().0),
            interrupt_lock: UnsafeCell::new(StorLockHandle::zeroed()),
        }
    }

    /// Every state and the shared state, to their owner (construction: nothing else can reach
    /// them yet).
    pub fn parts_mut(&mut self) -> (&mut [UnsafeCell<Option<T>>], &mut S) {
        (
            core::borrow::BorrowMut::borrow_mut(&mut self.cells),
            self.shared.get_mut(),
        )
    }

    /// The interrupt mode.
    #[must_use]
    #[inline]
    pub fn mode(&self) -> InterruptMode {
        InterruptMode::from_raw(self.mode.load(Ordering::Relaxed))
    }

    /// Whether the mode is [`InterruptMode::PerQueue`]: one compare of the stored byte, where
    /// decoding the whole mode ([`Self::mode`]) takes about 9 instructions on every interrupt.
    #[must_use]
    #[inline]
    pub fn is_per_queue(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == InterruptMode::PerQueue as u8
    }

    /// Sets the interrupt mode, which decides which lock guards each queue: only under every
    /// lock (HwInitialize, before any I/O).
    pub fn set_mode(&self, mode: InterruptMode, _every_lock: &mut AllLocked<'_, T, S>) {
        self.mode.store(mode as u8, Ordering::Relaxed);
        self.plan.store(mode.plan().0, Ordering::Relaxed);
    }

    /// The lock plan of the mode.
    #[inline]
    fn plan(&self) -> LockPlan {
        LockPlan(self.plan.load(Ordering::Relaxed))
    }

    /// Acquires the lock that guards virtqueue `index`.
    #[must_use]
    pub fn lock(&self, index: u16) -> Guard<'_, T, S> {
        // The plan decides the lock with one test (the hot path of StartIo and the DPC).
        let held = match self.plan().message_of(index) {
            Some(message) => self.acquire_message(message),
            None => self.acquire(Lock::Interrupt),
        };
        Guard {
            locks: self,
            cell: self.cell_of(index),
            held,
        }
    }

    /// A guard for virtqueue `index` under the lock StorPort holds for us, if that lock guards
    /// it.
    #[must_use]
    pub fn under<'a>(
        &'a self,
        proof: &'a mut HeldByStorPort,
        index: u16,
    ) -> Option<Guard<'a, T, S>> {
        proof
            .lock
            .covers(self.plan().lock_of(index))
            .then_some(Guard {
                locks: self,
                cell: self.cell_of(index),
                held: Held::BY_CALLER_HELD,
            })
    }

    /// Acquires every queue's lock: StorPort's interrupt lock.
    #[must_use]
    pub fn lock_all(&self) -> AllLocked<'_, T, S> {
        AllLocked {
            locks: self,
            held: self.acquire(Lock::Interrupt),
        }
    }

    /// Every queue's lock, which StorPort holds for us, if the proof is of its interrupt lock.
    #[must_use]
    pub fn all_under<'a>(&'a self, proof: &'a mut HeldByStorPort) -> Option<AllLocked<'a, T, S>> {
        (proof.lock == Lock::Interrupt).then_some(AllLocked {
            locks: self,
            held: Held::BY_CALLER_HELD,
        })
    }

    /// The shared state, to read, under the lock StorPort holds for us (any lock excludes the
    /// holder of every lock, the only one that mutates it).
    #[must_use]
    pub fn shared_under<'a>(&'a self, _proof: &'a HeldByStorPort) -> &'a S {
        // SAFETY: the shared state is mutated only through `AllLocked::shared_mut`, under the
        // interrupt lock, which is also every message's lock: while the proof's lock is held
        // no such mutation runs. Readers share `&S`.
        unsafe { &*self.shared.get() }
    }

    fn acquire_message(&self, message: u32) -> Held {
        Held {
            message,
            old_irql: self.port.acquire_msi_lock(message),
        }
    }

    fn acquire(&self, lock: Lock) -> Held {
        match lock {
            Lock::Message(message) => self.acquire_message(message),
            Lock::Interrupt => {
                // SAFETY: the handle lives in the adapter (fixed address) and is touched only
                // by the lock holder, which we are about to become.
                unsafe { self.port.acquire_interrupt_lock(self.interrupt_lock.get()) };
                Held {
                    message: Held::INTERRUPT,
                    old_irql: 0,
                }
            }
        }
    }

    /// [`Self::release`] as one call: what dropping a [`Guard`] runs, so that StartIo keeps
    /// two words of the guard live across its work instead of storing the whole guard for an
    /// out-of-line drop (`cargo xtask bench`). `port` (this adapter's) and the hold's parts
    /// arrive in the registers the release of a message lock passes them on in.
    #[inline(never)]
    fn release_out_of_line(&self, port: DeviceExtension, message: u32, old_irql: u32) {
        self.release_parts(port, message, old_irql);
    }

    #[inline]
    fn release(&self, held: Held) {
        self.release_parts(self.port, held.message, held.old_irql);
    }

    /// Releases the lock held as `message` and `old_irql` ([`Held`]) through `port` (this
    /// adapter's).
    #[expect(
        clippy::inline_always,
        reason = "the body of both releases; a call inside the out-of-line one would undo it"
    )]
    #[inline(always)]
    fn release_parts(&self, port: DeviceExtension, message: u32, old_irql: u32) {
        // One compare on the common path: a message lock is below both markers.
        if message < Held::BY_CALLER {
            port.release_msi_lock(message, old_irql);
        } else if message == Held::INTERRUPT {
            // SAFETY: only `acquire` makes the interrupt marker, after acquiring the interrupt
            // lock with this handle; the hold being released is that one.
            unsafe { port.release_interrupt_lock(self.interrupt_lock.get()) };
        }
    }

    /// The state of virtqueue `index`.
    ///
    /// # Safety
    /// The caller holds the lock that guards it and makes this the only reference to it until
    /// the returned one is dropped.
    #[expect(
        clippy::mut_from_ref,
        reason = "interior mutability guarded by the queue's lock"
    )]
    #[inline]
    unsafe fn cell(&self, index: u16) -> Option<&mut T> {
        // SAFETY: forwarded from the caller.
        self.cell_of(index)
            .and_then(|cell| unsafe { (*cell.get()).as_mut() })
    }

    /// The cell of virtqueue `index`, looked up once per guard.
    #[inline]
    fn cell_of(&self, index: u16) -> Option<&UnsafeCell<Option<T>>> {
        let table: &[UnsafeCell<Option<T>>] = self.cells.borrow();
        table.get(usize::from(index))
    }
}

/// How a guard's lock is held: the MSI message whose lock we acquired and the IRQL to restore,
/// or, in `message`, [`Held::INTERRUPT`] (we acquired StorPort's interrupt lock) or
/// [`Held::BY_CALLER`] (StorPort holds the lock for us, or the caller's [`AllLocked`] does).
/// One word to test on release rather than a tag beside the message: messages are far below
/// both markers (16-bit virtqueue indexes, see [`LockPlan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    message: u32,
    old_irql: u32,
}

impl Held {
    /// `message` of the interrupt lock, acquired.
    const INTERRUPT: u32 = u32::MAX;
    /// `message` of a lock the caller holds.
    const BY_CALLER: u32 = u32::MAX - 1;
    /// The hold of a lock the caller holds.
    const BY_CALLER_HELD: Self = Self {
        message: Self::BY_CALLER,
        old_irql: 0,
    };
}

/// Proof that the lock of one virtqueue is held; gives access to its state. Dropping it
/// releases the lock if it was acquired for it.
#[derive(Debug)]
pub struct Guard<'a, T, S> {
    locks: &'a QueueLocks<T, S>,
    /// The guarded cell (`None` for an index past the table).
    cell: Option<&'a UnsafeCell<Option<T>>>,
    held: Held,
}

impl<T, S> Guard<'_, T, S> {
    /// Releases the lock now, the release inlined here rather than called as dropping the
    /// guard does: for a caller with the registers to spare (the completion DPC, whose work
    /// is done by then).
    #[inline]
    pub fn unlock(self) {
        let guard = core::mem::ManuallyDrop::new(self);
        guard.locks.release(guard.held);
    }

    /// The virtqueue's state.
    #[inline]
    pub fn state(&mut self) -> Option<&mut T> {
        let cell = self.cell?;
        // SAFETY: this guard proves the queue's lock is held (acquired for it, StorPort's
        // checked to cover it, or every lock), and `&mut self` makes the returned reference
        // the only one derived from it.
        unsafe { (*cell.get()).as_mut() }
    }
}

impl<T, S> Drop for Guard<'_, T, S> {
    #[inline]
    fn drop(&mut self) {
        let locks = self.locks;
        locks.release_out_of_line(locks.port, self.held.message, self.held.old_irql);
    }
}

/// Every queue's lock (StorPort's interrupt lock); dropping it releases the lock if it was
/// acquired for it.
#[derive(Debug)]
pub struct AllLocked<'a, T, S> {
    locks: &'a QueueLocks<T, S>,
    held: Held,
}

impl<T, S> AllLocked<'_, T, S> {
    /// A guard for virtqueue `index`, under this lock.
    pub fn guard(&mut self, index: u16) -> Guard<'_, T, S> {
        Guard {
            locks: self.locks,
            cell: self.locks.cell_of(index),
            held: Held::BY_CALLER_HELD,
        }
    }

    /// The state of virtqueue `index`.
    pub fn state(&mut self, index: u16) -> Option<&mut T> {
        // SAFETY: every queue's lock is held, and `&mut self` makes the returned reference the
        // only one derived from it.
        unsafe { self.locks.cell(index) }
    }

    /// The shared state, to mutate.
    pub fn shared_mut(&mut self) -> &mut S {
        // SAFETY: every lock is held, so no guard and no proof of another context reads it;
        // `&mut self` makes the returned reference the only one derived from this hold.
        unsafe { &mut *self.locks.shared.get() }
    }

    /// The shared state and the state of virtqueue `index` at once (setting a queue up on the
    /// device).
    pub fn shared_and_state(&mut self, index: u16) -> (&mut S, Option<&mut T>) {
        // SAFETY: as in `shared_mut`: every lock is held and the reference borrows `self`.
        let shared = unsafe { &mut *self.locks.shared.get() };
        // SAFETY: as in `state`; the cell is memory distinct from the shared state.
        let state = unsafe { self.locks.cell(index) };
        (shared, state)
    }
}

impl<T, S> Drop for AllLocked<'_, T, S> {
    fn drop(&mut self) {
        self.locks.release(self.held);
    }
}

#[cfg(test)]
mod tests;
