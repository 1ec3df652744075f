//! Lays a PE32+ kernel image (the shipped `rvscsi.sys`) out in memory the caller supplies:
//! headers and sections at their RVAs, base relocations applied for the chosen load address,
//! every import bound by name through the caller's resolver, the entry point (DriverEntry)
//! found and checked to lie in code.
//!
//! One loader, two hosts: the StorPort simulator (`rvscsi-tests`, which maps the memory and
//! protects each section as [`Section::protection`] says) and the bare-metal QEMU guest
//! (`vmtest-guest`, which has no heap, hence `no_std` without `alloc` here: nothing is
//! allocated, names are handed out as borrowed `&str` or fixed-size [`Name`]s).
//!
//! Every offset read from the file is untrusted: each read is bounds-checked and a bad value is
//! a [`LinkError`], never a panic (the unit tests feed truncated and mutated images).
//!
//! The format is the Microsoft PE/COFF specification (sections "MS-DOS stub", "COFF file
//! header", "Optional header", "Section table", ".idata", ".reloc").
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// The page size sections are placed and protected at.
pub const PAGE_SIZE: usize = 4096;
/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_AMD64: u16 = 0x8664;
/// `IMAGE_FILE_MACHINE_ARM64`.
pub const MACHINE_ARM64: u16 = 0xaa64;
/// The COFF machine whose images this host can run natively.
#[cfg(not(target_arch = "aarch64"))]
pub const HOST_MACHINE: u16 = MACHINE_AMD64;
/// The COFF machine whose images this host can run natively.
#[cfg(target_arch = "aarch64")]
pub const HOST_MACHINE: u16 = MACHINE_ARM64;
/// The only DLL a StorPort miniport may import from.
pub const STORPORT_DLL: &str = "storport.sys";

/// `IMAGE_NT_OPTIONAL_HDR64_MAGIC`: a PE32+ optional header.
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// `IMAGE_SCN_MEM_EXECUTE`.
const SCN_MEM_EXECUTE: u32 = 0x2000_0000;
/// `IMAGE_SCN_MEM_WRITE`.
const SCN_MEM_WRITE: u32 = 0x8000_0000;
/// Data directory indices: imports and base relocations.
const DIRECTORY_IMPORT: usize = 1;
const DIRECTORY_BASERELOC: usize = 5;
/// `IMAGE_REL_BASED_ABSOLUTE` (padding) and `IMAGE_REL_BASED_DIR64`.
const REL_BASED_ABSOLUTE: u16 = 0;
const REL_BASED_DIR64: u16 = 10;
/// `IMAGE_ORDINAL_FLAG64`.
const ORDINAL_FLAG: u64 = 1 << 63;
/// Bytes of a section header and of an import descriptor.
const SECTION_HEADER_LEN: usize = 40;
const IMPORT_DESCRIPTOR_LEN: usize = 20;
/// The longest name (section, DLL, import) a [`Name`] holds.
pub const NAME_CAPACITY: usize = 64;

/// A short name from the image (a section, DLL or import name), held without allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; NAME_CAPACITY],
    len: usize,
}

impl Name {
    /// The name of `bytes` (cut at the first NUL); `None` if not UTF-8 or longer than
    /// [`NAME_CAPACITY`].
    fn new(bytes: &[u8]) -> Option<Self> {
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = bytes.get(..len)?;
        core::str::from_utf8(text).ok()?;
        let mut name = Self {
            bytes: [0; NAME_CAPACITY],
            len,
        };
        name.bytes.get_mut(..len)?.copy_from_slice(text);
        Some(name)
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // The constructor checked the bytes are UTF-8; the fallback is unreachable.
        core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What a placed range of the image may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Read-only data (headers, `.rdata`, `.pdata`, `.reloc`).
    ReadOnly,
    /// Writable data (`.data`, `.bss`).
    ReadWrite,
    /// Code (`.text`).
    ReadExecute,
}

/// The headers or one section, as placed in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// `headers`, or the section's name (`.text`, `.rdata`, ...).
    pub name: Name,
    /// Offset of its first byte from the image base (page-aligned).
    pub rva: usize,
    /// Bytes it spans in memory, rounded up to whole pages.
    pub len: usize,
    /// How a host protects it once loaded.
    pub protection: Protection,
    /// Bytes of it that come from the file (the rest is zero).
    file_range: (usize, usize),
}

/// What [`Image::link_into`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linked {
    /// Base relocations applied.
    pub relocations: usize,
    /// Imports bound.
    pub imports: usize,
}

/// Why an image cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The headers or a directory are malformed; says which part.
    Malformed(&'static str),
    /// Not an image for this host's processor.
    Machine(u16),
    /// The section alignment is below a page, so sections cannot be protected on their own.
    SectionAlignment(u32),
    /// A section is both writable and executable.
    WritableExecutable(Name),
    /// A base relocation of a type an x64 or ARM64 image should not carry.
    RelocationType {
        /// Its `IMAGE_REL_BASED_*` type.
        kind: u16,
        /// Where it applies.
        rva: u32,
    },
    /// A section, relocation or import slot outside the image.
    OutOfImage(u32),
    /// An import from a DLL other than storport.sys.
    ForeignDll(Name),
    /// An import by ordinal.
    OrdinalImport(u16),
    /// An import the host's resolver does not know.
    MissingImport(Name),
    /// The image has no base relocations, so it cannot move from its preferred base.
    NotRelocatable,
    /// The entry point is not inside an executable section.
    EntryOutsideCode(u32),
    /// The memory handed to [`Image::link_into`] is smaller than the image.
    MemoryTooSmall {
        /// `SizeOfImage`.
        needed: usize,
        /// What was supplied.
        supplied: usize,
    },
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(part) => write!(f, "malformed image: {part}"),
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
                write!(f, "imports {name}, which this host does not export")
            }
            Self::NotRelocatable => write!(f, "no base relocations"),
            Self::EntryOutsideCode(rva) => {
                write!(f, "entry point {rva:#x} is not in an executable section")
            }
            Self::MemoryTooSmall { needed, supplied } => {
                write!(
                    f,
                    "the image needs {needed:#x} bytes, {supplied:#x} supplied"
                )
            }
        }
    }
}

impl core::error::Error for LinkError {}

/// Little-endian reads at untrusted offsets: `None` past the end.
fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A parsed, checked PE32+ image file.
#[derive(Clone, Copy, Debug)]
pub struct Image<'file> {
    file: &'file [u8],
    preferred_base: u64,
    entry_rva: usize,
    mapped_len: usize,
    headers_len: usize,
    section_table: usize,
    section_count: usize,
    imports: (usize, usize),
    relocations: (usize, usize),
}

impl<'file> Image<'file> {
    /// Parses and checks the headers and section table of `file`.
    ///
    /// # Errors
    /// [`LinkError`] naming what is malformed or refused: not PE32+, another machine, sections
    /// below page alignment or writable and executable, sections outside the image, the entry
    /// point outside code.
    pub fn parse(file: &'file [u8]) -> Result<Self, LinkError> {
        if file.get(..2) != Some(b"MZ") {
            return Err(LinkError::Malformed("no MZ signature"));
        }
        let pe = read_u32(file, 0x3c).ok_or(LinkError::Malformed("truncated DOS header"))? as usize;
        if file.get(pe..pe.saturating_add(4)) != Some(b"PE\0\0") {
            return Err(LinkError::Malformed("no PE signature"));
        }
        let coff = pe + 4;
        let truncated = LinkError::Malformed("truncated COFF header");
        let machine = read_u16(file, coff).ok_or(truncated)?;
        if machine != HOST_MACHINE {
            return Err(LinkError::Machine(machine));
        }
        let section_count = usize::from(read_u16(file, coff + 2).ok_or(truncated)?);
        let optional_len = usize::from(read_u16(file, coff + 16).ok_or(truncated)?);
        let optional = coff + 20;
        let truncated = LinkError::Malformed("truncated optional header");
        if read_u16(file, optional).ok_or(truncated)? != PE32_PLUS_MAGIC {
            return Err(LinkError::Malformed("not a PE32+ optional header"));
        }
        let entry_rva = read_u32(file, optional + 16).ok_or(truncated)? as usize;
        let preferred_base = read_u64(file, optional + 24).ok_or(truncated)?;
        let alignment = read_u32(file, optional + 32).ok_or(truncated)?;
        if (alignment as usize) < PAGE_SIZE {
            return Err(LinkError::SectionAlignment(alignment));
        }
        let size_of_image = read_u32(file, optional + 56).ok_or(truncated)? as usize;
        let size_of_headers = read_u32(file, optional + 60).ok_or(truncated)? as usize;
        let directory_count = read_u32(file, optional + 108).ok_or(truncated)? as usize;
        let directory = |index: usize| -> Result<(usize, usize), LinkError> {
            if index >= directory_count || 112 + index * 8 + 8 > optional_len {
                return Ok((0, 0));
            }
            let at = optional + 112 + index * 8;
            let rva = read_u32(file, at).ok_or(truncated)? as usize;
            let len = read_u32(file, at + 4).ok_or(truncated)? as usize;
            Ok((rva, len))
        };
        let image = Self {
            file,
            preferred_base,
            entry_rva,
            mapped_len: size_of_image,
            headers_len: size_of_headers.min(file.len()).min(size_of_image),
            section_table: optional + optional_len,
            section_count,
            imports: directory(DIRECTORY_IMPORT)?,
            relocations: directory(DIRECTORY_BASERELOC)?,
        };
        let mut entry_in_code = false;
        for index in 0..section_count {
            let section = image.section(index)?;
            entry_in_code |= section.protection == Protection::ReadExecute
                && (section.rva..section.rva + section.len).contains(&entry_rva);
        }
        if !entry_in_code {
            return Err(LinkError::EntryOutsideCode(entry_rva as u32));
        }
        Ok(image)
    }

    /// Section `index` of the section table, checked.
    fn section(&self, index: usize) -> Result<Section, LinkError> {
        let header = self.section_table + index * SECTION_HEADER_LEN;
        let truncated = LinkError::Malformed("truncated section table");
        let raw_name = self.file.get(header..header + 8).ok_or(truncated)?;
        let name = Name::new(raw_name).ok_or(LinkError::Malformed("section name not UTF-8"))?;
        let virtual_len = read_u32(self.file, header + 8).ok_or(truncated)? as usize;
        let rva = read_u32(self.file, header + 12).ok_or(truncated)? as usize;
        let raw_len = read_u32(self.file, header + 16).ok_or(truncated)? as usize;
        let raw_offset = read_u32(self.file, header + 20).ok_or(truncated)? as usize;
        let flags = read_u32(self.file, header + 36).ok_or(truncated)?;
        // A zero VirtualSize means the raw size (PE/COFF, "Section table").
        let virtual_len = if virtual_len == 0 {
            raw_len
        } else {
            virtual_len
        };
        let end = rva
            .checked_add(virtual_len)
            .filter(|&end| end <= self.mapped_len)
            .ok_or(LinkError::OutOfImage(rva as u32))?;
        if !rva.is_multiple_of(PAGE_SIZE) {
            return Err(LinkError::Malformed("section not page-aligned"));
        }
        let copied = raw_len.min(virtual_len);
        if raw_offset
            .checked_add(copied)
            .is_none_or(|file_end| file_end > self.file.len())
        {
            return Err(LinkError::Malformed("section data beyond the file"));
        }
        let protection = match (flags & SCN_MEM_WRITE != 0, flags & SCN_MEM_EXECUTE != 0) {
            (true, true) => return Err(LinkError::WritableExecutable(name)),
            (false, true) => Protection::ReadExecute,
            (true, false) => Protection::ReadWrite,
            (false, false) => Protection::ReadOnly,
        };
        Ok(Section {
            name,
            rva,
            len: (end - rva).next_multiple_of(PAGE_SIZE),
            protection,
            file_range: (raw_offset, copied),
        })
    }

    /// The headers, then every section, in table order (all checked by [`Image::parse`]).
    pub fn sections(&self) -> impl Iterator<Item = Section> + '_ {
        let headers = Section {
            name: Name::new(b"headers").unwrap_or(Name {
                bytes: [0; NAME_CAPACITY],
                len: 0,
            }),
            rva: 0,
            len: self.headers_len.next_multiple_of(PAGE_SIZE),
            protection: Protection::ReadOnly,
            file_range: (0, self.headers_len),
        };
        core::iter::once(headers)
            .chain((0..self.section_count).filter_map(|index| self.section(index).ok()))
    }

    /// `SizeOfImage`: the bytes [`Image::link_into`] needs.
    #[must_use]
    pub fn size_of_image(&self) -> usize {
        self.mapped_len
    }

    /// The base the linker chose (a host should load elsewhere, proving relocation).
    #[must_use]
    pub fn preferred_base(&self) -> u64 {
        self.preferred_base
    }

    /// The entry point (DriverEntry) as an offset from the base; inside code.
    #[must_use]
    pub fn entry_rva(&self) -> usize {
        self.entry_rva
    }

    /// The file bytes of the section named `name`, with its RVA (for checks of the code).
    #[must_use]
    pub fn section_data(&self, name: &str) -> Option<(u32, &'file [u8])> {
        let section = self
            .sections()
            .skip(1)
            .find(|section| section.name == name)?;
        let (offset, len) = section.file_range;
        Some((section.rva as u32, self.file.get(offset..offset + len)?))
    }

    /// Lays the image out in `memory` (which the host will run at address `base`): zeroes
    /// `SizeOfImage` bytes, copies headers and sections, applies the base relocations for
    /// `base`, and binds each import through `resolve` (name to address), reporting each
    /// binding to `bound` (name, IAT slot offset, address).
    ///
    /// # Errors
    /// [`LinkError`]: memory too small, a malformed directory, a relocation of another type,
    /// an import from another DLL, by ordinal, or one `resolve` does not know (named).
    pub fn link_into(
        &self,
        memory: &mut [u8],
        base: u64,
        mut resolve: impl FnMut(&str) -> Option<u64>,
        mut bound: impl FnMut(&str, usize, u64),
    ) -> Result<Linked, LinkError> {
        let supplied = memory.len();
        let memory = memory
            .get_mut(..self.mapped_len)
            .ok_or(LinkError::MemoryTooSmall {
                needed: self.mapped_len,
                supplied,
            })?;
        memory.fill(0);
        for section in self.sections() {
            let (offset, len) = section.file_range;
            let source = self
                .file
                .get(offset..offset + len)
                .ok_or(LinkError::Malformed("section data beyond the file"))?;
            memory
                .get_mut(section.rva..section.rva + len)
                .ok_or(LinkError::OutOfImage(section.rva as u32))?
                .copy_from_slice(source);
        }
        let relocations = relocate(
            memory,
            self.relocations,
            base.wrapping_sub(self.preferred_base),
        )?;
        let imports = bind(memory, self.imports, &mut resolve, &mut bound)?;
        Ok(Linked {
            relocations,
            imports,
        })
    }
}

/// The eight bytes at `rva` of the laid-out image.
fn slot_mut(memory: &mut [u8], rva: usize) -> Result<&mut [u8; 8], LinkError> {
    memory
        .get_mut(rva..rva.saturating_add(8))
        .and_then(|slot| slot.try_into().ok())
        .ok_or(LinkError::OutOfImage(rva as u32))
}

/// Applies every base relocation of the directory at `(rva, len)` for a move of `delta`
/// bytes; returns how many.
fn relocate(memory: &mut [u8], (rva, len): (usize, usize), delta: u64) -> Result<usize, LinkError> {
    if rva == 0 || len == 0 {
        return Err(LinkError::NotRelocatable);
    }
    let end = rva
        .checked_add(len)
        .filter(|&end| end <= memory.len())
        .ok_or(LinkError::OutOfImage(rva as u32))?;
    let mut block = rva;
    let mut applied = 0;
    // Blocks of (page RVA, block size) followed by 16-bit entries (PE/COFF, ".reloc").
    while block + 8 <= end {
        let truncated = LinkError::Malformed("truncated relocation block");
        let page = read_u32(memory, block).ok_or(truncated)? as usize;
        let size = read_u32(memory, block + 4).ok_or(truncated)? as usize;
        if size < 8 || block + size > end {
            return Err(LinkError::Malformed("relocation block size"));
        }
        for entry_at in (block + 8..block + size).step_by(2) {
            let entry = read_u16(memory, entry_at).ok_or(truncated)?;
            let target = page + usize::from(entry & 0xfff);
            match entry >> 12 {
                REL_BASED_ABSOLUTE => {}
                REL_BASED_DIR64 => {
                    let slot = slot_mut(memory, target)?;
                    *slot = u64::from_le_bytes(*slot).wrapping_add(delta).to_le_bytes();
                    applied += 1;
                }
                kind => {
                    return Err(LinkError::RelocationType {
                        kind,
                        rva: target as u32,
                    });
                }
            }
        }
        block += size;
    }
    if applied == 0 {
        return Err(LinkError::NotRelocatable);
    }
    Ok(applied)
}

/// The NUL-terminated name at `rva` of the laid-out image.
fn name_at(memory: &[u8], rva: usize) -> Result<Name, LinkError> {
    let tail = memory.get(rva..).ok_or(LinkError::OutOfImage(rva as u32))?;
    let len = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or(LinkError::Malformed("unterminated name"))?;
    Name::new(tail.get(..len).unwrap_or(&[]))
        .ok_or(LinkError::Malformed("name too long or not UTF-8"))
}

/// Writes the address of each import into its IAT slot; returns how many.
fn bind(
    memory: &mut [u8],
    (rva, len): (usize, usize),
    resolve: &mut impl FnMut(&str) -> Option<u64>,
    bound: &mut impl FnMut(&str, usize, u64),
) -> Result<usize, LinkError> {
    if rva == 0 || len == 0 {
        return Ok(0);
    }
    let truncated = LinkError::Malformed("truncated import directory");
    let mut count = 0;
    let mut descriptor = rva;
    loop {
        let lookup = read_u32(memory, descriptor).ok_or(truncated)? as usize;
        let dll_name = read_u32(memory, descriptor + 12).ok_or(truncated)? as usize;
        let iat = read_u32(memory, descriptor + 16).ok_or(truncated)? as usize;
        // The directory ends with an all-zero descriptor.
        if dll_name == 0 && iat == 0 {
            return Ok(count);
        }
        let dll = name_at(memory, dll_name)?;
        if !dll.as_str().eq_ignore_ascii_case(STORPORT_DLL) {
            return Err(LinkError::ForeignDll(dll));
        }
        // The lookup table keeps the names; a linker that omits it leaves them in the IAT.
        let lookup = if lookup == 0 { iat } else { lookup };
        for index in 0.. {
            let thunk = read_u64(memory, lookup + index * 8).ok_or(truncated)?;
            if thunk == 0 {
                break;
            }
            if thunk & ORDINAL_FLAG != 0 {
                return Err(LinkError::OrdinalImport(thunk as u16));
            }
            // A hint/name entry: a 16-bit hint, then the name.
            let name = name_at(memory, (thunk as u32 as usize).saturating_add(2))?;
            let address = resolve(name.as_str()).ok_or(LinkError::MissingImport(name))?;
            let slot_rva = iat + index * 8;
            *slot_mut(memory, slot_rva)? = address.to_le_bytes();
            bound(name.as_str(), slot_rva, address);
            count += 1;
        }
        descriptor += IMPORT_DESCRIPTOR_LEN;
    }
}

#[cfg(test)]
mod tests;
