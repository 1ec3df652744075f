//! The device-specific configuration structure (virtio 1.x sections 2.5 and 4.1.4.6):
//! bounds-checked, naturally aligned reads made consistent by `config_generation`, and the few
//! writes virtio-scsi allows.

use super::{PciTransport, Region, TransportError, VIRTIO_PCI_CAP_DEVICE_CFG};
use crate::hal::RegisterIo;

/// Number of times [`PciTransport::read_device_config_with`] re-reads while
/// `config_generation` keeps changing before it reports [`TransportError::ConfigGenerationUnstable`].
pub const CONFIG_GENERATION_ATTEMPTS: u32 = 64;

/// Bounds-checked access to the device-specific configuration, handed to the closure of
/// [`PciTransport::read_device_config_with`]. Each read uses the access width of the field
/// (section 4.1.3.1) and must be naturally aligned (64-bit fields: 4-aligned, read as two
/// 32-bit halves, low first).
#[derive(Debug)]
pub struct DeviceConfig<'a, R> {
    regs: &'a R,
    region: Region,
}

impl<R: RegisterIo> DeviceConfig<'_, R> {
    /// Length of the device configuration structure.
    #[must_use]
    pub const fn len(&self) -> u32 {
        self.region.length
    }

    /// Whether the structure is empty.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.region.length == 0
    }

    /// Checks `offset .. offset + width` against the structure and the field alignment, and
    /// returns the BAR offset.
    fn check(&self, offset: u32, width: u32, align: u32) -> Result<u64, TransportError> {
        if !offset.is_multiple_of(align) {
            return Err(TransportError::DeviceConfigMisaligned { offset });
        }
        if u64::from(offset) + u64::from(width) > u64::from(self.region.length) {
            return Err(TransportError::DeviceConfigOutOfRange { offset, len: width });
        }
        Ok(self.region.at(u64::from(offset)))
    }

    /// Reads an 8-bit field.
    ///
    /// # Errors
    /// [`TransportError::DeviceConfigOutOfRange`] outside the structure.
    pub fn read_u8(&self, offset: u32) -> Result<u8, TransportError> {
        let at = self.check(offset, 1, 1)?;
        Ok(self.regs.read8(self.region.bar, at))
    }

    /// Reads a 16-bit field.
    ///
    /// # Errors
    /// Out of range or not 2-aligned.
    pub fn read_u16(&self, offset: u32) -> Result<u16, TransportError> {
        let at = self.check(offset, 2, 2)?;
        Ok(self.regs.read16(self.region.bar, at))
    }

    /// Reads a 32-bit field.
    ///
    /// # Errors
    /// Out of range or not 4-aligned.
    pub fn read_u32(&self, offset: u32) -> Result<u32, TransportError> {
        let at = self.check(offset, 4, 4)?;
        Ok(self.regs.read32(self.region.bar, at))
    }

    /// Reads a 64-bit field as two 32-bit halves, low first. Not atomic: call it inside
    /// [`PciTransport::read_device_config_with`], whose generation check makes it consistent.
    ///
    /// # Errors
    /// Out of range or not 4-aligned.
    pub fn read_u64(&self, offset: u32) -> Result<u64, TransportError> {
        let at = self.check(offset, 8, 4)?;
        let low = self.regs.read32(self.region.bar, at);
        let high = self.regs.read32(self.region.bar, at + 4);
        Ok(u64::from(low) | (u64::from(high) << 32))
    }
}

impl<R: RegisterIo> PciTransport<R> {
    fn device_config(&self) -> Result<DeviceConfig<'_, R>, TransportError> {
        let region = self
            .layout
            .device
            .ok_or(TransportError::MissingCapability(VIRTIO_PCI_CAP_DEVICE_CFG))?;
        Ok(DeviceConfig {
            regs: &self.regs,
            region,
        })
    }

    /// Reads device configuration fields consistently: runs `read` until `config_generation`
    /// is the same before and after (section 2.5.1), at most [`CONFIG_GENERATION_ATTEMPTS`]
    /// times. `read` may run several times, so it should only read.
    ///
    /// # Errors
    /// [`TransportError::MissingCapability`] without a device configuration structure,
    /// [`TransportError::ConfigGenerationUnstable`], or the first error `read` returns.
    pub fn read_device_config_with<T>(
        &self,
        mut read: impl FnMut(&DeviceConfig<'_, R>) -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let config = self.device_config()?;
        for _ in 0..CONFIG_GENERATION_ATTEMPTS {
            let before = self.config_generation();
            let value = read(&config)?;
            if self.config_generation() == before {
                return Ok(value);
            }
        }
        Err(TransportError::ConfigGenerationUnstable)
    }

    /// Reads `out.len()` bytes of device configuration at `offset`, consistently (see
    /// [`PciTransport::read_device_config_with`]). Each naturally aligned 4-byte piece is read
    /// with a 32-bit access, then 16-bit, then 8-bit: right for a range of 32-bit fields or of
    /// fields of one width; read mixed narrower fields with `read_device_config_with`.
    ///
    /// # Errors
    /// [`TransportError::DeviceConfigOutOfRange`], [`TransportError::MissingCapability`] or
    /// [`TransportError::ConfigGenerationUnstable`].
    pub fn read_device_config(&self, offset: u32, out: &mut [u8]) -> Result<(), TransportError> {
        let length = self.device_config()?.len();
        let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
        if u64::from(offset) + u64::from(len) > u64::from(length) {
            return Err(TransportError::DeviceConfigOutOfRange { offset, len });
        }
        self.read_device_config_with(|config| {
            let mut position = 0usize;
            while position < out.len() {
                // In range: position < out.len() <= u32::MAX, checked above.
                let at = offset + position as u32;
                let remaining = out.len() - position;
                let bytes: ([u8; 4], usize) = if at.is_multiple_of(4) && remaining >= 4 {
                    (config.read_u32(at)?.to_le_bytes(), 4)
                } else if at.is_multiple_of(2) && remaining >= 2 {
                    let [a, b] = config.read_u16(at)?.to_le_bytes();
                    ([a, b, 0, 0], 2)
                } else {
                    ([config.read_u8(at)?, 0, 0, 0], 1)
                };
                let (value, width) = bytes;
                for (dst, src) in out
                    .iter_mut()
                    .skip(position)
                    .zip(value.into_iter().take(width))
                {
                    *dst = src;
                }
                position += width;
            }
            Ok(())
        })
    }

    fn device_config_write_offset(
        &self,
        offset: u32,
        width: u32,
    ) -> Result<(u8, u64), TransportError> {
        self.require_configuring()?;
        let config = self.device_config()?;
        let at = config.check(offset, width, width)?;
        Ok((config.region.bar, at))
    }

    /// Writes a 32-bit device configuration field (for virtio-scsi: `sense_size`, `cdb_size`).
    /// Allowed only after `FEATURES_OK` (section 3.1.1 step 4 forbids writes during negotiation).
    ///
    /// # Errors
    /// [`TransportError::InvalidState`], out of range, misaligned, or no device configuration.
    pub fn write_device_config_u32(
        &mut self,
        offset: u32,
        value: u32,
    ) -> Result<(), TransportError> {
        let (bar, at) = self.device_config_write_offset(offset, 4)?;
        self.regs.write32(bar, at, value);
        Ok(())
    }

    /// Writes a 16-bit device configuration field; as [`PciTransport::write_device_config_u32`].
    ///
    /// # Errors
    /// As [`PciTransport::write_device_config_u32`].
    pub fn write_device_config_u16(
        &mut self,
        offset: u32,
        value: u16,
    ) -> Result<(), TransportError> {
        let (bar, at) = self.device_config_write_offset(offset, 2)?;
        self.regs.write16(bar, at, value);
        Ok(())
    }

    /// Writes an 8-bit device configuration field; as [`PciTransport::write_device_config_u32`].
    ///
    /// # Errors
    /// As [`PciTransport::write_device_config_u32`].
    pub fn write_device_config_u8(&mut self, offset: u32, value: u8) -> Result<(), TransportError> {
        let (bar, at) = self.device_config_write_offset(offset, 1)?;
        self.regs.write8(bar, at, value);
        Ok(())
    }
}
