//! The identity of a PDB file (GUID and age), read from its MSF container's PDB info stream.
//!
//! A PDB is an MSF 7.00 "multi-stream file": fixed-size blocks, a superblock in block 0, and a
//! stream directory (stream sizes, then each stream's block numbers) whose own blocks are
//! listed in the block map. Stream 1, the PDB info stream, starts with
//! `Version: u32, Signature: u32, Age: u32, Guid: [u8; 16]`. A debugger accepts a PDB for an
//! image when this GUID and age equal those in the image's CodeView (RSDS) debug record.
//! Layout reference: LLVM's "The MSF File Format" and "The PDB Info Stream" documents.

use crate::bytes::{le_u32, to_usize};

/// The 32-byte magic at the start of every MSF 7.00 file.
pub const MSF_MAGIC: &[u8; 32] = b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0";

/// The stream size MSF writes for a stream that does not exist.
const NIL_STREAM_SIZE: u32 = 0xffff_ffff;

/// The index of the PDB info stream.
const PDB_INFO_STREAM: usize = 1;

/// Bytes of the info stream read here: version, signature, age, GUID.
const INFO_HEADER_BYTES: usize = 28;

/// A GUID as stored on disk (Data1..Data3 little-endian, then Data4), printed in registry form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl core::fmt::Display for Guid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{{{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}}}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

/// What ties a PDB to its image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PdbIdentity {
    /// The GUID the linker chose for this link.
    pub guid: Guid,
    /// Incremented on each incremental link; 1 for a fresh link.
    pub age: u32,
}

/// Why a PDB's identity cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdbError {
    /// The file does not start with the MSF 7.00 magic.
    NotMsf,
    /// The superblock's block size is not 512, 1024, 2048 or 4096.
    BadBlockSize(u32),
    /// The file ends before the structure at this byte offset.
    Truncated {
        /// Offset of the structure that does not fit.
        offset: usize,
    },
    /// A block number points past the end of the file.
    BlockOutOfRange(u32),
    /// The stream directory lists fewer streams than the info stream's index.
    NoInfoStream {
        /// How many streams the directory lists.
        streams: u32,
    },
    /// The info stream is shorter than its 28-byte header.
    InfoStreamTooShort(u32),
    /// The stream directory has no stream of this index (the DBI stream, or the symbol
    /// record stream the DBI stream names).
    MissingStream(u32),
}

impl core::fmt::Display for PdbError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotMsf => write!(f, "not an MSF 7.00 (PDB) file"),
            Self::BadBlockSize(size) => write!(f, "MSF block size {size} is not 512..4096"),
            Self::Truncated { offset } => write!(f, "the file ends before offset {offset:#x}"),
            Self::BlockOutOfRange(block) => write!(f, "block {block} lies past the file's end"),
            Self::NoInfoStream { streams } => {
                write!(
                    f,
                    "the stream directory has {streams} streams, no PDB info stream"
                )
            }
            Self::InfoStreamTooShort(size) => {
                write!(
                    f,
                    "the PDB info stream is {size} bytes, shorter than its header"
                )
            }
            Self::MissingStream(index) => write!(f, "the PDB has no stream {index}"),
        }
    }
}

/// Reads the GUID and age from a PDB file's info stream (stream 1).
///
/// # Errors
/// A [`PdbError`] naming the first structure that is missing or inconsistent.
pub fn pdb_identity(pdb: &[u8]) -> Result<PdbIdentity, PdbError> {
    let file = MsfFile::open(pdb)?;
    if to_usize(file.stream_count) <= PDB_INFO_STREAM {
        return Err(PdbError::NoInfoStream {
            streams: file.stream_count,
        });
    }
    let info_blocks = file.stream_blocks(PDB_INFO_STREAM)?;
    if info_blocks.size < INFO_HEADER_BYTES {
        return Err(PdbError::InfoStreamTooShort(
            u32::try_from(info_blocks.size).unwrap_or(u32::MAX),
        ));
    }
    let info = Stream {
        msf: &file.msf,
        blocks: &info_blocks.blocks,
        size: info_blocks.size,
    };
    let age = info.u32_at(8)?;
    let mut guid = [0_u8; 16];
    for (index, byte) in guid.iter_mut().enumerate() {
        *byte = info.byte_at(12 + index)?;
    }
    Ok(PdbIdentity {
        guid: Guid(guid),
        age,
    })
}

/// Where a public symbol lies: `Segment` (1-based index into the image's section table) and
/// `Offset` within that section, as an `S_PUB32` record gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicSymbol {
    /// 1-based section number.
    pub segment: u16,
    /// Offset in the section.
    pub offset: u32,
}

/// The index of the DBI stream.
const DBI_STREAM: usize = 3;
/// Offset of `SymRecordStream` (a `u16` stream index) in the DBI stream header.
const DBI_SYM_RECORD_STREAM: usize = 20;
/// `S_PUB32`: a public symbol record (`Flags: u32, Offset: u32, Segment: u16, Name`).
const S_PUB32: u16 = 0x110e;

/// Finds the public symbol `name` (an `S_PUB32` record in the symbol record stream that the
/// DBI stream names), as the linker recorded it: what the image's entry point is checked
/// against, since a driver image exports nothing.
///
/// # Errors
/// A [`PdbError`] naming the first structure that is missing or inconsistent.
pub fn pdb_public_symbol(pdb: &[u8], name: &str) -> Result<Option<PublicSymbol>, PdbError> {
    let file = MsfFile::open(pdb)?;
    let dbi = file.stream(DBI_STREAM)?;
    let records_index = match dbi.get(DBI_SYM_RECORD_STREAM..DBI_SYM_RECORD_STREAM + 2) {
        Some(&[low, high]) => u16::from_le_bytes([low, high]),
        _ => {
            return Err(PdbError::Truncated {
                offset: DBI_SYM_RECORD_STREAM,
            });
        }
    };
    let records = file.stream(usize::from(records_index))?;
    // Records: RecordLen (u16, not counting itself), RecordKind (u16), then the payload.
    let mut at = 0;
    while at + 4 <= records.len() {
        let length = usize::from(u16::from_le_bytes([records[at], records[at + 1]]));
        let kind = u16::from_le_bytes([records[at + 2], records[at + 3]]);
        if length < 2 {
            // A record holds at least its kind: anything shorter would not advance.
            return Err(PdbError::Truncated { offset: at });
        }
        let end = at + 2 + length;
        let record = records
            .get(at + 4..end)
            .ok_or(PdbError::Truncated { offset: at })?;
        if kind == S_PUB32 && record.len() > 10 {
            let symbol_name = record[10..].split(|&b| b == 0).next().unwrap_or(&[]);
            if symbol_name == name.as_bytes() {
                return Ok(Some(PublicSymbol {
                    offset: le_u32(record, 4).ok_or(PdbError::Truncated { offset: at + 8 })?,
                    segment: u16::from_le_bytes([record[8], record[9]]),
                }));
            }
        }
        at = end;
    }
    Ok(None)
}

/// The index of the TPI (type record) stream.
const TPI_STREAM: usize = 2;
/// Named streams that hold a source file injected into the PDB (lld-link `/NATVIS`, like
/// MSVC's linker, stores each natvis file as `/src/files/<path>`, listed in `/src/headerblock`).
const INJECTED_FILE_PREFIX: &str = "/src/files/";
/// `LF_CLASS`, `LF_STRUCTURE`, `LF_UNION`, `LF_ENUM`: the type records with a name a natvis
/// `Type` can refer to.
const LF_CLASS: u16 = 0x1504;
const LF_STRUCTURE: u16 = 0x1505;
const LF_UNION: u16 = 0x1506;
const LF_ENUM: u16 = 0x1507;
/// The `forward reference` bit of a type record's properties: a declaration, not the type.
const PROPERTY_FORWARD_REFERENCE: u16 = 0x0080;

/// The named streams of a PDB: the name map that follows the info stream's header (a string
/// buffer, then a hash table of (string offset, stream index) pairs with its present and deleted
/// bit vectors; LLVM's "The PDB Info Stream"), as `(name, stream index)` in table order.
///
/// # Errors
/// A [`PdbError`] naming the first structure that is missing or inconsistent.
pub fn pdb_named_streams(pdb: &[u8]) -> Result<Vec<(String, u32)>, PdbError> {
    let file = MsfFile::open(pdb)?;
    let info = file.stream(PDB_INFO_STREAM)?;
    let field = |offset: usize| le_u32(&info, offset).ok_or(PdbError::Truncated { offset });
    let strings_size = to_usize(field(INFO_HEADER_BYTES)?);
    let strings_start = INFO_HEADER_BYTES + 4;
    let strings = info
        .get(strings_start..strings_start.saturating_add(strings_size))
        .ok_or(PdbError::Truncated {
            offset: strings_start,
        })?;
    let mut at = strings_start + strings_size;
    let size = to_usize(field(at)?);
    at += 8; // Size, Capacity
    let present_words = to_usize(field(at)?);
    let mut present = Vec::new();
    for word in 0..present_words {
        present.push(field(at + 4 + word * 4)?);
    }
    at += 4 + present_words * 4;
    let deleted_words = to_usize(field(at)?);
    at += 4 + deleted_words.saturating_mul(4);
    let present_count: u32 = present.iter().map(|word| word.count_ones()).sum();
    if to_usize(present_count) != size {
        return Err(PdbError::Truncated { offset: at });
    }
    let mut streams = Vec::with_capacity(size);
    for entry in 0..size {
        let name_offset = to_usize(field(at + entry * 8)?);
        let stream = field(at + entry * 8 + 4)?;
        let name = strings
            .get(name_offset..)
            .and_then(|tail| tail.split(|&b| b == 0).next())
            .ok_or(PdbError::Truncated {
                offset: strings_start + name_offset,
            })?;
        streams.push((String::from_utf8_lossy(name).into_owned(), stream));
    }
    Ok(streams)
}

/// The natvis files injected into the PDB: `(stream name, contents)` of every
/// `/src/files/...natvis` named stream.
///
/// # Errors
/// A [`PdbError`] naming the first structure that is missing or inconsistent.
pub fn pdb_natvis_files(pdb: &[u8]) -> Result<Vec<(String, Vec<u8>)>, PdbError> {
    let file = MsfFile::open(pdb)?;
    let mut files = Vec::new();
    for (name, stream) in pdb_named_streams(pdb)? {
        if name.starts_with(INJECTED_FILE_PREFIX) && name.to_ascii_lowercase().ends_with(".natvis")
        {
            let contents = file.stream(to_usize(stream))?;
            files.push((name, contents));
        }
    }
    Ok(files)
}

/// The names of the classes, structures, unions and enums the TPI stream defines (forward
/// references left out: a debugger can show only a type whose definition is there).
///
/// The TPI stream is a header (`Version, HeaderSize, TypeIndexBegin, TypeIndexEnd,
/// TypeRecordBytes, ...`) then `TypeRecordBytes` of records, each `RecordLen: u16` (not counting
/// itself), `Kind: u16` and the payload (LLVM's "The PDB TPI and IPI Streams" and
/// "CodeView Type Records").
///
/// # Errors
/// A [`PdbError`] naming the first structure that is missing or inconsistent.
pub fn pdb_type_names(pdb: &[u8]) -> Result<std::collections::BTreeSet<String>, PdbError> {
    let file = MsfFile::open(pdb)?;
    let tpi = file.stream(TPI_STREAM)?;
    let field = |offset: usize| le_u32(&tpi, offset).ok_or(PdbError::Truncated { offset });
    let header_size = to_usize(field(4)?);
    let records_end = header_size.saturating_add(to_usize(field(16)?));
    let records = tpi
        .get(header_size..records_end)
        .ok_or(PdbError::Truncated {
            offset: header_size,
        })?;
    let mut names = std::collections::BTreeSet::new();
    let mut at = 0;
    while at + 4 <= records.len() {
        let length = usize::from(u16::from_le_bytes([records[at], records[at + 1]]));
        if length < 2 {
            return Err(PdbError::Truncated {
                offset: header_size + at,
            });
        }
        let kind = u16::from_le_bytes([records[at + 2], records[at + 3]]);
        let record = records
            .get(at + 4..at + 2 + length)
            .ok_or(PdbError::Truncated {
                offset: header_size + at,
            })?;
        if let Some(name) = defined_type_name(kind, record) {
            names.insert(name);
        }
        at += 2 + length;
    }
    Ok(names)
}

/// The name of a class, structure, union or enum record (its payload after the kind), unless
/// it is a forward reference or malformed.
fn defined_type_name(kind: u16, record: &[u8]) -> Option<String> {
    let properties = u16::from_le_bytes([*record.get(2)?, *record.get(3)?]);
    if properties & PROPERTY_FORWARD_REFERENCE != 0 {
        return None;
    }
    // Count, Properties, then: class/struct FieldList, DerivedFrom, VShape, Size (numeric
    // leaf); union FieldList, Size; enum UnderlyingType, FieldList. The name follows.
    let name_at = match kind {
        LF_CLASS | LF_STRUCTURE => 16 + numeric_leaf_bytes(record.get(16..)?)?,
        LF_UNION => 8 + numeric_leaf_bytes(record.get(8..)?)?,
        LF_ENUM => 12,
        _ => return None,
    };
    let name = record.get(name_at..)?.split(|&b| b == 0).next()?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// The bytes a CodeView numeric leaf takes: a `u16` below `LF_NUMERIC` (0x8000) is the value
/// itself; otherwise it names the size of the value that follows.
fn numeric_leaf_bytes(bytes: &[u8]) -> Option<usize> {
    let leaf = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]);
    Some(match leaf {
        0..0x8000 => 2,
        0x8000 => 3,           // LF_CHAR
        0x8001 | 0x8002 => 4,  // LF_SHORT, LF_USHORT
        0x8003 | 0x8004 => 6,  // LF_LONG, LF_ULONG
        0x8009 | 0x800a => 10, // LF_QUADWORD, LF_UQUADWORD
        _ => return None,
    })
}

/// A stream's size and block list, read from the stream directory.
struct StreamBlocks {
    blocks: Vec<u32>,
    size: usize,
}

/// An MSF file opened: its blocks and its stream directory.
struct MsfFile<'a> {
    msf: Msf<'a>,
    directory_blocks: Vec<u32>,
    directory_bytes: usize,
    stream_count: u32,
}

impl<'a> MsfFile<'a> {
    fn open(pdb: &'a [u8]) -> Result<Self, PdbError> {
        if !pdb.starts_with(MSF_MAGIC) {
            return Err(PdbError::NotMsf);
        }
        let field = |offset: usize| le_u32(pdb, offset).ok_or(PdbError::Truncated { offset });
        // Superblock after the magic: BlockSize, FreeBlockMapBlock, NumBlocks,
        // NumDirectoryBytes, Unknown, BlockMapAddr.
        let block_size = field(32)?;
        if !matches!(block_size, 512 | 1024 | 2048 | 4096) {
            return Err(PdbError::BadBlockSize(block_size));
        }
        let msf = Msf {
            data: pdb,
            block_size: to_usize(block_size),
        };
        let directory_bytes = to_usize(field(44)?);
        let block_map_block = field(52)?;
        // The block map lists the directory's blocks; the directory is their concatenation.
        let block_map = msf.block(block_map_block)?;
        let directory_block_count = directory_bytes.div_ceil(msf.block_size);
        let directory_blocks: Vec<u32> = (0..directory_block_count)
            .map(|index| {
                le_u32(block_map, index * 4).ok_or(PdbError::Truncated { offset: index * 4 })
            })
            .collect::<Result<_, _>>()?;
        let mut file = Self {
            msf,
            directory_blocks,
            directory_bytes,
            stream_count: 0,
        };
        file.stream_count = file.directory().u32_at(0)?;
        Ok(file)
    }

    fn directory(&self) -> Stream<'_, 'a> {
        Stream {
            msf: &self.msf,
            blocks: &self.directory_blocks,
            size: self.directory_bytes,
        }
    }

    /// The size and block list of stream `index`: the directory holds `NumStreams`, every
    /// stream's size, then every stream's block list in stream order.
    fn stream_blocks(&self, index: usize) -> Result<StreamBlocks, PdbError> {
        let missing = || PdbError::MissingStream(u32::try_from(index).unwrap_or(u32::MAX));
        if index >= to_usize(self.stream_count) {
            return Err(missing());
        }
        let directory = self.directory();
        let size_of = |stream: usize| -> Result<usize, PdbError> {
            let size = directory.u32_at(4 + stream * 4)?;
            Ok(if size == NIL_STREAM_SIZE {
                0
            } else {
                to_usize(size)
            })
        };
        let mut list = 4 + to_usize(self.stream_count) * 4;
        for stream in 0..index {
            list += size_of(stream)?.div_ceil(self.msf.block_size) * 4;
        }
        let size = size_of(index)?;
        let blocks = (0..size.div_ceil(self.msf.block_size))
            .map(|block| directory.u32_at(list + block * 4))
            .collect::<Result<_, _>>()?;
        Ok(StreamBlocks { blocks, size })
    }

    /// The bytes of stream `index`.
    fn stream(&self, index: usize) -> Result<Vec<u8>, PdbError> {
        let located = self.stream_blocks(index)?;
        let mut bytes = Vec::with_capacity(located.size);
        for &block in &located.blocks {
            bytes.extend_from_slice(self.msf.block(block)?);
        }
        bytes.truncate(located.size);
        Ok(bytes)
    }
}

/// An MSF file seen as blocks.
struct Msf<'a> {
    data: &'a [u8],
    block_size: usize,
}

impl<'a> Msf<'a> {
    /// The bytes of block `index`.
    fn block(&self, index: u32) -> Result<&'a [u8], PdbError> {
        let start = to_usize(index)
            .checked_mul(self.block_size)
            .ok_or(PdbError::BlockOutOfRange(index))?;
        let end = start
            .checked_add(self.block_size)
            .ok_or(PdbError::BlockOutOfRange(index))?;
        self.data
            .get(start..end)
            .ok_or(PdbError::BlockOutOfRange(index))
    }
}

/// A stream: its size and the blocks that hold it, in order.
struct Stream<'m, 'a> {
    msf: &'m Msf<'a>,
    blocks: &'m [u32],
    size: usize,
}

impl Stream<'_, '_> {
    /// The byte at stream offset `offset`.
    fn byte_at(&self, offset: usize) -> Result<u8, PdbError> {
        if offset >= self.size {
            return Err(PdbError::Truncated { offset });
        }
        let block_number = self
            .blocks
            .get(offset / self.msf.block_size)
            .copied()
            .ok_or(PdbError::Truncated { offset })?;
        self.msf
            .block(block_number)?
            .get(offset % self.msf.block_size)
            .copied()
            .ok_or(PdbError::Truncated { offset })
    }

    /// The little-endian `u32` at stream offset `offset` (it may straddle two blocks).
    fn u32_at(&self, offset: usize) -> Result<u32, PdbError> {
        let mut bytes = [0_u8; 4];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = self.byte_at(offset + index)?;
        }
        Ok(u32::from_le_bytes(bytes))
    }
}
