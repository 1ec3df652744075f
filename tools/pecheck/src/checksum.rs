//! The PE image checksum (`OptionalHeader.CheckSum`): computing, checking and stamping it.
//!
//! The algorithm is the one `CheckSumMappedFile` (imagehlp) documents by behaviour: add the
//! file as little-endian 16-bit words with end-around carry, skipping the checksum field
//! itself, then add the file length. Windows checks it for boot-start drivers, and lld-link
//! writes the same value with `/RELEASE`, which `cargo xtask package` uses as a cross-check.

use crate::bytes::{le_u32, to_usize};

/// Where the checksum field sits: `e_lfanew` + "PE\0\0" (4) + the COFF header (20) + 64.
const CHECKSUM_OFFSET_IN_OPTIONAL_HEADER: usize = 64;

/// Why the checksum field cannot be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumError {
    /// The file is shorter than a DOS header, or `e_lfanew` points past its end.
    Truncated {
        /// The file's length in bytes.
        len: usize,
    },
}

impl core::fmt::Display for ChecksumError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated { len } => {
                write!(
                    f,
                    "the file ({len} bytes) ends before the PE checksum field"
                )
            }
        }
    }
}

/// The file offset of `OptionalHeader.CheckSum`.
///
/// # Errors
/// [`ChecksumError::Truncated`] if the DOS header or the field lies past the end of `image`.
pub fn checksum_offset(image: &[u8]) -> Result<usize, ChecksumError> {
    let truncated = ChecksumError::Truncated { len: image.len() };
    // `IMAGE_DOS_HEADER.e_lfanew` is at offset 0x3c.
    let lfanew = le_u32(image, 0x3c).ok_or(truncated)?;
    let offset = to_usize(lfanew)
        .checked_add(4 + 20 + CHECKSUM_OFFSET_IN_OPTIONAL_HEADER)
        .ok_or(truncated)?;
    if offset.checked_add(4).is_some_and(|end| end <= image.len()) {
        Ok(offset)
    } else {
        Err(truncated)
    }
}

/// The stored checksum field.
///
/// # Errors
/// As [`checksum_offset`].
pub fn stored_checksum(image: &[u8]) -> Result<u32, ChecksumError> {
    let offset = checksum_offset(image)?;
    le_u32(image, offset).ok_or(ChecksumError::Truncated { len: image.len() })
}

/// The checksum the image should carry, whatever its checksum field holds now.
///
/// # Errors
/// As [`checksum_offset`].
pub fn compute_checksum(image: &[u8]) -> Result<u32, ChecksumError> {
    let field = checksum_offset(image)?;
    let mut sum: u32 = 0;
    for (index, word) in image.chunks(2).enumerate() {
        let offset = index * 2;
        // The checksum field (two words) counts as zero.
        if offset == field || offset == field + 2 {
            continue;
        }
        let value = match word {
            [low, high] => u16::from_le_bytes([*low, *high]),
            // An odd-length file ends with a half word, padded with zero.
            [low] => u16::from(*low),
            _ => 0,
        };
        sum += u32::from(value);
        // End-around carry keeps the running sum in 16 bits.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    // The file length is added modulo 2^32, as the reference implementation does.
    Ok(sum.wrapping_add(image.len() as u32))
}

/// What [`stamp_checksum`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// The linker left the field 0; it now holds this value.
    Written(u32),
    /// The field was already set (correct or not: [`crate::check`] judges it).
    AlreadySet(u32),
}

/// Writes the checksum into `image` if the field is 0 (a linker without `/RELEASE` leaves it
/// so); a non-zero field is left alone so a wrong value is reported, not silently fixed.
///
/// # Errors
/// As [`checksum_offset`].
pub fn stamp_checksum(image: &mut [u8]) -> Result<Stamp, ChecksumError> {
    let stored = stored_checksum(image)?;
    if stored != 0 {
        return Ok(Stamp::AlreadySet(stored));
    }
    let value = compute_checksum(image)?;
    let offset = checksum_offset(image)?;
    let len = image.len();
    image
        .get_mut(offset..offset + 4)
        .ok_or(ChecksumError::Truncated { len })?
        .copy_from_slice(&value.to_le_bytes());
    Ok(Stamp::Written(value))
}
