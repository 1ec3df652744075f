//! rvscsi-tests: the Windows side, simulated (StorPort simulator, virtio-scsi device model,
//! scenarios).

pub mod device;
pub mod harness;
pub mod scenario;
pub mod sim;
