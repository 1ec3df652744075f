//! Result text: a fixed-size line built with `write!`, since the guest has no allocator.

use core::fmt::{self, Write};

/// A line of text built without allocation (longer text is cut).
pub struct Text {
    bytes: [u8; 200],
    len: usize,
}

impl Text {
    /// Empty text.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            bytes: [0; 200],
            len: 0,
        }
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..self.len).unwrap_or(&[]);
        match core::str::from_utf8(bytes) {
            Ok(text) => text,
            // Cut inside a character: keep the valid prefix.
            Err(error) => {
                core::str::from_utf8(bytes.get(..error.valid_up_to()).unwrap_or(&[])).unwrap_or("")
            }
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Text {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = byte;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// `format!` into a [`Text`].
macro_rules! text {
    ($($arg:tt)*) => {{
        let mut text = $crate::text::Text::new();
        let _ = ::core::write!(text, $($arg)*);
        text
    }};
}
pub(crate) use text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cuts_long_lines_at_a_character_boundary() {
        let mut text = Text::new();
        for _ in 0..100 {
            let _ = write!(text, "é");
        }
        assert_eq!(text.as_str().chars().count(), 100);
        let _ = write!(text, "x");
        assert!(text.as_str().len() <= 200);
        assert_eq!(text!("{} {}", 1, "a").as_str(), "1 a");
    }
}
