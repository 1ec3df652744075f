//! The LUN table: what the bus scan told Windows about each logical unit (standard INQUIRY,
//! VPD pages 0x80 and 0x83, READ CAPACITY (10) and (16)), snooped from successful completions
//! so the WMI target mapping and SCSI information methods can answer from it.
//!
//! **Bound.** The table has [`LUN_SLOTS`](crate::sizing::LUN_SLOTS) slots, carved from the uncached extension at
//! find-adapter. A logical unit that answers INQUIRY as present while every slot is taken is
//! not recorded ([`Recorded::Full`]) and so is not listed by WMI; a slot is freed when its
//! logical unit answers INQUIRY as absent, or when a complete REPORT LUNS of its target no
//! longer lists it. Each answer is kept up to a fixed size ([`Answer::capacity`]); a longer
//! answer is kept cut to that size, which is what the device returns for an allocation length
//! of that size.
//!
//! **Which answers are kept.** A truncated answer (the command's allocation length was smaller
//! than what the device had, as when Windows first asks for a page's header) does not replace
//! a longer one already kept; a complete answer (its own length field says it is whole) always
//! does, so a changed page or capacity is picked up the next time Windows reads it.
//!
//! **Concurrency.** Completions run on several processors, each under its own queue lock, and
//! WMI reads the table from BuildIo with no lock at all. The table has its own lock, a spin
//! lock on an [`AtomicBool`] held only while one slot is read or written (at most
//! [`SLOT_BYTES`] bytes copied), so a reader always gets one slot as one writer left it. The
//! slot contents are atomics accessed relaxed under that lock: the lock gives the ordering,
//! and the atomics keep the crate free of `unsafe`.
#![forbid(unsafe_code)]

use core::borrow::Borrow;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};

/// SCSI operation code INQUIRY (SPC-4 6.6).
pub const INQUIRY: u8 = 0x12;
/// SCSI operation code READ CAPACITY (10) (SBC-3 5.15).
pub const READ_CAPACITY_10: u8 = 0x25;
/// SCSI operation code SERVICE ACTION IN (16) (SBC-3 5.16).
pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
/// SERVICE ACTION IN (16) service action READ CAPACITY (16).
pub const READ_CAPACITY_16_SERVICE_ACTION: u16 = 0x10;
/// SCSI operation code REPORT LUNS (SPC-4 6.33).
pub const REPORT_LUNS: u8 = 0xA0;
/// VPD page Unit Serial Number (SPC-4 7.8.15).
pub const UNIT_SERIAL_NUMBER_PAGE: u16 = 0x80;
/// VPD page Device Identification (SPC-4 7.8.6).
pub const DEVICE_IDENTIFICATION_PAGE: u16 = 0x83;

/// One kept answer of a logical unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Answer {
    /// Standard INQUIRY data.
    Inquiry = 0,
    /// VPD page 0x80, Unit Serial Number.
    UnitSerialNumber = 1,
    /// VPD page 0x83, Device Identification (after the driver's designator synthesis).
    DeviceIdentification = 2,
    /// READ CAPACITY (10) parameter data.
    ReadCapacity10 = 3,
    /// READ CAPACITY (16) parameter data.
    ReadCapacity16 = 4,
}

/// Number of [`Answer`] kinds.
const ANSWERS: usize = 5;

impl Answer {
    /// Every kind, in slot order.
    pub const ALL: [Self; ANSWERS] = [
        Self::Inquiry,
        Self::UnitSerialNumber,
        Self::DeviceIdentification,
        Self::ReadCapacity10,
        Self::ReadCapacity16,
    ];

    /// Bytes kept of this answer: all of the standard INQUIRY data SPC-4 defines (96), a
    /// serial number of up to 124 characters, a page 0x83 of up to 252 bytes of descriptors,
    /// and the whole READ CAPACITY parameter data (8 and 32 bytes).
    #[must_use]
    pub const fn capacity(self) -> usize {
        match self {
            Self::Inquiry => 96,
            Self::UnitSerialNumber => 128,
            Self::DeviceIdentification => 256,
            Self::ReadCapacity10 => 8,
            Self::ReadCapacity16 => 32,
        }
    }

    /// Offset of this answer in a slot's data (each a multiple of 8, so words never straddle
    /// two answers).
    const fn offset(self) -> usize {
        match self {
            Self::Inquiry => 0,
            Self::UnitSerialNumber => 96,
            Self::DeviceIdentification => 224,
            Self::ReadCapacity10 => 480,
            Self::ReadCapacity16 => 488,
        }
    }

    /// The fewest bytes that make a usable answer.
    const fn minimum(self) -> usize {
        match self {
            // Peripheral qualifier and device type, through the ADDITIONAL LENGTH byte.
            Self::Inquiry => 5,
            // The page header.
            Self::UnitSerialNumber | Self::DeviceIdentification => 4,
            Self::ReadCapacity10 => 8,
            // RETURNED LOGICAL BLOCK ADDRESS and LOGICAL BLOCK LENGTH IN BYTES.
            Self::ReadCapacity16 => 12,
        }
    }

    /// The length `data` says the whole answer has (SPC-4 6.6.2 ADDITIONAL LENGTH, 7.8.1
    /// PAGE LENGTH; SBC-3 5.15.2 and 5.16.2 fixed sizes). `data` has at least
    /// [`Self::minimum`] bytes.
    fn declared(self, data: &[u8]) -> usize {
        match self {
            Self::Inquiry => data.get(4).map_or(0, |&length| usize::from(length) + 5),
            Self::UnitSerialNumber | Self::DeviceIdentification => {
                data.get(2..4).map_or(0, |bytes| {
                    usize::from(u16::from_be_bytes([bytes[0], bytes[1]])) + 4
                })
            }
            Self::ReadCapacity10 => 8,
            Self::ReadCapacity16 => 32,
        }
    }
}

/// Bytes of one slot's answers.
pub const SLOT_BYTES: usize = 520;
const _: () =
    assert!(Answer::ReadCapacity16.offset() + Answer::ReadCapacity16.capacity() == SLOT_BYTES);
const _: () = assert!(SLOT_BYTES.is_multiple_of(8));
/// 64-bit words of one slot's answers.
const SLOT_WORDS: usize = SLOT_BYTES / 8;

/// What the driver sees completing that the table keeps: from the CDB's operation code and
/// `detail` (the INQUIRY EVPD page code, the SERVICE ACTION IN service action, else 0xFFFF, as
/// the request context records them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snooped {
    /// An answer to keep.
    Answer(Answer),
    /// REPORT LUNS parameter data: the logical units of the target.
    ReportLuns,
}

impl Snooped {
    /// What a command with operation code `opcode` and `detail` returns, if the table keeps
    /// it.
    #[must_use]
    pub const fn of(opcode: u8, detail: u16) -> Option<Self> {
        match (opcode, detail) {
            (INQUIRY, 0xFFFF) => Some(Self::Answer(Answer::Inquiry)),
            (INQUIRY, UNIT_SERIAL_NUMBER_PAGE) => Some(Self::Answer(Answer::UnitSerialNumber)),
            (INQUIRY, DEVICE_IDENTIFICATION_PAGE) => {
                Some(Self::Answer(Answer::DeviceIdentification))
            }
            (READ_CAPACITY_10, _) => Some(Self::Answer(Answer::ReadCapacity10)),
            (SERVICE_ACTION_IN_16, READ_CAPACITY_16_SERVICE_ACTION) => {
                Some(Self::Answer(Answer::ReadCapacity16))
            }
            (REPORT_LUNS, _) => Some(Self::ReportLuns),
            _ => None,
        }
    }
}

/// What [`LunTable::record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A new logical unit took a slot.
    Inserted,
    /// The logical unit's slot was updated.
    Updated,
    /// The answer was kept as it was: the new one is shorter and not complete.
    KeptLonger,
    /// The logical unit said it is absent; its slot (if any) was freed.
    Removed,
    /// The logical unit is not in the table (no standard INQUIRY seen), so the answer is not
    /// kept.
    Unknown,
    /// The answer is too short or is not the page asked for.
    Malformed,
    /// A present logical unit found no free slot.
    Full,
}

/// A copy of one slot: plain bytes, for WMI to borrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LunCopy {
    /// Target id.
    pub target: u8,
    /// Logical unit number.
    pub lun: u16,
    /// Bytes kept of each answer, in [`Answer::ALL`] order (0: none).
    lens: [u16; ANSWERS],
    data: [u8; SLOT_BYTES],
}

impl LunCopy {
    /// An empty copy.
    pub const EMPTY: Self = Self {
        target: 0,
        lun: 0,
        lens: [0; ANSWERS],
        data: [0; SLOT_BYTES],
    };

    /// The kept answer `which`, if any.
    #[must_use]
    pub fn answer(&self, which: Answer) -> Option<&[u8]> {
        let len = usize::from(*self.lens.get(which as usize)?);
        if len == 0 {
            return None;
        }
        let start = which.offset();
        self.data.get(start..start + len.min(which.capacity()))
    }

    /// The table's ordering key: target, then LUN.
    #[must_use]
    pub const fn key(&self) -> u32 {
        ((self.target as u32) << 16) | self.lun as u32
    }
}

/// Bit of a slot's key word marking it in use.
const IN_USE: u32 = 1 << 31;

/// One slot of the table; read and written only under the table's lock.
#[derive(Debug)]
pub struct LunSlot {
    /// [`IN_USE`] | target << 16 | LUN; 0 when free.
    key: AtomicU32,
    lens: [AtomicU16; ANSWERS],
    words: [AtomicU64; SLOT_WORDS],
}

impl LunSlot {
    /// A free slot.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            key: AtomicU32::new(0),
            lens: [const { AtomicU16::new(0) }; ANSWERS],
            words: [const { AtomicU64::new(0) }; SLOT_WORDS],
        }
    }

    fn key(&self) -> u32 {
        self.key.load(Ordering::Relaxed)
    }

    fn len(&self, which: Answer) -> usize {
        self.lens
            .get(which as usize)
            .map_or(0, |len| usize::from(len.load(Ordering::Relaxed)))
    }

    /// Stores `data` (at most the answer's capacity, checked by the caller) as `which`.
    fn store(&self, which: Answer, data: &[u8]) {
        let first = which.offset() / 8;
        let words = self.words.iter().skip(first).take(which.capacity() / 8);
        for (word, chunk) in words.zip(data.chunks(8)) {
            let mut bytes = [0u8; 8];
            if let Some(head) = bytes.get_mut(..chunk.len()) {
                head.copy_from_slice(chunk);
            }
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        if let Some(len) = self.lens.get(which as usize) {
            len.store(data.len() as u16, Ordering::Relaxed);
        }
    }

    fn clear(&self) {
        self.key.store(0, Ordering::Relaxed);
        for len in &self.lens {
            len.store(0, Ordering::Relaxed);
        }
    }

    fn copy_to(&self, out: &mut LunCopy) {
        let key = self.key();
        out.target = (key >> 16) as u8;
        out.lun = key as u16;
        for (len, out_len) in self.lens.iter().zip(out.lens.iter_mut()) {
            *out_len = len.load(Ordering::Relaxed);
        }
        for (word, chunk) in self.words.iter().zip(out.data.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
    }
}

impl Default for LunSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// The table: a lock and [`LUN_SLOTS`](crate::sizing::LUN_SLOTS) slots (fewer if `S` has fewer).
#[derive(Debug)]
pub struct LunTable<S> {
    lock: AtomicBool,
    slots: S,
}

/// Holds the table's lock; released on drop.
struct Held<'a>(&'a AtomicBool);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // ORDERING: Release pairs with the Acquire of the next `lock`, so every slot word
        // written under this hold is visible to the next holder (C++20 [atomics.order]: a
        // release store synchronises with the acquire load that reads it).
        self.0.store(false, Ordering::Release);
    }
}

/// The key word of `target`/`lun` in use.
const fn key_of(target: u8, lun: u16) -> u32 {
    IN_USE | ((target as u32) << 16) | lun as u32
}

impl<S: Borrow<[LunSlot]>> LunTable<S> {
    /// A table over `slots` (all free).
    pub const fn new(slots: S) -> Self {
        Self {
            lock: AtomicBool::new(false),
            slots,
        }
    }

    fn slots(&self) -> &[LunSlot] {
        self.slots.borrow()
    }

    fn lock(&self) -> Held<'_> {
        // ORDERING: Acquire pairs with the Release in `Held::drop` of the previous holder
        // (see there). Relaxed on failure: nothing is read until the lock is won.
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        Held(&self.lock)
    }

    /// Number of slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.slots().len()
    }

    /// Records what a successful `snooped` command to `target`/`lun` returned: `data`, the
    /// bytes the device transferred (as Windows saw them).
    pub fn observe(&self, target: u8, lun: u16, snooped: Snooped, data: &[u8]) -> Recorded {
        match snooped {
            Snooped::Answer(which) => self.record(target, lun, which, data),
            Snooped::ReportLuns => {
                self.report_luns(target, data);
                Recorded::Updated
            }
        }
    }

    /// Records answer `which` of `target`/`lun`. A standard INQUIRY decides presence: with
    /// peripheral qualifier 0 the logical unit is present (taking a slot if it has none); any
    /// other qualifier (3, "not capable of supporting a device here", is what an absent LUN
    /// answers) frees its slot.
    pub fn record(&self, target: u8, lun: u16, which: Answer, data: &[u8]) -> Recorded {
        if data.len() < which.minimum() {
            return Recorded::Malformed;
        }
        let page_ok = match which {
            Answer::UnitSerialNumber => data.get(1) == Some(&(UNIT_SERIAL_NUMBER_PAGE as u8)),
            Answer::DeviceIdentification => {
                data.get(1) == Some(&(DEVICE_IDENTIFICATION_PAGE as u8))
            }
            _ => true,
        };
        if !page_ok {
            return Recorded::Malformed;
        }
        let present = data.first().is_some_and(|&byte| byte >> 5 == 0);
        let key = key_of(target, lun);
        let kept = data.get(..which.capacity()).unwrap_or(data);
        let complete = data.len() >= which.declared(data);
        let _held = self.lock();
        let existing = self.slots().iter().find(|slot| slot.key() == key);
        if which == Answer::Inquiry && !present {
            return match existing {
                Some(slot) => {
                    slot.clear();
                    Recorded::Removed
                }
                None => Recorded::Removed,
            };
        }
        let (slot, outcome) = match existing {
            Some(slot) => (slot, Recorded::Updated),
            None if which != Answer::Inquiry => return Recorded::Unknown,
            None => match self.slots().iter().find(|slot| slot.key() == 0) {
                Some(slot) => {
                    slot.key.store(key, Ordering::Relaxed);
                    (slot, Recorded::Inserted)
                }
                None => return Recorded::Full,
            },
        };
        if !complete && kept.len() < slot.len(which) {
            return Recorded::KeptLonger;
        }
        slot.store(which, kept);
        outcome
    }

    /// Frees the slot of `target`/`lun`, if it has one.
    pub fn remove(&self, target: u8, lun: u16) -> bool {
        let key = key_of(target, lun);
        let _held = self.lock();
        match self.slots().iter().find(|slot| slot.key() == key) {
            Some(slot) => {
                slot.clear();
                true
            }
            None => false,
        }
    }

    /// Frees the slots of `target`'s logical units that complete REPORT LUNS parameter data
    /// `data` (SPC-4 6.33.2) does not list. Incomplete data (cut by the allocation length)
    /// frees nothing: a LUN missing from it may be in the part not returned. LUNs in a format
    /// other than single-level peripheral or flat addressing are ignored.
    pub fn report_luns(&self, target: u8, data: &[u8]) {
        let Some(header) = data.first_chunk::<4>() else {
            return;
        };
        let list_length = u32::from_be_bytes(*header) as usize;
        let Some(list) = data.get(8..list_length.saturating_add(8)) else {
            return;
        };
        for slot in self.slots() {
            let _held = self.lock();
            let key = slot.key();
            if key & IN_USE == 0 || (key >> 16) as u8 != target {
                continue;
            }
            let lun = key as u16;
            let listed = list.chunks_exact(8).any(|entry| lun_of(entry) == Some(lun));
            if !listed {
                slot.clear();
            }
        }
    }

    /// Copies slot `index` into `out` as one writer left it; false (and `out` untouched) if
    /// the slot is free or does not exist.
    pub fn copy_slot(&self, index: usize, out: &mut LunCopy) -> bool {
        let Some(slot) = self.slots().get(index) else {
            return false;
        };
        let _held = self.lock();
        if slot.key() & IN_USE == 0 {
            return false;
        }
        slot.copy_to(out);
        true
    }
}

/// The virtio LUN an 8-byte REPORT LUNS entry designates: single-level peripheral device
/// addressing on bus 0, or flat space addressing (SAM-5 4.7), as virtio-scsi devices list them.
fn lun_of(entry: &[u8]) -> Option<u16> {
    let (first, rest) = entry.split_first_chunk::<2>()?;
    if rest.iter().any(|&byte| byte != 0) {
        return None;
    }
    match first[0] >> 6 {
        0b00 if first[0] == 0 => Some(u16::from(first[1])),
        0b01 => Some((u16::from(first[0] & 0x3F) << 8) | u16::from(first[1])),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
