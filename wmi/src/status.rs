//! Outcomes of a WMI request: the NTSTATUS values WMI expects ([`WmiStatus`]) and the typed
//! reasons behind them ([`WmiError`]), each carrying the offending value.

use crate::guid::Guid;

/// The NTSTATUS a WMI request completes with (ntstatus.h values).
///
/// The miniport translates these once into SRB statuses; this crate never deals in SRBs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WmiStatus {
    /// `STATUS_SUCCESS`: the buffer holds the answer, or a `WNODE_TOO_SMALL` with the size
    /// needed (WMI then retries with a bigger buffer).
    Success,
    /// `STATUS_BUFFER_TOO_SMALL`: the buffer cannot even hold the answer that says how big a
    /// buffer is needed (a `WNODE_TOO_SMALL`, or the `ULONG` size of a `WMIREGINFO`).
    BufferTooSmall,
    /// `STATUS_WMI_GUID_NOT_FOUND`: the GUID is not registered by this provider.
    GuidNotFound,
    /// `STATUS_WMI_INSTANCE_NOT_FOUND`: no such instance index or instance name.
    InstanceNotFound,
    /// `STATUS_WMI_ITEMID_NOT_FOUND`: no such data item or method id.
    ItemIdNotFound,
    /// `STATUS_WMI_READ_ONLY`: the data block or item cannot be set.
    ReadOnly,
    /// `STATUS_INVALID_DEVICE_REQUEST`: unknown minor function, or the provider does not
    /// implement the operation (a NULL callback in SCSIWMILIB terms).
    InvalidDeviceRequest,
    /// `STATUS_INVALID_PARAMETER`: the request buffer is malformed (short, or a length or offset
    /// pointing outside it).
    InvalidParameter,
    /// `STATUS_UNSUCCESSFUL`: the provider could not encode its own answer.
    Unsuccessful,
}

impl WmiStatus {
    /// The NTSTATUS value, as ntstatus.h defines it.
    #[must_use]
    pub const fn ntstatus(self) -> u32 {
        match self {
            Self::Success => 0x0000_0000,
            Self::BufferTooSmall => 0xC000_0023,
            Self::GuidNotFound => 0xC000_0295,
            Self::InstanceNotFound => 0xC000_0296,
            Self::ItemIdNotFound => 0xC000_0297,
            Self::ReadOnly => 0xC000_02C6,
            Self::InvalidDeviceRequest => 0xC000_0010,
            Self::InvalidParameter => 0xC000_000D,
            Self::Unsuccessful => 0xC000_0001,
        }
    }
}

/// A field of a request buffer whose value was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WnodeField {
    /// `WnodeHeader.BufferSize`.
    BufferSize,
    /// `OffsetInstanceName`, or the instance name's length there.
    OffsetInstanceName,
    /// `DataBlockOffset`.
    DataBlockOffset,
    /// `SizeDataBlock` / `SizeDataItem`.
    SizeDataBlock,
}

impl core::fmt::Display for WnodeField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BufferSize => "BufferSize",
            Self::OffsetInstanceName => "OffsetInstanceName",
            Self::DataBlockOffset => "DataBlockOffset",
            Self::SizeDataBlock => "SizeDataBlock",
        })
    }
}

/// Why a request failed, with the offending value; [`WmiError::status`] maps it to NTSTATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WmiError {
    /// The minor function is not one of `IRP_MN_QUERY_ALL_DATA..=IRP_MN_EXECUTE_METHOD`.
    UnknownMinorFunction(u8),
    /// The buffer is shorter than the fixed part of the WNODE the request carries.
    RequestTooShort {
        /// Bytes the fixed part needs.
        needed: u32,
        /// Bytes the buffer has.
        available: u32,
    },
    /// A length or offset in the request points outside the request.
    FieldOutOfBounds {
        /// Which field.
        field: WnodeField,
        /// Its value.
        value: u32,
    },
    /// The GUID is not in the registration table.
    GuidNotFound(Guid),
    /// The instance index is not below the registered instance count.
    InstanceNotFound {
        /// Index of the GUID in the registration table.
        guid_index: u32,
        /// The rejected instance index.
        instance_index: u32,
    },
    /// The request names an instance (dynamic instance names) that does not exist.
    InstanceNameNotFound {
        /// Index of the GUID in the registration table.
        guid_index: u32,
    },
    /// No such data item id in the data block.
    ItemIdNotFound(u32),
    /// No such method id in the data block.
    MethodNotFound(u32),
    /// The method's input is shorter than its parameters.
    MethodInputTooShort {
        /// The method id.
        method_id: u32,
        /// Bytes the parameters need.
        needed: u32,
        /// Bytes the request supplied.
        available: u32,
    },
    /// A set request carries data of the wrong size for the block or item.
    SetDataSize {
        /// Index of the GUID in the registration table.
        guid_index: u32,
        /// The size supplied.
        size: u32,
    },
    /// The data block or item is read-only.
    ReadOnly {
        /// Index of the GUID in the registration table.
        guid_index: u32,
    },
    /// The provider does not implement this operation.
    NotImplemented,
    /// The buffer cannot hold even the reply that reports the size needed.
    BufferTooSmall {
        /// Bytes the full answer needs.
        needed: u32,
    },
    /// A counted string longer than a `USHORT` byte count can describe.
    StringTooLong {
        /// Its length in UTF-16 code units.
        units: u32,
    },
    /// The answer would be larger than a `ULONG` can describe.
    SizeOverflow,
}

impl core::fmt::Display for WmiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::UnknownMinorFunction(minor) => {
                write!(f, "unknown WMI minor function {minor:#04x}")
            }
            Self::RequestTooShort { needed, available } => write!(
                f,
                "request of {available} bytes is shorter than its fixed part of {needed}"
            ),
            Self::FieldOutOfBounds { field, value } => {
                write!(f, "{field} {value:#x} points outside the request")
            }
            Self::GuidNotFound(guid) => write!(f, "GUID {guid} is not registered"),
            Self::InstanceNotFound {
                guid_index,
                instance_index,
            } => write!(f, "block {guid_index} has no instance {instance_index}"),
            Self::InstanceNameNotFound { guid_index } => {
                write!(f, "block {guid_index} has no instance of that name")
            }
            Self::ItemIdNotFound(id) => write!(f, "no data item {id}"),
            Self::MethodNotFound(id) => write!(f, "no method {id}"),
            Self::MethodInputTooShort {
                method_id,
                needed,
                available,
            } => write!(
                f,
                "method {method_id} needs {needed} bytes of input, {available} given"
            ),
            Self::SetDataSize { guid_index, size } => {
                write!(f, "block {guid_index} cannot be set from {size} bytes")
            }
            Self::ReadOnly { guid_index } => write!(f, "block {guid_index} is read-only"),
            Self::NotImplemented => f.write_str("operation not implemented"),
            Self::BufferTooSmall { needed } => {
                write!(
                    f,
                    "buffer cannot hold even the size reply ({needed} bytes needed)"
                )
            }
            Self::StringTooLong { units } => {
                write!(
                    f,
                    "string of {units} UTF-16 units is too long for a USHORT byte count"
                )
            }
            Self::SizeOverflow => f.write_str("the answer would be larger than 4 GiB"),
        }
    }
}

impl core::error::Error for WmiError {}

impl WmiError {
    /// The NTSTATUS WMI receives for this error.
    #[must_use]
    pub const fn status(self) -> WmiStatus {
        match self {
            Self::UnknownMinorFunction(_) | Self::NotImplemented => WmiStatus::InvalidDeviceRequest,
            Self::RequestTooShort { .. }
            | Self::FieldOutOfBounds { .. }
            | Self::MethodInputTooShort { .. }
            | Self::SetDataSize { .. } => WmiStatus::InvalidParameter,
            Self::GuidNotFound(_) => WmiStatus::GuidNotFound,
            Self::InstanceNotFound { .. } | Self::InstanceNameNotFound { .. } => {
                WmiStatus::InstanceNotFound
            }
            Self::ItemIdNotFound(_) | Self::MethodNotFound(_) => WmiStatus::ItemIdNotFound,
            Self::ReadOnly { .. } => WmiStatus::ReadOnly,
            Self::BufferTooSmall { .. } => WmiStatus::BufferTooSmall,
            Self::StringTooLong { .. } | Self::SizeOverflow => WmiStatus::Unsuccessful,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::{String, ToString};
    use std::vec::Vec;

    use super::*;
    use crate::hba::sm::MS_SM_ADAPTER_INFORMATION_QUERY_GUID;

    #[test]
    fn error_messages_name_the_offending_values() {
        let cases = [
            (
                WmiError::FieldOutOfBounds {
                    field: WnodeField::DataBlockOffset,
                    value: 0x200,
                },
                "DataBlockOffset 0x200 points outside the request",
            ),
            (
                WmiError::GuidNotFound(MS_SM_ADAPTER_INFORMATION_QUERY_GUID),
                "GUID {BDC67EFA-E5E7-4777-B13C-621459657099} is not registered",
            ),
            (
                WmiError::MethodInputTooShort {
                    method_id: 3,
                    needed: 16,
                    available: 4,
                },
                "method 3 needs 16 bytes of input, 4 given",
            ),
            (
                WmiError::RequestTooShort {
                    needed: 44,
                    available: 12,
                },
                "request of 12 bytes is shorter than its fixed part of 44",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn every_error_variant_has_its_own_message() {
        let all = [
            WmiError::UnknownMinorFunction(12),
            WmiError::RequestTooShort {
                needed: 1,
                available: 0,
            },
            WmiError::FieldOutOfBounds {
                field: WnodeField::BufferSize,
                value: 1,
            },
            WmiError::GuidNotFound(Guid::NULL),
            WmiError::InstanceNotFound {
                guid_index: 0,
                instance_index: 1,
            },
            WmiError::InstanceNameNotFound { guid_index: 0 },
            WmiError::ItemIdNotFound(1),
            WmiError::MethodNotFound(1),
            WmiError::MethodInputTooShort {
                method_id: 1,
                needed: 2,
                available: 1,
            },
            WmiError::SetDataSize {
                guid_index: 0,
                size: 1,
            },
            WmiError::ReadOnly { guid_index: 0 },
            WmiError::NotImplemented,
            WmiError::BufferTooSmall { needed: 1 },
            WmiError::StringTooLong { units: 40_000 },
            WmiError::SizeOverflow,
        ];
        let messages: Vec<String> = all.iter().map(ToString::to_string).collect();
        for (index, message) in messages.iter().enumerate() {
            assert!(!message.is_empty());
            assert!(
                !messages[..index].contains(message),
                "two variants read `{message}`"
            );
        }
    }

    #[test]
    fn ntstatus_values_match_ntstatus_h() {
        // The values are checked against mingw-w64's ntstatus.h by tests/c_layout.rs; this
        // table pins the mapping from errors to statuses.
        let table = [
            (WmiError::UnknownMinorFunction(12), 0xC000_0010),
            (WmiError::NotImplemented, 0xC000_0010),
            (
                WmiError::RequestTooShort {
                    needed: 48,
                    available: 4,
                },
                0xC000_000D,
            ),
            (WmiError::GuidNotFound(Guid::NULL), 0xC000_0295),
            (
                WmiError::InstanceNotFound {
                    guid_index: 0,
                    instance_index: 9,
                },
                0xC000_0296,
            ),
            (
                WmiError::InstanceNameNotFound { guid_index: 0 },
                0xC000_0296,
            ),
            (WmiError::ItemIdNotFound(3), 0xC000_0297),
            (WmiError::MethodNotFound(99), 0xC000_0297),
            (WmiError::ReadOnly { guid_index: 1 }, 0xC000_02C6),
            (WmiError::BufferTooSmall { needed: 100 }, 0xC000_0023),
            (WmiError::SizeOverflow, 0xC000_0001),
        ];
        for (error, ntstatus) in table {
            assert_eq!(error.status().ntstatus(), ntstatus, "{error:?}");
        }
        assert_eq!(WmiStatus::Success.ntstatus(), 0);
    }
}
