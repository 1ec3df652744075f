//! Test-only synthesis of small PE32+ driver images and PDB files, one knob per rule.
//!
//! The default [`Image`] passes every rule; each test turns one knob and checks that exactly
//! the matching rule fails. The layout is fixed and simple: headers, `.text` (one `ret` as
//! DriverEntry), `.rdata` (imports, exports, debug directory, CodeView record, TLS directory
//! if asked) and `.reloc`.

use crate::pdb::MSF_MAGIC;

const FILE_ALIGNMENT: usize = 0x200;
const SECTION_ALIGNMENT: u32 = 0x1000;
const TEXT_RVA: u32 = 0x1000;
const RDATA_RVA: u32 = 0x2000;
const OPTIONAL_HEADER_SIZE: usize = 240;
const SCN_CODE: u32 = 0x0000_0020;
const SCN_INITIALIZED_DATA: u32 = 0x0000_0040;
const SCN_EXECUTE: u32 = 0x2000_0000;
const SCN_READ: u32 = 0x4000_0000;
const SCN_WRITE: u32 = 0x8000_0000;

/// One imported function: by name or by ordinal.
#[derive(Clone, Debug)]
pub enum Imported {
    /// By name.
    Name(&'static str),
    /// By ordinal.
    Ordinal(u16),
}

/// The knobs of a synthesized driver image.
#[derive(Clone, Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "each bool is one independent rule knob a test flips"
)]
pub struct Image {
    pub machine: u16,
    pub subsystem: u16,
    pub dll_characteristics: u16,
    /// An export directory naming the image `fixture.dll` and exporting `DriverEntry` (the
    /// start of `.text`) and `memcpy`, as a cdylib link writes one.
    pub exports: bool,
    /// `IMAGE_FILE_DLL` in the COFF characteristics.
    pub dll: bool,
    /// `AddressOfEntryPoint` minus the DriverEntry RVA.
    pub entry_offset: u32,
    pub imports: Vec<(&'static str, Vec<Imported>)>,
    pub delay_imports: bool,
    pub tls: bool,
    pub relocations: bool,
    pub writable_text: bool,
    /// The code of `.text` (at most one file-alignment block); DriverEntry is its start.
    pub text: Vec<u8>,
    /// GUID and age of the CodeView record; `None` leaves the debug directory out.
    pub codeview: Option<([u8; 16], u32)>,
    /// Leave the checksum field 0 instead of writing the correct value.
    pub zero_checksum: bool,
    /// The data of an RT_VERSION resource (name 1, language 0x409), in a resource directory
    /// in `.rdata`; `None` leaves the resource directory out.
    pub version_resource: Option<Vec<u8>>,
    /// The data of a `MOFDATA` resource named `MOFRESOURCE` (language 0x409), in the same
    /// resource directory; `None` leaves it out.
    pub mof_resource: Option<Vec<u8>>,
}

/// A resource type or name in the synthesized resource directory.
enum Key {
    Id(u16),
    Name(&'static str),
}

impl Default for Image {
    fn default() -> Self {
        Self {
            machine: 0x8664,
            subsystem: 1,
            dll_characteristics: 0x01e0,
            exports: false,
            dll: false,
            entry_offset: 0,
            imports: vec![(
                "storport.sys",
                vec![
                    Imported::Name("StorPortInitialize"),
                    Imported::Name("StorPortNotification"),
                ],
            )],
            delay_imports: false,
            tls: false,
            relocations: true,
            writable_text: false,
            text: vec![0xc3],
            codeview: Some((GUID, 1)),
            zero_checksum: false,
            version_resource: None,
            mof_resource: None,
        }
    }
}

/// The GUID every default image and PDB share.
pub const GUID: [u8; 16] = *b"rvscsi-test-guid";

/// A little-endian byte buffer written at explicit offsets.
#[derive(Default)]
struct Buffer(Vec<u8>);

impl Buffer {
    fn grow(&mut self, end: usize) {
        if self.0.len() < end {
            self.0.resize(end, 0);
        }
    }
    fn bytes(&mut self, offset: usize, bytes: &[u8]) {
        self.grow(offset + bytes.len());
        self.0[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    fn u16(&mut self, offset: usize, value: u16) {
        self.bytes(offset, &value.to_le_bytes());
    }
    fn u32(&mut self, offset: usize, value: u32) {
        self.bytes(offset, &value.to_le_bytes());
    }
    fn u64(&mut self, offset: usize, value: u64) {
        self.bytes(offset, &value.to_le_bytes());
    }
    /// Appends `bytes` aligned to `align`; returns their offset.
    fn push(&mut self, bytes: &[u8], align: usize) -> usize {
        let offset = self.0.len().next_multiple_of(align);
        self.bytes(offset, bytes);
        offset
    }
}

fn rva(offset: usize) -> u32 {
    RDATA_RVA + u32::try_from(offset).unwrap()
}

impl Image {
    /// The image's bytes.
    #[must_use]
    #[expect(
        clippy::too_many_lines,
        reason = "one linear layout of a whole PE file reads best in one place"
    )]
    pub fn build(&self) -> Vec<u8> {
        let mut rdata = Buffer::default();
        // Data directories filled while laying out .rdata: (index, rva, size).
        let mut directories: Vec<(usize, u32, u32)> = Vec::new();

        // Imports: descriptors first (one per DLL plus the terminator), then per DLL its
        // lookup table, address table, names.
        if !self.imports.is_empty() {
            let descriptors_size = 20 * (self.imports.len() + 1);
            let descriptors = rdata.push(&vec![0; descriptors_size], 4);
            directories.push((
                1,
                rva(descriptors),
                u32::try_from(descriptors_size).unwrap(),
            ));
            for (index, (dll, functions)) in self.imports.iter().enumerate() {
                let mut thunks = Vec::new();
                for function in functions {
                    thunks.push(match function {
                        Imported::Name(name) => {
                            let mut hint_name = vec![0, 0];
                            hint_name.extend_from_slice(name.as_bytes());
                            hint_name.push(0);
                            u64::from(rva(rdata.push(&hint_name, 2)))
                        }
                        Imported::Ordinal(ordinal) => (1 << 63) | u64::from(*ordinal),
                    });
                }
                thunks.push(0);
                let table: Vec<u8> = thunks.iter().flat_map(|t| t.to_le_bytes()).collect();
                let lookup = rdata.push(&table, 8);
                let address = rdata.push(&table, 8);
                let mut name = dll.as_bytes().to_vec();
                name.push(0);
                let name = rdata.push(&name, 1);
                let descriptor = descriptors + 20 * index;
                rdata.u32(descriptor, rva(lookup));
                rdata.u32(descriptor + 12, rva(name));
                rdata.u32(descriptor + 16, rva(address));
            }
        }

        if self.exports {
            // The directory comes first and its size spans the tables after it: readers take
            // the export tables from inside the directory's range.
            let directory = rdata.push(&[0; 40], 4);
            let name = rdata.push(b"fixture.dll\0", 1);
            let driver_entry = rdata.push(b"DriverEntry\0", 1);
            let memcpy = rdata.push(b"memcpy\0", 1);
            let functions: Vec<u8> = [TEXT_RVA, TEXT_RVA]
                .iter()
                .flat_map(|address| address.to_le_bytes())
                .collect();
            let functions = rdata.push(&functions, 4);
            let names: Vec<u8> = [rva(driver_entry), rva(memcpy)]
                .iter()
                .flat_map(|address| address.to_le_bytes())
                .collect();
            let names = rdata.push(&names, 4);
            let ordinals = rdata.push(&[0, 0, 1, 0], 2);
            rdata.u32(directory + 12, rva(name));
            rdata.u32(directory + 16, 1); // Base
            rdata.u32(directory + 20, 2); // NumberOfFunctions
            rdata.u32(directory + 24, 2); // NumberOfNames
            rdata.u32(directory + 28, rva(functions));
            rdata.u32(directory + 32, rva(names));
            rdata.u32(directory + 36, rva(ordinals));
            let size = rdata.0.len() - directory;
            directories.push((0, rva(directory), u32::try_from(size).unwrap()));
        }

        if self.tls {
            let directory = rdata.push(&[0; 40], 8);
            directories.push((9, rva(directory), 40));
        }
        if self.delay_imports {
            let directory = rdata.push(&[0; 32], 4);
            directories.push((13, rva(directory), 32));
        }

        let mut resources: Vec<(Key, Key, &[u8])> = Vec::new();
        if let Some(data) = &self.version_resource {
            resources.push((Key::Id(16), Key::Id(1), data));
        }
        if let Some(data) = &self.mof_resource {
            resources.push((Key::Name("MOFDATA"), Key::Name("MOFRESOURCE"), data));
        }
        if !resources.is_empty() {
            // The root table (16-byte header, 8 bytes per type), then per resource a name table
            // and a language table of one entry (24 bytes each) and a data entry (16 bytes),
            // then the names (a u16 length and UTF-16). Entry offsets are relative to the
            // directory; a set high bit marks a table or a name, and a data entry holds an RVA.
            let count = resources.len();
            let root_size = 16 + 8 * count;
            let per_resource = 24 + 24 + 16;
            let directory = rdata.push(&vec![0; root_size + per_resource * count], 4);
            rdata.u16(directory + 14, u16::try_from(count).unwrap());
            let mut names_at = root_size + per_resource * count;
            let mut key = |rdata: &mut Buffer, key: &Key| -> u32 {
                match key {
                    Key::Id(id) => u32::from(*id),
                    Key::Name(name) => {
                        let mut bytes = u16::try_from(name.len()).unwrap().to_le_bytes().to_vec();
                        bytes.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
                        rdata.bytes(directory + names_at, &bytes);
                        let offset = 0x8000_0000 | u32::try_from(names_at).unwrap();
                        names_at = (names_at + bytes.len()).next_multiple_of(2);
                        offset
                    }
                }
            };
            let mut data_entries = Vec::new();
            for (index, (kind, name, data)) in resources.iter().enumerate() {
                let name_table = root_size + per_resource * index;
                let language_table = name_table + 24;
                let data_entry = language_table + 24;
                let kind_key = key(&mut rdata, kind);
                rdata.u32(directory + 16 + 8 * index, kind_key);
                rdata.u32(
                    directory + 20 + 8 * index,
                    0x8000_0000 | u32::try_from(name_table).unwrap(),
                );
                let name_key = key(&mut rdata, name);
                rdata.u16(directory + name_table + 14, 1);
                rdata.u32(directory + name_table + 16, name_key);
                rdata.u32(
                    directory + name_table + 20,
                    0x8000_0000 | u32::try_from(language_table).unwrap(),
                );
                rdata.u16(directory + language_table + 14, 1);
                rdata.u32(directory + language_table + 16, 0x409);
                rdata.u32(
                    directory + language_table + 20,
                    u32::try_from(data_entry).unwrap(),
                );
                data_entries.push((data_entry, *data));
            }
            let directory_size = u32::try_from(rdata.0.len() - directory).unwrap();
            for (data_entry, data) in data_entries {
                let data_offset = rdata.push(data, 4);
                rdata.u32(directory + data_entry, rva(data_offset));
                rdata.u32(
                    directory + data_entry + 4,
                    u32::try_from(data.len()).unwrap(),
                );
            }
            directories.push((2, rva(directory), directory_size));
        }

        // The CodeView record's file offset is known once .rdata's file offset is: .rdata
        // starts at FILE_ALIGNMENT * 2 (headers, then one block of .text).
        let rdata_file_offset = FILE_ALIGNMENT * 2;
        if let Some((guid, age)) = self.codeview {
            let mut record = b"RSDS".to_vec();
            record.extend_from_slice(&guid);
            record.extend_from_slice(&age.to_le_bytes());
            record.extend_from_slice(b"fixture.pdb\0");
            let record_offset = rdata.push(&record, 4);
            let entry = rdata.push(&[0; 28], 4);
            rdata.u32(entry + 12, 2); // IMAGE_DEBUG_TYPE_CODEVIEW
            rdata.u32(entry + 16, u32::try_from(record.len()).unwrap());
            rdata.u32(entry + 20, rva(record_offset));
            rdata.u32(
                entry + 24,
                u32::try_from(rdata_file_offset + record_offset).unwrap(),
            );
            directories.push((6, rva(entry), 28));
        }

        let rdata_size = rdata.0.len();
        let rdata_raw = rdata_size.next_multiple_of(FILE_ALIGNMENT);
        let rdata_span = u32::try_from(rdata_size)
            .unwrap()
            .next_multiple_of(SECTION_ALIGNMENT);
        let reloc_rva = RDATA_RVA + rdata_span;
        let reloc_file_offset = rdata_file_offset + rdata_raw;

        // One relocation block: page .rdata, one DIR64 entry and one padding entry.
        let mut reloc = Buffer::default();
        if self.relocations {
            reloc.u32(0, RDATA_RVA);
            reloc.u32(4, 12);
            reloc.u16(8, 0xa000);
            reloc.u16(10, 0);
            directories.push((5, reloc_rva, 12));
        }

        let mut sections = vec![(
            *b".text\0\0\0",
            TEXT_RVA,
            self.text.clone(),
            FILE_ALIGNMENT,
            SCN_CODE | SCN_EXECUTE | SCN_READ | if self.writable_text { SCN_WRITE } else { 0 },
        )];
        sections.push((
            *b".rdata\0\0",
            RDATA_RVA,
            rdata.0,
            rdata_file_offset,
            SCN_INITIALIZED_DATA | SCN_READ,
        ));
        if self.relocations {
            sections.push((
                *b".reloc\0\0",
                reloc_rva,
                reloc.0,
                reloc_file_offset,
                SCN_INITIALIZED_DATA | SCN_READ,
            ));
        }

        let mut file = Buffer::default();
        file.bytes(0, b"MZ");
        file.u32(0x3c, 0x40);
        file.bytes(0x40, b"PE\0\0");
        let coff = 0x44;
        file.u16(coff, self.machine);
        file.u16(coff + 2, u16::try_from(sections.len()).unwrap());
        file.u16(coff + 16, u16::try_from(OPTIONAL_HEADER_SIZE).unwrap());
        // EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE, and DLL if asked.
        file.u16(coff + 18, 0x0022 | if self.dll { 0x2000 } else { 0 });
        let optional = coff + 20;
        file.u16(optional, 0x20b);
        file.u32(optional + 16, TEXT_RVA + self.entry_offset);
        file.u32(optional + 20, TEXT_RVA);
        file.u64(optional + 24, 0x1_4000_0000);
        file.u32(optional + 32, SECTION_ALIGNMENT);
        file.u32(optional + 36, u32::try_from(FILE_ALIGNMENT).unwrap());
        file.u16(optional + 40, 10);
        file.u16(optional + 48, 10);
        let last = sections.last().unwrap();
        let image_size = last.1 + u32::try_from(last.2.len().max(1)).unwrap();
        file.u32(
            optional + 56,
            image_size.next_multiple_of(SECTION_ALIGNMENT),
        );
        file.u32(optional + 60, u32::try_from(FILE_ALIGNMENT).unwrap());
        file.u16(optional + 68, self.subsystem);
        file.u16(optional + 70, self.dll_characteristics);
        file.u32(optional + 108, 16);
        for (index, address, size) in directories {
            file.u32(optional + 112 + index * 8, address);
            file.u32(optional + 116 + index * 8, size);
        }
        let mut header = optional + OPTIONAL_HEADER_SIZE;
        for (name, address, data, file_offset, flags) in &sections {
            let raw = data.len().next_multiple_of(FILE_ALIGNMENT);
            file.bytes(header, name);
            file.u32(header + 8, u32::try_from(data.len()).unwrap());
            file.u32(header + 12, *address);
            file.u32(header + 16, u32::try_from(raw).unwrap());
            file.u32(header + 20, u32::try_from(*file_offset).unwrap());
            file.u32(header + 36, *flags);
            file.bytes(*file_offset, data);
            file.grow(file_offset + raw);
            header += 40;
        }
        let mut bytes = file.0;
        if !self.zero_checksum {
            crate::stamp_checksum(&mut bytes).unwrap();
        }
        bytes
    }
}

/// A PDB (MSF 7.00, 512-byte blocks) whose info stream holds `guid` and `age`, with the
/// public symbol `DriverEntry` at the start of section 1 (`.text`).
#[must_use]
pub fn pdb(guid: [u8; 16], age: u32) -> Vec<u8> {
    pdb_with_publics(guid, age, &[("DriverEntry", 1, 0)])
}

/// A PDB (MSF 7.00, 512-byte blocks) whose info stream holds `guid` and `age` and whose
/// symbol record stream holds one `S_PUB32` per `(name, segment, offset)`.
///
/// Blocks: 0 superblock, 1 and 2 free block maps, 3 block map, 4 directory, 5 unused, 6 info
/// stream (1), 7 DBI stream (3, its header naming stream 4 as the symbol records), 8 symbol
/// records (4). Streams 0 and 2 are empty.
#[must_use]
pub fn pdb_with_publics(guid: [u8; 16], age: u32, publics: &[(&str, u16, u32)]) -> Vec<u8> {
    const BLOCK: usize = 512;
    let mut records = Vec::new();
    for &(name, segment, offset) in publics {
        // RecordLen (not counting itself), S_PUB32, Flags, Offset, Segment, Name, padded to 4.
        let mut record = Vec::new();
        record.extend_from_slice(&0x110e_u16.to_le_bytes());
        record.extend_from_slice(&0_u32.to_le_bytes());
        record.extend_from_slice(&offset.to_le_bytes());
        record.extend_from_slice(&segment.to_le_bytes());
        record.extend_from_slice(name.as_bytes());
        record.push(0);
        while (record.len() + 2) % 4 != 0 {
            record.push(0);
        }
        records.extend_from_slice(&u16::try_from(record.len()).unwrap().to_le_bytes());
        records.extend_from_slice(&record);
    }
    assert!(records.len() <= BLOCK, "one block of symbol records");
    let mut file = Buffer::default();
    file.bytes(0, MSF_MAGIC);
    file.u32(32, u32::try_from(BLOCK).unwrap());
    file.u32(36, 1); // FreeBlockMapBlock
    file.u32(40, 9); // NumBlocks
    // Directory: NumStreams=5, sizes, then the block lists of streams 1, 3 and 4.
    let sizes = [0, 28, 0, 64, u32::try_from(records.len()).unwrap()];
    let mut directory = vec![5_u32];
    directory.extend_from_slice(&sizes);
    directory.extend_from_slice(&[6, 7]);
    if !records.is_empty() {
        directory.push(8);
    }
    let directory: Vec<u8> = directory.iter().flat_map(|v| v.to_le_bytes()).collect();
    file.u32(44, u32::try_from(directory.len()).unwrap());
    file.u32(52, 3); // BlockMapAddr
    file.u32(3 * BLOCK, 4); // the directory lives in block 4
    file.bytes(4 * BLOCK, &directory);
    // Info stream: Version 20000404, Signature, Age, Guid.
    file.u32(6 * BLOCK, 20_000_404);
    file.u32(6 * BLOCK + 4, 0x6000_0000);
    file.u32(6 * BLOCK + 8, age);
    file.bytes(6 * BLOCK + 12, &guid);
    // DBI stream header: VersionSignature -1, VersionHeader V70, Age, ..., SymRecordStream 4.
    file.u32(7 * BLOCK, u32::MAX);
    file.u32(7 * BLOCK + 4, 19_990_903);
    file.u32(7 * BLOCK + 8, age);
    file.u16(7 * BLOCK + 20, 4);
    file.bytes(8 * BLOCK, &records);
    file.grow(9 * BLOCK);
    file.0
}

/// An MSF 7.00 file (512-byte blocks) holding `streams` (stream 0 first): block 0 the
/// superblock, 1 and 2 the free block maps, 3 the block map, then the directory's blocks, then
/// each stream's blocks in order.
#[must_use]
pub fn msf(streams: &[Vec<u8>]) -> Vec<u8> {
    const BLOCK: usize = 512;
    let blocks_of = |bytes: usize| bytes.div_ceil(BLOCK);
    let stream_count = streams.len();
    let list_words: usize = streams.iter().map(|s| blocks_of(s.len())).sum();
    let directory_size = 4 * (1 + stream_count + list_words);
    let directory_blocks = blocks_of(directory_size);
    assert!(directory_blocks <= BLOCK / 4, "the block map is one block");
    let mut next_block = 4 + directory_blocks;
    let mut directory: Vec<u32> = vec![u32::try_from(stream_count).unwrap()];
    directory.extend(streams.iter().map(|s| u32::try_from(s.len()).unwrap()));
    let mut placements = Vec::new();
    for stream in streams {
        for chunk in 0..blocks_of(stream.len()) {
            directory.push(u32::try_from(next_block).unwrap());
            placements.push((
                next_block,
                &stream[chunk * BLOCK..stream.len().min((chunk + 1) * BLOCK)],
            ));
            next_block += 1;
        }
    }
    let directory: Vec<u8> = directory.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut file = Buffer::default();
    file.bytes(0, MSF_MAGIC);
    file.u32(32, u32::try_from(BLOCK).unwrap());
    file.u32(36, 1); // FreeBlockMapBlock
    file.u32(40, u32::try_from(next_block).unwrap()); // NumBlocks
    file.u32(44, u32::try_from(directory.len()).unwrap());
    file.u32(52, 3); // BlockMapAddr
    for index in 0..directory_blocks {
        file.u32(3 * BLOCK + index * 4, u32::try_from(4 + index).unwrap());
    }
    file.bytes(4 * BLOCK, &directory);
    for (block, bytes) in placements {
        file.bytes(block * BLOCK, bytes);
    }
    file.grow(next_block * BLOCK);
    file.0
}

/// A PDB info stream (`guid`, age 1) whose named stream map lists `names` (name, stream index).
#[must_use]
pub fn info_stream(names: &[(&str, u32)]) -> Vec<u8> {
    let mut info = Buffer::default();
    info.u32(0, 20_000_404);
    info.u32(8, 1);
    info.bytes(12, &GUID);
    let mut strings = Vec::new();
    let mut offsets = Vec::new();
    for (name, _) in names {
        offsets.push(u32::try_from(strings.len()).unwrap());
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    let mut at = 28;
    info.u32(at, u32::try_from(strings.len()).unwrap());
    info.bytes(at + 4, &strings);
    at += 4 + strings.len();
    // Size, Capacity (one bucket per name), present bits (one word), no deleted bits.
    let count = u32::try_from(names.len()).unwrap();
    info.u32(at, count);
    info.u32(at + 4, count.max(1));
    info.u32(at + 8, 1);
    info.u32(at + 12, (1_u32 << count) - 1);
    info.u32(at + 16, 0);
    at += 20;
    for ((_, stream), offset) in names.iter().zip(offsets) {
        info.u32(at, offset);
        info.u32(at + 4, *stream);
        at += 8;
    }
    info.u32(at, 20_140_508); // feature: VC140
    info.0
}

/// A type record for [`tpi_stream`]: `(kind, name, forward reference, size)`.
pub type TypeRecord<'a> = (u16, &'a str, bool, u32);

/// A TPI stream holding one record per `types` entry: structures, classes and unions with no
/// fields and their size as a numeric leaf (`LF_ULONG` from 0x8000), enums over `u32`.
#[must_use]
pub fn tpi_stream(types: &[TypeRecord<'_>]) -> Vec<u8> {
    let mut records = Vec::new();
    for &(kind, name, forward, size) in types {
        let mut record = kind.to_le_bytes().to_vec();
        record.extend_from_slice(&0_u16.to_le_bytes()); // Count
        let properties: u16 = if forward { 0x0080 } else { 0 };
        record.extend_from_slice(&properties.to_le_bytes());
        match kind {
            0x1507 => record.extend_from_slice(&[0x75, 0, 0, 0, 0, 0, 0, 0]), // u32, no list
            0x1506 => record.extend_from_slice(&[0; 4]),                      // field list
            _ => record.extend_from_slice(&[0; 12]), // field list, derived, vshape
        }
        if kind != 0x1507 {
            match u16::try_from(size) {
                Ok(small) if small < 0x8000 => record.extend_from_slice(&small.to_le_bytes()),
                _ => {
                    record.extend_from_slice(&0x8004_u16.to_le_bytes());
                    record.extend_from_slice(&size.to_le_bytes());
                }
            }
        }
        record.extend_from_slice(name.as_bytes());
        record.push(0);
        while (record.len() + 2) % 4 != 0 {
            record.push(0xf1);
        }
        records.extend_from_slice(&u16::try_from(record.len()).unwrap().to_le_bytes());
        records.extend_from_slice(&record);
    }
    let mut tpi = Buffer::default();
    tpi.u32(0, 20_040_203); // V80
    tpi.u32(4, 56); // HeaderSize
    tpi.u32(8, 0x1000);
    tpi.u32(12, 0x1000 + u32::try_from(types.len()).unwrap());
    tpi.u32(16, u32::try_from(records.len()).unwrap());
    tpi.bytes(56, &records);
    tpi.0
}
