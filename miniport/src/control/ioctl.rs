//! `SRB_FUNCTION_IO_CONTROL` (`IOCTL_SCSI_MINIPORT`): the cluster disk stack's "CLUSDISK"
//! probes answered the way Failover Clustering needs, everything else refused, and every length
//! in the caller's `SRB_IO_CONTROL` checked against the buffer StorPort really passed.
//!
//! **Why the CLUSDISK probes fail.** For each disk it considers, the cluster disk stack
//! (clusdisk.sys, and the storage tests of "Validate Configuration") sends
//! `IOCTL_SCSI_MINIPORT` to the disk's adapter with signature "CLUSDISK" and the control code
//! `IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE` (and `..._NOT_CLUSTER_CAPABLE`). The codes are
//! named in the negative: a miniport that *completes one successfully* declares its disks unfit
//! for the quorum (or for a cluster at all), and the cluster reads a *failed* request, whatever
//! the failure, as "capable". A miniport that knows nothing of the codes therefore passes, and
//! one that succeeds every unknown request (a common shortcut) silently loses its disks from the
//! cluster. vioscsi (virtio-win `vioscsi.c`) completes NOT_QUORUM_CAPABLE with
//! `SRB_STATUS_ERROR` and lets NOT_CLUSTER_CAPABLE fall to its default of
//! `SRB_STATUS_INVALID_REQUEST`, without looking at the signature or any length; lsi_sas, the
//! SAS miniport guests are clustered on under Hyper-V and VMware, is answered the same way by
//! the cluster. We return exactly those two statuses, so the cluster sees rvscsi as it sees
//! them, but only after the header has been checked.
//!
//! **Where.** Like WMI ([`crate::control::wmi_provider`]), these requests are answered completely in HwBuildIo:
//! the answer reads and writes only the request's own buffer, needs no lock and nothing from
//! the device, and HwBuildIo's DISPATCH_LEVEL is all it needs.
//!
//! **The buffer.** For `SRB_FUNCTION_IO_CONTROL`, `DataBuffer` is the IOCTL's system buffer,
//! valid whatever `MapBuffers` says, and `DataTransferLength` is its size as StorPort knows it.
//! Everything *inside* it comes from the caller (user mode, or any kernel component that builds
//! the SRB itself, bypassing StorPort's own checks), so the miniport looks at exactly
//! `DataTransferLength` bytes through one slice and believes no length written in them. The
//! checks, in order, and what each failure completes with (`DataTransferLength` 0, the buffer
//! untouched):
//!
//! | check | failure |
//! |---|---|
//! | `DataTransferLength` ≥ `sizeof(SRB_IO_CONTROL)` (28) | `SRB_STATUS_BAD_SRB_BLOCK_LENGTH` |
//! | `DataBuffer` is not null | `SRB_STATUS_INVALID_REQUEST` |
//! | `HeaderLength` == 28 | `SRB_STATUS_BAD_SRB_BLOCK_LENGTH` |
//! | `HeaderLength + Length` ≤ `DataTransferLength`, without overflow | `SRB_STATUS_BAD_SRB_BLOCK_LENGTH` |
//! | `Signature` is "CLUSDISK" | `SRB_STATUS_INVALID_REQUEST` |
//! | `ControlCode` is one of the two probes | `SRB_STATUS_INVALID_REQUEST`, `ReturnCode` set |
//!
//! So a buffer that is too short for what it claims (a length fault) gets
//! `SRB_STATUS_BAD_SRB_BLOCK_LENGTH`, and a well-formed request this miniport does not serve
//! (no buffer, another miniport's signature, an unknown code) gets `SRB_STATUS_INVALID_REQUEST`.
//!
//! `HeaderLength` must be exactly 28 rather than at least 28: the WDK defines it as
//! `sizeof(SRB_IO_CONTROL)` and nothing else, the structure has had one layout since it was
//! introduced, the ScsiPort-style IOCTL paths whose source is public refuse any other value
//! (`STATUS_REVISION_MISMATCH`) before a miniport sees the request, and a larger value would
//! leave us guessing which bytes a longer header meant as payload. The signature rule is the
//! WDK's own: a miniport that does not recognise `Signature` "must complete the request with a
//! status of SRB_STATUS_INVALID_REQUEST" (`SRB_IO_CONTROL`, ntddscsi.h).
//!
//! **`ReturnCode`** is miniport-defined. We write it only into a request that is ours (a valid
//! header signed "CLUSDISK"): a request signed for another miniport has a format we do not
//! know, and a header that failed its length checks may overlap the caller's payload. It holds
//! an NTSTATUS saying why the control failed: `STATUS_NOT_SUPPORTED` for the two probes (the
//! adapter does not claim the "not capable" property) and `STATUS_INVALID_DEVICE_REQUEST` for
//! other CLUSDISK codes; `DataTransferLength` is then the 28 header bytes. (A failed SRB fails
//! the IRP, so the I/O manager copies nothing back to a user-mode caller; the code is for kernel
//! callers and for a debugger.)
#![forbid(unsafe_code)]

use core::mem::{offset_of, size_of};

use crate::storport::{
    IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE, IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE,
    SRB_STATUS_BAD_SRB_BLOCK_LENGTH, SRB_STATUS_ERROR, SRB_STATUS_INVALID_REQUEST,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_NOT_SUPPORTED, SrbIoControl,
};

/// `SRB_IO_CONTROL.Signature` of the cluster disk stack's probes.
pub const CLUSDISK_SIGNATURE: [u8; 8] = *b"CLUSDISK";

/// `sizeof(SRB_IO_CONTROL)`, the only `HeaderLength` accepted.
pub const HEADER_LEN: usize = size_of::<SrbIoControl>();
const _: () = assert!(HEADER_LEN == 28);

/// Why an `SRB_FUNCTION_IO_CONTROL` request is refused before or instead of being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoctlError {
    /// `DataTransferLength` cannot hold an `SRB_IO_CONTROL` header.
    ShortBuffer {
        /// `DataTransferLength`.
        length: u32,
    },
    /// `DataBuffer` is null although `DataTransferLength` is not 0.
    NoBuffer,
    /// `HeaderLength` is not `sizeof(SRB_IO_CONTROL)`.
    HeaderLength {
        /// The `HeaderLength` given.
        header_length: u32,
    },
    /// `HeaderLength + Length` passes `DataTransferLength` (or overflows a `ULONG`).
    PayloadLength {
        /// The `Length` given.
        length: u32,
        /// `DataTransferLength`.
        available: u32,
    },
    /// The signature names another miniport.
    Signature {
        /// The signature given.
        signature: [u8; 8],
    },
    /// A "CLUSDISK" control code this miniport does not serve.
    ControlCode {
        /// The code given.
        control_code: u32,
    },
}

impl core::fmt::Display for IoctlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::ShortBuffer { length } => write!(
                f,
                "DataTransferLength {length} cannot hold an SRB_IO_CONTROL header"
            ),
            Self::NoBuffer => f.write_str("DataBuffer is null but DataTransferLength is not 0"),
            Self::HeaderLength { header_length } => write!(
                f,
                "HeaderLength {header_length} is not sizeof(SRB_IO_CONTROL)"
            ),
            Self::PayloadLength { length, available } => write!(
                f,
                "payload Length {length} passes DataTransferLength {available}"
            ),
            Self::Signature { signature } => {
                write!(f, "signature {signature:02x?} names another miniport")
            }
            Self::ControlCode { control_code } => {
                write!(f, "control code {control_code:#x} is not served")
            }
        }
    }
}

impl IoctlError {
    /// The SRB status the request completes with (see the module table).
    #[must_use]
    pub const fn srb_status(self) -> u8 {
        match self {
            Self::ShortBuffer { .. } | Self::HeaderLength { .. } | Self::PayloadLength { .. } => {
                SRB_STATUS_BAD_SRB_BLOCK_LENGTH
            }
            Self::NoBuffer | Self::Signature { .. } | Self::ControlCode { .. } => {
                SRB_STATUS_INVALID_REQUEST
            }
        }
    }

    /// The `ReturnCode` written for this refusal, if the request is ours to write into.
    #[must_use]
    pub const fn return_code(self) -> Option<u32> {
        match self {
            Self::ControlCode { .. } => Some(STATUS_INVALID_DEVICE_REQUEST.cast_unsigned()),
            _ => None,
        }
    }
}

/// A cluster disk stack probe, asking whether the adapter's disks are *unfit* for a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterProbe {
    /// `IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE`.
    NotQuorumCapable,
    /// `IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE`.
    NotClusterCapable,
}

impl ClusterProbe {
    /// The probe `control_code` asks, if it is one.
    #[must_use]
    pub const fn from_control_code(control_code: u32) -> Option<Self> {
        match control_code {
            IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE => Some(Self::NotQuorumCapable),
            IOCTL_SCSI_MINIPORT_NOT_CLUSTER_CAPABLE => Some(Self::NotClusterCapable),
            _ => None,
        }
    }

    /// The failing status that tells the cluster "capable": `SRB_STATUS_ERROR` for the quorum
    /// probe and `SRB_STATUS_INVALID_REQUEST` for the cluster probe, as vioscsi answers them.
    #[must_use]
    pub const fn srb_status(self) -> u8 {
        match self {
            Self::NotQuorumCapable => SRB_STATUS_ERROR,
            Self::NotClusterCapable => SRB_STATUS_INVALID_REQUEST,
        }
    }

    /// `ReturnCode`: the adapter does not claim the "not capable" property.
    #[must_use]
    pub const fn return_code(self) -> u32 {
        STATUS_NOT_SUPPORTED.cast_unsigned()
    }
}

/// How a request completes: its SRB status and the `DataTransferLength` to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// What the request was.
    pub outcome: Result<ClusterProbe, IoctlError>,
    /// `SrbStatus`.
    pub srb_status: u8,
    /// `DataTransferLength` at completion: the header when `ReturnCode` was written, else 0.
    pub returned: u32,
}

/// Reads the `u32` field at `offset` of the header in `buffer` (native byte order: the buffer is
/// a C structure in this machine's memory).
fn field(buffer: &[u8], offset: usize) -> Option<u32> {
    let bytes = buffer.get(offset..offset.checked_add(4)?)?;
    let array: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_ne_bytes(array))
}

/// Classifies the request in `buffer`, the `DataTransferLength` bytes at `DataBuffer`, checking
/// every length the header claims against `buffer.len()`.
///
/// # Errors
/// The first check of the module table that fails.
pub fn parse(buffer: &[u8]) -> Result<ClusterProbe, IoctlError> {
    let available = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
    let header = buffer
        .get(..HEADER_LEN)
        .ok_or(IoctlError::ShortBuffer { length: available })?;
    let read = |offset| field(header, offset).ok_or(IoctlError::ShortBuffer { length: available });
    let header_length = read(offset_of!(SrbIoControl, header_length))?;
    if header_length as usize != HEADER_LEN {
        return Err(IoctlError::HeaderLength { header_length });
    }
    let length = read(offset_of!(SrbIoControl, length))?;
    if header_length
        .checked_add(length)
        .is_none_or(|total| total > available)
    {
        return Err(IoctlError::PayloadLength { length, available });
    }
    let signature_at = offset_of!(SrbIoControl, signature);
    let signature: [u8; 8] = header
        .get(signature_at..signature_at + 8)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(IoctlError::ShortBuffer { length: available })?;
    if signature != CLUSDISK_SIGNATURE {
        return Err(IoctlError::Signature { signature });
    }
    let control_code = read(offset_of!(SrbIoControl, control_code))?;
    ClusterProbe::from_control_code(control_code).ok_or(IoctlError::ControlCode { control_code })
}

/// Answers the request in `buffer` (exactly `DataTransferLength` bytes), writing `ReturnCode`
/// into it when the request is ours (see the module documentation).
pub fn answer(buffer: &mut [u8]) -> Answer {
    let outcome = parse(buffer);
    let (srb_status, return_code) = match outcome {
        Ok(probe) => (probe.srb_status(), Some(probe.return_code())),
        Err(error) => (error.srb_status(), error.return_code()),
    };
    let at = offset_of!(SrbIoControl, return_code);
    let returned = match (return_code, buffer.get_mut(at..at + 4)) {
        (Some(code), Some(slot)) => {
            slot.copy_from_slice(&code.to_ne_bytes());
            HEADER_LEN as u32
        }
        _ => 0,
    };
    Answer {
        outcome,
        srb_status,
        returned,
    }
}

/// Answers the `SRB_FUNCTION_IO_CONTROL` request `srb`: sets its `DataTransferLength` and
/// returns the SRB status to complete it with.
pub fn handle(srb: &mut crate::storport::srb::Srb) -> u8 {
    let length = srb.data_transfer_length();
    let refused = |error: IoctlError| Answer {
        outcome: Err(error),
        srb_status: error.srb_status(),
        returned: 0,
    };
    let answer = if (length as usize) < HEADER_LEN {
        // Refused on the length alone: the buffer is not looked at.
        refused(IoctlError::ShortBuffer { length })
    } else {
        srb.io_control_buffer()
            .map_or_else(|| refused(IoctlError::NoBuffer), answer)
    };
    srb.set_data_transfer_length(answer.returned);
    answer.srb_status
}

#[cfg(test)]
mod tests;
