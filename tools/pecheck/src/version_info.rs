//! The `VS_VERSIONINFO` resource (RT_VERSION): what Windows shows as a file's and a driver's
//! version, written for the link and read back from an image's resource directory.
//!
//! The layout (Win32 "VS_VERSIONINFO", "StringFileInfo", "VarFileInfo" reference pages) is a tree
//! of blocks, each `wLength: u16` (bytes of the block with its children, without trailing
//! padding), `wValueLength: u16` (bytes for a binary value, UTF-16 units with the terminator for a
//! text value), `wType: u16` (0 binary, 1 text), `szKey` (UTF-16, NUL-terminated), padding to
//! 32 bits, the value, then the children, each starting 32-bit aligned. The root's key is
//! `VS_VERSION_INFO` and its value a 52-byte `VS_FIXEDFILEINFO`; its children are a
//! `StringFileInfo` (one string table per language/code page, each string a text block) and a
//! `VarFileInfo` (the `Translation` list of language/code page pairs).

use crate::bytes::le_u32;

/// `VS_FIXEDFILEINFO.dwSignature`.
pub const FIXED_FILE_INFO_SIGNATURE: u32 = 0xFEEF_04BD;
/// `VS_FIXEDFILEINFO.dwStrucVersion`: version 1.0.
const FIXED_FILE_INFO_VERSION: u32 = 0x0001_0000;
/// The bytes of a `VS_FIXEDFILEINFO`.
const FIXED_FILE_INFO_BYTES: usize = 52;
/// `VS_FF_DEBUG | VS_FF_PRERELEASE | VS_FF_PATCHED | VS_FF_PRIVATEBUILD | VS_FF_INFOINFERRED |
/// VS_FF_SPECIALBUILD`: the flags `dwFileFlags` may hold.
const FILE_FLAGS_MASK: u32 = 0x3f;
/// `VOS_NT_WINDOWS32`: for Windows NT.
const FILE_OS_NT_WINDOWS32: u32 = 0x0004_0004;
/// `VFT_DRV`: a driver.
pub const FILE_TYPE_DRIVER: u32 = 3;
/// `VFT2_DRV_SYSTEM`: a system driver (what the WDK's `common.ver` gives a storage miniport).
pub const FILE_SUBTYPE_SYSTEM_DRIVER: u32 = 7;
/// US English (`0x0409`) and Unicode (code page 1200): the one string table's language.
pub const LANGUAGE_US_ENGLISH: u16 = 0x0409;
/// Code page 1200, UTF-16LE.
pub const CODE_PAGE_UNICODE: u16 = 1200;

/// A four-part file version, `major.minor.build.revision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileVersion(pub [u16; 4]);

impl FileVersion {
    /// The version of a Cargo package version `major.minor.patch` (pre-release and build
    /// metadata dropped), with revision 0.
    ///
    /// # Errors
    /// A part that is not a number that fits 16 bits, or fewer than three parts.
    pub fn from_cargo(version: &str) -> Result<Self, String> {
        let core = version.split(['-', '+']).next().unwrap_or("");
        let parts: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            return Err(format!("version {version} is not major.minor.patch"));
        };
        let part = |text: &str| {
            text.parse::<u16>()
                .map_err(|_| format!("version {version}: {text} does not fit a 16-bit part"))
        };
        Ok(Self([part(major)?, part(minor)?, part(patch)?, 0]))
    }

    /// `(MS, LS)` as `VS_FIXEDFILEINFO` stores it.
    #[must_use]
    pub fn dwords(self) -> (u32, u32) {
        let [a, b, c, d] = self.0.map(u32::from);
        ((a << 16) | b, (c << 16) | d)
    }

    fn from_dwords(ms: u32, ls: u32) -> Self {
        let high = |v: u32| u16::try_from(v >> 16).unwrap_or(u16::MAX);
        let low = |v: u32| u16::try_from(v & 0xffff).unwrap_or(u16::MAX);
        Self([high(ms), low(ms), high(ls), low(ls)])
    }
}

impl core::fmt::Display for FileVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [major, minor, build, revision] = self.0;
        write!(f, "{major}.{minor}.{build}.{revision}")
    }
}

/// What a version resource says: the fixed part and the strings of its first string table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// `dwFileVersionMS/LS`.
    pub file_version: FileVersion,
    /// `dwProductVersionMS/LS`.
    pub product_version: FileVersion,
    /// `dwFileType`.
    pub file_type: u32,
    /// `dwFileSubtype`.
    pub file_subtype: u32,
    /// The string table's key, e.g. `040904B0` (language, code page in hex).
    pub string_table: String,
    /// `(name, value)` in the order of the string table.
    pub strings: Vec<(String, String)>,
    /// The `Translation` pairs `(language, code page)`.
    pub translations: Vec<(u16, u16)>,
}

impl VersionInfo {
    /// The value of string `name`, if the string table has it.
    #[must_use]
    pub fn string(&self, name: &str) -> Option<&str> {
        self.strings
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A driver's version resource: file and product version `version`, type system driver,
    /// one US English Unicode string table holding `strings` in order, and the matching
    /// translation.
    #[must_use]
    pub fn driver(version: FileVersion, strings: &[(&str, &str)]) -> Self {
        Self {
            file_version: version,
            product_version: version,
            file_type: FILE_TYPE_DRIVER,
            file_subtype: FILE_SUBTYPE_SYSTEM_DRIVER,
            string_table: format!("{LANGUAGE_US_ENGLISH:04X}{CODE_PAGE_UNICODE:04X}"),
            strings: strings
                .iter()
                .map(|&(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            translations: vec![(LANGUAGE_US_ENGLISH, CODE_PAGE_UNICODE)],
        }
    }

    /// The `VS_VERSIONINFO` bytes: the resource data of RT_VERSION.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let file = self.file_version.dwords();
        let product = self.product_version.dwords();
        let fixed: Vec<u8> = [
            FIXED_FILE_INFO_SIGNATURE,
            FIXED_FILE_INFO_VERSION,
            file.0,
            file.1,
            product.0,
            product.1,
            FILE_FLAGS_MASK,
            0, // dwFileFlags: a release build
            FILE_OS_NT_WINDOWS32,
            self.file_type,
            self.file_subtype,
            0, // dwFileDateMS/LS: unused by Windows, and a date would break reproducible builds
            0,
        ]
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .collect();
        let strings = self
            .strings
            .iter()
            .map(|(key, value)| block(key, &Value::Text(value), &[]))
            .collect::<Vec<_>>();
        let table = block(&self.string_table, &Value::None, &strings);
        let string_file_info = block("StringFileInfo", &Value::None, &[table]);
        let translations: Vec<u8> = self
            .translations
            .iter()
            .flat_map(|&(language, code_page)| {
                let mut pair = language.to_le_bytes().to_vec();
                pair.extend_from_slice(&code_page.to_le_bytes());
                pair
            })
            .collect();
        let translation = block("Translation", &Value::Binary(&translations), &[]);
        let var_file_info = block("VarFileInfo", &Value::None, &[translation]);
        block(
            "VS_VERSION_INFO",
            &Value::Binary(&fixed),
            &[string_file_info, var_file_info],
        )
    }

    /// Reads a `VS_VERSIONINFO`.
    ///
    /// # Errors
    /// The first structure that is missing, truncated or inconsistent.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let root = Node::parse(bytes, 0)?;
        if root.key != "VS_VERSION_INFO" {
            return Err(format!(
                "the root block is {:?}, not VS_VERSION_INFO",
                root.key
            ));
        }
        if root.value.len() != FIXED_FILE_INFO_BYTES {
            return Err(format!(
                "VS_FIXEDFILEINFO is {} bytes, not {FIXED_FILE_INFO_BYTES}",
                root.value.len()
            ));
        }
        let word = |index: usize| le_u32(root.value, index * 4).unwrap_or(0);
        if word(0) != FIXED_FILE_INFO_SIGNATURE {
            return Err(format!(
                "VS_FIXEDFILEINFO signature {:#010x}, not {FIXED_FILE_INFO_SIGNATURE:#010x}",
                word(0)
            ));
        }
        let mut info = Self {
            file_version: FileVersion::from_dwords(word(2), word(3)),
            product_version: FileVersion::from_dwords(word(4), word(5)),
            file_type: word(9),
            file_subtype: word(10),
            string_table: String::new(),
            strings: Vec::new(),
            translations: Vec::new(),
        };
        for child in &root.children {
            match child.key.as_str() {
                "StringFileInfo" => {
                    let table = child
                        .children
                        .first()
                        .ok_or("StringFileInfo holds no string table")?;
                    info.string_table.clone_from(&table.key);
                    for string in &table.children {
                        if string.value_type != 1 {
                            return Err(format!("string {} is not text", string.key));
                        }
                        info.strings
                            .push((string.key.clone(), utf16z(string.value)?));
                    }
                }
                "VarFileInfo" => {
                    for var in child.children.iter().filter(|v| v.key == "Translation") {
                        info.translations
                            .extend(var.value.chunks_exact(4).map(|pair| {
                                (
                                    u16::from_le_bytes([pair[0], pair[1]]),
                                    u16::from_le_bytes([pair[2], pair[3]]),
                                )
                            }));
                    }
                }
                other => return Err(format!("unexpected block {other} in VS_VERSION_INFO")),
            }
        }
        Ok(info)
    }
}

/// A block's value.
enum Value<'a> {
    None,
    Binary(&'a [u8]),
    Text(&'a str),
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn pad4(bytes: &mut Vec<u8>) {
    bytes.resize(bytes.len().next_multiple_of(4), 0);
}

/// One version-information block with its children (each already encoded).
fn block(key: &str, value: &Value<'_>, children: &[Vec<u8>]) -> Vec<u8> {
    let (value_bytes, value_length, value_type) = match value {
        Value::None => (Vec::new(), 0, 1),
        Value::Binary(bytes) => (bytes.to_vec(), bytes.len(), 0),
        Value::Text(text) => {
            let bytes = utf16(text);
            let units = bytes.len() / 2;
            (bytes, units, 1)
        }
    };
    let mut out = vec![0; 6];
    out.extend_from_slice(&utf16(key));
    pad4(&mut out);
    out.extend_from_slice(&value_bytes);
    for child in children {
        pad4(&mut out);
        out.extend_from_slice(child);
    }
    let length = u16::try_from(out.len()).expect("a version block fits 64 KiB");
    out[0..2].copy_from_slice(&length.to_le_bytes());
    out[2..4].copy_from_slice(
        &u16::try_from(value_length)
            .expect("a version value fits 64 KiB")
            .to_le_bytes(),
    );
    out[4..6].copy_from_slice(&u16::to_le_bytes(value_type));
    out
}

/// A decoded block.
struct Node<'a> {
    key: String,
    value_type: u16,
    value: &'a [u8],
    children: Vec<Node<'a>>,
}

fn u16_at(bytes: &[u8], offset: usize) -> Result<u16, String> {
    bytes
        .get(offset..offset + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| format!("the version resource ends before offset {offset:#x}"))
}

/// A NUL-terminated UTF-16 string (the terminator may be absent at the end of `bytes`).
fn utf16z(bytes: &[u8]) -> Result<String, String> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .take_while(|&unit| unit != 0)
        .collect();
    String::from_utf16(&units).map_err(|_| "a version string is not valid UTF-16".to_owned())
}

impl<'a> Node<'a> {
    /// The block at `start` of `bytes` (offsets are relative to the resource's start, whose
    /// alignment the 32-bit padding refers to).
    fn parse(bytes: &'a [u8], start: usize) -> Result<Self, String> {
        let length = usize::from(u16_at(bytes, start)?);
        let value_length = usize::from(u16_at(bytes, start + 2)?);
        let value_type = u16_at(bytes, start + 4)?;
        let end = start + length;
        if length < 6 || end > bytes.len() {
            return Err(format!(
                "a version block at {start:#x} claims {length} bytes, beyond its parent"
            ));
        }
        let mut at = start + 6;
        let mut key_units = Vec::new();
        loop {
            if at + 2 > end {
                return Err(format!(
                    "the key of the block at {start:#x} is not terminated"
                ));
            }
            let unit = u16_at(bytes, at)?;
            at += 2;
            if unit == 0 {
                break;
            }
            key_units.push(unit);
        }
        let key = String::from_utf16(&key_units)
            .map_err(|_| format!("the key of the block at {start:#x} is not UTF-16"))?;
        at = at.next_multiple_of(4).min(end);
        let value_bytes = if value_type == 1 {
            value_length * 2
        } else {
            value_length
        };
        let value = bytes
            .get(at..at + value_bytes)
            .filter(|_| at + value_bytes <= end)
            .ok_or_else(|| format!("the value of {key} runs past its block"))?;
        at += value_bytes;
        let mut children = Vec::new();
        loop {
            at = at.next_multiple_of(4);
            if at >= end {
                break;
            }
            let child = Node::parse(&bytes[..end], at)?;
            at += usize::from(u16_at(bytes, at)?);
            children.push(child);
        }
        Ok(Self {
            key,
            value_type,
            value,
            children,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VersionInfo {
        VersionInfo::driver(
            FileVersion([1, 2, 3, 0]),
            &[
                ("CompanyName", "rvscsi"),
                ("OriginalFilename", "rvscsi.sys"),
            ],
        )
    }

    #[test]
    fn the_root_block_has_the_documented_layout() {
        let bytes = sample().encode();
        // wLength = the whole resource, wValueLength = 52, wType = 0 (binary).
        assert_eq!(usize::from(u16_at(&bytes, 0).unwrap()), bytes.len());
        assert_eq!(u16_at(&bytes, 2).unwrap(), 52);
        assert_eq!(u16_at(&bytes, 4).unwrap(), 0);
        // "VS_VERSION_INFO" and its terminator are 32 bytes from offset 6, so the value starts
        // at 38 rounded up to 40.
        assert_eq!(&bytes[6..38], &utf16("VS_VERSION_INFO")[..]);
        assert_eq!(&bytes[38..40], &[0, 0]);
        assert_eq!(le_u32(&bytes, 40), Some(FIXED_FILE_INFO_SIGNATURE));
        assert_eq!(le_u32(&bytes, 48), Some(0x0001_0002)); // FileVersionMS 1.2
        assert_eq!(le_u32(&bytes, 52), Some(0x0003_0000)); // FileVersionLS 3.0
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn what_is_encoded_decodes_to_the_same_information() {
        let info = sample();
        let decoded = VersionInfo::decode(&info.encode()).unwrap();
        assert_eq!(decoded, info);
        assert_eq!(decoded.string("OriginalFilename"), Some("rvscsi.sys"));
        assert_eq!(decoded.string_table, "040904B0");
        assert_eq!(decoded.translations, [(0x0409, 1200)]);
    }

    #[test]
    fn cargo_versions_become_four_parts() {
        assert_eq!(
            FileVersion::from_cargo("0.1.0"),
            Ok(FileVersion([0, 1, 0, 0]))
        );
        assert_eq!(
            FileVersion::from_cargo("2.10.3-rc.1+build"),
            Ok(FileVersion([2, 10, 3, 0]))
        );
        assert!(FileVersion::from_cargo("1.2").is_err());
        assert!(FileVersion::from_cargo("1.2.70000").is_err());
        assert_eq!(FileVersion([1, 2, 3, 4]).to_string(), "1.2.3.4");
    }

    #[test]
    fn broken_resources_are_errors_not_panics() {
        let bytes = sample().encode();
        for length in 0..bytes.len() {
            assert!(VersionInfo::decode(&bytes[..length]).is_err(), "{length}");
        }
        let mut bad_signature = bytes.clone();
        bad_signature[40] ^= 1;
        assert!(
            VersionInfo::decode(&bad_signature)
                .unwrap_err()
                .contains("signature")
        );
        let mut bad_length = bytes;
        bad_length[0] = 2;
        assert!(VersionInfo::decode(&bad_length).is_err());
    }
}
