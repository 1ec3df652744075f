//! rvscsi-tests: the Windows side, simulated (StorPort simulator, virtio-scsi device model,
//! scenarios, hostile-device sessions, the soak), and the loader that runs the shipped image in it.

pub mod device;
pub mod harness;
pub mod hostile;
pub mod image;
pub mod scenario;
pub mod sim;
pub mod soak;
