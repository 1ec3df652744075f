//! The driver image's resources, written as a Win32 `.res` file that rust-lld (lld-link) links
//! in: today the `VS_VERSION_INFO` that Windows shows as the file and driver version.
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

/// One resource: its type and name (both numeric IDs here), language and data.
struct Resource<'a> {
    kind: u16,
    name: u16,
    language: u16,
    data: &'a [u8],
}

/// The `RESOURCEHEADER` and data of one entry, padded to 32 bits.
fn entry(resource: &Resource<'_>) -> Vec<u8> {
    let mut header = Vec::with_capacity(32);
    let data_size = u32::try_from(resource.data.len()).expect("a resource fits 4 GiB");
    header.extend_from_slice(&data_size.to_le_bytes());
    header.extend_from_slice(&32_u32.to_le_bytes()); // HeaderSize: numeric type and name
    for id in [resource.kind, resource.name] {
        header.extend_from_slice(&0xffff_u16.to_le_bytes());
        header.extend_from_slice(&id.to_le_bytes());
    }
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
    header.extend_from_slice(resource.data);
    header.resize(header.len().next_multiple_of(4), 0);
    header
}

/// The `.res` file holding `version_info` as RT_VERSION 1, US English.
#[must_use]
pub fn res_file(version_info: &VersionInfo) -> Vec<u8> {
    let mut file = entry(&Resource {
        kind: 0,
        name: 0,
        language: 0,
        data: &[],
    });
    file.extend(entry(&Resource {
        kind: RT_VERSION,
        name: VERSION_RESOURCE_ID,
        language: pecheck::version_info::LANGUAGE_US_ENGLISH,
        data: &version_info.encode(),
    }));
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.res` entry as read back: (type ID, name ID, language, data).
    type Entry = (u16, u16, u16, Vec<u8>);

    /// An independent reader of `.res` files with numeric types and names.
    fn read_res(file: &[u8]) -> Vec<Entry> {
        let u16_at = |at: usize| u16::from_le_bytes([file[at], file[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
        let mut entries = Vec::new();
        let mut at = 0;
        while at < file.len() {
            let data_size = usize::try_from(u32_at(at)).unwrap();
            let header_size = usize::try_from(u32_at(at + 4)).unwrap();
            assert_eq!(u16_at(at + 8), 0xffff, "numeric type");
            assert_eq!(u16_at(at + 12), 0xffff, "numeric name");
            let data = file[at + header_size..at + header_size + data_size].to_vec();
            entries.push((u16_at(at + 10), u16_at(at + 14), u16_at(at + 22), data));
            at = (at + header_size + data_size).next_multiple_of(4);
        }
        entries
    }

    #[test]
    fn the_res_file_starts_with_the_empty_entry_and_holds_the_version_resource() {
        let info = driver_version_info(FileVersion([0, 1, 0, 0]), "rvscsi.sys");
        let file = res_file(&info);
        // The empty entry lld-link and cvtres recognise a .res file by.
        let mut empty = [0_u8; 32];
        empty[4] = 0x20;
        empty[8..10].copy_from_slice(&[0xff, 0xff]);
        empty[12..14].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(file[..32], empty[..]);
        assert_eq!(file.len() % 4, 0);
        let entries = read_res(&file);
        assert_eq!(entries.len(), 2);
        let (kind, name, language, data) = &entries[1];
        assert_eq!((*kind, *name, *language), (16, 1, 0x0409));
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
