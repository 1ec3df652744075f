//! virtio-core: the driver side of virtio 1.x for rvscsi, with no heap and no Windows.
//!
//! Layers, bottom up:
//! - [`hal`]: the two hardware seams, [`hal::Hal`] (DMA memory, bus addresses) and
//!   [`hal::RegisterIo`] (BAR registers);
//! - [`dma`]: the one place that touches device-shared memory, bounds-checked and atomic;
//! - [`queue`]: split and packed virtqueues behind one [`queue::Virtqueue`] trait;
//! - [`features`]: feature bits and the driver's accepted set;
//! - [`pci`]: the virtio 1.x modern PCI transport;
//! - [`scsi`]: the virtio-scsi wire protocol and the response mapping.
//!
//! Everything the device writes is untrusted: it is checked and turned into a typed error,
//! never a panic or an out-of-bounds index.
#![no_std]

#[cfg(any(test, feature = "test-utils"))]
extern crate std;

pub mod dma;
pub mod features;
pub mod hal;
pub mod pci;
pub mod queue;
pub mod scsi;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

#[cfg(test)]
mod messages;
