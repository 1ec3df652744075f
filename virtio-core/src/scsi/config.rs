//! The device configuration (virtio 1.x section 5.6.4), checked and clamped into [`Limits`].
//!
//! The configuration is device-written and untrusted. Two fields change the wire layout and
//! must match ours exactly, or every request would be misparsed: `cdb_size` and `sense_size`
//! (the device finds the data-out buffer after `cdb[cdb_size]` and writes data-in after
//! `sense[sense_size]`). The driver writes [`CDB_SIZE`] and [`SENSE_SIZE`] to them during
//! initialisation (section 5.6.4.1 allows exactly these two writes), reads the configuration
//! back, and calls [`Limits::from_config`]. The other fields are limits and hints: values the
//! spec says a device should not use are clamped, each with the rule documented on its field.

use core::mem::offset_of;

use zerocopy::little_endian::{U16, U32};

use super::wire::Config;
use super::{CDB_SIZE, SENSE_SIZE};
use crate::hal::RegisterIo;
use crate::pci::{PciTransport, TransportError};

/// The device limits the driver works with, derived from a [`Config`] by
/// [`Limits::from_config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Number of request queues, `1..=`[`Limits::MAX_REQUEST_QUEUES`]. A larger device value
    /// is clamped: request queue `n` has virtqueue index `n + 2`, which must fit 16 bits. The
    /// miniport further caps it by CPUs and MSI-X messages.
    pub num_queues: u16,
    /// Maximum number of data segments in one command, at least 1. The device value 0 means
    /// nothing usable and becomes 1, as in Linux's `virtio_scsi` (a slow but working device
    /// rather than a failed one). This is the data segments only: the request and response
    /// headers are extra descriptors. vioscsi ignores `seg_max` (its issue #1456).
    pub seg_max: u32,
    /// Hint: maximum transfer in 512-byte sectors; `None` when the device wrote 0 (no hint).
    /// QEMU writes 0xFFFF, which is a real (large) limit and is kept.
    pub max_sectors: Option<u32>,
    /// Maximum commands outstanding per LUN (section 5.6.4.1), at least 1: the device value 0
    /// becomes 1, as in Linux's `virtio_scsi`.
    pub cmd_per_lun: u32,
    /// Highest target number, inclusive; clamped to 255 because the LUN field has one byte
    /// for it. vioscsi treats this bound as exclusive, losing the last target (its #1442).
    pub max_target: u8,
    /// Highest LUN, inclusive; clamped to [`super::Lun::MAX_LUN`] (16383). `StorPort` addresses
    /// at most 255 LUNs per target, which is the miniport's own cap.
    pub max_lun: u16,
}

/// Why a device configuration cannot be used. The device must be failed (`FAILED` status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `num_queues` is 0: there is no queue to send commands on.
    NoRequestQueues,
    /// `sense_size` is not [`SENSE_SIZE`] after the driver wrote it: the device would place
    /// data-in bytes at a different offset than our response header ends.
    SenseSize {
        /// The value read back.
        found: u32,
    },
    /// `cdb_size` is not [`CDB_SIZE`] after the driver wrote it: the device would parse our
    /// request header with a different length.
    CdbSize {
        /// The value read back.
        found: u32,
    },
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NoRequestQueues => f.write_str("num_queues is 0: no request queue"),
            Self::SenseSize { found } => {
                write!(f, "sense_size reads {found} after writing {SENSE_SIZE}")
            }
            Self::CdbSize { found } => write!(f, "cdb_size reads {found} after writing {CDB_SIZE}"),
        }
    }
}

impl core::error::Error for ConfigError {}

impl Limits {
    /// Largest number of request queues: virtqueue indices are 16 bits and the first two are
    /// the controlq and the eventq.
    pub const MAX_REQUEST_QUEUES: u16 = u16::MAX - super::queue_index::REQUEST_BASE;

    /// Checks and clamps a configuration read back after writing [`SENSE_SIZE`] and
    /// [`CDB_SIZE`] (see each field of [`Limits`] for its rule).
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration cannot be worked with at all.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Self::check_layout(config)?;
        let num_queues = config.num_queues.get();
        if num_queues == 0 {
            return Err(ConfigError::NoRequestQueues);
        }
        let num_queues = u16::try_from(num_queues)
            .unwrap_or(u16::MAX)
            .min(Self::MAX_REQUEST_QUEUES);
        let max_sectors = match config.max_sectors.get() {
            0 => None,
            sectors => Some(sectors),
        };
        Ok(Self {
            num_queues,
            seg_max: config.seg_max.get().max(1),
            max_sectors,
            cmd_per_lun: config.cmd_per_lun.get().max(1),
            max_target: u8::try_from(config.max_target.get()).unwrap_or(u8::MAX),
            max_lun: u16::try_from(config.max_lun.get())
                .unwrap_or(u16::MAX)
                .min(super::Lun::MAX_LUN),
        })
    }

    /// Checks the two fields that fix the wire layout, `sense_size` and `cdb_size`, against
    /// [`SENSE_SIZE`] and [`CDB_SIZE`]: the first check of [`Limits::from_config`], and what a
    /// configuration change must keep for requests to go on (section 5.6.4).
    ///
    /// # Errors
    /// [`ConfigError::SenseSize`] or [`ConfigError::CdbSize`] with the value found.
    pub fn check_layout(config: &Config) -> Result<(), ConfigError> {
        let sense_size = config.sense_size.get();
        if usize::try_from(sense_size).ok() != Some(SENSE_SIZE) {
            return Err(ConfigError::SenseSize { found: sense_size });
        }
        let cdb_size = config.cdb_size.get();
        if usize::try_from(cdb_size).ok() != Some(CDB_SIZE) {
            return Err(ConfigError::CdbSize { found: cdb_size });
        }
        Ok(())
    }

    /// Number of addressable targets (`max_target + 1`), 1 to 256.
    #[must_use]
    pub const fn target_count(&self) -> u16 {
        self.max_target as u16 + 1
    }

    /// Number of addressable LUNs per target (`max_lun + 1`), 1 to 16384.
    #[must_use]
    pub const fn lun_count(&self) -> u16 {
        self.max_lun + 1
    }
}

/// Why [`configure`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigureError {
    /// Writing or reading the device configuration failed.
    Transport(TransportError),
    /// The configuration read back is unusable.
    Config(ConfigError),
}

impl core::fmt::Display for ConfigureError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Transport(error) => write!(f, "device configuration access: {error}"),
            Self::Config(error) => write!(f, "unusable device configuration: {error}"),
        }
    }
}

impl core::error::Error for ConfigureError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Transport(error) => Some(error),
            Self::Config(error) => Some(error),
        }
    }
}

impl From<TransportError> for ConfigureError {
    fn from(error: TransportError) -> Self {
        Self::Transport(error)
    }
}

/// Reads the whole configuration consistently (under the `config_generation` check), each
/// field with one access of its own width: section 4.1.3.1 requires the driver to access a
/// device configuration field at its natural width, so `max_channel` and `max_target` (two
/// 16-bit fields sharing a 4-byte word) are two 16-bit reads, never one 32-bit read.
///
/// # Errors
/// [`TransportError`] if the device configuration structure is missing or too short, or
/// `config_generation` never settles.
pub fn read_config<R: RegisterIo>(transport: &PciTransport<R>) -> Result<Config, TransportError> {
    let at = |offset: usize| offset as u32;
    transport.read_device_config_with(|device| {
        Ok(Config {
            num_queues: U32::new(device.read_u32(at(offset_of!(Config, num_queues)))?),
            seg_max: U32::new(device.read_u32(at(offset_of!(Config, seg_max)))?),
            max_sectors: U32::new(device.read_u32(at(offset_of!(Config, max_sectors)))?),
            cmd_per_lun: U32::new(device.read_u32(at(offset_of!(Config, cmd_per_lun)))?),
            event_info_size: U32::new(device.read_u32(at(offset_of!(Config, event_info_size)))?),
            sense_size: U32::new(device.read_u32(at(Config::SENSE_SIZE_OFFSET))?),
            cdb_size: U32::new(device.read_u32(at(Config::CDB_SIZE_OFFSET))?),
            max_channel: U16::new(device.read_u16(at(offset_of!(Config, max_channel)))?),
            max_target: U16::new(device.read_u16(at(offset_of!(Config, max_target)))?),
            max_lun: U32::new(device.read_u32(at(offset_of!(Config, max_lun)))?),
        })
    })
}

/// Sets the sense and CDB sizes this crate's request and response layouts use (section 5.6.4:
/// the driver may write them; the device then uses them), reads the whole configuration back and
/// validates it. Call during initialisation, after FEATURES_OK and before DRIVER_OK.
///
/// # Errors
/// [`ConfigureError`] if the transport fails or the device did not take the sizes or offers no
/// request queue.
pub fn configure<R: RegisterIo>(
    transport: &mut PciTransport<R>,
) -> Result<(Config, Limits), ConfigureError> {
    transport.write_device_config_u32(Config::SENSE_SIZE_OFFSET as u32, SENSE_SIZE as u32)?;
    transport.write_device_config_u32(Config::CDB_SIZE_OFFSET as u32, CDB_SIZE as u32)?;
    let config = read_config(transport)?;
    let limits = Limits::from_config(&config).map_err(ConfigureError::Config)?;
    Ok((config, limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_default() -> Config {
        Config {
            num_queues: U32::new(4),
            seg_max: U32::new(126),
            max_sectors: U32::new(0xFFFF),
            cmd_per_lun: U32::new(128),
            event_info_size: U32::new(16),
            sense_size: U32::new(96),
            cdb_size: U32::new(32),
            max_channel: U16::new(0),
            max_target: U16::new(255),
            max_lun: U32::new(16383),
        }
    }

    #[test]
    fn qemu_defaults_pass_unchanged() {
        let limits = Limits::from_config(&qemu_default()).unwrap();
        assert_eq!(
            limits,
            Limits {
                num_queues: 4,
                seg_max: 126,
                max_sectors: Some(0xFFFF),
                cmd_per_lun: 128,
                max_target: 255,
                max_lun: 16383,
            }
        );
        assert_eq!(limits.target_count(), 256);
        assert_eq!(limits.lun_count(), 16384);
    }

    #[test]
    fn layout_fields_must_match_what_we_send() {
        assert_eq!(Limits::check_layout(&qemu_default()), Ok(()));
        for found in [0, 32, 95, 97, 252, u32::MAX] {
            let config = Config {
                sense_size: U32::new(found),
                ..qemu_default()
            };
            assert_eq!(
                Limits::from_config(&config),
                Err(ConfigError::SenseSize { found })
            );
            assert_eq!(
                Limits::check_layout(&config),
                Err(ConfigError::SenseSize { found })
            );
        }
        for found in [0, 6, 16, 31, 33, 260, u32::MAX] {
            let config = Config {
                cdb_size: U32::new(found),
                ..qemu_default()
            };
            assert_eq!(
                Limits::from_config(&config),
                Err(ConfigError::CdbSize { found })
            );
            assert_eq!(
                Limits::check_layout(&config),
                Err(ConfigError::CdbSize { found })
            );
        }
    }

    #[test]
    fn zero_request_queues_is_an_error() {
        let config = Config {
            num_queues: U32::new(0),
            ..qemu_default()
        };
        assert_eq!(
            Limits::from_config(&config),
            Err(ConfigError::NoRequestQueues)
        );
    }

    #[test]
    fn out_of_range_values_are_clamped_by_the_documented_rules() {
        let config = Config {
            num_queues: U32::new(u32::MAX),
            seg_max: U32::new(0),
            max_sectors: U32::new(0),
            cmd_per_lun: U32::new(0),
            max_target: U16::new(300),
            max_lun: U32::new(20_000),
            ..qemu_default()
        };
        let limits = Limits::from_config(&config).unwrap();
        assert_eq!(limits.num_queues, 65_533);
        assert_eq!(limits.seg_max, 1);
        assert_eq!(limits.max_sectors, None);
        assert_eq!(limits.cmd_per_lun, 1);
        assert_eq!(limits.max_target, 255);
        assert_eq!(limits.max_lun, 16383);

        let config = Config {
            num_queues: U32::new(65_534),
            max_target: U16::new(0),
            max_lun: U32::new(0),
            ..qemu_default()
        };
        let limits = Limits::from_config(&config).unwrap();
        assert_eq!(limits.num_queues, 65_533);
        assert_eq!((limits.target_count(), limits.lun_count()), (1, 1));
    }

    fn fake_transport(
        device: &crate::fake::pci::FakeVirtioPci,
    ) -> PciTransport<crate::fake::pci::FakeVirtioPci> {
        let mut transport = PciTransport::probe(device, device.clone()).unwrap();
        transport.reset().unwrap();
        transport
            .begin_init(crate::features::SCSI_DRIVER_FEATURES)
            .unwrap();
        transport
    }

    #[test]
    fn configure_writes_our_sizes_and_reads_the_limits_back() {
        let device = crate::fake::pci::FakeVirtioPci::scsi(4).build();
        // A device that starts with other sizes: ours must be written.
        device.update_device_config(Config::SENSE_SIZE_OFFSET, &32u32.to_le_bytes());
        device.update_device_config(Config::CDB_SIZE_OFFSET, &16u32.to_le_bytes());
        let mut transport = fake_transport(&device);
        let (config, limits) = configure(&mut transport).unwrap();
        assert_eq!(config.sense_size.get() as usize, SENSE_SIZE);
        assert_eq!(config.cdb_size.get() as usize, CDB_SIZE);
        assert_eq!(limits.num_queues, 4);
        assert_eq!(limits.seg_max, 254);
        assert_eq!(limits.max_target, 255);
        // Every field read at its natural width: max_channel and max_target are two 16-bit
        // reads, not one 32-bit read spanning both (section 4.1.3.1).
        assert_eq!(device.violations(), []);
    }

    #[test]
    fn read_config_reads_each_field_at_its_natural_width() {
        let device = crate::fake::pci::FakeVirtioPci::scsi(2).build();
        let transport = fake_transport(&device);
        device.update_device_config(28, &[3, 0, 7, 0]);
        let config = read_config(&transport).unwrap();
        assert_eq!((config.max_channel.get(), config.max_target.get()), (3, 7));
        assert_eq!(config.max_lun.get(), 16_383);
        assert_eq!(device.violations(), []);
    }

    #[test]
    fn a_device_that_keeps_its_own_sizes_is_refused() {
        // sense_size and cdb_size read-only: the writes do not take.
        let mut bytes = [0u8; 36];
        bytes[..4].copy_from_slice(&1u32.to_le_bytes());
        bytes[20..24].copy_from_slice(&32u32.to_le_bytes());
        bytes[24..28].copy_from_slice(&32u32.to_le_bytes());
        let device = crate::fake::pci::FakeVirtioPci::scsi(1)
            .device_config(&bytes, &[])
            .build();
        let mut transport = fake_transport(&device);
        assert_eq!(
            configure(&mut transport),
            Err(ConfigureError::Config(ConfigError::SenseSize { found: 32 }))
        );
    }
}
