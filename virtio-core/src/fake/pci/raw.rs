//! [`RawConfigSpace`]: configuration space as a plain byte array, for tests and fuzzers that
//! hand the capability walk arbitrary bytes rather than a device built to the spec.

use std::sync::{Mutex, PoisonError};

use super::CONFIG_SPACE_SIZE;
use crate::hal::PciConfig;

/// Configuration space as 256 raw bytes. Reads past the end return all ones, as a PCI master
/// abort does; 16-bit writes land in the bytes (the bytes past the end are dropped). Nothing is
/// checked or recorded: use [`FakeVirtioPci`](super::FakeVirtioPci) to watch a driver.
#[derive(Debug)]
pub struct RawConfigSpace {
    bytes: Mutex<[u8; CONFIG_SPACE_SIZE]>,
}

impl RawConfigSpace {
    /// Configuration space holding `bytes`.
    #[must_use]
    pub const fn new(bytes: [u8; CONFIG_SPACE_SIZE]) -> Self {
        Self {
            bytes: Mutex::new(bytes),
        }
    }

    /// A copy of the bytes as they are now.
    #[must_use]
    pub fn bytes(&self) -> [u8; CONFIG_SPACE_SIZE] {
        *self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn byte(&self, offset: u16) -> u8 {
        self.bytes()
            .get(usize::from(offset))
            .copied()
            .unwrap_or(0xFF)
    }
}

impl PciConfig for RawConfigSpace {
    fn read8(&self, offset: u16) -> u8 {
        self.byte(offset)
    }
    fn read16(&self, offset: u16) -> u16 {
        u16::from_le_bytes([self.byte(offset), self.byte(offset.wrapping_add(1))])
    }
    fn read32(&self, offset: u16) -> u32 {
        u32::from_le_bytes([0, 1, 2, 3].map(|i| self.byte(offset.wrapping_add(i))))
    }
    fn write16(&self, offset: u16, value: u16) {
        let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            if let Some(slot) = bytes.get_mut(usize::from(offset) + i) {
                *slot = byte;
            }
        }
    }
}
