//! rvscsi-wmi: WMI wire formats and a SCSIWMILIB-style dispatcher for the `MS_SM` HBA classes.
//!
//! Windows asks a storage miniport for WMI data with `SRB_FUNCTION_WMI`; C miniports hand the
//! request to the WDK's SCSIWMILIB. This crate is that library, in safe Rust, plus the data the
//! rvscsi miniport serves:
//! - [`wnode`]: the `WNODE_*` / `WMIREGINFO` wire structures (wmistr.h), flags, minor codes;
//! - [`encode`]: the data-block encoding rules (alignment, counted strings, arrays), measuring
//!   the size needed when the buffer is too small;
//! - [`dispatch`]: the registration table, the [`dispatch::Provider`] trait and
//!   [`dispatch::dispatch`], which validates every length and offset of the request;
//! - [`vpd`]: a parser for SCSI VPD page 0x83 (device identification);
//! - [`sas`]: SAS addresses from VPD 0x83 NAA designators, or synthesised stably per adapter;
//! - [`hba`]: the `MS_SM` HBA API classes (hbapiwmi) and rvscsi's own statistics classes,
//!   encoded from a plain [`hba::HbaInfo`] the miniport fills.
//!
//! No heap, no `unsafe`, no panics on request data.
#![no_std]
#![forbid(unsafe_code)]

pub mod dispatch;
pub mod encode;
pub mod guid;
pub mod hba;
pub mod sas;
pub mod status;
pub mod vpd;
pub mod wnode;
