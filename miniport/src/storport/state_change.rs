//! `StorPortStateChangeDetected` for one logical unit at a time: the `STOR_ADDR_BTL8` StorPort
//! reads until it calls back, kept in the adapter, and the flag that says it is in use.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, Ordering};

use crate::storport::port::DeviceExtension;
use crate::storport::{
    HwStateChange, STATE_CHANGE_LUN, STOR_ADDR_BTL8_ADDRESS_LENGTH, STOR_ADDRESS_TYPE_BTL8,
    STOR_STATUS_SUCCESS, StorAddrBtl8,
};

/// A `STOR_ADDR_BTL8` made of atomics. StorPort reads it as the plain structure from the
/// `StorPortStateChangeDetected` call until it calls back; the miniport writes it only between
/// two notifications (the `busy` flag of [`UnitStateChange`] says which), so the two never overlap.
#[repr(C, align(8))]
#[derive(Debug, Default)]
struct SharedBtl8 {
    address_type: AtomicU16,
    port: AtomicU16,
    address_length: AtomicU32,
    path: AtomicU8,
    target: AtomicU8,
    lun: AtomicU8,
    reserved: AtomicU8,
}
const _: () = assert!(size_of::<SharedBtl8>() == size_of::<StorAddrBtl8>());
const _: () = assert!(align_of::<SharedBtl8>() == align_of::<StorAddrBtl8>());
const _: () = assert!(
    core::mem::offset_of!(SharedBtl8, address_length)
        == core::mem::offset_of!(StorAddrBtl8, address_length)
);
const _: () = assert!(
    core::mem::offset_of!(SharedBtl8, target) == core::mem::offset_of!(StorAddrBtl8, target)
);
const _: () =
    assert!(core::mem::offset_of!(SharedBtl8, lun) == core::mem::offset_of!(StorAddrBtl8, lun));

/// What became of a state-change notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notified {
    /// StorPort took it and will call back.
    Sent,
    /// Another notification is being processed; nothing was sent.
    Busy,
    /// StorPort refused it with this `STOR_STATUS_*` (an older StorPort answers
    /// NOT_IMPLEMENTED); no callback comes.
    Refused(u32),
}

/// The one unit state-change notification an adapter may have outstanding.
#[derive(Debug, Default)]
pub struct UnitStateChange {
    busy: AtomicBool,
    address: SharedBtl8,
}

impl UnitStateChange {
    /// Tells StorPort that `target`/`lun` changed, so it re-enumerates the unit and then calls
    /// `callback` (a routine that ignores its context, which is null), unless a notification
    /// is outstanding.
    pub fn notify(
        &self,
        port: DeviceExtension,
        target: u8,
        lun: u8,
        callback: HwStateChange,
    ) -> Notified {
        // ORDERING: Acquire pairs with the Release in `done`: StorPort has finished reading
        // the address before it is written again below.
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Notified::Busy;
        }
        let address = &self.address;
        // ORDERING: relaxed stores; the StorPort call below is the publication (a call into
        // another driver is a compiler and CPU ordering point for the data it is handed).
        address
            .address_type
            .store(STOR_ADDRESS_TYPE_BTL8, Ordering::Relaxed);
        address.port.store(0, Ordering::Relaxed);
        address
            .address_length
            .store(STOR_ADDR_BTL8_ADDRESS_LENGTH, Ordering::Relaxed);
        address.path.store(0, Ordering::Relaxed);
        address.target.store(target, Ordering::Relaxed);
        address.lun.store(lun, Ordering::Relaxed);
        address.reserved.store(0, Ordering::Relaxed);
        let pointer = NonNull::from(address).cast::<StorAddrBtl8>();
        // SAFETY: the address lives in the adapter (the device extension, for the adapter's
        // life) and is not written again until `done` clears the busy flag, which only the
        // callback (or the refusal below) does; the callback is a static function that ignores
        // its (null) context.
        let status = unsafe {
            port.state_change_detected(STATE_CHANGE_LUN, pointer, callback, core::ptr::null_mut())
        };
        if status == STOR_STATUS_SUCCESS {
            Notified::Sent
        } else {
            // No callback comes for a refused notification.
            self.done();
            Notified::Refused(status)
        }
    }

    /// StorPort finished processing the notification (HwStorStateChange), or refused it.
    pub fn done(&self) {
        // ORDERING: Release pairs with the Acquire in `notify`.
        self.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_shared_address_is_laid_out_as_stor_addr_btl8() {
        let address = SharedBtl8::default();
        address.address_type.store(1, Ordering::Relaxed);
        address.address_length.store(4, Ordering::Relaxed);
        address.target.store(9, Ordering::Relaxed);
        address.lun.store(3, Ordering::Relaxed);
        let pointer = NonNull::from(&address).cast::<StorAddrBtl8>();
        // SAFETY: the asserted layout is StorAddrBtl8's; reading it while nothing writes is
        // what StorPort does.
        let read = unsafe { pointer.read() };
        assert_eq!(
            (read.r#type, read.address_length, read.target, read.lun),
            (1, 4, 9, 3)
        );
    }
}
