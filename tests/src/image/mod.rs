//! The shipped kernel image (`rvscsi.sys`, PE32+) loaded into this process: laid out and bound
//! by [`link`] (no `unsafe` there), mapped here away from its preferred base, each section
//! protected as it asks (code read-execute, data read-only unless writable, nothing both), so
//! that a stray write into `.text` or `.rdata` faults the test.
//!
//! The only `unsafe` of the loader is in this file: the mapping and protecting of the pages.
//! Calls into the image are made in [`crate::sim::routine`], through `extern "win64"` pointers,
//! on the bounded image stack of [`stack`].

pub mod link;
pub mod stack;

use std::sync::RwLock;

pub use link::{LinkError, Linked, PAGE_SIZE, Placed, Protection};

/// The calling convention of a routine address in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// Code linked into the test binary (`extern "system"`, System V on Linux).
    Linked,
    /// Code of a loaded Windows image (Windows x64 convention).
    Win64,
}

/// The address ranges of every image loaded in this process (never unloaded).
static LOADED: RwLock<Vec<std::ops::Range<usize>>> = RwLock::new(Vec::new());

/// The calling convention of the code at `address`: Windows x64 inside a loaded image, the
/// test binary's own otherwise. A routine's convention is that of the module holding it; a
/// process may hold both (a loaded image, and the planted miniports of the contract tests).
#[must_use]
pub fn abi_of(address: usize) -> Abi {
    let loaded = LOADED
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if loaded.iter().any(|image| image.contains(&address)) {
        Abi::Win64
    } else {
        Abi::Linked
    }
}

/// Why an image could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Read(std::path::PathBuf, std::io::Error),
    /// The image is refused ([`LinkError`]).
    Link(LinkError),
    /// The memory could not be mapped or protected (`errno`).
    Map(std::io::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(path, error) => write!(f, "{}: {error}", path.display()),
            Self::Link(error) => write!(f, "{error}"),
            Self::Map(error) => write!(f, "mapping the image: {error}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// An image mapped in this process. It stays mapped until the process exits: the simulator
/// holds its routine addresses in structures that outlive any one adapter, as the kernel keeps
/// a driver loaded while it has devices.
#[derive(Debug)]
pub struct Image {
    base: usize,
    len: usize,
    entry: usize,
    ranges: Vec<Placed>,
    imports: Vec<(String, usize, u64)>,
    preferred_base: u64,
    relocations: usize,
}

impl Image {
    /// Loads the image in `path`, binding its imports through `resolve` (name to address).
    ///
    /// # Errors
    /// [`LoadError`] naming the file, the refused construct (an import the simulator lacks is
    /// named), or the failed mapping.
    pub fn load(
        path: &std::path::Path,
        resolve: impl Fn(&str) -> Option<u64>,
    ) -> Result<&'static Self, LoadError> {
        let file = std::fs::read(path).map_err(|error| LoadError::Read(path.into(), error))?;
        Self::load_patched(&file, resolve, |_| {})
    }

    /// Loads `file`, letting `patch` change the laid-out bytes before they are protected (the
    /// planted-fault tests use it; nothing else should).
    ///
    /// # Errors
    /// As [`Image::load`].
    pub fn load_patched(
        file: &[u8],
        resolve: impl Fn(&str) -> Option<u64>,
        patch: impl FnOnce(&mut Linked),
    ) -> Result<&'static Self, LoadError> {
        // Probe the layout first (at a dummy base) to learn the size and the preferred base.
        let probe = link::link(file, 0, |_| Some(0)).map_err(LoadError::Link)?;
        let mapping = Mapping::reserve(probe.bytes.len(), probe.preferred_base)?;
        let mut linked =
            link::link(file, mapping.base as u64, &resolve).map_err(LoadError::Link)?;
        patch(&mut linked);
        mapping.fill(&linked.bytes);
        for range in &linked.ranges {
            mapping.protect(range.rva, range.len, range.protection)?;
        }
        let image = Box::leak(Box::new(Self {
            base: mapping.base,
            len: mapping.len,
            entry: mapping.base + linked.entry_rva,
            ranges: linked.ranges,
            imports: linked.imports,
            preferred_base: linked.preferred_base,
            relocations: linked.relocations,
        }));
        LOADED
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(image.base..image.base + image.len);
        Ok(image)
    }

    /// Where the image is mapped.
    #[must_use]
    pub fn base(&self) -> usize {
        self.base
    }

    /// Its size in memory (`SizeOfImage`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never, for a loaded image).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of its entry point (DriverEntry).
    #[must_use]
    pub fn entry(&self) -> usize {
        self.entry
    }

    /// The linker's preferred base, which the loader avoided.
    #[must_use]
    pub fn preferred_base(&self) -> u64 {
        self.preferred_base
    }

    /// The headers and sections as mapped, with their protections.
    #[must_use]
    pub fn ranges(&self) -> &[Placed] {
        &self.ranges
    }

    /// The imports bound: (name, IAT slot offset, address).
    #[must_use]
    pub fn imports(&self) -> &[(String, usize, u64)] {
        &self.imports
    }

    /// Base relocations applied.
    #[must_use]
    pub fn relocations(&self) -> usize {
        self.relocations
    }

    /// The mapped section named `name`, as an address range.
    #[must_use]
    pub fn section(&self, name: &str) -> Option<std::ops::Range<usize>> {
        self.ranges
            .iter()
            .find(|range| range.name == name)
            .map(|range| self.base + range.rva..self.base + range.rva + range.len)
    }
}

/// Anonymous pages holding an image, leaked once filled.
struct Mapping {
    base: usize,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes read-write anywhere but at `avoid` (the image's preferred base).
    fn reserve(len: usize, avoid: u64) -> Result<Self, LoadError> {
        let len = len.next_multiple_of(PAGE_SIZE);
        let map = || {
            // SAFETY: an anonymous private mapping at an address of the kernel's choice
            // touches no existing memory.
            let address = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if address == libc::MAP_FAILED {
                Err(LoadError::Map(std::io::Error::last_os_error()))
            } else {
                Ok(address.addr())
            }
        };
        let mut base = map()?;
        if base as u64 == avoid {
            // Keep the first mapping so the second cannot land on the preferred base too.
            base = map()?;
        }
        Ok(Self { base, len })
    }

    /// Copies the laid-out image into the (still writable) pages.
    fn fill(&self, bytes: &[u8]) {
        let len = bytes.len().min(self.len);
        // SAFETY: the mapping is `self.len` bytes, readable and writable, owned by this
        // loader and not yet visible to anything else.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                std::ptr::with_exposed_provenance_mut::<u8>(self.base),
                len,
            );
        }
    }

    /// Gives `len` bytes at `rva` their final protection.
    fn protect(&self, rva: usize, len: usize, protection: Protection) -> Result<(), LoadError> {
        let flags = match protection {
            Protection::ReadOnly => libc::PROT_READ,
            Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
            Protection::ReadExecute => libc::PROT_READ | libc::PROT_EXEC,
        };
        let len = len.min(self.len.saturating_sub(rva));
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range lies inside this loader's own mapping (clamped above), which holds
        // no Rust object; changing its protection affects only the image's pages.
        let status = unsafe {
            libc::mprotect(
                std::ptr::with_exposed_provenance_mut(self.base + rva),
                len,
                flags,
            )
        };
        if status == 0 {
            Ok(())
        } else {
            Err(LoadError::Map(std::io::Error::last_os_error()))
        }
    }
}
