//! rvscsi-wmi: WMI wire formats and a SCSIWMILIB-style dispatcher for the MS_SM HBA classes.
//!
//! Not written yet (issue 5): this crate is empty until then.
#![no_std]
#![forbid(unsafe_code)]
