//! The packed virtqueue (virtio 1.x section 2.8): not written yet.
#![forbid(unsafe_code)]
