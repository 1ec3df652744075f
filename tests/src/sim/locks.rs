//! Simulated processors' state (current processor, IRQL, call context, held locks) and the
//! StorPort spin locks as real locks with explicit acquire and release.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::machine::Machine;

/// PASSIVE_LEVEL.
pub const PASSIVE_LEVEL: u8 = 0;
/// DISPATCH_LEVEL.
pub const DISPATCH_LEVEL: u8 = 2;
/// The device IRQL the simulator gives every interrupt (any value above DISPATCH_LEVEL would do).
pub const DEVICE_LEVEL: u8 = 5;
/// HIGH_LEVEL (x64): where the crash-dump stack runs every miniport routine.
pub const HIGH_LEVEL: u8 = 15;

/// Which miniport routine (or port-driver phase) the current thread is executing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallContext {
    /// Not inside any miniport routine.
    None,
    /// DriverEntry.
    DriverEntry,
    /// HwFindAdapter.
    FindAdapter,
    /// HwInitialize.
    Initialize,
    /// The passive-initialization routine.
    PassiveInitialize,
    /// HwBuildIo.
    BuildIo,
    /// HwStartIo.
    StartIo,
    /// HwInterrupt or HwMessageSignaledInterruptRoutine.
    Interrupt,
    /// A DPC routine.
    Dpc,
    /// HwResetBus.
    ResetBus,
    /// HwAdapterControl.
    AdapterControl,
    /// HwTimer.
    Timer,
    /// HwStorStateChange (after a StorPortStateChangeDetected notification).
    StateChange,
    /// HwStorUnitControl.
    UnitControl,
}

/// One of the port driver's locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockId {
    /// The StartIo lock.
    StartIo,
    /// The interrupt lock.
    Interrupt,
    /// The lock of the STOR_DPC at this address.
    Dpc(usize),
    /// The lock of this MSI-X message.
    Message(u32),
}

impl LockId {
    /// The IRQL the lock raises to.
    #[must_use]
    pub fn irql(self) -> u8 {
        match self {
            Self::StartIo | Self::Dpc(_) => DISPATCH_LEVEL,
            Self::Interrupt | Self::Message(_) => DEVICE_LEVEL,
        }
    }
}

/// The per-thread state of a simulated processor.
pub struct CpuState {
    pub(crate) machine: Option<Arc<Machine>>,
    pub(crate) processor: u32,
    pub(crate) irql: u8,
    pub(crate) context: CallContext,
    pub(crate) held: Vec<LockId>,
    pub(crate) pending_dpcs: Vec<(usize, u64, u64)>,
    pub(crate) token: u64,
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static CPU: RefCell<CpuState> = RefCell::new(CpuState {
        machine: None,
        processor: 0,
        irql: PASSIVE_LEVEL,
        context: CallContext::None,
        held: Vec::new(),
        pending_dpcs: Vec::new(),
        token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
    });
}

/// Runs `f` with this thread's processor state.
pub fn with_cpu<R>(f: impl FnOnce(&mut CpuState) -> R) -> R {
    CPU.with(|cpu| f(&mut cpu.borrow_mut()))
}

/// The machine this thread belongs to, if any.
#[must_use]
pub fn current_machine() -> Option<Arc<Machine>> {
    with_cpu(|cpu| cpu.machine.clone())
}

/// Makes this thread simulated processor `processor` of `machine` until the guard drops.
pub struct Attach {
    previous: Option<Arc<Machine>>,
    previous_processor: u32,
}

impl Attach {
    /// Attaches the current thread.
    pub fn new(machine: &Arc<Machine>, processor: u32) -> Self {
        with_cpu(|cpu| {
            let previous = cpu.machine.replace(Arc::clone(machine));
            let previous_processor = std::mem::replace(&mut cpu.processor, processor);
            Self {
                previous,
                previous_processor,
            }
        })
    }
}

impl Drop for Attach {
    fn drop(&mut self) {
        with_cpu(|cpu| {
            cpu.machine = self.previous.take();
            cpu.processor = self.previous_processor;
        });
    }
}

/// Why a spin-lock operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockError {
    /// This thread already holds the lock (a real spin lock would deadlock).
    Recursive,
    /// This thread does not hold the lock it releases.
    NotHeld,
}

/// A spin lock owned by a thread token, so that a release by a non-owner is detected.
#[derive(Debug, Default)]
pub struct SpinLock {
    owner: AtomicU64,
}

impl SpinLock {
    /// Spins until the lock is free and takes it for `token`.
    ///
    /// # Errors
    /// [`LockError::Recursive`] if `token` already holds it; the lock is then left as it is.
    pub fn acquire(&self, token: u64) -> Result<(), LockError> {
        let mut spins = 0_u32;
        loop {
            // ORDERING: Acquire pairs with the Release in `release`, so everything the previous
            // owner wrote under the lock is visible to the new owner (a spin lock's contract).
            match self
                .owner
                .compare_exchange_weak(0, token, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(owner) if owner == token => return Err(LockError::Recursive),
                Err(_) => {
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(64) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
    }

    /// Releases the lock held by `token`.
    ///
    /// # Errors
    /// [`LockError::NotHeld`] if `token` does not hold it; nothing changes then.
    pub fn release(&self, token: u64) -> Result<(), LockError> {
        // ORDERING: Release pairs with the Acquire in `acquire` (see there).
        self.owner
            .compare_exchange(token, 0, Ordering::Release, Ordering::Relaxed)
            .map(|_| ())
            .map_err(|_| LockError::NotHeld)
    }

    /// Whether `token` holds the lock.
    #[must_use]
    pub fn is_held_by(&self, token: u64) -> bool {
        self.owner.load(Ordering::Relaxed) == token
    }

    /// Whether any thread holds the lock.
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.owner.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_lock_refuses_recursion_and_foreign_release() {
        let lock = SpinLock::default();
        lock.acquire(1).unwrap();
        assert_eq!(lock.acquire(1), Err(LockError::Recursive));
        assert_eq!(lock.release(2), Err(LockError::NotHeld));
        assert!(lock.is_held());
        assert!(lock.is_held_by(1));
        assert!(!lock.is_held_by(2));
        lock.release(1).unwrap();
        assert_eq!(lock.release(1), Err(LockError::NotHeld));
        assert!(!lock.is_held());
    }

    #[test]
    fn spin_lock_excludes_other_threads() {
        let lock = Arc::new(SpinLock::default());
        let counter = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4_u64)
            .map(|i| {
                let lock = Arc::clone(&lock);
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        lock.acquire(i + 10).unwrap();
                        // A non-atomic read-modify-write: lost updates would show if two threads
                        // were inside at once.
                        let value = counter.load(Ordering::Relaxed);
                        std::hint::spin_loop();
                        counter.store(value + 1, Ordering::Relaxed);
                        lock.release(i + 10).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 4000);
    }
}
