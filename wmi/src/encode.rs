//! WMI data-block encoding: an [`Encoder`] over `&mut [u8]` that lays out data items with the
//! rules WMI's WDM provider reads them by, and measures what it could not write.
//!
//! The rules (Windows driver docs, "Driver-Defined WMI Data Items"):
//! - a data block starts 8-aligned; each item is naturally aligned relative to that start
//!   (`uint8`/`boolean` 1, `uint16`/`string` 2, `uint32` 4, `uint64` 8), like `/Zp8` C;
//! - an array is aligned like its element; an embedded class like its largest member;
//! - a string is a `USHORT` byte count followed by UTF-16LE code units; with a `MaxLen(n)`
//!   qualifier the driver may use a fixed buffer of `n` characters, zero-padded, and then the
//!   byte count covers the padding too;
//! - consecutive instances in a `WNODE_ALL_DATA` start 8-aligned.
//!
//! The encoder never writes outside its slice. When an item does not fit it keeps counting, so
//! one pass gives both the bytes (when they fit) and the exact size needed (when they do not),
//! which is what a `WNODE_TOO_SMALL` reply reports.

use zerocopy::{Immutable, IntoBytes};

/// A zerocopy structure that can be embedded in a data block as a WMI embedded class.
///
/// The structure's fields are byte-aligned little-endian types with explicit padding, so its
/// bytes are already laid out; `ALIGN` is the alignment of its largest member, which the
/// encoder applies before writing it.
pub trait WmiClass: IntoBytes + Immutable {
    /// Natural alignment of the class: the alignment of its largest member.
    const ALIGN: usize;
}

/// Why an encoding did not produce a complete data block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The slice is too small; the complete encoding needs `needed` bytes.
    TooSmall {
        /// Bytes the complete encoding needs.
        needed: usize,
    },
    /// A variable-length string is longer than its `USHORT` byte count can describe.
    StringTooLong {
        /// Its length in UTF-16 code units.
        units: usize,
    },
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::TooSmall { needed } => write!(f, "buffer too small: {needed} bytes needed"),
            Self::StringTooLong { units } => {
                write!(
                    f,
                    "string of {units} UTF-16 units is too long for a USHORT byte count"
                )
            }
        }
    }
}

impl core::error::Error for EncodeError {}

/// How many UTF-16 code units of `value` fit in `max_units` without splitting a character.
fn fitting_units(value: &str, max_units: usize) -> usize {
    let mut units = 0;
    for character in value.chars() {
        let next = units + character.len_utf16();
        if next > max_units {
            break;
        }
        units = next;
    }
    units
}

/// Writes WMI data items into a slice, aligned, little-endian; counts past the end.
#[derive(Debug)]
pub struct Encoder<'a> {
    buf: &'a mut [u8],
    /// Logical position: bytes the items so far need, whether or not they were written.
    position: usize,
    /// Set when an item did not fit; later items are only counted, so the slice never holds a
    /// later item after a missing one.
    overflowed: bool,
    /// The first encoding error other than running out of room.
    error: Option<EncodeError>,
}

impl<'a> Encoder<'a> {
    /// An encoder writing at the start of `buf`, which must be where the data block starts
    /// (8-aligned in the WNODE), because alignment is computed relative to it.
    #[must_use]
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self {
            buf,
            position: 0,
            overflowed: false,
            error: None,
        }
    }

    /// Bytes available.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the items so far need (the current logical offset).
    #[must_use]
    pub fn position(&self) -> usize {
        self.position
    }

    /// Whether everything so far was written.
    #[must_use]
    pub fn fits(&self) -> bool {
        !self.overflowed
    }

    fn put(&mut self, bytes: &[u8]) {
        let end = self.position.saturating_add(bytes.len());
        if !self.overflowed {
            // `..bytes.len()` of the rest, not `position..end`: the optimiser then sees the
            // lengths agree and leaves no panic path in `copy_from_slice`.
            match self
                .buf
                .get_mut(self.position..)
                .and_then(|rest| rest.get_mut(..bytes.len()))
            {
                Some(target) => target.copy_from_slice(bytes),
                None => self.overflowed = true,
            }
        }
        self.position = end;
    }

    fn put_zeros(&mut self, count: usize) {
        let end = self.position.saturating_add(count);
        if !self.overflowed {
            match self.buf.get_mut(self.position..end) {
                Some(target) => target.fill(0),
                None => self.overflowed = true,
            }
        }
        self.position = end;
    }

    /// Pads with zeros to a multiple of `align` (1, 2, 4 or 8) from the block start.
    pub fn align(&mut self, align: usize) {
        let align = align.max(1);
        let padding = (align - self.position % align) % align;
        self.put_zeros(padding);
    }

    /// Zero bytes (reserved fields, padding inside fixed-size fields).
    pub fn zeros(&mut self, count: usize) {
        self.put_zeros(count);
    }

    /// A `uint8`.
    pub fn u8(&mut self, value: u8) {
        self.put(&[value]);
    }

    /// A `boolean`: one byte, 0 or 1.
    pub fn bool(&mut self, value: bool) {
        self.put(&[u8::from(value)]);
    }

    /// A `uint16`, 2-aligned.
    pub fn u16(&mut self, value: u16) {
        self.align(2);
        self.put(&value.to_le_bytes());
    }

    /// A `uint32`, 4-aligned.
    pub fn u32(&mut self, value: u32) {
        self.align(4);
        self.put(&value.to_le_bytes());
    }

    /// A `uint64`, 8-aligned.
    pub fn u64(&mut self, value: u64) {
        self.align(8);
        self.put(&value.to_le_bytes());
    }

    /// A `sint64`, 8-aligned.
    pub fn i64(&mut self, value: i64) {
        self.align(8);
        self.put(&value.to_le_bytes());
    }

    /// A `uint8` array (fixed or already sized): byte-aligned, written as is.
    pub fn bytes(&mut self, value: &[u8]) {
        self.put(value);
    }

    /// A `sint64` array, 8-aligned.
    pub fn i64_array(&mut self, values: &[i64]) {
        self.align(8);
        for value in values {
            self.put(&value.to_le_bytes());
        }
    }

    /// An embedded class: aligned to its largest member, then its bytes.
    pub fn class<T: WmiClass>(&mut self, value: &T) {
        self.align(T::ALIGN);
        self.put(value.as_bytes());
    }

    /// A variable-length `string`: 2-aligned `USHORT` byte count, then UTF-16LE, no
    /// terminator. A string over 32767 code units cannot be counted and is an error.
    pub fn string(&mut self, value: &str) {
        let units = value.encode_utf16().count();
        let Some(byte_count) = units
            .checked_mul(2)
            .and_then(|bytes| u16::try_from(bytes).ok())
        else {
            self.error
                .get_or_insert(EncodeError::StringTooLong { units });
            return;
        };
        self.u16(byte_count);
        for unit in value.encode_utf16() {
            self.put(&unit.to_le_bytes());
        }
    }

    /// A `MaxLen(max_chars)` string in its fixed buffer: the `USHORT` byte count is the whole
    /// buffer (`2 * max_chars`, covering the zero padding), followed by `max_chars` UTF-16
    /// code units, the string first and zeros after. A longer string is cut at a character
    /// boundary (a surrogate pair is never split). `max_chars` above 32767 is clamped, since
    /// the byte count is a `USHORT`.
    pub fn string_max(&mut self, value: &str, max_chars: usize) {
        let max_chars = max_chars.min(usize::from(u16::MAX) / 2);
        self.u16((max_chars * 2) as u16);
        self.units_padded(value, max_chars);
    }

    /// A string kept in a fixed `uint16[max_chars + 1]` array rather than as a WMI string
    /// (hbapiwmi's `HBAScsiID.OSDeviceName`): element 0 is the string's byte length, then the
    /// string, zero-padded to `max_chars` code units; cut like [`Encoder::string_max`].
    pub fn string_in_array(&mut self, value: &str, max_chars: usize) {
        let max_chars = max_chars.min(usize::from(u16::MAX) / 2);
        let units = fitting_units(value, max_chars);
        self.u16((units * 2) as u16);
        self.units_padded(value, max_chars);
    }

    /// The UTF-16 units of `value` that fit in `max_chars`, then zeros up to `max_chars`.
    fn units_padded(&mut self, value: &str, max_chars: usize) {
        let units = fitting_units(value, max_chars);
        for unit in value.encode_utf16().take(units) {
            self.put(&unit.to_le_bytes());
        }
        self.put_zeros((max_chars - units) * 2);
    }

    /// Overwrites a `uint32` written (or reserved with [`Encoder::zeros`]) earlier at
    /// `position`, for offsets that are only known once later items are placed. Does nothing
    /// if those bytes were never written (the encoding is then too small anyway).
    pub fn patch_u32(&mut self, position: usize, value: u32) {
        let end = position.saturating_add(4);
        if end <= self.position
            && let Some(target) = self
                .buf
                .get_mut(position..)
                .and_then(|rest| rest.first_chunk_mut::<4>())
        {
            *target = value.to_le_bytes();
        }
    }

    /// Ends the encoding: the bytes used, or why the block is incomplete.
    ///
    /// # Errors
    /// [`EncodeError::StringTooLong`] if a string could not be counted (reported even when
    /// the slice was also too small), else [`EncodeError::TooSmall`] with the size needed.
    pub fn finish(self) -> Result<usize, EncodeError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.overflowed {
            return Err(EncodeError::TooSmall {
                needed: self.position,
            });
        }
        Ok(self.position)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::{String, ToString};
    use std::vec;

    use super::*;

    #[test]
    fn error_messages_name_the_offending_values() {
        assert_eq!(
            EncodeError::TooSmall { needed: 72 }.to_string(),
            "buffer too small: 72 bytes needed"
        );
        assert_eq!(
            EncodeError::StringTooLong { units: 40_000 }.to_string(),
            "string of 40000 UTF-16 units is too long for a USHORT byte count"
        );
    }

    #[test]
    fn items_are_naturally_aligned_from_the_block_start() {
        let mut buf = [0xAAu8; 32];
        let mut enc = Encoder::new(&mut buf);
        enc.u8(0x11); // 0
        enc.u16(0x2233); // 2
        enc.u8(0x44); // 4
        enc.u32(0x5566_7788); // 8
        enc.bool(true); // 12
        enc.u64(0x0102_0304_0506_0708); // 16
        assert_eq!(enc.finish(), Ok(24));
        assert_eq!(
            &buf[..24],
            &[
                0x11, 0, 0x33, 0x22, 0x44, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 1, 0, 0, 0, 8, 7, 6, 5,
                4, 3, 2, 1
            ]
        );
        assert_eq!(&buf[24..], &[0xAA; 8], "nothing written past the last item");
    }

    #[test]
    fn variable_string_is_count_then_utf16_without_terminator() {
        let mut buf = [0xFFu8; 16];
        let mut enc = Encoder::new(&mut buf);
        enc.u8(7);
        enc.string("Aé");
        assert_eq!(enc.finish(), Ok(8));
        assert_eq!(&buf[..8], &[7, 0, 4, 0, b'A', 0, 0xE9, 0]);
    }

    #[test]
    fn fixed_string_counts_the_whole_buffer_and_zero_pads() {
        let mut buf = [0xFFu8; 12];
        let mut enc = Encoder::new(&mut buf);
        enc.string_max("ab", 4);
        assert_eq!(enc.finish(), Ok(10));
        assert_eq!(&buf[..10], &[8, 0, b'a', 0, b'b', 0, 0, 0, 0, 0]);
    }

    #[test]
    fn fixed_string_truncates_at_a_character_boundary() {
        // U+1F600 needs a surrogate pair; with room for 2 units after "a" only "a" fits.
        let mut buf = [0xFFu8; 8];
        let mut enc = Encoder::new(&mut buf);
        enc.string_max("a\u{1F600}", 2);
        assert_eq!(enc.finish(), Ok(6));
        assert_eq!(&buf[..6], &[4, 0, b'a', 0, 0, 0]);

        let mut buf = [0xFFu8; 8];
        let mut enc = Encoder::new(&mut buf);
        enc.string_max("\u{1F600}", 2);
        assert_eq!(enc.finish(), Ok(6));
        assert_eq!(&buf[..6], &[4, 0, 0x3D, 0xD8, 0x00, 0xDE]);
    }

    #[test]
    fn string_in_array_counts_only_the_string() {
        let mut buf = [0xFFu8; 10];
        let mut enc = Encoder::new(&mut buf);
        enc.string_in_array("ab", 3);
        assert_eq!(enc.finish(), Ok(8));
        assert_eq!(&buf[..8], &[4, 0, b'a', 0, b'b', 0, 0, 0]);
    }

    #[test]
    fn too_small_reports_the_exact_size_and_writes_nothing_out_of_bounds() {
        let mut backing = [0x5Au8; 16];
        let (buf, canary) = backing.split_at_mut(8);
        let mut enc = Encoder::new(buf);
        enc.u32(1);
        enc.u64(2); // at 8: does not fit
        enc.u8(3); // counted only
        enc.string("xyz"); // 2-aligned at 18: 2 + 6 bytes
        assert!(!enc.fits());
        assert_eq!(enc.finish(), Err(EncodeError::TooSmall { needed: 26 }));
        assert_eq!(canary, &[0x5A; 8]);
    }

    #[test]
    fn a_later_small_item_is_not_written_after_a_missing_one() {
        let mut buf = [0xEEu8; 6];
        let mut enc = Encoder::new(&mut buf);
        enc.u32(0x0102_0304);
        enc.u32(0x0506_0708); // does not fit
        enc.u8(9); // would fit at 4 if the encoder did not stop writing
        assert_eq!(enc.finish(), Err(EncodeError::TooSmall { needed: 9 }));
        assert_eq!(buf, [4, 3, 2, 1, 0xEE, 0xEE]);
    }

    #[test]
    fn patch_rewrites_only_reserved_bytes() {
        let mut buf = [0xCCu8; 12];
        let mut enc = Encoder::new(&mut buf);
        enc.zeros(4);
        enc.u32(7);
        enc.patch_u32(0, 0x0A0B_0C0D);
        enc.patch_u32(8, 1); // beyond what was written: ignored
        assert_eq!(enc.finish(), Ok(8));
        assert_eq!(
            buf,
            [0x0D, 0x0C, 0x0B, 0x0A, 7, 0, 0, 0, 0xCC, 0xCC, 0xCC, 0xCC]
        );
    }

    #[test]
    fn overlong_variable_string_is_an_error() {
        let long: String = core::iter::repeat_n('x', 40_000).collect();
        let mut buf = vec![0u8; 16];
        let mut enc = Encoder::new(&mut buf);
        enc.string(&long);
        assert_eq!(
            enc.finish(),
            Err(EncodeError::StringTooLong { units: 40_000 })
        );
    }

    #[test]
    fn arrays_align_like_their_element() {
        let mut buf = [0u8; 32];
        let mut enc = Encoder::new(&mut buf);
        enc.bytes(&[1, 2, 3]);
        enc.i64_array(&[-1, 2]);
        assert_eq!(enc.finish(), Ok(24));
        assert_eq!(&buf[..8], &[1, 2, 3, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[8..16], &[0xFF; 8]);
        assert_eq!(&buf[16..24], &[2, 0, 0, 0, 0, 0, 0, 0]);
    }
}
