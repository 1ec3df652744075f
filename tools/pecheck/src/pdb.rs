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
        }
    }
}

/// Reads the GUID and age from a PDB file's info stream (stream 1).
///
/// # Errors
/// A [`PdbError`] naming the first structure that is missing or inconsistent.
pub fn pdb_identity(pdb: &[u8]) -> Result<PdbIdentity, PdbError> {
    if !pdb.starts_with(MSF_MAGIC) {
        return Err(PdbError::NotMsf);
    }
    let field = |offset: usize| le_u32(pdb, offset).ok_or(PdbError::Truncated { offset });
    // Superblock after the magic: BlockSize, FreeBlockMapBlock, NumBlocks, NumDirectoryBytes,
    // Unknown, BlockMapAddr.
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

    // The block map lists the directory's blocks; the directory is their concatenation, read
    // lazily through `Msf::stream_u32`.
    let block_map = msf.block(block_map_block)?;
    let directory_blocks = directory_bytes.div_ceil(msf.block_size);
    let directory_block_list: Vec<u32> = (0..directory_blocks)
        .map(|index| le_u32(block_map, index * 4).ok_or(PdbError::Truncated { offset: index * 4 }))
        .collect::<Result<_, _>>()?;
    let directory = Stream {
        msf: &msf,
        blocks: &directory_block_list,
        size: directory_bytes,
    };

    let stream_count = directory.u32_at(0)?;
    if to_usize(stream_count) <= PDB_INFO_STREAM {
        return Err(PdbError::NoInfoStream {
            streams: stream_count,
        });
    }
    // Each stream's block list follows all sizes; the info stream's comes after stream 0's.
    let size_of = |stream: usize| -> Result<u32, PdbError> {
        let size = directory.u32_at(4 + stream * 4)?;
        Ok(if size == NIL_STREAM_SIZE { 0 } else { size })
    };
    let stream0_blocks = to_usize(size_of(0)?).div_ceil(msf.block_size);
    let info_size = size_of(PDB_INFO_STREAM)?;
    if to_usize(info_size) < INFO_HEADER_BYTES {
        return Err(PdbError::InfoStreamTooShort(info_size));
    }
    let info_blocks = to_usize(info_size).div_ceil(msf.block_size);
    let first_list_entry = 4 + to_usize(stream_count) * 4 + stream0_blocks * 4;
    let info_block_list: Vec<u32> = (0..info_blocks)
        .map(|index| directory.u32_at(first_list_entry + index * 4))
        .collect::<Result<_, _>>()?;
    let info = Stream {
        msf: &msf,
        blocks: &info_block_list,
        size: to_usize(info_size),
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
