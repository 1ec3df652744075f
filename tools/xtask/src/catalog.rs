//! The driver package's catalog (`rvscsi.cat`), written on Linux as inf2cat would on Windows.
//!
//! A catalog is a PKCS#7 `SignedData` whose content is a certificate trust list (`szOID_CTL`)
//! with subject usage `szOID_CATALOG_LIST`: one member per package file, each member's tag its
//! SHA-256 digest and its attributes the file name, the OS versions it is for and an
//! Authenticode `SpcIndirectDataContent` carrying the digest. Windows checks a file against the
//! catalog by computing the same digest: for a PE image the Authenticode image hash (which
//! leaves out the checksum, the certificate-table directory entry and the certificate table, so
//! an embedded signature does not change it), for any other file the hash of its bytes.
//!
//! This module writes the unsigned catalog; osslsigncode signs it with the test certificate
//! (it adds the `SignedData` signer and keeps the CTL as it is). The layout follows a catalog
//! made by MakeCat with `CatalogVersion=2` (the SHA-256 form; osslsigncode's test catalog),
//! with the attributes inf2cat adds; the differences kept are listed in `docs/catalog.md`.
//!
//! SHA-256 only (catalog version 2, member OID `szOID_CATALOG_LIST_MEMBER2`): every Windows the
//! INF installs on is NT 10.0 (Server 2016, build 14393, and later), and catalog version 2 is
//! understood from Windows 8 / Server 2012 on. SHA-1 members would be needed only for Windows 7
//! / Server 2008 R2 and older, which the INF's decorated models sections exclude.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::der;
use crate::util::run;

/// `pkcs7-signedData`.
const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
/// `szOID_CTL`: the content type of a certificate trust list.
const OID_CTL: &str = "1.3.6.1.4.1.311.10.1";
/// `szOID_CATALOG_LIST`: the CTL's subject usage that makes it a catalog.
const OID_CATALOG_LIST: &str = "1.3.6.1.4.1.311.12.1.1";
/// `szOID_CATALOG_LIST_MEMBER2`: members tagged by their SHA-256 digest (catalog version 2).
const OID_CATALOG_LIST_MEMBER2: &str = "1.3.6.1.4.1.311.12.1.3";
/// `CAT_NAMEVALUE_OBJID`: a named attribute (`File`, `OSAttr`, `OS`, `HWID1`, ...).
const OID_CAT_NAMEVALUE: &str = "1.3.6.1.4.1.311.12.2.1";
/// `CAT_MEMBERINFO2_OBJID`: which subject interface package hashed the member.
const OID_CAT_MEMBERINFO2: &str = "1.3.6.1.4.1.311.12.2.3";
/// `SPC_INDIRECT_DATA_OBJID`: Authenticode's "this digest of that kind of data".
const OID_SPC_INDIRECT_DATA: &str = "1.3.6.1.4.1.311.2.1.4";
/// `SPC_PE_IMAGE_DATA_OBJID`: the digest is a PE image's Authenticode hash.
const OID_SPC_PE_IMAGE_DATA: &str = "1.3.6.1.4.1.311.2.1.15";
/// `SPC_CAB_DATA_OBJID`: used by MakeCat and inf2cat for flat (whole-file) hashes.
const OID_SPC_CAB_DATA: &str = "1.3.6.1.4.1.311.2.1.25";
/// `id-sha256`.
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
/// Attribute flags: `CRYPTCAT_ATTR_AUTHENTICATED | CRYPTCAT_ATTR_DATAASCII |
/// CRYPTCAT_ATTR_NAMEASCII`, what MakeCat and inf2cat write for text attributes.
const NAMEVALUE_FLAGS: u64 = 0x1001_0001;
/// The `OSAttr` value for NT 10.0 (`2` = `VER_PLATFORM_WIN32_NT`, then major.minor): every
/// Windows Server from 2016 on.
pub const OS_ATTR_NT10: &str = "2:10.0";

/// How a member's digest was computed, which decides its Authenticode data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A PE image: the Authenticode image hash.
    PeImage,
    /// Any other file: SHA-256 of all its bytes.
    Flat,
}

/// One package file listed in the catalog.
#[derive(Debug, Clone)]
pub struct Member {
    /// The file name as the INF names it (`rvscsi.sys`).
    pub file_name: String,
    pub kind: MemberKind,
    /// SHA-256, computed by [`member_digest`].
    pub digest: [u8; 32],
}

/// Everything the unsigned catalog holds.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub members: Vec<Member>,
    /// inf2cat's `/os:` list, stored as the catalog's `OS` attribute.
    pub os_list: String,
    /// Each member's `OSAttr` (`2:10.0`).
    pub os_attr: String,
    /// The INF's hardware IDs, lower case as inf2cat writes them (`HWID1`, `HWID2`, ...).
    pub hardware_ids: Vec<String>,
    /// The CTL's `ThisUpdate`, UTC: year, month, day, hour, minute, second.
    pub this_update: (u32, u32, u32, u32, u32, u32),
}

/// Why a file could not be hashed as a PE image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeHashError {
    /// The headers end before `what` could be read.
    Truncated(&'static str),
    /// No `PE\0\0` signature at `e_lfanew`.
    NotPe,
    /// The optional header magic is neither PE32 (0x10b) nor PE32+ (0x20b).
    UnknownMagic(u16),
    /// The certificate table lies outside the file or does not end it.
    CertificateTable { offset: u32, size: u32, file: usize },
}

impl std::fmt::Display for PeHashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated(what) => write!(f, "the PE headers end before the {what}"),
            Self::NotPe => f.write_str("no PE signature at e_lfanew"),
            Self::UnknownMagic(magic) => write!(f, "optional header magic {magic:#x}"),
            Self::CertificateTable { offset, size, file } => write!(
                f,
                "the certificate table ({size} bytes at {offset:#x}) does not end the \
                 {file}-byte file, as Authenticode requires"
            ),
        }
    }
}

fn le_u16(data: &[u8], offset: usize, what: &'static str) -> Result<u16, PeHashError> {
    data.get(offset..offset + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(PeHashError::Truncated(what))
}

fn le_u32(data: &[u8], offset: usize, what: &'static str) -> Result<u32, PeHashError> {
    data.get(offset..offset + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(PeHashError::Truncated(what))
}

/// The byte ranges of a PE image that its Authenticode hash covers, in file order.
///
/// Per the Authenticode PE specification: everything from the start of the file to the end of
/// the last section and any data after it, except the optional header's `CheckSum`, the
/// certificate-table entry of the data directory, and the certificate table itself (which must
/// end the file). Hashing the file in file order with those three holes gives the same bytes
/// as the specification's section-by-section walk for any image whose sections do not overlap
/// the headers, which is every image a linker writes (and the way signtool and osslsigncode
/// hash).
///
/// # Errors
/// A [`PeHashError`] when the headers are cut short or the certificate table is misplaced.
pub fn authenticode_ranges(image: &[u8]) -> Result<Vec<std::ops::Range<usize>>, PeHashError> {
    let pe_offset = le_u32(image, 0x3c, "e_lfanew")? as usize;
    if image.get(pe_offset..pe_offset + 4) != Some(b"PE\0\0") {
        return Err(PeHashError::NotPe);
    }
    let optional = pe_offset + 4 + 20;
    let magic = le_u16(image, optional, "optional header magic")?;
    // The data directory starts 96 bytes into a PE32 optional header, 112 into PE32+ (whose
    // ImageBase and four stack/heap sizes are 8 bytes instead of 4).
    let directory = match magic {
        0x10b => optional + 96,
        0x20b => optional + 112,
        other => return Err(PeHashError::UnknownMagic(other)),
    };
    let checksum = optional + 64;
    let entries = le_u32(image, directory - 4, "NumberOfRvaAndSizes")?;
    let before_checksum = 0..checksum;
    if entries <= 4 {
        // No certificate-table entry at all: only the checksum is left out.
        le_u32(image, checksum, "CheckSum")?;
        return Ok(vec![before_checksum, checksum + 4..image.len()]);
    }
    // Entry 4 (IMAGE_DIRECTORY_ENTRY_SECURITY): a file offset and a size, not an RVA.
    let certificate_entry = directory + 4 * 8;
    let table_offset = le_u32(image, certificate_entry, "certificate table entry")?;
    let table_size = le_u32(image, certificate_entry + 4, "certificate table entry")?;
    let end = if table_size == 0 {
        image.len()
    } else {
        let start = table_offset as usize;
        if start < certificate_entry + 8 || start + table_size as usize != image.len() {
            return Err(PeHashError::CertificateTable {
                offset: table_offset,
                size: table_size,
                file: image.len(),
            });
        }
        start
    };
    Ok(vec![
        before_checksum,
        checksum + 4..certificate_entry,
        certificate_entry + 8..end,
    ])
}

/// The SHA-256 digest of a package file as its catalog member records it.
///
/// # Errors
/// A PE image whose headers cannot be read (see [`authenticode_ranges`]).
pub fn member_digest(bytes: &[u8], kind: MemberKind) -> Result<[u8; 32], PeHashError> {
    let mut hasher = Sha256::new();
    match kind {
        MemberKind::Flat => hasher.update(bytes),
        MemberKind::PeImage => {
            for range in authenticode_ranges(bytes)? {
                hasher.update(&bytes[range]);
            }
        }
    }
    Ok(hasher.finalize().into())
}

/// A `CAT_NAMEVALUE` value: `SEQUENCE { BMPString name, INTEGER flags, OCTET STRING value }`,
/// the value in UTF-16LE with its NUL, as MakeCat and inf2cat store text.
fn name_value(name: &str, value: &str) -> Vec<u8> {
    der::sequence(&[
        der::bmp_string(name),
        der::unsigned_integer(NAMEVALUE_FLAGS),
        der::octet_string(&der::utf16le_nul(value)),
    ])
}

/// A member attribute: `SEQUENCE { OID, SET { value } }`.
fn attribute(oid: &str, value: Vec<u8>) -> Vec<u8> {
    der::sequence(&[der::oid(oid), der::set_of(&[value])])
}

/// The `SpcIndirectDataContent` of a member: what was hashed and the digest.
fn indirect_data(member: &Member) -> Vec<u8> {
    let data = match member.kind {
        // SpcPeImageData { flags BIT STRING (empty), file [0] SpcLink { file [2] SpcString {
        // unicode [0] "<<<Obsolete>>>" } } }: what signtool and osslsigncode write when they
        // sign a PE without page hashes.
        MemberKind::PeImage => der::sequence(&[
            der::oid(OID_SPC_PE_IMAGE_DATA),
            der::sequence(&[
                der::tlv(der::BIT_STRING, &[0]),
                der::context(
                    0,
                    true,
                    &der::context(2, true, &der::context(0, false, &bmp_be("<<<Obsolete>>>"))),
                ),
            ]),
        ]),
        // SpcLink file [2] { unicode [0] "" }, exactly as MakeCat writes a flat member.
        MemberKind::Flat => der::sequence(&[
            der::oid(OID_SPC_CAB_DATA),
            der::context(2, true, &der::context(0, false, &[])),
        ]),
    };
    der::sequence(&[
        data,
        der::sequence(&[
            der::sequence(&[der::oid(OID_SHA256), der::null()]),
            der::octet_string(&member.digest),
        ]),
    ])
}

/// UCS-2 big-endian bytes (the content of an implicitly tagged BMPString).
fn bmp_be(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// One `TrustedSubject`: the digest as its tag, then its attributes.
fn trusted_subject(member: &Member, os_attr: &str) -> Vec<u8> {
    // CAT_MEMBERINFO2 names the subject interface package by a context tag: [0] for a PE
    // image, [2] for a flat file (MakeCat's encoding).
    let sip = match member.kind {
        MemberKind::PeImage => 0,
        MemberKind::Flat => 2,
    };
    der::sequence(&[
        der::octet_string(&member.digest),
        der::set_of(&[
            attribute(OID_CAT_MEMBERINFO2, der::context(sip, false, &[])),
            attribute(OID_CAT_NAMEVALUE, name_value("File", &member.file_name)),
            attribute(OID_CAT_NAMEVALUE, name_value("OSAttr", os_attr)),
            attribute(OID_SPC_INDIRECT_DATA, indirect_data(member)),
        ]),
    ])
}

/// A catalog attribute: an `Extension { extnID, extnValue OCTET STRING }` holding a name/value.
fn catalog_attribute(name: &str, value: &str) -> Vec<u8> {
    der::sequence(&[
        der::oid(OID_CAT_NAMEVALUE),
        der::octet_string(&name_value(name, value)),
    ])
}

impl Catalog {
    /// The CTL's `ListIdentifier`: 16 bytes derived from the members' digests, so the same
    /// package gives the same catalog (inf2cat uses a random GUID; nothing reads it but as a
    /// label).
    fn list_identifier(&self) -> [u8; 16] {
        let mut hasher = Sha256::new();
        for member in &self.members {
            hasher.update(member.digest);
        }
        let digest = hasher.finalize();
        let mut identifier = [0; 16];
        identifier.copy_from_slice(&digest[..16]);
        identifier
    }

    /// The unsigned catalog: `ContentInfo { signedData, SignedData { version 1, no digest
    /// algorithms, CTL content, no signers } }`, ready for osslsigncode to sign.
    #[must_use]
    pub fn unsigned(&self) -> Vec<u8> {
        let (year, month, day, hour, minute, second) = self.this_update;
        let mut members = self.members.clone();
        // MakeCat lists the members in the order of their tags.
        members.sort_by_key(|member| member.digest);
        let subjects: Vec<Vec<u8>> = members
            .iter()
            .map(|member| trusted_subject(member, &self.os_attr))
            .collect();
        let mut attributes = vec![catalog_attribute("OS", &self.os_list)];
        for (index, id) in self.hardware_ids.iter().enumerate() {
            attributes.push(catalog_attribute(&format!("HWID{}", index + 1), id));
        }
        let ctl = der::sequence(&[
            der::sequence(&[der::oid(OID_CATALOG_LIST)]),
            der::octet_string(&self.list_identifier()),
            der::utc_time(year, month, day, hour, minute, second),
            der::sequence(&[der::oid(OID_CATALOG_LIST_MEMBER2), der::null()]),
            der::sequence(&subjects),
            der::context(0, true, &der::sequence(&attributes)),
        ]);
        let signed_data = der::sequence(&[
            der::unsigned_integer(1),
            der::set_of(&[]),
            der::sequence(&[der::oid(OID_CTL), der::context(0, true, &ctl)]),
            der::set_of(&[]),
        ]);
        der::sequence(&[
            der::oid(OID_SIGNED_DATA),
            der::context(0, true, &signed_data),
        ])
    }
}

/// The UTC calendar time of `unix_seconds`: year, month, day, hour, minute, second.
#[must_use]
pub fn civil_time(unix_seconds: u64) -> (u32, u32, u32, u32, u32, u32) {
    let (year, month, day) = crate::inf::civil_date(unix_seconds);
    let of_day = unix_seconds % 86_400;
    let part = |value: u64| u32::try_from(value).unwrap_or(0);
    (
        year,
        month,
        day,
        part(of_day / 3600),
        part(of_day / 60 % 60),
        part(of_day % 60),
    )
}

/// The inf2cat `/os:` list for the INF's Windows versions on `arch` (`amd64`/`arm64`): Server
/// 2016 and every later Windows Server (`Server10_*`, which inf2cat also accepts for 2019 on).
fn os_list(arch: &str) -> Result<&'static str, String> {
    match arch {
        "amd64" => Ok("Server2016_X64,Server10_X64"),
        "arm64" => Ok("Server10_ARM64"),
        other => Err(format!("no catalog OS list for architecture {other}")),
    }
}

/// The test certificate (PEM) and its private key, as osslsigncode takes them.
pub struct Signer<'a> {
    pub certificate_pem: &'a Path,
    pub key: &'a Path,
}

/// Writes `signed_dir/rvscsi.cat` for `image` (a PE image) and `inf` (both already in
/// `signed_dir`), signs it with osslsigncode and checks it three ways: osslsigncode verifies the
/// catalog's signature and finds the image's hash in it; the independent Python reader
/// (`check_catalog.py`, asn1crypto) recomputes every member's digest from the files.
///
/// # Errors
/// A file that cannot be read or hashed, an INF without hardware IDs, or a failed sign or
/// check, with the tool's message.
pub fn write_signed_catalog(
    signed_dir: &Path,
    image: &str,
    inf: &str,
    catalog: &str,
    arch: &str,
    signer: &Signer<'_>,
) -> Result<(), String> {
    let read = |name: &str| {
        let path = signed_dir.join(name);
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let image_bytes = read(image)?;
    let inf_bytes = read(inf)?;
    let inf_text = String::from_utf8_lossy(&inf_bytes);
    let hardware_ids = crate::inf::Inf::parse(&inf_text)?.hardware_ids();
    if hardware_ids.is_empty() {
        return Err(format!("{inf} names no hardware IDs for the catalog"));
    }
    let digest = |bytes: &[u8], kind| {
        member_digest(bytes, kind).map_err(|e| format!("cannot hash {image}: {e}"))
    };
    let contents = Catalog {
        members: vec![
            Member {
                file_name: image.to_owned(),
                kind: MemberKind::PeImage,
                digest: digest(&image_bytes, MemberKind::PeImage)?,
            },
            Member {
                file_name: inf.to_owned(),
                kind: MemberKind::Flat,
                digest: digest(&inf_bytes, MemberKind::Flat)?,
            },
        ],
        os_list: os_list(arch)?.to_owned(),
        os_attr: OS_ATTR_NT10.to_owned(),
        hardware_ids,
        this_update: civil_time(crate::package::build_time()),
    };
    let unsigned = signed_dir.join(format!("{catalog}.unsigned"));
    std::fs::write(&unsigned, contents.unsigned())
        .map_err(|e| format!("cannot write {}: {e}", unsigned.display()))?;
    let output = signed_dir.join(catalog);
    // osslsigncode refuses to overwrite its output.
    let _ = std::fs::remove_file(&output);
    let signing = run(Command::new("osslsigncode")
        .args(["sign", "-h", "sha256"])
        .arg("-certs")
        .arg(signer.certificate_pem)
        .arg("-key")
        .arg(signer.key)
        .arg("-in")
        .arg(&unsigned)
        .arg("-out")
        .arg(&output));
    let _ = std::fs::remove_file(&unsigned);
    signing.map_err(|e| format!("signing the catalog failed: {e}"))?;
    run(Command::new("osslsigncode")
        .arg("verify")
        .arg("-CAfile")
        .arg(signer.certificate_pem)
        .arg("-in")
        .arg(&output))
    .map_err(|e| format!("the catalog's signature does not verify: {e}"))?;
    // osslsigncode's own Authenticode hash of the image, looked up in the catalog.
    run(Command::new("osslsigncode")
        .arg("verify")
        .arg("-CAfile")
        .arg(signer.certificate_pem)
        .arg("-catalog")
        .arg(&output)
        .arg("-in")
        .arg(signed_dir.join(image)))
    .map_err(|e| format!("osslsigncode does not find {image} in the catalog: {e}"))?;
    check_independently(&output, signed_dir, &[image, inf], true)
}

/// Runs the independent reader, `check_catalog.py` (Python, asn1crypto), on `catalog`.
///
/// # Errors
/// The reader's complaint, or why it could not run.
pub fn check_independently(
    catalog: &Path,
    directory: &Path,
    files: &[&str],
    signed: bool,
) -> Result<(), String> {
    crate::util::ensure_python_module("asn1crypto")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("check_catalog.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(catalog).arg(directory).args(files);
    if signed {
        command.arg("--signed");
    }
    run(&mut command).map_err(|e| format!("the independent catalog check failed: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE32+ image: DOS header, PE header, optional header with 16 data directories,
    /// one section of `body` bytes. Enough for the Authenticode hash, which reads only headers.
    pub fn tiny_pe(body: &[u8]) -> Vec<u8> {
        let pe_offset = 0x80;
        let optional = pe_offset + 24;
        let optional_size = 112 + 16 * 8;
        let section_table = optional + optional_size;
        let headers_end = 0x200;
        let mut image = vec![0u8; headers_end];
        image[0..2].copy_from_slice(b"MZ");
        image[0x3c..0x40].copy_from_slice(&u32::try_from(pe_offset).unwrap().to_le_bytes());
        image[pe_offset..pe_offset + 4].copy_from_slice(b"PE\0\0");
        image[pe_offset + 4..pe_offset + 6].copy_from_slice(&0x8664u16.to_le_bytes());
        image[pe_offset + 6..pe_offset + 8].copy_from_slice(&1u16.to_le_bytes());
        image[pe_offset + 20..pe_offset + 22]
            .copy_from_slice(&u16::try_from(optional_size).unwrap().to_le_bytes());
        image[optional..optional + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        // SizeOfHeaders, CheckSum.
        image[optional + 60..optional + 64]
            .copy_from_slice(&u32::try_from(headers_end).unwrap().to_le_bytes());
        image[optional + 64..optional + 68].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        image[optional + 108..optional + 112].copy_from_slice(&16u32.to_le_bytes());
        image[section_table..section_table + 5].copy_from_slice(b".text");
        let raw_size = u32::try_from(body.len()).unwrap();
        image[section_table + 16..section_table + 20].copy_from_slice(&raw_size.to_le_bytes());
        image[section_table + 20..section_table + 24]
            .copy_from_slice(&u32::try_from(headers_end).unwrap().to_le_bytes());
        image.extend_from_slice(body);
        image
    }

    /// Appends a certificate table of `size` bytes (8-aligned, as signers place it) and points
    /// the directory entry at it; changes the checksum as a signer would.
    pub fn with_certificate_table(mut image: Vec<u8>, size: usize) -> Vec<u8> {
        image.resize(image.len().next_multiple_of(8), 0);
        let offset = u32::try_from(image.len()).unwrap();
        image.extend(std::iter::repeat_n(0xa5, size));
        let optional = 0x80 + 24;
        let entry = optional + 112 + 4 * 8;
        image[entry..entry + 4].copy_from_slice(&offset.to_le_bytes());
        image[entry + 4..entry + 8].copy_from_slice(&u32::try_from(size).unwrap().to_le_bytes());
        image[optional + 64..optional + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        image
    }

    #[test]
    fn the_pe_hash_leaves_out_checksum_certificate_entry_and_table() {
        let unsigned = tiny_pe(&[0x90; 0x200]);
        let plain = member_digest(&unsigned, MemberKind::PeImage).unwrap();
        // Signing (a new checksum, the directory entry, the table) leaves the hash alone...
        let signed = with_certificate_table(unsigned.clone(), 64);
        assert_eq!(member_digest(&signed, MemberKind::PeImage).unwrap(), plain);
        // ...but any other byte, in the headers or a section, changes it.
        for offset in [0x40, 0x80 + 24 + 60, 0x80 + 24 + 112 + 3 * 8, 0x300] {
            let mut changed = unsigned.clone();
            changed[offset] ^= 1;
            assert_ne!(
                member_digest(&changed, MemberKind::PeImage).unwrap(),
                plain,
                "byte {offset:#x}"
            );
        }
        // The flat hash of the same file covers every byte.
        assert_ne!(member_digest(&signed, MemberKind::Flat).unwrap(), plain);
    }

    #[test]
    fn misplaced_certificate_tables_and_truncated_headers_are_refused() {
        let mut signed = with_certificate_table(tiny_pe(&[1; 16]), 32);
        signed.push(0);
        assert!(matches!(
            member_digest(&signed, MemberKind::PeImage),
            Err(PeHashError::CertificateTable { .. })
        ));
        assert_eq!(
            member_digest(&tiny_pe(&[])[..0x90], MemberKind::PeImage),
            Err(PeHashError::Truncated("optional header magic"))
        );
        assert_eq!(
            member_digest(b"MZ not a PE", MemberKind::PeImage),
            Err(PeHashError::Truncated("e_lfanew"))
        );
    }

    /// A scratch directory under the target directory, emptied first.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = crate::util::workspace_root()
            .join("target")
            .join("xtask-tests")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const INF_TEXT: &str = "[Version]\nSignature=\"$Windows NT$\"\n[Manufacturer]\n\
        %M% = m, NTamd64.10.0...14393\n[m.NTamd64.10.0...14393]\n\
        %D% = i, PCI\\VEN_1AF4&DEV_1004, PCI\\VEN_1AF4&DEV_1048\n";

    /// A package directory with `tiny.sys` (signed with a fake certificate table) and
    /// `tiny.inf`, and its catalog.
    fn package(name: &str) -> (std::path::PathBuf, Catalog) {
        let dir = scratch(name);
        let image = with_certificate_table(tiny_pe(&[0xcc; 0x400]), 40);
        std::fs::write(dir.join("tiny.sys"), &image).unwrap();
        std::fs::write(dir.join("tiny.inf"), INF_TEXT).unwrap();
        let catalog = Catalog {
            members: vec![
                Member {
                    file_name: "tiny.sys".into(),
                    kind: MemberKind::PeImage,
                    digest: member_digest(&image, MemberKind::PeImage).unwrap(),
                },
                Member {
                    file_name: "tiny.inf".into(),
                    kind: MemberKind::Flat,
                    digest: member_digest(INF_TEXT.as_bytes(), MemberKind::Flat).unwrap(),
                },
            ],
            os_list: os_list("amd64").unwrap().into(),
            os_attr: OS_ATTR_NT10.into(),
            hardware_ids: crate::inf::Inf::parse(INF_TEXT).unwrap().hardware_ids(),
            this_update: civil_time(1_796_645_945),
        };
        std::fs::write(dir.join("tiny.cat"), catalog.unsigned()).unwrap();
        (dir, catalog)
    }

    #[test]
    fn hardware_ids_come_from_every_models_section_in_lower_case() {
        assert_eq!(
            crate::inf::Inf::parse(INF_TEXT).unwrap().hardware_ids(),
            ["pci\\ven_1af4&dev_1004", "pci\\ven_1af4&dev_1048"]
        );
    }

    /// Python's asn1crypto reads the catalog and the digests it recomputes from the files
    /// match; the same check fails once a listed file changes or a file is missing from the
    /// catalog, so it is not a check that cannot fail.
    #[test]
    fn an_independent_reader_recomputes_every_member_digest() {
        let (dir, _) = package("catalog-reader");
        let catalog = dir.join("tiny.cat");
        check_independently(&catalog, &dir, &["tiny.sys", "tiny.inf"], false).unwrap();
        // The catalog is unsigned, so a check that wants a signer refuses it.
        assert!(check_independently(&catalog, &dir, &["tiny.sys", "tiny.inf"], true).is_err());
        // A package with a file the catalog does not list.
        assert!(
            check_independently(&catalog, &dir, &["tiny.sys", "tiny.inf", "x.dll"], false).is_err()
        );
        // An INF edited after cataloguing.
        std::fs::write(dir.join("tiny.inf"), INF_TEXT.replace("1048", "1049")).unwrap();
        assert!(check_independently(&catalog, &dir, &["tiny.sys", "tiny.inf"], false).is_err());
        std::fs::write(dir.join("tiny.inf"), INF_TEXT).unwrap();
        // A section byte of the image changed: the PE hash no longer matches.
        let mut image = std::fs::read(dir.join("tiny.sys")).unwrap();
        image[0x300] ^= 0xff;
        std::fs::write(dir.join("tiny.sys"), &image).unwrap();
        assert!(check_independently(&catalog, &dir, &["tiny.sys", "tiny.inf"], false).is_err());
    }

    /// openssl parses the whole structure as DER (strict lengths and tags).
    #[test]
    fn openssl_parses_the_catalog_as_pkcs7_with_a_ctl() {
        let (dir, _) = package("catalog-openssl");
        let output = Command::new("openssl")
            .args(["asn1parse", "-inform", "der", "-in"])
            .arg(dir.join("tiny.cat"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        for expected in [
            "pkcs7-signedData",
            "1.3.6.1.4.1.311.10.1",
            "1.3.6.1.4.1.311.12.1.1",
            "1.3.6.1.4.1.311.12.1.3",
            "1.3.6.1.4.1.311.2.1.15",
            "1.3.6.1.4.1.311.2.1.25",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    /// The whole signing path on a tiny package: osslsigncode signs the catalog, verifies its
    /// signature, finds the image's hash (its own Authenticode implementation) in it, and the
    /// independent reader accepts the signed catalog.
    #[test]
    fn osslsigncode_signs_the_catalog_and_finds_the_image_in_it() {
        let (dir, _) = package("catalog-signed");
        let key = dir.join("test.key");
        let certificate = dir.join("test.pem");
        crate::util::ensure_tool("osslsigncode", "--version", "osslsigncode").unwrap();
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=catalog test",
                "-addext",
                "extendedKeyUsage=codeSigning",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate)
            // openssl draws a progress bar of key generation on stderr.
            .stderr(std::process::Stdio::null()))
        .unwrap();
        let signer = Signer {
            certificate_pem: &certificate,
            key: &key,
        };
        write_signed_catalog(&dir, "tiny.sys", "tiny.inf", "tiny.cat", "amd64", &signer).unwrap();
        // A package whose image changed after cataloguing is refused by osslsigncode itself.
        let mut image = std::fs::read(dir.join("tiny.sys")).unwrap();
        image[0x250] ^= 1;
        std::fs::write(dir.join("tiny.sys"), &image).unwrap();
        assert!(
            run(Command::new("osslsigncode")
                .arg("verify")
                .arg("-CAfile")
                .arg(&certificate)
                .arg("-catalog")
                .arg(dir.join("tiny.cat"))
                .arg("-in")
                .arg(dir.join("tiny.sys")))
            .is_err()
        );
    }

    #[test]
    fn civil_time_splits_the_day() {
        assert_eq!(civil_time(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_time(1_796_645_945), (2026, 12, 7, 12, 19, 5));
    }
}
