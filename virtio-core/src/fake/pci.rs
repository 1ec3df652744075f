//! Memory-backed virtio PCI registers and configuration space for tests: not written yet.
