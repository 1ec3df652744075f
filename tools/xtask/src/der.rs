//! A minimal DER writer: the handful of ASN.1 types a catalog file needs, nothing more.
//!
//! Written by hand rather than taken from a crate (`der`, `rasn`, `yasna`): the catalog only
//! *writes* about a dozen definite-length types, never parses, and every rule DER adds over BER
//! that matters here (minimal lengths, minimal integers, sorted `SET OF`) fits in this file and is
//! unit-tested below against encodings from X.690's examples; a general ASN.1 crate would bring a
//! type system and derive macros to express the same bytes. The independent check of the result
//! is done by a different implementation (Python's `asn1crypto`, openssl, osslsigncode).

/// Universal tags used by the catalog.
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OBJECT_IDENTIFIER: u8 = 0x06;
pub const UTC_TIME: u8 = 0x17;
pub const BMP_STRING: u8 = 0x1e;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;

/// A tag-length-value with a definite, minimal length (X.690 10.1).
#[must_use]
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let length = content.len();
    if length < 0x80 {
        // Short form: one byte.
        out.push(u8::try_from(length).unwrap_or(0));
    } else {
        // Long form: 0x80 | number of length bytes, then the length big-endian, no leading 0.
        let bytes = length.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let significant = &bytes[first..];
        out.push(0x80 | u8::try_from(significant.len()).unwrap_or(0));
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A `SEQUENCE` of already encoded elements, in the given order.
#[must_use]
pub fn sequence(elements: &[Vec<u8>]) -> Vec<u8> {
    tlv(SEQUENCE, &elements.concat())
}

/// A `SET OF`: DER orders the elements by their encodings (X.690 11.6).
#[must_use]
pub fn set_of(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut sorted = elements.to_vec();
    sorted.sort();
    tlv(SET, &sorted.concat())
}

/// A context-specific tag `[number]`, constructed (explicit tagging) or primitive (implicit).
#[must_use]
pub fn context(number: u8, constructed: bool, content: &[u8]) -> Vec<u8> {
    let tag = 0x80 | if constructed { 0x20 } else { 0 } | (number & 0x1f);
    tlv(tag, content)
}

/// A non-negative `INTEGER` in the fewest bytes, with a leading zero when the top bit is set.
#[must_use]
pub fn unsigned_integer(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - 1);
    let mut content = Vec::with_capacity(9);
    if bytes[first] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(&bytes[first..]);
    tlv(INTEGER, &content)
}

/// An `OBJECT IDENTIFIER` from its dotted form (`"1.3.6.1.4.1.311.10.1"`).
///
/// # Panics
/// On a malformed OID: every OID given is a constant of this crate, so a bad one is a bug that
/// the unit tests catch.
#[must_use]
pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|arc| arc.parse().expect("an OID constant has numeric arcs"))
        .collect();
    assert!(arcs.len() >= 2 && arcs[0] <= 2, "OID constant {dotted}");
    let mut content = Vec::new();
    // The first two arcs share one subidentifier (X.690 8.19.4).
    for arc in std::iter::once(arcs[0] * 40 + arcs[1]).chain(arcs[2..].iter().copied()) {
        // Base 128, most significant group first, bit 8 set on all but the last group.
        let mut groups = vec![u8::try_from(arc & 0x7f).unwrap_or(0)];
        let mut rest = arc >> 7;
        while rest != 0 {
            groups.push(0x80 | u8::try_from(rest & 0x7f).unwrap_or(0));
            rest >>= 7;
        }
        content.extend(groups.iter().rev());
    }
    tlv(OBJECT_IDENTIFIER, &content)
}

/// An `OCTET STRING`.
#[must_use]
pub fn octet_string(bytes: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, bytes)
}

/// `NULL`.
#[must_use]
pub fn null() -> Vec<u8> {
    tlv(NULL, &[])
}

/// A `BMPString` (UCS-2 big-endian) of a Basic Multilingual Plane string.
#[must_use]
pub fn bmp_string(text: &str) -> Vec<u8> {
    let content: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    tlv(BMP_STRING, &content)
}

/// `UTCTime` `YYMMDDHHMMSSZ` (X.690 11.8) for a year in 1950..2050.
#[must_use]
pub fn utc_time(year: u32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Vec<u8> {
    let text = format!(
        "{:02}{month:02}{day:02}{hour:02}{minute:02}{second:02}Z",
        year % 100
    );
    tlv(UTC_TIME, text.as_bytes())
}

/// UTF-16LE with a terminating NUL: how catalog name/value attributes store their values.
#[must_use]
pub fn utf16le_nul(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_minimal_in_short_and_long_form() {
        assert_eq!(tlv(OCTET_STRING, &[0; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(tlv(OCTET_STRING, &[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(OCTET_STRING, &[0; 0xff])[..3], [0x04, 0x81, 0xff]);
        assert_eq!(
            tlv(OCTET_STRING, &[0; 0x100])[..4],
            [0x04, 0x82, 0x01, 0x00]
        );
        assert_eq!(
            tlv(OCTET_STRING, &vec![0; 0x1_0000])[..5],
            [0x04, 0x83, 1, 0, 0]
        );
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(unsigned_integer(0), [0x02, 0x01, 0x00]);
        assert_eq!(unsigned_integer(0x7f), [0x02, 0x01, 0x7f]);
        assert_eq!(unsigned_integer(0x80), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(
            unsigned_integer(0x1001_0001),
            [0x02, 0x04, 0x10, 0x01, 0x00, 0x01]
        );
    }

    #[test]
    fn object_identifiers_match_known_encodings() {
        // sha256 and szOID_CTL as openssl writes them.
        assert_eq!(
            oid("2.16.840.1.101.3.4.2.1"),
            [
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01
            ]
        );
        assert_eq!(
            oid("1.3.6.1.4.1.311.10.1"),
            [
                0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x0a, 0x01
            ]
        );
    }

    #[test]
    fn set_of_sorts_its_elements_and_sequence_keeps_order() {
        let a = octet_string(&[2]);
        let b = octet_string(&[1]);
        assert_eq!(set_of(&[a.clone(), b.clone()]), [0x31, 6, 4, 1, 1, 4, 1, 2]);
        assert_eq!(sequence(&[a, b]), [0x30, 6, 4, 1, 2, 4, 1, 1]);
    }

    #[test]
    fn strings_times_and_tags() {
        assert_eq!(bmp_string("OS"), [0x1e, 4, 0, b'O', 0, b'S']);
        assert_eq!(utf16le_nul("A"), [b'A', 0, 0, 0]);
        assert_eq!(utc_time(2026, 12, 7, 9, 5, 0)[2..], *b"261207090500Z");
        assert_eq!(context(0, true, &[]), [0xa0, 0]);
        assert_eq!(context(2, false, &[]), [0x82, 0]);
        assert_eq!(null(), [0x05, 0]);
    }
}
