//! pecheck: checks a kernel-mode PE image against the rules a StorPort miniport must meet.
//!
//! [`check`] reads an image and its PDB and reports every broken rule, each naming itself:
//!
//! | rule | requires |
//! |---|---|
//! | `machine` | COFF machine AMD64 (0x8664) or ARM64 (0xAA64), the one asked for |
//! | `subsystem` | `Subsystem` = NATIVE (1) |
//! | `image-type` | an executable image, not a DLL: `IMAGE_FILE_DLL` clear |
//! | `entry-point` | `AddressOfEntryPoint` = the address of the PDB's public `DriverEntry` |
//! | `dll-characteristics` | NX_COMPAT, DYNAMIC_BASE and FORCE_INTEGRITY all set |
//! | `imports` | only from storport.sys, by name, each a storport.sys export; no delay imports |
//! | `exports` | no export directory: nothing imports from a miniport, and an export table would name the image |
//! | `tls` | no TLS directory (a driver has no thread-local storage) |
//! | `relocations` | a non-empty base relocation directory (`.reloc`) |
//! | `w^x` | no section both writable and executable |
//! | `instructions` | x64: no instruction in an executable section that uses extended processor state the kernel does not save for a driver: VEX, EVEX, XOP or MVEX encoded (AVX and later), x87, MMX or 3DNow! ([`instructions`]) |
//! | `checksum` | `CheckSum` = the PE checksum of the file |
//! | `pdb` | a CodeView (RSDS) record whose GUID and age equal the PDB's info stream |
//!
//! [`check_version_resource`] adds, for a package's image:
//!
//! | rule | requires |
//! |---|---|
//! | `version` | an RT_VERSION resource whose `VS_VERSIONINFO` ([`version_info`]) has the expected file and product version (fixed part and strings) and `OriginalFilename` |
//!
//! and [`check_mof_resource`], for the miniport:
//!
//! | rule | requires |
//! |---|---|
//! | `mof` | a `MOFDATA` resource of the name the driver registers with WMI, holding a compressed binary MOF (`FOMB` header with consistent sizes, DS stream) |
//!
//! and [`check_natvis`], for the miniport's PDB:
//!
//! | rule | requires |
//! |---|---|
//! | `natvis` | the PDB holds the natvis file (a `/src/files/*.natvis` named stream with its exact text), and defines every type the natvis names (`Type Name`, with `*` matching any template arguments, and each cast `(a::b::T)` in its expressions) in its TPI stream |
//!
//! The input is untrusted: a malformed file is a [`Violation::Malformed`], never a panic.
#![forbid(unsafe_code)]

mod bytes;
pub mod checksum;
pub mod instructions;
pub mod pdb;
pub mod storport_exports;
#[cfg(test)]
mod synth;
pub mod version_info;

use object::LittleEndian as LE;
use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};

pub use checksum::{ChecksumError, Stamp, compute_checksum, stamp_checksum, stored_checksum};
pub use pdb::{
    Guid, PdbError, PdbIdentity, PublicSymbol, pdb_identity, pdb_named_streams, pdb_natvis_files,
    pdb_public_symbol, pdb_type_names,
};
pub use storport_exports::{STORPORT_EXPORTS, is_storport_export};
pub use version_info::{FileVersion, VersionInfo};

/// The only DLL a StorPort miniport may import from.
pub const STORPORT_DLL: &str = "storport.sys";

/// The DllCharacteristics a driver image must have: NX_COMPAT | DYNAMIC_BASE | FORCE_INTEGRITY.
pub const REQUIRED_DLL_CHARACTERISTICS: u16 = pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT.0
    | pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE.0
    | pe::IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY.0;

/// The processor a driver image is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// x64: `IMAGE_FILE_MACHINE_AMD64`.
    Amd64,
    /// ARM64: `IMAGE_FILE_MACHINE_ARM64`.
    Arm64,
}

impl Machine {
    /// The COFF `Machine` value.
    #[must_use]
    pub const fn coff(self) -> u16 {
        match self {
            Self::Amd64 => pe::IMAGE_FILE_MACHINE_AMD64.0,
            Self::Arm64 => pe::IMAGE_FILE_MACHINE_ARM64.0,
        }
    }

    /// The machine for a COFF `Machine` value, if it is one a driver may target.
    #[must_use]
    pub const fn from_coff(value: u16) -> Option<Self> {
        if value == pe::IMAGE_FILE_MACHINE_AMD64.0 {
            Some(Self::Amd64)
        } else if value == pe::IMAGE_FILE_MACHINE_ARM64.0 {
            Some(Self::Arm64)
        } else {
            None
        }
    }
}

impl core::fmt::Display for Machine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Amd64 => write!(f, "AMD64 (0x8664)"),
            Self::Arm64 => write!(f, "ARM64 (0xAA64)"),
        }
    }
}

/// One broken rule. [`Violation::rule`] names it; `Display` explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The file is not a PE32+ image this tool can read.
    Malformed(String),
    /// The COFF machine is not the expected one.
    Machine {
        /// The machine asked for.
        expected: Machine,
        /// The COFF `Machine` field found.
        found: u16,
    },
    /// The subsystem is not NATIVE.
    Subsystem(u16),
    /// The COFF characteristics mark the image a DLL (`IMAGE_FILE_DLL`).
    DllImage {
        /// The COFF `Characteristics` found.
        characteristics: u16,
    },
    /// The PDB has no public symbol `DriverEntry` inside the image, so the entry point cannot
    /// be confirmed.
    NoDriverEntry,
    /// The entry point is not `DriverEntry`.
    EntryPoint {
        /// `AddressOfEntryPoint`.
        entry: u32,
        /// The RVA of `DriverEntry`, from the PDB's public symbol.
        driver_entry: u32,
    },
    /// Required DllCharacteristics flags are missing.
    DllCharacteristics {
        /// The flags found.
        found: u16,
        /// The required flags that are not set.
        missing: u16,
    },
    /// An import from a DLL other than storport.sys.
    ForeignImport {
        /// The DLL imported from.
        dll: String,
        /// The function imported (`#n` for an ordinal).
        function: String,
    },
    /// An import from storport.sys of a name it does not export.
    UnknownStorportImport(String),
    /// An import by ordinal: fragile, and no StorPort export is documented by ordinal.
    OrdinalImport {
        /// The DLL imported from.
        dll: String,
        /// The ordinal.
        ordinal: u16,
    },
    /// A delay-load import directory: the kernel loader does not resolve delay imports.
    DelayImports,
    /// An export directory.
    Exports {
        /// The image name it records.
        name: String,
        /// The names it exports.
        functions: Vec<String>,
    },
    /// A TLS directory.
    Tls,
    /// No base relocations: the image could not be placed at another address.
    NoRelocations,
    /// A section both writable and executable.
    WritableExecutable(String),
    /// An instruction using extended processor state a driver must not touch unsaved.
    ExtendedState {
        /// Its RVA.
        rva: u32,
        /// What it is (iced-x86's name of the encoding).
        instruction: String,
        /// The state it uses (AVX, x87, ...).
        state: &'static str,
    },
    /// The stored checksum differs from the computed one.
    Checksum {
        /// `OptionalHeader.CheckSum`.
        stored: u32,
        /// The checksum of the file.
        computed: u32,
    },
    /// No CodeView (RSDS) debug record.
    NoCodeView,
    /// The PDB file cannot be read.
    Pdb(PdbError),
    /// The image's CodeView record names another PDB.
    PdbMismatch {
        /// GUID and age in the image.
        image: PdbIdentity,
        /// GUID and age in the PDB.
        pdb: PdbIdentity,
    },
    /// The PDB holds no natvis file with the expected text.
    NatvisMissing {
        /// The natvis streams it does hold.
        embedded: Vec<String>,
    },
    /// A type the natvis names is not defined in the PDB.
    NatvisType(String),
    /// No `MOFDATA` resource of the registered name.
    NoMofResource(String),
    /// The `MOFDATA` resource is not a compressed binary MOF.
    BadMofResource(String),
    /// No RT_VERSION resource (or no resource directory at all).
    NoVersionResource,
    /// The RT_VERSION resource cannot be read.
    BadVersionResource(String),
    /// A field of the version resource differs from the expected value.
    VersionField {
        /// The field (`FileVersion`, `OriginalFilename`, ...).
        field: &'static str,
        /// What the resource holds (`None`: the string is missing).
        found: Option<String>,
        /// What it must hold.
        expected: String,
    },
}

impl Violation {
    /// The name of the broken rule, as in the crate documentation's table.
    #[must_use]
    pub const fn rule(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "pe-format",
            Self::Machine { .. } => "machine",
            Self::Subsystem(_) => "subsystem",
            Self::DllImage { .. } => "image-type",
            Self::NoDriverEntry | Self::EntryPoint { .. } => "entry-point",
            Self::DllCharacteristics { .. } => "dll-characteristics",
            Self::ForeignImport { .. }
            | Self::UnknownStorportImport(_)
            | Self::OrdinalImport { .. }
            | Self::DelayImports => "imports",
            Self::Exports { .. } => "exports",
            Self::Tls => "tls",
            Self::NoRelocations => "relocations",
            Self::WritableExecutable(_) => "w^x",
            Self::ExtendedState { .. } => "instructions",
            Self::Checksum { .. } => "checksum",
            Self::NoCodeView | Self::Pdb(_) | Self::PdbMismatch { .. } => "pdb",
            Self::NoVersionResource | Self::BadVersionResource(_) | Self::VersionField { .. } => {
                "version"
            }
            Self::NatvisMissing { .. } | Self::NatvisType(_) => "natvis",
            Self::NoMofResource(_) | Self::BadMofResource(_) => "mof",
        }
    }
}

impl core::fmt::Display for Violation {
    #[expect(
        clippy::too_many_lines,
        reason = "one message per violation, in the enum's order, reads best as one match"
    )]
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "rule {}: ", self.rule())?;
        match self {
            Self::Malformed(why) => write!(f, "not a readable PE32+ image: {why}"),
            Self::Machine { expected, found } => {
                write!(f, "machine is {found:#06x}, expected {expected}")
            }
            Self::Subsystem(found) => {
                write!(f, "subsystem is {found}, a driver must be NATIVE (1)")
            }
            Self::DllImage { characteristics } => write!(
                f,
                "COFF characteristics {characteristics:#06x} include IMAGE_FILE_DLL (0x2000); a \
                 driver is an executable image (link without /DLL)"
            ),
            Self::NoDriverEntry => write!(
                f,
                "the PDB has no public symbol DriverEntry in the image's sections"
            ),
            Self::EntryPoint {
                entry,
                driver_entry,
            } => write!(
                f,
                "entry point RVA {entry:#x} is not DriverEntry (RVA {driver_entry:#x}); \
                 link with /ENTRY:DriverEntry"
            ),
            Self::DllCharacteristics { found, missing } => write!(
                f,
                "DllCharacteristics {found:#06x} lacks {missing:#06x} \
                 (NX_COMPAT 0x100, DYNAMIC_BASE 0x40, FORCE_INTEGRITY 0x80 /INTEGRITYCHECK)"
            ),
            Self::ForeignImport { dll, function } => write!(
                f,
                "imports {function} from {dll}; a StorPort miniport may import from \
                 storport.sys only"
            ),
            Self::UnknownStorportImport(name) => write!(
                f,
                "imports {name} from storport.sys, which does not export it \
                 (inline storport.h routines go through StorPortExtendedFunction)"
            ),
            Self::OrdinalImport { dll, ordinal } => {
                write!(f, "imports ordinal {ordinal} from {dll}; import by name")
            }
            Self::DelayImports => write!(f, "the image has delay-load imports"),
            Self::Exports { name, functions } => write!(
                f,
                "the image exports {} under the name {name}; a driver exports nothing",
                functions.join(", ")
            ),
            Self::Tls => write!(f, "the image has a TLS directory; drivers cannot use TLS"),
            Self::NoRelocations => write!(
                f,
                "no base relocations (.reloc); the kernel must be able to load the image \
                 at any address"
            ),
            Self::WritableExecutable(name) => {
                write!(f, "section {name} is both writable and executable")
            }
            Self::ExtendedState {
                rva,
                instruction,
                state,
            } => write!(
                f,
                "{instruction} at RVA {rva:#x} uses {state} state, which a driver may not touch \
                 without KeSaveExtendedProcessorState; build without those target features"
            ),
            Self::Checksum { stored, computed } => {
                write!(
                    f,
                    "stored checksum {stored:#010x}, the file's is {computed:#010x}"
                )
            }
            Self::NoCodeView => write!(f, "no CodeView (RSDS) debug record; link with /DEBUG"),
            Self::Pdb(error) => write!(f, "cannot read the PDB: {error}"),
            Self::PdbMismatch { image, pdb } => write!(
                f,
                "the image names PDB {} age {}, the PDB file is {} age {}",
                image.guid, image.age, pdb.guid, pdb.age
            ),
            Self::NatvisMissing { embedded } if embedded.is_empty() => write!(
                f,
                "the PDB holds no natvis file; the crate needs \
                 #![debugger_visualizer(natvis_file = ...)]"
            ),
            Self::NatvisMissing { embedded } => write!(
                f,
                "none of the PDB's natvis files ({}) has the natvis file's text (a stale link?)",
                embedded.join(", ")
            ),
            Self::NatvisType(name) => write!(
                f,
                "the natvis names type {name}, which the PDB does not define, so dx cannot \
                 show it (renamed, or optimised out of the debug information?)"
            ),
            Self::NoMofResource(name) => write!(
                f,
                "the image has no MOFDATA resource named {name}, which the driver registers as \
                 its MofResourceName: WMI would log an error and know none of its classes"
            ),
            Self::BadMofResource(why) => {
                write!(f, "the MOFDATA resource is not a binary MOF: {why}")
            }
            Self::NoVersionResource => write!(
                f,
                "the image has no RT_VERSION resource, so Windows shows no file or driver \
                 version (link the .res xtask writes)"
            ),
            Self::BadVersionResource(why) => write!(f, "the version resource is unreadable: {why}"),
            Self::VersionField {
                field,
                found: Some(found),
                expected,
            } => write!(
                f,
                "the version resource's {field} is {found:?}, expected {expected:?}"
            ),
            Self::VersionField {
                field,
                found: None,
                expected,
            } => write!(
                f,
                "the version resource has no {field} string (expected {expected:?})"
            ),
        }
    }
}

/// What a passing image contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The processor.
    pub machine: Machine,
    /// The file size in bytes.
    pub size: usize,
    /// `AddressOfEntryPoint` (`DriverEntry`).
    pub entry_point: u32,
    /// The functions imported from storport.sys, in import-table order.
    pub imports: Vec<String>,
    /// The PE checksum.
    pub checksum: u32,
    /// GUID and age shared by the image and the PDB.
    pub pdb: PdbIdentity,
    /// The PDB path recorded in the image.
    pub pdb_path: String,
}

/// Checks `image` (a `.sys`) and its `pdb` against every rule.
///
/// # Errors
/// Every broken rule, in the order of the crate documentation's table.
pub fn check(image: &[u8], pdb: &[u8], expected: Machine) -> Result<Report, Vec<Violation>> {
    let file = PeFile64::parse(image).map_err(|e| vec![Violation::Malformed(e.to_string())])?;
    let mut violations = Vec::new();
    let headers = file.nt_headers();
    let optional = headers.optional_header();

    let machine_value = headers.file_header().machine.get(LE).0;
    let machine = Machine::from_coff(machine_value).filter(|&found| found == expected);
    if machine.is_none() {
        violations.push(Violation::Machine {
            expected,
            found: machine_value,
        });
    }

    let subsystem = optional.subsystem().0;
    if subsystem != pe::IMAGE_SUBSYSTEM_NATIVE.0 {
        violations.push(Violation::Subsystem(subsystem));
    }

    let file_characteristics = headers.file_header().characteristics.get(LE).0;
    if file_characteristics & pe::IMAGE_FILE_DLL.0 != 0 {
        violations.push(Violation::DllImage {
            characteristics: file_characteristics,
        });
    }

    let entry_point = optional.address_of_entry_point();
    match driver_entry_rva(&file, pdb) {
        Ok(Some(driver_entry)) if driver_entry == entry_point => {}
        Ok(Some(driver_entry)) => violations.push(Violation::EntryPoint {
            entry: entry_point,
            driver_entry,
        }),
        Ok(None) => violations.push(Violation::NoDriverEntry),
        // An unreadable PDB is the `pdb` rule's violation.
        Err(_) => {}
    }

    let characteristics = optional.dll_characteristics().0;
    let missing = REQUIRED_DLL_CHARACTERISTICS & !characteristics;
    if missing != 0 {
        violations.push(Violation::DllCharacteristics {
            found: characteristics,
            missing,
        });
    }

    let imports = match storport_imports(&file, &mut violations) {
        Ok(imports) => imports,
        Err(violation) => {
            violations.push(violation);
            Vec::new()
        }
    };

    match exports(&file) {
        Ok(None) => {}
        Ok(Some(violation)) | Err(violation) => violations.push(violation),
    }

    let directories = file.data_directories();
    if directories
        .get(pe::IMAGE_DIRECTORY_ENTRY_TLS)
        .is_some_and(|tls| tls.virtual_address.get(LE) != 0 || tls.size.get(LE) != 0)
    {
        violations.push(Violation::Tls);
    }

    if !has_relocations(&file) {
        violations.push(Violation::NoRelocations);
    }

    for section in file.section_table().iter() {
        let flags = section.characteristics.get(LE).0;
        if flags & pe::IMAGE_SCN_MEM_WRITE.0 != 0 && flags & pe::IMAGE_SCN_MEM_EXECUTE.0 != 0 {
            let name = String::from_utf8_lossy(section.raw_name())
                .trim_end_matches('\0')
                .to_owned();
            violations.push(Violation::WritableExecutable(name));
        }
    }

    if machine == Some(Machine::Amd64) {
        extended_state_instructions(&file, image, &mut violations);
    }

    let checksum = match (stored_checksum(image), compute_checksum(image)) {
        (Ok(stored), Ok(computed)) => {
            if stored != computed {
                violations.push(Violation::Checksum { stored, computed });
            }
            computed
        }
        (Err(error), _) | (_, Err(error)) => {
            violations.push(Violation::Malformed(error.to_string()));
            0
        }
    };

    let identity = pdb_match(&file, pdb, &mut violations);

    match (machine, identity, violations.is_empty()) {
        (Some(machine), Some((pdb, pdb_path)), true) => Ok(Report {
            machine,
            size: image.len(),
            entry_point,
            imports,
            checksum,
            pdb,
            pdb_path,
        }),
        _ => Err(violations),
    }
}

/// What [`check_natvis`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatvisReport {
    /// The named stream holding the natvis file.
    pub stream: String,
    /// The types the natvis names, each found in the PDB.
    pub types: Vec<String>,
}

/// The `natvis` rule: `pdb` holds `natvis` (the file's text) and defines every type it names.
///
/// # Errors
/// The missing natvis or each missing type, or why the PDB cannot be read.
pub fn check_natvis(pdb: &[u8], natvis: &str) -> Result<NatvisReport, Vec<Violation>> {
    let files = pdb_natvis_files(pdb).map_err(|e| vec![Violation::Pdb(e)])?;
    let Some((stream, _)) = files
        .iter()
        .find(|(_, contents)| contents.as_slice() == natvis.as_bytes())
    else {
        return Err(vec![Violation::NatvisMissing {
            embedded: files.into_iter().map(|(name, _)| name).collect(),
        }]);
    };
    let defined = pdb_type_names(pdb).map_err(|e| vec![Violation::Pdb(e)])?;
    let types = natvis_type_references(natvis);
    let violations: Vec<Violation> = types
        .iter()
        .filter(|name| !type_is_defined(&defined, name))
        .map(|name| Violation::NatvisType(name.clone()))
        .collect();
    if violations.is_empty() {
        Ok(NatvisReport {
            stream: stream.clone(),
            types,
        })
    } else {
        Err(violations)
    }
}

/// Whether `name` (a natvis type name, where `*` stands for any template arguments) is among
/// the `defined` type names.
fn type_is_defined(defined: &std::collections::BTreeSet<String>, name: &str) -> bool {
    match name.split_once('*') {
        None => defined.contains(name),
        Some((prefix, suffix)) => defined
            .iter()
            .any(|candidate| candidate.starts_with(prefix) && candidate.ends_with(suffix)),
    }
}

/// The type names a natvis file refers to, in order of first mention, without duplicates: each
/// `<Type Name="...">` and each cast `(a::b::T)` in its expressions (a parenthesised path
/// with `::`); XML comments are skipped and `&lt;`, `&gt;`, `&amp;` decoded.
#[must_use]
pub fn natvis_type_references(natvis: &str) -> Vec<String> {
    let mut text = String::with_capacity(natvis.len());
    let mut rest = natvis;
    while let Some(start) = rest.find("<!--") {
        text.push_str(&rest[..start]);
        rest = rest[start..]
            .find("-->")
            .map_or("", |end| &rest[start + end + 3..]);
    }
    text.push_str(rest);
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !names.iter().any(|known| known == name) {
            names.push(name.to_owned());
        }
    };
    for (index, _) in text.match_indices("<Type Name=\"") {
        let start = index + "<Type Name=\"".len();
        if let Some(length) = text[start..].find('"') {
            add(&text[start..start + length]);
        }
    }
    for (index, _) in text.match_indices('(') {
        let inner = &text[index + 1..];
        let Some(length) = inner.find(')') else {
            continue;
        };
        let candidate = &inner[..length];
        let is_path = candidate.contains("::")
            && candidate.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && candidate
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:<>, *$".contains(c));
        if is_path {
            add(candidate);
        }
    }
    names
}

/// The resource type of a version resource.
const RT_VERSION: u16 = 16;

/// The `version` rule: `image` carries an RT_VERSION resource for `version` named
/// `original_filename`. Returns what the resource says.
///
/// # Errors
/// Every field that differs, or why the resource is missing or unreadable.
pub fn check_version_resource(
    image: &[u8],
    original_filename: &str,
    version: FileVersion,
) -> Result<VersionInfo, Vec<Violation>> {
    let file = PeFile64::parse(image).map_err(|e| vec![Violation::Malformed(e.to_string())])?;
    let data = version_resource(&file, image).map_err(|v| vec![v])?;
    let info = VersionInfo::decode(data).map_err(|e| vec![Violation::BadVersionResource(e)])?;
    let text = version.to_string();
    let mut violations = Vec::new();
    for (field, found) in [
        ("dwFileVersion", info.file_version),
        ("dwProductVersion", info.product_version),
    ] {
        if found != version {
            violations.push(Violation::VersionField {
                field,
                found: Some(found.to_string()),
                expected: text.clone(),
            });
        }
    }
    for (field, expected) in [
        ("FileVersion", text.as_str()),
        ("ProductVersion", text.as_str()),
        ("OriginalFilename", original_filename),
    ] {
        let found = info.string(field);
        if found != Some(expected) {
            violations.push(Violation::VersionField {
                field,
                found: found.map(str::to_owned),
                expected: expected.to_owned(),
            });
        }
    }
    if violations.is_empty() {
        Ok(info)
    } else {
        Err(violations)
    }
}

/// A resource type or name to look for: a numeric ID, or a string matched without case (as
/// `FindResource` matches it).
#[derive(Clone, Copy, Debug)]
enum ResourceKey<'a> {
    Id(u16),
    Name(&'a str),
}

/// The data of the first resource of type `kind` named `name` (any name if `None`), first
/// language; `Ok(None)` if the image has none.
fn find_resource<'a>(
    file: &PeFile64<'a>,
    image: &'a [u8],
    kind: ResourceKey<'_>,
    name: Option<ResourceKey<'_>>,
) -> Result<Option<&'a [u8]>, String> {
    let text = |e: object::Error| e.to_string();
    let Some(directory) = file
        .data_directories()
        .resource_directory(image, &file.section_table())
        .map_err(text)?
    else {
        return Ok(None);
    };
    let matches = |entry: &pe::ImageResourceDirectoryEntry, key: ResourceKey<'_>| match (
        entry.name_or_id(),
        key,
    ) {
        (object::read::pe::ResourceNameOrId::Id(id), ResourceKey::Id(wanted)) => id == wanted,
        (object::read::pe::ResourceNameOrId::Name(found), ResourceKey::Name(wanted)) => found
            .to_string_lossy(directory)
            .is_ok_and(|found| found.eq_ignore_ascii_case(wanted)),
        _ => false,
    };
    let root = directory.root().map_err(text)?;
    let Some(type_entry) = root.entries.iter().find(|entry| matches(entry, kind)) else {
        return Ok(None);
    };
    let names = type_entry
        .data(directory)
        .map_err(text)?
        .table()
        .ok_or("a leaf where the names table belongs")?;
    let Some(name_entry) = names
        .entries
        .iter()
        .find(|entry| name.is_none_or(|name| matches(entry, name)))
    else {
        return Ok(None);
    };
    let languages = name_entry
        .data(directory)
        .map_err(text)?
        .table()
        .ok_or("a leaf where the languages table belongs")?;
    let data_entry = languages
        .entries
        .first()
        .ok_or("an empty languages table")?
        .data(directory)
        .map_err(text)?
        .data()
        .ok_or("a table where the data belongs")?;
    let rva = data_entry.offset_to_data.get(LE);
    let size = bytes::to_usize(data_entry.size.get(LE));
    file.section_table()
        .pe_data_at(image, rva)
        .and_then(|data| data.get(..size))
        .map(Some)
        .ok_or_else(|| format!("the data at RVA {rva:#x} ({size} bytes) is not in the file"))
}

/// The data of the first RT_VERSION resource (first name, first language).
fn version_resource<'a>(file: &PeFile64<'a>, image: &'a [u8]) -> Result<&'a [u8], Violation> {
    find_resource(file, image, ResourceKey::Id(RT_VERSION), None)
        .map_err(Violation::BadVersionResource)?
        .ok_or(Violation::NoVersionResource)
}

/// The resource type of a binary MOF.
pub const MOF_RESOURCE_TYPE: &str = "MOFDATA";

/// The `mof` rule: `image` carries a `MOFDATA` resource named `name` (the `MofResourceName`
/// the driver registers with WMI) that is a compressed binary MOF: the `FOMB` header, version 1,
/// a compressed size equal to what follows the 16-byte header, a nonzero decompressed size and
/// a DS-compressed stream. Returns the decompressed size.
///
/// # Errors
/// The resource is missing, or its header is inconsistent.
pub fn check_mof_resource(image: &[u8], name: &str) -> Result<u32, Vec<Violation>> {
    let file = PeFile64::parse(image).map_err(|e| vec![Violation::Malformed(e.to_string())])?;
    let missing = || Violation::NoMofResource(name.to_owned());
    let data = find_resource(
        &file,
        image,
        ResourceKey::Name(MOF_RESOURCE_TYPE),
        Some(ResourceKey::Name(name)),
    )
    .map_err(|why| vec![Violation::BadMofResource(why)])?
    .ok_or_else(|| vec![missing()])?;
    let bad = |why: String| Err(vec![Violation::BadMofResource(why)]);
    let field = |index: usize| bytes::le_u32(data, index * 4);
    if !data.starts_with(b"FOMB") || field(1) != Some(1) {
        return bad("no FOMB version 1 header".into());
    }
    let (Some(compressed), Some(decompressed)) = (field(2), field(3)) else {
        return bad("the header is truncated".into());
    };
    if bytes::to_usize(compressed) != data.len() - 16 {
        return bad(format!(
            "the header says {compressed} compressed bytes, the resource holds {}",
            data.len() - 16
        ));
    }
    if decompressed == 0 || data.get(16..18) != Some(b"DS".as_slice()) {
        return bad("no DS-compressed binary MOF after the header".into());
    }
    Ok(decompressed)
}

/// The `instructions` rule over every executable section of an x64 image.
fn extended_state_instructions(file: &PeFile64<'_>, image: &[u8], violations: &mut Vec<Violation>) {
    for section in file.section_table().iter() {
        let flags = section.characteristics.get(LE).0;
        if flags & pe::IMAGE_SCN_MEM_EXECUTE.0 == 0 {
            continue;
        }
        let Ok(data) = section.pe_data(image) else {
            violations.push(Violation::Malformed("an executable section's data".into()));
            continue;
        };
        let len = (section.virtual_size.get(LE) as usize).min(data.len());
        let rva = section.virtual_address.get(LE);
        violations.extend(
            instructions::extended_state(&data[..len], rva)
                .into_iter()
                .map(|found| Violation::ExtendedState {
                    rva: found.rva,
                    instruction: found.instruction,
                    state: found.state,
                }),
        );
    }
}

/// The RVA of `DriverEntry` from the PDB's public symbol (section number and offset mapped
/// through the image's section table), or `None` if the PDB has no such symbol in the image.
///
/// # Errors
/// The PDB cannot be read (the `pdb` rule reports that).
fn driver_entry_rva(file: &PeFile64<'_>, pdb: &[u8]) -> Result<Option<u32>, PdbError> {
    let symbol = pdb::pdb_public_symbol(pdb, "DriverEntry")?;
    Ok(symbol.and_then(|symbol| {
        let index = usize::from(symbol.segment).checked_sub(1)?;
        let section = file.section_table().iter().nth(index)?;
        section.virtual_address.get(LE).checked_add(symbol.offset)
    }))
}

/// The export directory, if there is one, as a violation naming what it exports.
fn exports(file: &PeFile64<'_>) -> Result<Option<Violation>, Violation> {
    let malformed = |e: object::Error| Violation::Malformed(format!("export table: {e}"));
    let Some(table) = file.export_table().map_err(malformed)? else {
        return Ok(None);
    };
    let name_rva = table.directory().name.get(LE);
    let name =
        String::from_utf8_lossy(table.name_from_pointer(name_rva).map_err(malformed)?).into_owned();
    let functions = table
        .exports()
        .map_err(malformed)?
        .iter()
        .map(|export| match export.name {
            Some(name) => String::from_utf8_lossy(name).into_owned(),
            None => format!("#{}", export.ordinal),
        })
        .collect();
    Ok(Some(Violation::Exports { name, functions }))
}

/// The names imported from storport.sys; any other import becomes a violation.
fn storport_imports(
    file: &PeFile64<'_>,
    violations: &mut Vec<Violation>,
) -> Result<Vec<String>, Violation> {
    let malformed = |e: object::Error| Violation::Malformed(format!("import table: {e}"));
    let mut names = Vec::new();
    if let Some(table) = file.import_table().map_err(malformed)? {
        let mut descriptors = table.descriptors().map_err(malformed)?;
        while let Some(descriptor) = descriptors.next().map_err(malformed)? {
            let dll =
                String::from_utf8_lossy(table.name(descriptor.name.get(LE)).map_err(malformed)?)
                    .into_owned();
            let from_storport = dll.eq_ignore_ascii_case(STORPORT_DLL);
            // The lookup table (OriginalFirstThunk) keeps the names after binding; linkers
            // that omit it leave them in the IAT.
            let lookup = match descriptor.original_first_thunk.get(LE) {
                0 => descriptor.first_thunk.get(LE),
                rva => rva,
            };
            let mut thunks = table.thunks(lookup).map_err(malformed)?;
            while let Some(thunk) = thunks.next::<pe::ImageNtHeaders64>().map_err(malformed)? {
                match table
                    .import::<pe::ImageNtHeaders64>(thunk)
                    .map_err(malformed)?
                {
                    object::read::pe::Import::Ordinal(ordinal) => {
                        violations.push(Violation::OrdinalImport {
                            dll: dll.clone(),
                            ordinal,
                        });
                    }
                    object::read::pe::Import::Name(_hint, name) => {
                        let name = String::from_utf8_lossy(name).into_owned();
                        if !from_storport {
                            violations.push(Violation::ForeignImport {
                                dll: dll.clone(),
                                function: name,
                            });
                        } else if is_storport_export(&name) {
                            names.push(name);
                        } else {
                            violations.push(Violation::UnknownStorportImport(name));
                        }
                    }
                }
            }
        }
    }
    let delay = file
        .data_directories()
        .get(pe::IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT);
    if delay.is_some_and(|directory| directory.size.get(LE) != 0) {
        violations.push(Violation::DelayImports);
    }
    Ok(names)
}

/// Whether the image carries at least one base relocation block.
fn has_relocations(file: &PeFile64<'_>) -> bool {
    let Ok(Some(mut blocks)) = file
        .data_directories()
        .relocation_blocks(file.data(), &file.section_table())
    else {
        return false;
    };
    matches!(blocks.next(), Ok(Some(_)))
}

/// Compares the image's CodeView record with the PDB's identity.
fn pdb_match(
    file: &PeFile64<'_>,
    pdb: &[u8],
    violations: &mut Vec<Violation>,
) -> Option<(PdbIdentity, String)> {
    use object::Object as _;
    let codeview = match file.pdb_info() {
        Ok(Some(codeview)) => codeview,
        Ok(None) => {
            violations.push(Violation::NoCodeView);
            return None;
        }
        Err(e) => {
            violations.push(Violation::Malformed(format!("debug directory: {e}")));
            return None;
        }
    };
    let in_image = PdbIdentity {
        guid: Guid(codeview.guid()),
        age: codeview.age(),
    };
    match pdb_identity(pdb) {
        Ok(in_pdb) if in_pdb == in_image => Some((
            in_pdb,
            String::from_utf8_lossy(codeview.path()).into_owned(),
        )),
        Ok(in_pdb) => {
            violations.push(Violation::PdbMismatch {
                image: in_image,
                pdb: in_pdb,
            });
            None
        }
        Err(error) => {
            violations.push(Violation::Pdb(error));
            None
        }
    }
}

#[cfg(test)]
mod tests;
