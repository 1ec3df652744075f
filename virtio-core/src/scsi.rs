//! virtio-scsi protocol (virtio 1.x section 5.6): not written yet.
#![forbid(unsafe_code)]
