//! `DmaMemory::write_bytes` and `read_bytes` against a byte-at-a-time model, at every offset
//! and length around the word boundaries their head, word and tail stores split at.

use core::sync::atomic::Ordering::Relaxed;

use virtio_core::fake::FakeHal;
use virtio_core::hal::Hal;

#[test]
fn byte_copies_match_a_bytewise_model_at_every_offset_and_length() {
    let hal = FakeHal::new();
    let mem = hal.dma_alloc(64, 16).unwrap();
    for offset in 0..24 {
        for len in 0..=(64 - offset).min(29) {
            mem.zero();
            let bytes: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(37) ^ 0x5A)
                .collect();
            assert!(mem.write_bytes(offset, &bytes), "{offset}+{len}");
            for at in 0..64 {
                let expected = if (offset..offset + len).contains(&at) {
                    bytes[at - offset]
                } else {
                    0
                };
                assert_eq!(mem.load_u8(at), expected, "write {offset}+{len}, byte {at}");
            }
            let mut back = vec![0xEE; len];
            assert!(mem.read_bytes(offset, &mut back), "{offset}+{len}");
            assert_eq!(back, bytes, "read {offset}+{len}");
        }
    }
    // One past the end is refused whole: nothing written, nothing read.
    mem.store_u64(56, u64::MAX, Relaxed);
    assert!(!mem.write_bytes(60, &[0; 5]));
    assert_eq!(mem.load_u64(56, Relaxed), u64::MAX);
    let mut out = [7u8; 5];
    assert!(!mem.read_bytes(60, &mut out));
    assert_eq!(out, [7; 5]);
    // SAFETY: allocated above, never given to a device.
    unsafe { hal.dma_free(mem) };
}
