//! The driver image's resources, written as a Win32 `.res` file that rust-lld (lld-link) links
//! in: the `VS_VERSION_INFO` that Windows shows as the file and driver version, and the binary
//! MOF (`MOFDATA` resource `MOFRESOURCE`, [`crate::bmf`]) WMI reads the miniport's classes from.
//!
//! A `.res` file (what `rc.exe` writes, "Resource File Formats" in the Win32 documentation) is
//! a sequence of entries, each a `RESOURCEHEADER` then the resource data, both padded to 32
//! bits. The header is `DataSize: u32, HeaderSize: u32`, the type and the name (each either
//! `0xFFFF` and a 16-bit ID, or a NUL-terminated UTF-16 string), padding to 32 bits, then
//! `DataVersion: u32, MemoryFlags: u16, LanguageId: u16, Version: u32, Characteristics: u32`.
//! The first entry is an empty one (`DataSize` 0, type and name ID 0), which is how lld-link
//! (like cvtres) tells a `.res` file from other inputs.

use pecheck::{FileVersion, VersionInfo};

/// `RT_VERSION`.
const RT_VERSION: u16 = 16;
/// The version resource's name: ID 1 (`VS_VERSION_INFO` in `rc`).
const VERSION_RESOURCE_ID: u16 = 1;
/// `MOVEABLE | PURE`: the flags `rc` gives every resource (Windows ignores them).
const MEMORY_FLAGS: u16 = 0x0030;
/// The binary MOF's resource type and name. The miniport registers the name `MofResource` with
/// WMI; resource names are matched without case, and `rc` stores them in capitals.
pub const MOF_TYPE: &str = "MOFDATA";
pub const MOF_NAME: &str = "MOFRESOURCE";

/// The strings of the image's version resource, from `version` (the crate version) and the
/// image's file name.
#[must_use]
pub fn driver_version_info(version: FileVersion, image_name: &str) -> VersionInfo {
    let text = version.to_string();
    let internal_name = image_name.strip_suffix(".sys").unwrap_or(image_name);
    VersionInfo::driver(
        version,
        &[
            ("CompanyName", "rvscsi project"),
            (
                "FileDescription",
                "rvscsi virtio-scsi StorPort miniport driver",
            ),
            ("FileVersion", &text),
            ("InternalName", internal_name),
            (
                "LegalCopyright",
                "Copyright the rvscsi authors; MIT OR Apache-2.0",
            ),
            ("OriginalFilename", image_name),
            ("ProductName", "rvscsi"),
            ("ProductVersion", &text),
        ],
    )
}

/// A resource type or name: a numeric ID or a string.
#[derive(Clone, Copy)]
enum Id<'a> {
    Number(u16),
    Name(&'a str),
}

/// One resource: its type, name, language and data.
struct Resource<'a> {
    kind: Id<'a>,
    name: Id<'a>,
    language: u16,
    data: &'a [u8],
}

/// The `RESOURCEHEADER` and data of one entry, padded to 32 bits.
fn entry(resource: &Resource<'_>) -> Vec<u8> {
    let mut header = Vec::with_capacity(32);
    let data_size = u32::try_from(resource.data.len()).expect("a resource fits 4 GiB");
    header.extend_from_slice(&data_size.to_le_bytes());
    header.extend_from_slice(&0_u32.to_le_bytes()); // HeaderSize, written below
    for id in [resource.kind, resource.name] {
        match id {
            Id::Number(number) => {
                header.extend_from_slice(&0xffff_u16.to_le_bytes());
                header.extend_from_slice(&number.to_le_bytes());
            }
            Id::Name(name) => {
                header.extend(name.encode_utf16().chain([0]).flat_map(u16::to_le_bytes));
            }
        }
    }
    header.resize(header.len().next_multiple_of(4), 0);
    header.extend_from_slice(&0_u32.to_le_bytes()); // DataVersion
    let flags = if resource.data.is_empty() {
        0
    } else {
        MEMORY_FLAGS
    };
    header.extend_from_slice(&flags.to_le_bytes());
    header.extend_from_slice(&resource.language.to_le_bytes());
    header.extend_from_slice(&0_u32.to_le_bytes()); // Version
    header.extend_from_slice(&0_u32.to_le_bytes()); // Characteristics
    let header_size = u32::try_from(header.len()).expect("a short header");
    header[4..8].copy_from_slice(&header_size.to_le_bytes());
    header.extend_from_slice(resource.data);
    header.resize(header.len().next_multiple_of(4), 0);
    header
}

/// The `.res` file holding `version_info` as RT_VERSION 1 and `binary_mof` as `MOFDATA`
/// `MOFRESOURCE`, both US English.
#[must_use]
pub fn res_file(version_info: &VersionInfo, binary_mof: &[u8]) -> Vec<u8> {
    let mut file = entry(&Resource {
        kind: Id::Number(0),
        name: Id::Number(0),
        language: 0,
        data: &[],
    });
    file.extend(entry(&Resource {
        kind: Id::Number(RT_VERSION),
        name: Id::Number(VERSION_RESOURCE_ID),
        language: pecheck::version_info::LANGUAGE_US_ENGLISH,
        data: &version_info.encode(),
    }));
    file.extend(entry(&Resource {
        kind: Id::Name(MOF_TYPE),
        name: Id::Name(MOF_NAME),
        language: pecheck::version_info::LANGUAGE_US_ENGLISH,
        data: binary_mof,
    }));
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.res` entry as read back: (type, name, language, data); a numeric ID as `#n`.
    type Entry = (String, String, u16, Vec<u8>);

    /// An independent reader of `.res` files.
    fn read_res(file: &[u8]) -> Vec<Entry> {
        let u16_at = |at: usize| u16::from_le_bytes([file[at], file[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
        // A type or name at `at`: `0xFFFF, id` or a NUL-terminated UTF-16 string.
        let id_at = |at: &mut usize| -> String {
            if u16_at(*at) == 0xffff {
                *at += 4;
                format!("#{}", u16_at(*at - 2))
            } else {
                let mut units = Vec::new();
                while u16_at(*at) != 0 {
                    units.push(u16_at(*at));
                    *at += 2;
                }
                *at += 2;
                String::from_utf16(&units).unwrap()
            }
        };
        let mut entries = Vec::new();
        let mut at = 0;
        while at < file.len() {
            let data_size = usize::try_from(u32_at(at)).unwrap();
            let header_size = usize::try_from(u32_at(at + 4)).unwrap();
            let mut field = at + 8;
            let kind = id_at(&mut field);
            let name = id_at(&mut field);
            field = field.next_multiple_of(4);
            // DataVersion, MemoryFlags, LanguageId, Version, Characteristics end the header.
            assert_eq!(field + 16, at + header_size, "header size");
            let language = u16_at(field + 6);
            let data = file[at + header_size..at + header_size + data_size].to_vec();
            entries.push((kind, name, language, data));
            at = (at + header_size + data_size).next_multiple_of(4);
        }
        entries
    }

    #[test]
    fn the_res_file_starts_with_the_empty_entry_and_holds_the_version_resource() {
        let info = driver_version_info(FileVersion([0, 1, 0, 0]), "rvscsi.sys");
        let binary_mof = [1_u8, 2, 3, 4, 5];
        let file = res_file(&info, &binary_mof);
        // The empty entry lld-link and cvtres recognise a .res file by.
        let mut empty = [0_u8; 32];
        empty[4] = 0x20;
        empty[8..10].copy_from_slice(&[0xff, 0xff]);
        empty[12..14].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(file[..32], empty[..]);
        assert_eq!(file.len() % 4, 0);
        let entries = read_res(&file);
        assert_eq!(entries.len(), 3);
        let (kind, name, language, data) = &entries[1];
        assert_eq!(
            (kind.as_str(), name.as_str(), *language),
            ("#16", "#1", 0x0409)
        );
        // The binary MOF: named type and name, its bytes unchanged, the entry padded.
        assert_eq!(
            entries[2],
            (
                "MOFDATA".into(),
                "MOFRESOURCE".into(),
                0x0409,
                binary_mof.to_vec()
            )
        );
        let decoded = VersionInfo::decode(data).unwrap();
        assert_eq!(decoded, info);
        assert_eq!(decoded.file_version, FileVersion([0, 1, 0, 0]));
        for (name, value) in [
            ("OriginalFilename", "rvscsi.sys"),
            ("InternalName", "rvscsi"),
            ("FileVersion", "0.1.0.0"),
            ("ProductVersion", "0.1.0.0"),
        ] {
            assert_eq!(decoded.string(name), Some(value), "{name}");
        }
        for name in [
            "CompanyName",
            "FileDescription",
            "LegalCopyright",
            "ProductName",
        ] {
            assert!(
                decoded.string(name).is_some_and(|v| !v.is_empty()),
                "{name}"
            );
        }
        assert_eq!(decoded.translations, [(0x0409, 1200)]);
    }
}
