//! virtio 1.x modern PCI transport (virtio 1.x section 4.1): not written yet.
#![forbid(unsafe_code)]
