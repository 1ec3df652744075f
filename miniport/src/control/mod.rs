//! Requests the miniport answers itself in HwBuildIo, never sending them to the device:
//! `SRB_FUNCTION_WMI` (the HBA's WMI classes) and `IOCTL_SCSI_MINIPORT`.

#![forbid(unsafe_code)]

pub mod ioctl;
pub mod wmi_provider;
