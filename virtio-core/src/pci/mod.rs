//! The virtio 1.x modern PCI transport (virtio 1.x section 4.1): capability walk, status
//! handshake, feature negotiation, queue setup, MSI-X vectors, notifications, ISR and device
//! configuration.
//!
//! Everything read from configuration space or the device's registers is untrusted: capability
//! pointers, BAR numbers, offsets, lengths, the notify multiplier, `queue_notify_off`, status and
//! MSI-X read-backs are all checked, and a violation is a [`TransportError`], never a panic or an
//! access outside the structure the device advertised.
//!
//! Register access goes through [`RegisterIo`](crate::hal::RegisterIo) only. Widths follow
//! section 4.1.3.1: 8-bit fields with 8-bit accesses, 16-bit fields with aligned 16-bit accesses,
//! 32-bit and 64-bit fields with aligned 32-bit accesses (64-bit fields as two halves, low first).
//!
//! Files, bottom up: `capability.rs` (the walk and the structures' locations), `common.rs` (the
//! common configuration: status, features, queues, vectors), `device.rs` (the device-specific
//! configuration), `transport.rs` (the [`PciTransport`] handle: probe, notify, ISR) and
//! `error.rs` ([`TransportError`]). Their items are re-exported here, so users name
//! `pci::PciTransport`, never the file.
#![forbid(unsafe_code)]

mod capability;
mod common;
mod device;
mod error;
mod transport;

pub use capability::*;
pub use common::*;
pub use device::*;
pub use error::*;
pub use transport::*;

/// PCI vendor ID of every virtio device (section 4.1.2).
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1AF4;
/// Modern device IDs are this plus the virtio device type (section 4.1.2).
pub const VIRTIO_PCI_MODERN_DEVICE_ID_BASE: u16 = 0x1040;
/// Virtio device type of a SCSI host (section 5.6.1).
pub const VIRTIO_DEVICE_TYPE_SCSI: u16 = 8;
/// Value of a `*_msix_vector` register that maps no vector (section 4.1.5.1.2).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xFFFF;
/// Highest MSI-X table entry number a vector register can name (section 4.1.5.1.2).
pub const VIRTIO_MSI_MAX_VECTOR: u16 = 0x7FF;

#[cfg(test)]
mod tests;
