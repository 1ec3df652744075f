//! Bounds-checked little-endian reads: every offset comes from an untrusted file.

/// The little-endian `u32` at `offset`, or `None` if it does not fit in `data`.
#[must_use]
pub fn le_u32(data: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let bytes: [u8; 4] = data.get(offset..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// `value` as a `usize` (always lossless on the 32- and 64-bit hosts this tool runs on).
#[must_use]
pub fn to_usize(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
