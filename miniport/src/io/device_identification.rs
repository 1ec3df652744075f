//! INQUIRY VPD page 0x83 (Device Identification): a designator synthesised when the device
//! reports none, so every LUN has an identity Windows (and the cluster service) can key on.
//!
//! QEMU's `scsi-hd` without a `serial`/`wwn` answers page 0x83 with no designators; Windows
//! then falls back to guesses that change across boots. We add one NAA designator (SPC-4
//! 7.8.6.6, NAA 3 "locally assigned") built from the adapter's PCI location, the target and
//! the LUN: unique per LUN on the machine and the same on every boot of the same VM.
#![forbid(unsafe_code)]

/// SCSI operation code INQUIRY (SPC-4 6.6).
pub const INQUIRY: u8 = 0x12;
/// VPD page code of the Device Identification page.
pub const DEVICE_IDENTIFICATION: u8 = 0x83;

/// Bytes of the page header (qualifier/type, page code, page length).
const PAGE_HEADER_LEN: usize = 4;
/// Bytes of one NAA-3 designation descriptor: 4 header bytes plus an 8-byte designator.
const DESCRIPTOR_LEN: usize = 12;
/// A tag in the locally administered bits so our synthesised identifiers are recognisable
/// ("rv" in ASCII) and cannot equal an all-zero value.
const RVSCSI_TAG: u64 = 0x7276;

/// What makes a synthesised identifier unique and stable: where the adapter sits on the PCI
/// bus, and which target and LUN behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LunLocation {
    /// PCI bus number of the adapter (`SystemIoBusNumber`).
    pub bus: u8,
    /// PCI device and function of the adapter (the WDK's `PCI_SLOT_NUMBER` low byte: device
    /// in bits 0-4, function in bits 5-7).
    pub slot: u8,
    /// Target id.
    pub target: u8,
    /// Logical unit number.
    pub lun: u16,
}

impl LunLocation {
    /// The 8-byte NAA 3 designator: NAA in the top nibble, then the tag (16 bits), the bus,
    /// the slot, the target (8 bits each) and the LUN in the low 14 bits of the remainder.
    #[must_use]
    pub const fn naa_designator(&self) -> [u8; 8] {
        let value = (0x3u64 << 60)
            | (RVSCSI_TAG << 44)
            | ((self.bus as u64) << 36)
            | ((self.slot as u64) << 28)
            | ((self.target as u64) << 20)
            | (self.lun as u64 & 0x3FFF);
        value.to_be_bytes()
    }
}

/// If `page` (the first `transferred` bytes of an INQUIRY EVPD 0x83 answer, in a buffer of
/// `page.len()` bytes) carries no designator, writes one NAA designator for `location` and
/// returns the new transferred length. Returns `None` when the page is left as it was: it
/// already identifies the LUN, or it is not a well-formed page 0x83 header.
///
/// Only as many bytes as the buffer holds are written; the page length field always says 12,
/// as SPC requires when the allocation length truncates the data.
pub fn synthesize_designator(
    page: &mut [u8],
    transferred: usize,
    location: LunLocation,
) -> Option<usize> {
    if transferred < PAGE_HEADER_LEN {
        return None;
    }
    // The header and the room after it, split once so that no later access needs a bound the
    // optimiser would have to prove.
    let (header, body) = page.split_at_mut_checked(PAGE_HEADER_LEN)?;
    let [_, page_code, length_high, length_low] = header else {
        return None;
    };
    if *page_code != DEVICE_IDENTIFICATION || (*length_high, *length_low) != (0, 0) {
        return None;
    }
    let mut descriptor = [0u8; DESCRIPTOR_LEN];
    // Code set 1 (binary); PIV 0, association 0 (the logical unit), designator type 3 (NAA);
    // designator length 8 (SPC-4 7.8.6.1).
    descriptor[0] = 0x01;
    descriptor[1] = 0x03;
    descriptor[3] = 8;
    descriptor[4..].copy_from_slice(&location.naa_designator());
    *length_low = DESCRIPTOR_LEN as u8;
    let room = body.len().min(DESCRIPTOR_LEN);
    let (target, source) = (body.get_mut(..room)?, descriptor.get(..room)?);
    target.copy_from_slice(source);
    Some(PAGE_HEADER_LEN + room)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HERE: LunLocation = LunLocation {
        bus: 0,
        slot: 0x1C,
        target: 2,
        lun: 7,
    };

    fn empty_page() -> Vec<u8> {
        let mut page = vec![0u8; 64];
        page[1] = 0x83;
        page
    }

    #[test]
    fn an_empty_page_gets_one_naa_designator_for_the_lun() {
        let mut page = empty_page();
        assert_eq!(synthesize_designator(&mut page, 4, HERE), Some(16));
        assert_eq!(&page[..8], &[0, 0x83, 0, 12, 0x01, 0x03, 0, 8]);
        assert_eq!(page[8] >> 4, 3, "NAA 3, locally assigned");
        assert_eq!(&page[8..16], &HERE.naa_designator());
        assert!(page[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn designators_differ_per_lun_target_slot_and_bus_and_are_stable() {
        let base = HERE.naa_designator();
        assert_eq!(base, HERE.naa_designator());
        for other in [
            LunLocation { lun: 8, ..HERE },
            LunLocation { target: 3, ..HERE },
            LunLocation { slot: 0x1D, ..HERE },
            LunLocation { bus: 1, ..HERE },
        ] {
            assert_ne!(other.naa_designator(), base, "{other:?}");
        }
    }

    #[test]
    fn pages_with_designators_or_other_pages_are_left_alone() {
        let mut page = empty_page();
        page[3] = 12;
        let before = page.clone();
        assert_eq!(synthesize_designator(&mut page, 16, HERE), None);
        assert_eq!(page, before);
        let mut serial = empty_page();
        serial[1] = 0x80;
        assert_eq!(synthesize_designator(&mut serial, 4, HERE), None);
    }

    #[test]
    fn short_answers_are_left_alone_and_small_buffers_are_truncated() {
        let mut page = empty_page();
        assert_eq!(synthesize_designator(&mut page, 3, HERE), None);
        let mut small = vec![0, 0x83, 0, 0, 0, 0, 0, 0];
        assert_eq!(synthesize_designator(&mut small, 4, HERE), Some(8));
        assert_eq!(small, vec![0, 0x83, 0, 12, 0x01, 0x03, 0, 8]);
        let mut tiny = vec![0, 0x83, 0, 0];
        assert_eq!(synthesize_designator(&mut tiny, 4, HERE), Some(4));
        assert_eq!(tiny, vec![0, 0x83, 0, 12]);
    }

    proptest! {
        #[test]
        fn arbitrary_pages_never_panic_and_writes_stay_in_the_buffer(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            transferred in 0usize..64,
        ) {
            let mut page = bytes.clone();
            let result = synthesize_designator(&mut page, transferred, HERE);
            prop_assert_eq!(page.len(), bytes.len());
            if let Some(len) = result {
                prop_assert!(len <= page.len());
            } else {
                prop_assert_eq!(page, bytes);
            }
        }
    }
}
