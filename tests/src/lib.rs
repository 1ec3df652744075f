//! rvscsi-tests: the Windows side, simulated (StorPort simulator, virtio-scsi device model,
//! scenarios).
//!
//! Not written yet (issue 3): the simulator arrives with the miniport I/O path.

pub mod device;
