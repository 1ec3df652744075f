//! Lays a PE32+ kernel image out in memory, in plain bytes: sections at their RVAs, base
//! relocations applied for the chosen load address, every import bound by name, and the
//! protection each section asks for. No memory is mapped here (see [`super`]).
#![forbid(unsafe_code)]

use object::LittleEndian as LE;
use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, Import, PeFile64};

/// The only DLL a StorPort miniport may import from.
const STORPORT_DLL: &str = "storport.sys";

/// The COFF machine of images this host can run: the image's code runs natively.
#[cfg(target_arch = "x86_64")]
pub const HOST_MACHINE: u16 = pe::IMAGE_FILE_MACHINE_AMD64.0;
/// The COFF machine of images this host can run: the image's code runs natively.
#[cfg(target_arch = "aarch64")]
pub const HOST_MACHINE: u16 = pe::IMAGE_FILE_MACHINE_ARM64.0;

/// The page size the loader protects sections at.
pub const PAGE_SIZE: usize = 4096;

/// What a mapped range of the image may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Read-only data (headers, `.rdata`, `.pdata`, `.reloc`).
    ReadOnly,
    /// Writable data (`.data`, `.bss`).
    ReadWrite,
    /// Code (`.text`).
    ReadExecute,
}

/// One section's place in the mapped image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Its name (`.text`, `.rdata`, ...).
    pub name: String,
    /// Offset of its first byte from the image base (page-aligned).
    pub rva: usize,
    /// Bytes it spans in memory, rounded up to whole pages.
    pub len: usize,
    /// How it is protected once loaded.
    pub protection: Protection,
}

/// The image as it is to appear in memory at `base`.
#[derive(Debug)]
pub struct Linked {
    /// The image's bytes from its base, `SizeOfImage` long, relocated and bound.
    pub bytes: Vec<u8>,
    /// The preferred base the linker chose (the image must not be placed there).
    pub preferred_base: u64,
    /// The entry point (DriverEntry), as an offset from the base.
    pub entry_rva: usize,
    /// The headers and every section, in address order.
    pub ranges: Vec<Placed>,
    /// The imports bound, (name, IAT slot offset, address written).
    pub imports: Vec<(String, usize, u64)>,
    /// Base relocations applied.
    pub relocations: usize,
}

/// Why an image cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The headers or a directory could not be parsed.
    Malformed(String),
    /// Not an image for this host's processor (AMD64 on x86-64, ARM64 on AArch64).
    Machine(u16),
    /// A section's alignment is below a page, so it cannot be protected on its own.
    SectionAlignment(u32),
    /// A section is both writable and executable.
    WritableExecutable(String),
    /// A base relocation of a type an x64 image should not carry.
    RelocationType {
        /// Its `IMAGE_REL_BASED_*` type.
        kind: u16,
        /// Where it applies.
        rva: u32,
    },
    /// A relocation or import slot outside the image.
    OutOfImage(u32),
    /// An import from a DLL other than storport.sys.
    ForeignDll(String),
    /// An import by ordinal.
    OrdinalImport(u16),
    /// An import the simulator does not export.
    MissingImport(String),
    /// The image has no base relocations, so it cannot move from its preferred base.
    NotRelocatable,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed image: {why}"),
            Self::Machine(machine) => {
                write!(
                    f,
                    "machine {machine:#x} is not this host's ({HOST_MACHINE:#x})"
                )
            }
            Self::SectionAlignment(alignment) => {
                write!(f, "section alignment {alignment:#x} is below a page")
            }
            Self::WritableExecutable(name) => {
                write!(f, "section {name} is writable and executable")
            }
            Self::RelocationType { kind, rva } => {
                write!(f, "base relocation of type {kind} at {rva:#x}")
            }
            Self::OutOfImage(rva) => write!(f, "reference to {rva:#x}, outside the image"),
            Self::ForeignDll(dll) => write!(f, "imports from {dll}, not storport.sys"),
            Self::OrdinalImport(ordinal) => write!(f, "imports ordinal {ordinal}"),
            Self::MissingImport(name) => {
                write!(f, "imports {name}, which the simulator does not export")
            }
            Self::NotRelocatable => write!(f, "no base relocations"),
        }
    }
}

impl std::error::Error for LinkError {}

fn malformed(context: &'static str) -> impl Fn(object::Error) -> LinkError {
    move |error| LinkError::Malformed(format!("{context}: {error}"))
}

/// Lays `file` out for loading at `base`, binding each import through `resolve` (name to
/// address; `None` fails the load naming the import).
///
/// # Errors
/// [`LinkError`] naming what the image does that this loader (or the kernel's) refuses.
pub fn link(
    file: &[u8],
    base: u64,
    resolve: impl Fn(&str) -> Option<u64>,
) -> Result<Linked, LinkError> {
    let pe = PeFile64::parse(file).map_err(malformed("headers"))?;
    let headers = pe.nt_headers();
    let machine = headers.file_header().machine.get(LE).0;
    if machine != HOST_MACHINE {
        return Err(LinkError::Machine(machine));
    }
    let optional = headers.optional_header();
    let alignment = optional.section_alignment();
    if (alignment as usize) < PAGE_SIZE {
        return Err(LinkError::SectionAlignment(alignment));
    }
    let size = optional.size_of_image() as usize;
    let mut bytes = vec![0_u8; size];
    let header_len = (optional.size_of_headers() as usize)
        .min(file.len())
        .min(size);
    bytes[..header_len].copy_from_slice(&file[..header_len]);
    let mut ranges = vec![Placed {
        name: "headers".into(),
        rva: 0,
        len: header_len.next_multiple_of(PAGE_SIZE),
        protection: Protection::ReadOnly,
    }];
    for section in pe.section_table().iter() {
        let name = String::from_utf8_lossy(section.raw_name())
            .trim_end_matches('\0')
            .to_owned();
        let (rva, virtual_len) = section.pe_address_range();
        let (rva, virtual_len) = (rva as usize, virtual_len as usize);
        let end = rva
            .checked_add(virtual_len)
            .filter(|&end| end <= size)
            .ok_or(LinkError::OutOfImage(rva as u32))?;
        let data = section.pe_data(file).map_err(malformed("section data"))?;
        let copied = data.len().min(virtual_len);
        bytes[rva..rva + copied].copy_from_slice(&data[..copied]);
        let flags = section.characteristics.get(LE).0;
        let writable = flags & pe::IMAGE_SCN_MEM_WRITE.0 != 0;
        let executable = flags & pe::IMAGE_SCN_MEM_EXECUTE.0 != 0;
        let protection = match (writable, executable) {
            (true, true) => return Err(LinkError::WritableExecutable(name)),
            (false, true) => Protection::ReadExecute,
            (true, false) => Protection::ReadWrite,
            (false, false) => Protection::ReadOnly,
        };
        ranges.push(Placed {
            name,
            rva,
            len: (end - rva).next_multiple_of(PAGE_SIZE),
            protection,
        });
    }
    let preferred_base = optional.image_base();
    let relocations = relocate(&pe, &mut bytes, base.wrapping_sub(preferred_base))?;
    let imports = bind(&pe, &mut bytes, resolve)?;
    Ok(Linked {
        bytes,
        preferred_base,
        entry_rva: optional.address_of_entry_point() as usize,
        ranges,
        imports,
        relocations,
    })
}

/// Applies every base relocation for a move of `delta` bytes; returns how many.
fn relocate(pe: &PeFile64<'_>, bytes: &mut [u8], delta: u64) -> Result<usize, LinkError> {
    let Some(mut blocks) = pe
        .data_directories()
        .relocation_blocks(pe.data(), &pe.section_table())
        .map_err(malformed("relocation directory"))?
    else {
        return Err(LinkError::NotRelocatable);
    };
    let mut applied = 0;
    while let Some(block) = blocks.next().map_err(malformed("relocation block"))? {
        for relocation in block {
            let rva = relocation.virtual_address;
            match relocation.typ {
                pe::IMAGE_REL_BASED_ABSOLUTE => {}
                pe::IMAGE_REL_BASED_DIR64 => {
                    let slot = slot_mut(bytes, rva)?;
                    let value = u64::from_le_bytes(*slot).wrapping_add(delta);
                    *slot = value.to_le_bytes();
                    applied += 1;
                }
                other => {
                    return Err(LinkError::RelocationType { kind: other.0, rva });
                }
            }
        }
    }
    if applied == 0 {
        return Err(LinkError::NotRelocatable);
    }
    Ok(applied)
}

/// The eight bytes at `rva`.
fn slot_mut(bytes: &mut [u8], rva: u32) -> Result<&mut [u8; 8], LinkError> {
    let start = rva as usize;
    bytes
        .get_mut(start..start + 8)
        .and_then(|slot| slot.try_into().ok())
        .ok_or(LinkError::OutOfImage(rva))
}

/// Writes the address of each import into its IAT slot.
fn bind(
    pe: &PeFile64<'_>,
    bytes: &mut [u8],
    resolve: impl Fn(&str) -> Option<u64>,
) -> Result<Vec<(String, usize, u64)>, LinkError> {
    let mut bound = Vec::new();
    let Some(table) = pe.import_table().map_err(malformed("import table"))? else {
        return Ok(bound);
    };
    let mut descriptors = table
        .descriptors()
        .map_err(malformed("import descriptors"))?;
    while let Some(descriptor) = descriptors.next().map_err(malformed("import descriptor"))? {
        let dll = String::from_utf8_lossy(
            table
                .name(descriptor.name.get(LE))
                .map_err(malformed("import DLL name"))?,
        )
        .into_owned();
        if !dll.eq_ignore_ascii_case(STORPORT_DLL) {
            return Err(LinkError::ForeignDll(dll));
        }
        let iat = descriptor.first_thunk.get(LE);
        // The lookup table keeps the names; a linker that omits it leaves them in the IAT.
        let lookup = match descriptor.original_first_thunk.get(LE) {
            0 => iat,
            rva => rva,
        };
        let mut thunks = table.thunks(lookup).map_err(malformed("import thunks"))?;
        let mut slot_rva = iat;
        while let Some(thunk) = thunks
            .next::<pe::ImageNtHeaders64>()
            .map_err(malformed("import thunk"))?
        {
            let name = match table
                .import::<pe::ImageNtHeaders64>(thunk)
                .map_err(malformed("import name"))?
            {
                Import::Ordinal(ordinal) => return Err(LinkError::OrdinalImport(ordinal)),
                Import::Name(_hint, name) => String::from_utf8_lossy(name).into_owned(),
            };
            let address = resolve(&name).ok_or_else(|| LinkError::MissingImport(name.clone()))?;
            *slot_mut(bytes, slot_rva)? = address.to_le_bytes();
            bound.push((name, slot_rva as usize, address));
            slot_rva += 8;
        }
    }
    Ok(bound)
}

/// The `.text` section's bytes and its RVA, for checks of the code itself.
///
/// # Errors
/// [`LinkError::Malformed`] if the image does not parse or has no `.text`.
pub fn text(file: &[u8]) -> Result<(u32, &[u8]), LinkError> {
    let pe = PeFile64::parse(file).map_err(malformed("headers"))?;
    let section = pe
        .section_table()
        .iter()
        .find(|section| section.raw_name() == b".text")
        .ok_or_else(|| LinkError::Malformed("no .text section".into()))?;
    let data = section.pe_data(file).map_err(malformed(".text"))?;
    let len = (section.virtual_size.get(LE) as usize).min(data.len());
    Ok((section.virtual_address.get(LE), &data[..len]))
}
