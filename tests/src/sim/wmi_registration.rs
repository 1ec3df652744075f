//! WMI registration as Windows performs it: `IRP_MN_REGINFO_EX` (what WMI sends on Windows XP
//! and later, in place of `IRP_MN_REGINFO`), retried with the size the driver asks for, and the
//! `WMIREGINFOW` it returns read and checked the way WMI must before it trusts it.
//!
//! The reply is parsed here from wmistr.h's field offsets (64-bit), independently of the
//! `rvscsi-wmi` crate that builds it.

use super::{Adapter, SimError, WmiRequest};

/// `IRP_MN_REGINFO_EX` (wdm.h).
pub const IRP_MN_REGINFO_EX: u8 = 0x0B;

/// The first buffer the simulator's WMI offers: room for the fixed part and one `WMIREGGUIDW`
/// only, so that any registration of more than one data block goes through the retry with the
/// size the driver returns (Windows also starts from a guess and retries with the size a
/// driver answers).
pub const FIRST_REGINFO_BUFFER: usize = REGINFO_FIXED + REGGUID_SIZE;

/// `sizeof(WMIREGINFOW)` up to `WmiRegGuid[]` on 64-bit Windows.
const REGINFO_FIXED: usize = 24;
/// `sizeof(WMIREGGUIDW)` on 64-bit Windows.
const REGGUID_SIZE: usize = 32;

/// One `WMIREGGUIDW` of a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisteredGuid {
    /// `Guid`, as its 16 bytes.
    pub guid: [u8; 16],
    /// `Flags` (`WMIREG_FLAG_*`).
    pub flags: u32,
    /// `InstanceCount`.
    pub instance_count: u32,
}

/// What a driver registered with WMI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WmiRegistration {
    /// The data blocks, in the driver's order.
    pub guids: Vec<RegisteredGuid>,
    /// `MofResourceName`, if the driver gave one.
    pub mof_resource_name: Option<String>,
    /// `RegistryPath`, if the driver gave one.
    pub registry_path: Option<String>,
    /// The buffer size of each `IRP_MN_REGINFO_EX` sent (the first guess, then the retry).
    pub buffer_sizes: Vec<usize>,
}

/// Why a registration failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationError {
    /// The driver completed `IRP_MN_REGINFO_EX` with this SRB status (not SUCCESS, and not
    /// DATA_OVERRUN with a size).
    Refused(u8),
    /// DATA_OVERRUN without a usable size (no `ULONG`, or not larger than the buffer sent).
    BadSizeNeeded(u32),
    /// The returned `WMIREGINFOW` is malformed: which field.
    Malformed(&'static str),
}

impl Adapter {
    /// Registers the miniport with WMI as Windows does: `IRP_MN_REGINFO_EX` with `DataPath` =
    /// `WMIREGISTER` (0) and a [`FIRST_REGINFO_BUFFER`]-byte buffer; on
    /// `SRB_STATUS_DATA_OVERRUN` the driver has written the size it needs as a `ULONG`, and the
    /// request is sent once more with that size. The returned `WMIREGINFOW` is checked
    /// (`BufferSize` within what was returned, the GUID table and each counted string inside
    /// `BufferSize`, `NextWmiRegInfo` 0) before its table is read.
    ///
    /// # Errors
    /// [`SimError::WmiRegistration`], and as [`Adapter::wmi`].
    pub fn wmi_register(&self, processor: u32) -> Result<WmiRegistration, SimError> {
        let refuse = |error| Err(SimError::WmiRegistration(error));
        let mut buffer_sizes = vec![FIRST_REGINFO_BUFFER];
        let mut completion = self.wmi(
            processor,
            &WmiRequest::adapter(IRP_MN_REGINFO_EX, None, vec![0; FIRST_REGINFO_BUFFER]),
        )?;
        if completion.status() == super::abi::SRB_STATUS_DATA_OVERRUN {
            let needed = match completion.data.first_chunk::<4>() {
                Some(bytes) if completion.data_transfer_length == 4 => u32::from_le_bytes(*bytes),
                _ => return refuse(RegistrationError::BadSizeNeeded(0)),
            };
            if needed as usize <= FIRST_REGINFO_BUFFER {
                return refuse(RegistrationError::BadSizeNeeded(needed));
            }
            buffer_sizes.push(needed as usize);
            completion = self.wmi(
                processor,
                &WmiRequest::adapter(IRP_MN_REGINFO_EX, None, vec![0; needed as usize]),
            )?;
        }
        if completion.status() != super::abi::SRB_STATUS_SUCCESS {
            return refuse(RegistrationError::Refused(completion.srb_status));
        }
        let returned = completion.data_transfer_length as usize;
        let reply = completion.data.get(..returned).unwrap_or(&[]);
        let mut registration = parse_reginfo(reply).map_err(SimError::WmiRegistration)?;
        registration.buffer_sizes = buffer_sizes;
        Ok(registration)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at.checked_add(4)?)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

/// Reads the counted string (`USHORT` byte count, then UTF-16LE) at `offset`, inside `within`.
fn counted_string(within: &[u8], offset: u32) -> Result<Option<String>, RegistrationError> {
    if offset == 0 {
        return Ok(None);
    }
    let start = offset as usize;
    let count = within
        .get(start..start + 2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .ok_or(RegistrationError::Malformed("string offset"))?;
    let units: Vec<u16> = within
        .get(start + 2..start + 2 + count)
        .ok_or(RegistrationError::Malformed("string length"))?
        .chunks_exact(2)
        .map(|unit| u16::from_le_bytes([unit[0], unit[1]]))
        .collect();
    String::from_utf16(&units)
        .map(Some)
        .map_err(|_| RegistrationError::Malformed("string encoding"))
}

/// Parses and checks a `WMIREGINFOW` of `reply.len()` returned bytes.
fn parse_reginfo(reply: &[u8]) -> Result<WmiRegistration, RegistrationError> {
    let field = |at, name| u32_at(reply, at).ok_or(RegistrationError::Malformed(name));
    let buffer_size = field(0, "BufferSize")? as usize;
    if buffer_size < REGINFO_FIXED || buffer_size > reply.len() {
        return Err(RegistrationError::Malformed("BufferSize"));
    }
    let within = &reply[..buffer_size];
    if field(4, "NextWmiRegInfo")? != 0 {
        return Err(RegistrationError::Malformed("NextWmiRegInfo"));
    }
    let registry_path = counted_string(within, field(8, "RegistryPath")?)?;
    let mof_resource_name = counted_string(within, field(12, "MofResourceName")?)?;
    let guid_count = field(16, "GuidCount")? as usize;
    let table_end = guid_count
        .checked_mul(REGGUID_SIZE)
        .and_then(|table| table.checked_add(REGINFO_FIXED))
        .filter(|&end| end <= buffer_size)
        .ok_or(RegistrationError::Malformed("GuidCount"))?;
    let guids = within[REGINFO_FIXED..table_end]
        .chunks_exact(REGGUID_SIZE)
        .map(|entry| {
            let mut guid = [0; 16];
            guid.copy_from_slice(&entry[..16]);
            RegisteredGuid {
                guid,
                flags: u32_at(entry, 16).unwrap_or(0),
                instance_count: u32_at(entry, 20).unwrap_or(0),
            }
        })
        .collect();
    Ok(WmiRegistration {
        guids,
        mof_resource_name,
        registry_path,
        buffer_sizes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registration of `guids` one-instance blocks with "Mof" as its MOF resource name.
    fn reply(guids: u8) -> Vec<u8> {
        let table_end = REGINFO_FIXED + usize::from(guids) * REGGUID_SIZE;
        let mut bytes = vec![0; table_end + 8];
        let size = bytes.len() as u32;
        bytes[0..4].copy_from_slice(&size.to_le_bytes());
        bytes[12..16].copy_from_slice(&(table_end as u32).to_le_bytes());
        bytes[16..20].copy_from_slice(&u32::from(guids).to_le_bytes());
        for index in 0..usize::from(guids) {
            let at = REGINFO_FIXED + index * REGGUID_SIZE;
            bytes[at] = index as u8 + 1;
            bytes[at + 20] = 1;
        }
        bytes[table_end..].copy_from_slice(&[6, 0, b'M', 0, b'o', 0, b'f', 0]);
        bytes
    }

    #[test]
    fn a_well_formed_registration_is_read() {
        let registration = parse_reginfo(&reply(2)).unwrap();
        assert_eq!(registration.guids.len(), 2);
        assert_eq!(registration.guids[1].guid[0], 2);
        assert_eq!(registration.guids[1].instance_count, 1);
        assert_eq!(registration.mof_resource_name.as_deref(), Some("Mof"));
        assert_eq!(registration.registry_path, None);
    }

    #[test]
    fn a_malformed_registration_is_refused_naming_the_field() {
        let malformed = |edit: fn(&mut Vec<u8>)| {
            let mut bytes = reply(2);
            edit(&mut bytes);
            parse_reginfo(&bytes).unwrap_err()
        };
        // BufferSize beyond the bytes returned.
        assert_eq!(
            malformed(|b| b[0] += 1),
            RegistrationError::Malformed("BufferSize")
        );
        // A GUID table that runs past BufferSize.
        assert_eq!(
            malformed(|b| b[16] = 3),
            RegistrationError::Malformed("GuidCount")
        );
        // A chained registration: a miniport registers for itself only.
        assert_eq!(
            malformed(|b| b[4] = 8),
            RegistrationError::Malformed("NextWmiRegInfo")
        );
        // A string whose count runs past BufferSize.
        assert_eq!(
            malformed(|b| {
                let at = b.len() - 8;
                b[at] = 8;
            }),
            RegistrationError::Malformed("string length")
        );
    }
}
