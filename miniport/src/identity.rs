//! The adapter's identity (`UniqueAdapterId`, and from it `SerialNumber` and the SAS
//! addresses): a 64-bit identifier created once per device instance and kept in the device's
//! hardware key, `Enum\<instance>\Device Parameters\RvscsiAdapterId` (REG_BINARY, 8 bytes).
//!
//! **Why there.** A virtio-scsi device carries no identity of its own (no serial, no WWN), so
//! the miniport must make one. Derived from where the function sits (PCI bus/slot, a BAR),
//! it is the same on every VM cloned from one template, and changes when a BAR moves. Created
//! at random and stored, it is stable across boots, and its scope is the store's:
//! - the device's hardware key (StorPortRegistryWriteAdapterKey) belongs to the device
//!   instance, and Windows' supported way of cloning an installation, sysprep's generalize
//!   pass, removes device instances by default (`PersistAllDeviceInstalls` false), so each
//!   clone creates its own identifier on its first boot;
//! - the service's `Parameters\Device<n>` key (StorPortRegistryWrite) survives generalize, so
//!   clones would share it; and `<n>` is the port number, which follows enumeration order.
//!
//! A disk copied without generalize (unsupported for domain members and cluster nodes, whose
//! machine SIDs must differ too) keeps the template's identifier; deleting the value gives the
//! adapter a new one at its next start.
//!
//! **Creating one.** The identifier mixes what differs between machines and starts: the system
//! time (100 ns units), the device extension's address (kernel address-space randomisation),
//! the PCI location and the first memory BAR, through the `SplitMix64` finaliser. Zero is never
//! used (it reads as "unset").
//!
//! **Dump mode** reads no registry: the crash-dump stack answers no WMI request, so the identity
//! is not used there and the PCI-derived fallback ([`crate::control::wmi_provider::unique_adapter_id`]) stands.
#![forbid(unsafe_code)]

use core::ffi::CStr;

/// The value name in the device's hardware key.
pub const ADAPTER_ID_VALUE: &CStr = c"RvscsiAdapterId";

/// The device's hardware key, as StorPort lets a miniport read and write it.
pub trait AdapterKey {
    /// The 8-byte REG_BINARY `name`, if present with exactly 8 bytes.
    fn read_binary8(&mut self, name: &'static CStr) -> Option<[u8; 8]>;
    /// Writes the 8-byte REG_BINARY `name`; whether StorPort stored it.
    fn write_binary8(&mut self, name: &'static CStr, value: &[u8; 8]) -> bool;
}

/// Where this start's identifier came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read from the hardware key.
    Stored,
    /// Created now and written to the hardware key.
    Created,
    /// Created now; the write failed, so the next start creates another.
    Unsaved,
}

/// What differs between machines and starts, mixed into a new identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entropy {
    /// The system time (100 ns units since 1601).
    pub system_time: u64,
    /// The device extension's address.
    pub extension_address: u64,
    /// `(bus << 16) | slot` from ConfigInfo.
    pub pci_location: u64,
    /// The first memory BAR's address, 0 if none.
    pub memory_bar: u64,
}

/// `SplitMix64`'s output function (Steele, Lea, Flood, OOPSLA 2014): a bijective mix.
const fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A new identifier from `entropy`: never zero.
#[must_use]
pub const fn create(entropy: Entropy) -> u64 {
    let mut mixed = splitmix64(entropy.system_time);
    mixed = splitmix64(mixed ^ entropy.extension_address);
    mixed = splitmix64(mixed ^ entropy.pci_location);
    mixed = splitmix64(mixed ^ entropy.memory_bar);
    if mixed == 0 { 1 } else { mixed }
}

/// This adapter's identifier: the stored one if the key has a usable value (8 bytes, not
/// zero), else a new one from `entropy`, written back for the next start.
pub fn adapter_identity(key: &mut impl AdapterKey, entropy: Entropy) -> (u64, Origin) {
    if let Some(stored) = key.read_binary8(ADAPTER_ID_VALUE) {
        let id = u64::from_le_bytes(stored);
        if id != 0 {
            return (id, Origin::Stored);
        }
    }
    let id = create(entropy);
    let origin = if key.write_binary8(ADAPTER_ID_VALUE, &id.to_le_bytes()) {
        Origin::Created
    } else {
        Origin::Unsaved
    };
    (id, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hardware key in memory; `writable` false plays a StorPort that refuses the write.
    struct MapKey {
        value: Option<Vec<u8>>,
        writable: bool,
        writes: usize,
    }

    impl AdapterKey for MapKey {
        fn read_binary8(&mut self, name: &'static CStr) -> Option<[u8; 8]> {
            assert_eq!(name, ADAPTER_ID_VALUE);
            self.value.as_deref()?.try_into().ok()
        }

        fn write_binary8(&mut self, name: &'static CStr, value: &[u8; 8]) -> bool {
            assert_eq!(name, ADAPTER_ID_VALUE);
            self.writes += 1;
            if self.writable {
                self.value = Some(value.to_vec());
            }
            self.writable
        }
    }

    const ENTROPY: Entropy = Entropy {
        system_time: 133_000_000_000_000_000,
        extension_address: 0xFFFF_8000_1234_5000,
        pci_location: 3,
        memory_bar: 0xFE00_0000,
    };

    #[test]
    fn created_once_then_read_back_on_every_start() {
        let mut key = MapKey {
            value: None,
            writable: true,
            writes: 0,
        };
        let (first, origin) = adapter_identity(&mut key, ENTROPY);
        assert_eq!(origin, Origin::Created);
        assert_ne!(first, 0);
        // The next start: another time, another extension address, a moved BAR; same id.
        let later = Entropy {
            system_time: ENTROPY.system_time + 10_000_000,
            extension_address: 0xFFFF_8000_9999_0000,
            memory_bar: 0xFD00_0000,
            ..ENTROPY
        };
        assert_eq!(adapter_identity(&mut key, later), (first, Origin::Stored));
        assert_eq!(key.writes, 1);
    }

    #[test]
    fn the_same_slot_on_two_machines_gets_two_identifiers() {
        // Clones of one template: same PCI location and BAR, started at other times with
        // other extension addresses.
        let other = Entropy {
            system_time: ENTROPY.system_time + 1,
            ..ENTROPY
        };
        assert_ne!(create(ENTROPY), create(other));
        let relocated = Entropy {
            extension_address: ENTROPY.extension_address + 0x1000,
            ..ENTROPY
        };
        assert_ne!(create(ENTROPY), create(relocated));
    }

    #[test]
    fn an_unusable_value_is_replaced_and_a_refused_write_is_reported() {
        for value in [vec![0u8; 8], vec![1, 2, 3], vec![9; 9]] {
            let mut key = MapKey {
                value: Some(value.clone()),
                writable: true,
                writes: 0,
            };
            let (id, origin) = adapter_identity(&mut key, ENTROPY);
            assert_eq!(
                (id, origin),
                (create(ENTROPY), Origin::Created),
                "{value:?}"
            );
            assert_eq!(key.value, Some(id.to_le_bytes().to_vec()));
        }
        let mut read_only = MapKey {
            value: None,
            writable: false,
            writes: 0,
        };
        assert_eq!(
            adapter_identity(&mut read_only, ENTROPY),
            (create(ENTROPY), Origin::Unsaved)
        );
    }
}
