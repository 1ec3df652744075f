//! The peer: rcore-os `virtio-drivers`' `VirtQueue`, driven through the same device and loop.
//!
//! Its HAL and transport are the minimum the crate needs to run a queue on our guest memory:
//! identity-free (guest addresses differ from host pointers), no IOMMU, and a transport that
//! only records what the queue programs.

use std::ptr::NonNull;

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::memory::ram;

/// virtio-drivers' HAL over the benchmark's guest memory.
pub struct PeerHal;

// SAFETY: memory comes from the process-lifetime guest mmap, zeroed, page-aligned and never
// handed out twice; `share` returns the guest address of a buffer that lies in guest memory (the
// benchmark only passes such buffers).
unsafe impl Hal for PeerHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let (host, guest) = ram().alloc(pages * 4096, 4096);
        (guest, host)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        let host = ram().memory_host(paddr);
        NonNull::new(host as *mut u8).expect("guest memory")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        ram().guest_address(buffer.cast::<u8>().as_ptr() as usize)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// A transport that records the queue addresses `VirtQueue::new` programs.
#[derive(Default)]
pub struct RecordingTransport {
    /// (descriptors, driver area, device area) of queue 0 once set.
    pub queue: Option<(PhysAddr, PhysAddr, PhysAddr)>,
    status: u32,
}

impl Transport for RecordingTransport {
    fn device_type(&self) -> DeviceType {
        DeviceType::ScsiHost
    }
    fn read_device_features(&mut self) -> u64 {
        0
    }
    fn write_driver_features(&mut self, _driver_features: u64) {}
    fn max_queue_size(&mut self, _queue: u16) -> u32 {
        u32::from(u16::MAX)
    }
    fn notify(&mut self, _queue: u16) {}
    fn get_status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_truncate(self.status)
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.status = status.bits();
    }
    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}
    fn requires_legacy_layout(&self) -> bool {
        false
    }
    fn queue_set(
        &mut self,
        _queue: u16,
        _size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.queue = Some((descriptors, driver_area, device_area));
    }
    fn queue_unset(&mut self, _queue: u16) {
        self.queue = None;
    }
    fn queue_used(&mut self, _queue: u16) -> bool {
        self.queue.is_some()
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::empty()
    }
    fn read_config_generation(&self) -> u32 {
        0
    }
    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        _offset: usize,
    ) -> virtio_drivers::Result<T> {
        Err(virtio_drivers::Error::ConfigSpaceMissing)
    }
    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        _offset: usize,
        _value: T,
    ) -> virtio_drivers::Result<()> {
        Err(virtio_drivers::Error::ConfigSpaceMissing)
    }
}
