//! SCSI-3 persistent reservations on the wire (SPC-4 5.13, 6.15, 6.16): the PERSISTENT RESERVE
//! IN and OUT CDBs, the basic PR OUT parameter list, and the READ KEYS and READ RESERVATION
//! parameter data, parsed without trusting a length field the device wrote.

use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::scsi_cmd::{CDB_LEN, Cdb, ParseError};

/// PERSISTENT RESERVE IN (SPC-4 6.15).
pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
/// PERSISTENT RESERVE OUT (SPC-4 6.16).
pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;

/// Additional sense codes (ASC, ASCQ) persistent reservations raise as unit attentions
/// (SPC-4 5.13.11, annex D).
pub mod asc {
    /// RESERVATIONS PREEMPTED: raised for the other registrants by CLEAR (SPC-4 5.13.11.2.3),
    /// and by tgtd also for the nexus whose registration a PREEMPT removed.
    pub const RESERVATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x03);
    /// RESERVATIONS RELEASED: raised for the other registrants when a registrants-only or
    /// all-registrants reservation is released (SPC-4 5.13.11.2.2).
    pub const RESERVATIONS_RELEASED: (u8, u8) = (0x2a, 0x04);
    /// REGISTRATIONS PREEMPTED: what SPC-4 5.13.11.2.4 raises for a nexus whose registration a
    /// PREEMPT removed.
    pub const REGISTRATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x05);
}

/// PERSISTENT RESERVE IN service actions (SPC-4 6.15.1, table 169).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InAction {
    /// READ KEYS: the generation and every registered key.
    ReadKeys = 0x00,
    /// READ RESERVATION: the generation and the reservation, if any.
    ReadReservation = 0x01,
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 6.16.2, table 197).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OutAction {
    /// REGISTER: register, change or (with service action key 0) remove this nexus's key.
    Register = 0x00,
    /// RESERVE: create a reservation of a type for a registered nexus.
    Reserve = 0x01,
    /// RELEASE: the holder drops the reservation.
    Release = 0x02,
    /// CLEAR: remove every registration and the reservation.
    Clear = 0x03,
    /// PREEMPT: remove the registrations holding a key, taking over their reservation.
    Preempt = 0x04,
}

/// Persistent reservation types (SPC-4 6.15.3.4, table 176).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReservationType {
    /// Write Exclusive: only the holder writes; everyone reads.
    WriteExclusive = 0x1,
    /// Exclusive Access: only the holder reads or writes.
    ExclusiveAccess = 0x3,
    /// Write Exclusive - Registrants Only: registered nexuses write; everyone reads.
    WriteExclusiveRegistrantsOnly = 0x5,
    /// Exclusive Access - Registrants Only: only registered nexuses read or write.
    ExclusiveAccessRegistrantsOnly = 0x6,
    /// Write Exclusive - All Registrants.
    WriteExclusiveAllRegistrants = 0x7,
    /// Exclusive Access - All Registrants.
    ExclusiveAccessAllRegistrants = 0x8,
}

impl ReservationType {
    /// The type a device reported, if it is one SPC-4 defines.
    #[must_use]
    pub const fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            0x1 => Self::WriteExclusive,
            0x3 => Self::ExclusiveAccess,
            0x5 => Self::WriteExclusiveRegistrantsOnly,
            0x6 => Self::ExclusiveAccessRegistrantsOnly,
            0x7 => Self::WriteExclusiveAllRegistrants,
            0x8 => Self::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }
}

/// The scope code for a reservation of the whole logical unit (SPC-4 6.15.3.3); the only one
/// SPC-4 still defines.
const LU_SCOPE: u8 = 0x0;

/// PERSISTENT RESERVE IN with `action`, `allocation` bytes at most (SPC-4 6.15.1).
#[must_use]
pub fn persistent_reserve_in(action: InAction, allocation: u16) -> Cdb {
    let mut cdb = [0; CDB_LEN];
    cdb[0] = PERSISTENT_RESERVE_IN;
    cdb[1] = action as u8;
    cdb[7..9].copy_from_slice(&allocation.to_be_bytes());
    cdb
}

/// PERSISTENT RESERVE OUT with `action` and, for the actions that take one, the reservation
/// type, on the logical unit scope, followed by a basic [`PrOutParameters`] list
/// (SPC-4 6.16.1: the type is ignored by REGISTER and CLEAR, so `None` sends 0).
#[must_use]
pub fn persistent_reserve_out(action: OutAction, kind: Option<ReservationType>) -> Cdb {
    let mut cdb = [0; CDB_LEN];
    cdb[0] = PERSISTENT_RESERVE_OUT;
    cdb[1] = action as u8;
    cdb[2] = LU_SCOPE << 4 | kind.map_or(0, |kind| kind as u8);
    let length = size_of::<PrOutParameters>() as u32;
    cdb[5..9].copy_from_slice(&length.to_be_bytes());
    cdb
}

/// The basic PERSISTENT RESERVE OUT parameter list (SPC-4 6.16.3, table 199), without
/// SPEC_I_PT, ALL_TG_PT or APTPL: the 24 bytes every service action used here sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PrOutParameters {
    /// RESERVATION KEY: the key this nexus registered (0 when it has none).
    pub reservation_key: U64,
    /// SERVICE ACTION RESERVATION KEY: the new key for REGISTER, the key to preempt for
    /// PREEMPT.
    pub service_action_key: U64,
    /// Obsolete (formerly the scope-specific address).
    pub obsolete: [u8; 4],
    /// SPEC_I_PT (bit 3), ALL_TG_PT (bit 2), APTPL (bit 0); all zero here.
    pub flags: u8,
    /// Reserved.
    pub reserved: u8,
    /// Obsolete (formerly the extent length).
    pub obsolete_extent: [u8; 2],
}
const _: () = assert!(size_of::<PrOutParameters>() == 24);

impl PrOutParameters {
    /// A parameter list with the two keys and every flag clear.
    #[must_use]
    pub fn new(reservation_key: u64, service_action_key: u64) -> Self {
        Self {
            reservation_key: U64::new(reservation_key),
            service_action_key: U64::new(service_action_key),
            obsolete: [0; 4],
            flags: 0,
            reserved: 0,
            obsolete_extent: [0; 2],
        }
    }
}

/// The header of PERSISTENT RESERVE IN parameter data (SPC-4 6.15.2 table 170, 6.15.3
/// table 172).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct PrInHeader {
    /// PRGENERATION: bumped by every REGISTER, CLEAR, PREEMPT.
    generation: U32,
    /// ADDITIONAL LENGTH: bytes that follow the header, whether or not they fit the allocation.
    additional_length: U32,
}
const _: () = assert!(size_of::<PrInHeader>() == 8);

/// The reservation descriptor of READ RESERVATION data (SPC-4 6.15.3.2, table 173).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct ReservationDescriptor {
    /// RESERVATION KEY of the holder (0 for an all-registrants reservation).
    key: U64,
    /// Obsolete.
    obsolete: [u8; 4],
    /// Reserved.
    reserved: u8,
    /// SCOPE (bits 7..4) and TYPE (bits 3..0).
    scope_type: u8,
    /// Obsolete.
    obsolete_extent: [u8; 2],
}
const _: () = assert!(size_of::<ReservationDescriptor>() == 16);

/// Most keys [`parse_read_keys`] keeps.
pub const MAX_KEYS: usize = 8;

/// READ KEYS parameter data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys {
    /// PRGENERATION.
    pub generation: u32,
    /// Registered keys the device reported in full, in its order.
    received: [u64; MAX_KEYS],
    /// How many of `keys` are valid.
    len: usize,
    /// How many keys the ADDITIONAL LENGTH announces (may exceed what arrived).
    pub announced: usize,
}

impl Keys {
    /// The keys received.
    #[must_use]
    pub fn keys(&self) -> &[u64] {
        self.received.get(..self.len).unwrap_or(&[])
    }

    /// Whether the device announced exactly `expected` keys, all of them received, as a set
    /// (SPC-4 does not order them).
    #[must_use]
    pub fn is_exactly(&self, expected: &[u64]) -> bool {
        self.announced == expected.len()
            && self.len == expected.len()
            && expected.iter().all(|key| self.keys().contains(key))
            && self.keys().iter().all(|key| expected.contains(key))
    }
}

/// Parses READ KEYS parameter data (SPC-4 6.15.2): the header, then one 8-byte key per
/// registration. Keys past the received bytes or past [`MAX_KEYS`] are counted in
/// [`Keys::announced`] but not kept.
///
/// # Errors
/// [`ParseError::Short`] below the header; [`ParseError::LengthBeyondData`] if the ADDITIONAL
/// LENGTH is not a whole number of keys.
pub fn parse_read_keys(data: &[u8]) -> Result<Keys, ParseError> {
    let (header, rest) = PrInHeader::read_from_prefix(data).map_err(|_| ParseError::Short {
        received: data.len(),
        needed: size_of::<PrInHeader>(),
    })?;
    let additional = header.additional_length.get() as usize;
    if !additional.is_multiple_of(8) {
        return Err(ParseError::LengthBeyondData {
            claimed: size_of::<PrInHeader>() + additional,
            received: data.len(),
        });
    }
    let mut keys = Keys {
        generation: header.generation.get(),
        received: [0; MAX_KEYS],
        len: 0,
        announced: additional / 8,
    };
    let received = rest.get(..additional.min(rest.len())).unwrap_or(&[]);
    for (slot, chunk) in keys.received.iter_mut().zip(received.chunks_exact(8)) {
        *slot = U64::read_from_bytes(chunk).map_or(0, U64::get);
        keys.len += 1;
    }
    Ok(keys)
}

/// The reservation READ RESERVATION reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's reservation key.
    pub key: u64,
    /// SCOPE.
    pub scope: u8,
    /// TYPE, raw: [`ReservationType::from_raw`] names it.
    pub kind: u8,
}

/// READ RESERVATION parameter data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservationData {
    /// PRGENERATION.
    pub generation: u32,
    /// The reservation, or `None` when there is none (ADDITIONAL LENGTH 0).
    pub holder: Option<Holder>,
}

/// Parses READ RESERVATION parameter data (SPC-4 6.15.3): ADDITIONAL LENGTH 0 means no
/// reservation, 16 one reservation descriptor.
///
/// # Errors
/// [`ParseError::Short`] below the header or a descriptor it announces;
/// [`ParseError::LengthBeyondData`] for an ADDITIONAL LENGTH other than 0 or 16.
pub fn parse_read_reservation(data: &[u8]) -> Result<ReservationData, ParseError> {
    let (header, rest) = PrInHeader::read_from_prefix(data).map_err(|_| ParseError::Short {
        received: data.len(),
        needed: size_of::<PrInHeader>(),
    })?;
    let generation = header.generation.get();
    match header.additional_length.get() {
        0 => Ok(ReservationData {
            generation,
            holder: None,
        }),
        16 => {
            let (descriptor, _) =
                ReservationDescriptor::read_from_prefix(rest).map_err(|_| ParseError::Short {
                    received: data.len(),
                    needed: size_of::<PrInHeader>() + size_of::<ReservationDescriptor>(),
                })?;
            Ok(ReservationData {
                generation,
                holder: Some(Holder {
                    key: descriptor.key.get(),
                    scope: descriptor.scope_type >> 4,
                    kind: descriptor.scope_type & 0x0f,
                }),
            })
        }
        other => Err(ParseError::LengthBeyondData {
            claimed: size_of::<PrInHeader>().saturating_add(other as usize),
            received: data.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn cdbs_put_action_scope_type_and_lengths_where_spc4_says() {
        let cdb = persistent_reserve_out(
            OutAction::Preempt,
            Some(ReservationType::ExclusiveAccessRegistrantsOnly),
        );
        assert_eq!(cdb[..10], [0x5f, 0x04, 0x06, 0, 0, 0, 0, 0, 24, 0]);
        assert_eq!(
            persistent_reserve_out(OutAction::Register, None)[..3],
            [0x5f, 0, 0]
        );
        let cdb = persistent_reserve_in(InAction::ReadReservation, 0x0102);
        assert_eq!(cdb[..10], [0x5e, 0x01, 0, 0, 0, 0, 0, 0x01, 0x02, 0]);
        assert!(cdb[10..].iter().all(|b| *b == 0));
    }

    #[test]
    fn the_parameter_list_is_big_endian_with_flags_at_byte_20() {
        let list = PrOutParameters::new(0x0102_0304_0506_0708, 0x1112_1314_1516_1718);
        let bytes = list.as_bytes();
        assert_eq!(bytes[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            bytes[8..16],
            [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert!(bytes[16..].iter().all(|b| *b == 0));
    }

    fn read_keys_data(generation: u32, keys: &[u64], additional: Option<u32>) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend_from_slice(&generation.to_be_bytes());
        let length = additional.unwrap_or(8 * keys.len() as u32);
        data.extend_from_slice(&length.to_be_bytes());
        for key in keys {
            data.extend_from_slice(&key.to_be_bytes());
        }
        data
    }

    #[test]
    fn read_keys_are_compared_as_a_set_and_must_all_arrive() {
        let keys = parse_read_keys(&read_keys_data(7, &[0xb, 0xa], None)).unwrap();
        assert_eq!(keys.generation, 7);
        assert_eq!(keys.keys(), [0xb, 0xa]);
        assert!(keys.is_exactly(&[0xa, 0xb]));
        assert!(!keys.is_exactly(&[0xa]));
        assert!(!keys.is_exactly(&[0xa, 0xb, 0xc]));
        let none = parse_read_keys(&read_keys_data(0, &[], None)).unwrap();
        assert!(none.is_exactly(&[]));
        // Announced but cut off by the allocation length: not "exactly" the received ones.
        let cut = parse_read_keys(&read_keys_data(1, &[0xa], Some(16))).unwrap();
        assert_eq!((cut.keys(), cut.announced), (&[0xa][..], 2));
        assert!(!cut.is_exactly(&[0xa]));
        assert_eq!(
            parse_read_keys(&read_keys_data(1, &[0xa], Some(12))),
            Err(ParseError::LengthBeyondData {
                claimed: 20,
                received: 16
            })
        );
        assert_eq!(
            parse_read_keys(&[0; 7]),
            Err(ParseError::Short {
                received: 7,
                needed: 8
            })
        );
    }

    #[test]
    fn read_reservation_reports_holder_scope_and_type_or_none() {
        let mut data = Vec::new();
        data.extend_from_slice(&3u32.to_be_bytes());
        data.extend_from_slice(&16u32.to_be_bytes());
        data.extend_from_slice(&0xb0b0u64.to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0x06, 0, 0]);
        let parsed = parse_read_reservation(&data).unwrap();
        assert_eq!(
            parsed,
            ReservationData {
                generation: 3,
                holder: Some(Holder {
                    key: 0xb0b0,
                    scope: 0,
                    kind: 6
                })
            }
        );
        assert_eq!(
            ReservationType::from_raw(6),
            Some(ReservationType::ExclusiveAccessRegistrantsOnly)
        );
        assert_eq!(ReservationType::from_raw(2), None);
        assert!(matches!(
            parse_read_reservation(&data[..20]),
            Err(ParseError::Short { .. })
        ));
        let mut none = data[..8].to_vec();
        none[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(parse_read_reservation(&none).unwrap().holder, None);
        none[4..8].copy_from_slice(&8u32.to_be_bytes());
        assert!(matches!(
            parse_read_reservation(&none),
            Err(ParseError::LengthBeyondData { claimed: 16, .. })
        ));
    }

    proptest! {
        /// Whatever a device writes, parsing returns a value or an error, never more keys than
        /// it announced or received.
        #[test]
        fn parsing_device_data_never_panics(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(keys) = parse_read_keys(&data) {
                prop_assert!(keys.keys().len() <= keys.announced);
                prop_assert!(keys.keys().len() * 8 + 8 <= data.len());
            }
            let _ = parse_read_reservation(&data);
        }
    }
}
