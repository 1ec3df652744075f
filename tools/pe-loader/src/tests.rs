//! The loader against a small hand-built image: what it lays out, and each refusal.

extern crate std;

use std::borrow::ToOwned;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

use super::{HOST_MACHINE, Image, LinkError, PAGE_SIZE, Protection};

const PREFERRED_BASE: u64 = 0x1_4000_0000;
const SIZE_OF_IMAGE: usize = 0x4000;
const IMPORT_DIRECTORY: u32 = 0x2010;
const RELOC_DIRECTORY: u32 = 0x3000;
/// Where the section headers start in the file.
const SECTION_TABLE: usize = 0x40 + 4 + 20 + 240;

fn put(file: &mut [u8], at: usize, bytes: &[u8]) {
    file[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A PE32+ for this host: `.text` (entry at its start), `.rdata` holding a pointer to
/// relocate and an import directory for `StorPortBusy` and `StorPortReady` from storport.sys,
/// and `.reloc` with one DIR64 entry and one padding entry.
fn image() -> Vec<u8> {
    let mut file = vec![0_u8; 0xa00];
    put(&mut file, 0, b"MZ");
    put(&mut file, 0x3c, &0x40_u32.to_le_bytes());
    put(&mut file, 0x40, b"PE\0\0");
    let coff = 0x44;
    put(&mut file, coff, &HOST_MACHINE.to_le_bytes());
    put(&mut file, coff + 2, &3_u16.to_le_bytes());
    put(&mut file, coff + 16, &240_u16.to_le_bytes());
    let optional = coff + 20;
    put(&mut file, optional, &0x20b_u16.to_le_bytes());
    put(&mut file, optional + 16, &0x1000_u32.to_le_bytes());
    put(&mut file, optional + 24, &PREFERRED_BASE.to_le_bytes());
    put(&mut file, optional + 32, &0x1000_u32.to_le_bytes());
    put(&mut file, optional + 36, &0x200_u32.to_le_bytes());
    put(
        &mut file,
        optional + 56,
        &(SIZE_OF_IMAGE as u32).to_le_bytes(),
    );
    put(&mut file, optional + 60, &0x400_u32.to_le_bytes());
    put(&mut file, optional + 108, &16_u32.to_le_bytes());
    put(
        &mut file,
        optional + 112 + 8,
        &IMPORT_DIRECTORY.to_le_bytes(),
    );
    put(&mut file, optional + 112 + 12, &40_u32.to_le_bytes());
    put(
        &mut file,
        optional + 112 + 40,
        &RELOC_DIRECTORY.to_le_bytes(),
    );
    put(&mut file, optional + 112 + 44, &12_u32.to_le_bytes());
    let sections: [(&[u8; 8], u32, u32, u32); 3] = [
        (b".text\0\0\0", 0x1000, 0x400, 0x6000_0020),
        (b".rdata\0\0", 0x2000, 0x600, 0x4000_0040),
        (b".reloc\0\0", 0x3000, 0x800, 0x4200_0040),
    ];
    for (index, (name, rva, raw, flags)) in sections.iter().enumerate() {
        let header = SECTION_TABLE + index * 40;
        put(&mut file, header, *name);
        put(&mut file, header + 8, &0x200_u32.to_le_bytes());
        put(&mut file, header + 12, &rva.to_le_bytes());
        put(&mut file, header + 16, &0x200_u32.to_le_bytes());
        put(&mut file, header + 20, &raw.to_le_bytes());
        put(&mut file, header + 36, &flags.to_le_bytes());
    }
    // .text: `ret`.
    put(&mut file, 0x400, &[0xc3]);
    // .rdata (file 0x600 = RVA 0x2000).
    let rdata = |rva: usize| 0x600 + rva - 0x2000;
    put(
        &mut file,
        rdata(0x2000),
        &(PREFERRED_BASE + 0x1010).to_le_bytes(),
    );
    let descriptor = rdata(IMPORT_DIRECTORY as usize);
    put(&mut file, descriptor, &0x2100_u32.to_le_bytes());
    put(&mut file, descriptor + 12, &0x2080_u32.to_le_bytes());
    put(&mut file, descriptor + 16, &0x2180_u32.to_le_bytes());
    for table in [0x2100, 0x2180] {
        put(&mut file, rdata(table), &0x20c0_u64.to_le_bytes());
        put(&mut file, rdata(table + 8), &0x20e0_u64.to_le_bytes());
    }
    put(&mut file, rdata(0x2080), b"storport.sys\0");
    put(&mut file, rdata(0x20c2), b"StorPortBusy\0");
    put(&mut file, rdata(0x20e2), b"StorPortReady\0");
    // .reloc (file 0x800): page 0x2000, size 12, DIR64 at +0, then padding.
    put(&mut file, 0x800, &0x2000_u32.to_le_bytes());
    put(&mut file, 0x804, &12_u32.to_le_bytes());
    put(&mut file, 0x808, &(10_u16 << 12).to_le_bytes());
    file
}

fn resolve(name: &str) -> Option<u64> {
    match name {
        "StorPortBusy" => Some(0xb0b0),
        "StorPortReady" => Some(0x4ead),
        _ => None,
    }
}

/// The laid-out bytes and the bindings reported.
type Loaded = (Vec<u8>, Vec<(std::string::String, usize, u64)>);

fn link(file: &[u8], base: u64) -> Result<Loaded, LinkError> {
    let image = Image::parse(file)?;
    let mut memory = vec![0xcc_u8; image.size_of_image()];
    let mut bound = Vec::new();
    image.link_into(&mut memory, base, resolve, |name, slot, address| {
        bound.push((name.into(), slot, address));
    })?;
    Ok((memory, bound))
}

fn u64_at(memory: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(memory[at..at + 8].try_into().unwrap())
}

#[test]
fn an_image_is_laid_out_relocated_and_bound() {
    let file = image();
    let image = Image::parse(&file).unwrap();
    assert_eq!(image.entry_rva(), 0x1000);
    assert_eq!(image.preferred_base(), PREFERRED_BASE);
    let placed: Vec<_> = image
        .sections()
        .map(|section| {
            (
                section.name.as_str().to_owned(),
                section.rva,
                section.len,
                section.protection,
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            ("headers".into(), 0, PAGE_SIZE, Protection::ReadOnly),
            (".text".into(), 0x1000, PAGE_SIZE, Protection::ReadExecute),
            (".rdata".into(), 0x2000, PAGE_SIZE, Protection::ReadOnly),
            (".reloc".into(), 0x3000, PAGE_SIZE, Protection::ReadOnly),
        ]
    );
    let base = 0x7000_0000;
    let (memory, bound) = link(&file, base).unwrap();
    assert_eq!(memory.len(), SIZE_OF_IMAGE);
    assert_eq!(memory[0x1000], 0xc3);
    assert_eq!(memory[0x1001], 0, "the rest of a section is zeroed");
    assert_eq!(
        u64_at(&memory, 0x2000),
        base + 0x1010,
        "the DIR64 relocation moved"
    );
    assert_eq!(u64_at(&memory, 0x2180), 0xb0b0);
    assert_eq!(u64_at(&memory, 0x2188), 0x4ead);
    assert_eq!(u64_at(&memory, 0x2100), 0x20c0, "the lookup table stays");
    assert_eq!(
        bound,
        [
            ("StorPortBusy".into(), 0x2180, 0xb0b0),
            ("StorPortReady".into(), 0x2188, 0x4ead)
        ]
    );
    let (rva, text) = image.section_data(".text").unwrap();
    assert_eq!((rva, text.len(), text[0]), (0x1000, 0x200, 0xc3));
}

#[test]
fn an_import_the_host_lacks_is_named() {
    let file = image();
    let image = Image::parse(&file).unwrap();
    let mut memory = vec![0; SIZE_OF_IMAGE];
    let refused = image.link_into(
        &mut memory,
        0,
        |name| (name == "StorPortBusy").then_some(1),
        |_, _, _| {},
    );
    assert!(
        matches!(refused, Err(LinkError::MissingImport(name)) if name == "StorPortReady"),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().to_string().contains("StorPortReady"));
}

#[test]
fn each_refused_construct_is_reported() {
    let patched = |at: usize, bytes: &[u8]| {
        let mut file = image();
        put(&mut file, at, bytes);
        link(&file, 0x7000_0000).map(|_| ())
    };
    let text_flags = SECTION_TABLE + 36;
    assert!(matches!(
        patched(text_flags, &0xe000_0020_u32.to_le_bytes()),
        Err(LinkError::WritableExecutable(name)) if name == ".text"
    ));
    assert!(matches!(
        patched(0x600 + 0x80, b"ntoskrnl.exe"),
        Err(LinkError::ForeignDll(name)) if name == "ntoskrnl.exe"
    ));
    assert_eq!(
        patched(0x600 + 0x100, &(super::ORDINAL_FLAG | 7).to_le_bytes()),
        Err(LinkError::OrdinalImport(7))
    );
    assert_eq!(
        patched(0x808, &(3_u16 << 12).to_le_bytes()),
        Err(LinkError::RelocationType {
            kind: 3,
            rva: 0x2000
        })
    );
    assert_eq!(patched(0x808, &[0, 0]), Err(LinkError::NotRelocatable));
    assert_eq!(
        patched(0x44, &0x14c_u16.to_le_bytes()),
        Err(LinkError::Machine(0x14c))
    );
    assert_eq!(
        patched(0x44 + 20 + 32, &0x200_u32.to_le_bytes()),
        Err(LinkError::SectionAlignment(0x200))
    );
    assert_eq!(
        patched(0x44 + 20 + 16, &0x2000_u32.to_le_bytes()),
        Err(LinkError::EntryOutsideCode(0x2000))
    );
    assert_eq!(
        patched(SECTION_TABLE + 40 + 12, &0x3e00_u32.to_le_bytes()),
        Err(LinkError::Malformed("section not page-aligned"))
    );
    let file = image();
    let mut small = vec![0; SIZE_OF_IMAGE - 1];
    assert_eq!(
        Image::parse(&file)
            .unwrap()
            .link_into(&mut small, 0, resolve, |_, _, _| {}),
        Err(LinkError::MemoryTooSmall {
            needed: SIZE_OF_IMAGE,
            supplied: SIZE_OF_IMAGE - 1
        })
    );
}

/// Every truncation and every single-byte corruption is an error or a load, never a panic or
/// a write outside the memory handed in.
#[test]
fn truncated_and_corrupted_images_never_panic() {
    let file = image();
    for len in 0..file.len() {
        assert!(link(&file[..len], 0x7000_0000).is_err(), "{len}");
    }
    for at in 0..file.len() {
        for value in [0x00, 0x7f, 0x80, 0xff] {
            let mut corrupted = file.clone();
            corrupted[at] = value;
            let _ = link(&corrupted, 0x7000_0000);
        }
    }
}
