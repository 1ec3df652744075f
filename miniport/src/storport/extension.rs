//! The device extension as the home of the miniport's per-adapter state: find-adapter moves the
//! state in once, and every later HW routine finds it there, recognised by the magic word the
//! state keeps first.

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::storport::port::DeviceExtension;

/// The zeroed device extension find-adapter receives, sized and aligned for a `T`, exclusively
/// the miniport's for the call.
#[derive(Debug)]
pub struct FreshExtension<'a, T> {
    port: DeviceExtension,
    _call: PhantomData<&'a mut T>,
}

impl<'a, T> FreshExtension<'a, T> {
    /// The extension `port`, if it is aligned for a `T`.
    ///
    /// # Safety
    /// `port` is the zeroed device extension StorPort passed to HwFindAdapter, registered with
    /// at least `size_of::<T>()` bytes and exclusively ours for the lifetime `'a` of the call,
    /// and nothing has been built in it yet.
    #[must_use]
    pub unsafe fn new(port: DeviceExtension) -> Option<Self> {
        port.raw().cast::<T>().is_aligned().then_some(Self {
            port,
            _call: PhantomData,
        })
    }

    /// The extension, for StorPort calls.
    #[must_use]
    pub const fn port(&self) -> DeviceExtension {
        self.port
    }

    /// Moves `value` into the extension, where it stays for the adapter's life.
    pub fn place(self, value: T) -> &'a T {
        let pointer = self.port.raw().cast::<T>();
        // SAFETY: `new`'s contract: the extension holds a `T` (size, alignment checked), is
        // exclusively ours and holds nothing yet, so this write forms the only value there.
        unsafe { pointer.write(value) };
        // SAFETY: just written; from now on the value is only shared (`&T`), as every later HW
        // routine sees it.
        unsafe { &*pointer }
    }
}

/// The `T` find-adapter placed in `extension`, recognised by `magic` in its first word; `None`
/// before (the word is still zero).
///
/// # Safety
/// `extension` is the device extension StorPort passes to HW routines (at least
/// `size_of::<T>()` bytes, 8-aligned, zeroed before find-adapter), registered for a `T` that is
/// `#[repr(C)]` with a `u64` first field holding `magic` once placed ([`FreshExtension::place`])
/// and only then, and mutated only through interior mutability afterwards.
#[must_use]
pub unsafe fn placed<'a, T>(extension: *mut core::ffi::c_void, magic: u64) -> Option<&'a T> {
    let pointer = NonNull::new(extension.cast::<T>())?;
    // SAFETY: the extension is at least 8 bytes, 8-aligned and initialised (zeroed by StorPort
    // or placed by us); the magic is the first field of a repr(C) struct.
    let first = unsafe { pointer.cast::<u64>().read() };
    if first != magic {
        return None;
    }
    // SAFETY: the magic is written only with the whole `T`, placed by find-adapter, and the
    // value is only mutated through interior mutability afterwards.
    Some(unsafe { pointer.as_ref() })
}
