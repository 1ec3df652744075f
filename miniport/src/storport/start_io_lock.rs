//! State a miniport keeps for requests it answers itself in HwBuildIo, reached only under
//! StorPort's StartIo lock: the StorPort lock for work that must not run twice at once and
//! holds no queue (WMI answers, for one).

use core::cell::UnsafeCell;

use crate::storport::StorLockHandle;
use crate::storport::port::DeviceExtension;

/// A `T` reached only while StorPort's StartIo lock is held.
#[derive(Debug)]
pub struct StartIoLocked<T> {
    port: DeviceExtension,
    /// The lock handle; only the lock holder touches it.
    handle: UnsafeCell<StorLockHandle>,
    value: UnsafeCell<T>,
}

impl<T> StartIoLocked<T> {
    /// `value`, guarded by the StartIo lock of `port`.
    #[must_use]
    pub const fn new(port: DeviceExtension, value: T) -> Self {
        Self {
            port,
            handle: UnsafeCell::new(StorLockHandle::zeroed()),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with the value to itself, holding the StartIo lock. Only from a routine that
    /// holds no StorPort lock (HwBuildIo): the lock is not reentrant, and a caller already
    /// holding it would spin forever.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the handle lives in the adapter (fixed address) and is touched only by the
        // lock holder, which we are about to become; the caller holds no StorPort lock.
        unsafe { self.port.acquire_start_io_lock(self.handle.get()) };
        let _held = Held(self);
        // SAFETY: the StartIo lock is held until `_held` drops, after `f` returns, and every
        // access to the value goes through this function: this is the only reference to it.
        f(unsafe { &mut *self.value.get() })
    }
}

/// Releases the StartIo lock on drop.
struct Held<'a, T>(&'a StartIoLocked<T>);

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        // SAFETY: `with` acquired the lock with this handle.
        unsafe { self.0.port.release_start_io_lock(self.0.handle.get()) };
    }
}
