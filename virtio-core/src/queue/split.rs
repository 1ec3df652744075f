//! The split virtqueue (virtio 1.x section 2.7): not written yet.
#![forbid(unsafe_code)]
