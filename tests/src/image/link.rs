//! Lays a PE32+ kernel image out in memory, in plain bytes, through the loader both hosts
//! share (`rvscsi-pe-loader`: sections at their RVAs, base relocations applied for the chosen
//! load address, every import bound by name, the protection each section asks for), and keeps
//! the result in owned form for the simulator. No memory is mapped here (see [`super`]).
#![forbid(unsafe_code)]

pub use rvscsi_pe_loader::{HOST_MACHINE, PAGE_SIZE, Protection};

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

/// Why an image cannot be loaded: the shared loader's refusals, named the same on both hosts.
pub use rvscsi_pe_loader::LinkError;

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
    let image = rvscsi_pe_loader::Image::parse(file)?;
    let mut bytes = vec![0_u8; image.size_of_image()];
    let mut imports = Vec::new();
    let linked = image.link_into(&mut bytes, base, resolve, |name, slot, address| {
        imports.push((name.to_owned(), slot, address));
    })?;
    let mut ranges: Vec<Placed> = image
        .sections()
        .map(|section| Placed {
            name: section.name.as_str().to_owned(),
            rva: section.rva,
            len: section.len,
            protection: section.protection,
        })
        .collect();
    ranges.sort_by_key(|range| range.rva);
    Ok(Linked {
        bytes,
        preferred_base: image.preferred_base(),
        entry_rva: image.entry_rva(),
        ranges,
        imports,
        relocations: linked.relocations,
    })
}

/// The `.text` section's bytes and its RVA, for checks of the code itself.
///
/// # Errors
/// [`LinkError::Malformed`] if the image does not parse or has no `.text`.
pub fn text(file: &[u8]) -> Result<(u32, &[u8]), LinkError> {
    rvscsi_pe_loader::Image::parse(file)?
        .section_data(".text")
        .ok_or(LinkError::Malformed("no .text section"))
}
