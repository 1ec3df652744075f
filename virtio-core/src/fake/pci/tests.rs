//! Tests of the fake PCI device itself: its register semantics and the violations it records.

use super::*;
use crate::pci::{PCI_DEVICE_ID, VirtioPciCommonCfg as Common};

const BAR: u8 = QEMU_VIRTIO_BAR;

#[test]
fn feature_windows_and_the_driver_latch() {
    let device = FakeVirtioPci::scsi(1).build();
    let regs: &dyn RegisterIo = &device;
    regs.write32(BAR, Common::DEVICE_FEATURE_SELECT, 1);
    // VERSION_1 (bit 32) and RING_PACKED (bit 34).
    assert_eq!(regs.read32(BAR, Common::DEVICE_FEATURE), 0b101);
    regs.write32(BAR, Common::DEVICE_FEATURE_SELECT, 2);
    assert_eq!(regs.read32(BAR, Common::DEVICE_FEATURE), 0);
    regs.write32(BAR, Common::DRIVER_FEATURE_SELECT, 1);
    regs.write32(BAR, Common::DRIVER_FEATURE, 1);
    regs.write32(BAR, Common::DRIVER_FEATURE_SELECT, 0);
    regs.write32(BAR, Common::DRIVER_FEATURE, 1 << 28);
    assert_eq!(
        device.driver_features(),
        Features::VERSION_1 | Features::INDIRECT_DESC
    );
    assert!(device.violations().is_empty());
}

#[test]
fn a_device_config_access_spanning_fields_or_of_another_width_is_a_violation() {
    let device = FakeVirtioPci::scsi(1).build();
    device.update_device_config(28, &[1, 0, 0xFF, 0]);
    let regs: &dyn RegisterIo = &device;
    let base = FakeRegions::qemu().device.offset.into();
    // Field by field: no violation.
    assert_eq!(regs.read16(BAR, base + 28), 1); // max_channel
    assert_eq!(regs.read16(BAR, base + 30), 0xFF); // max_target
    assert_eq!(regs.read32(BAR, base + 32), 16_383); // max_lun
    assert_eq!(device.violations(), []);
    // One 32-bit read over max_channel and max_target: served, and recorded.
    assert_eq!(regs.read32(BAR, base + 28), 0x00FF_0001);
    // A 16-bit read of half of a 32-bit field, and an 8-bit one.
    let _ = regs.read16(BAR, base);
    let _ = regs.read8(BAR, base + 31);
    // A 16-bit write into the writable 32-bit sense_size: refused.
    regs.write16(BAR, base + 20, 8);
    let seen: Vec<_> = device
        .violations()
        .iter()
        .map(|violation| (violation.offset - base, violation.width, violation.what))
        .collect();
    assert_eq!(
        seen,
        [
            (28, 4, MIXED_WIDTH_DEVICE_CONFIG),
            (0, 2, MIXED_WIDTH_DEVICE_CONFIG),
            (31, 1, MIXED_WIDTH_DEVICE_CONFIG),
            (20, 2, MIXED_WIDTH_DEVICE_CONFIG),
        ]
    );
    assert_eq!(device.device_config_bytes()[20..24], 96u32.to_le_bytes());
}

#[test]
fn a_64_bit_device_config_field_takes_two_32_bit_accesses() {
    let device = FakeVirtioPci::builder(2)
        .device_config(&[0; 12], &[])
        .device_config_fields(&[0..8, 8..12])
        .build();
    let regs: &dyn RegisterIo = &device;
    let base = FakeRegions::qemu().device.offset.into();
    let _ = regs.read32(BAR, base);
    let _ = regs.read32(BAR, base + 4);
    let _ = regs.read32(BAR, base + 8);
    assert_eq!(device.violations(), []);
    let _ = regs.read16(BAR, base + 4);
    assert_eq!(device.violations().len(), 1);
}

#[test]
fn features_ok_is_refused_for_features_never_offered() {
    let device = FakeVirtioPci::scsi(1).build();
    let regs: &dyn RegisterIo = &device;
    regs.write32(BAR, Common::DRIVER_FEATURE_SELECT, 1);
    regs.write32(BAR, Common::DRIVER_FEATURE, 1 | (1 << 8)); // VERSION_1 and bit 40
    regs.write8(BAR, Common::DEVICE_STATUS, 0b1011);
    assert_eq!(regs.read8(BAR, Common::DEVICE_STATUS), 0b0011);
}

#[test]
fn reset_clears_queue_and_vector_state() {
    let device = FakeVirtioPci::scsi(1).build();
    let regs: &dyn RegisterIo = &device;
    regs.write16(BAR, Common::QUEUE_SELECT, 1);
    regs.write16(BAR, Common::QUEUE_SIZE, 64);
    regs.write16(BAR, Common::QUEUE_MSIX_VECTOR, 1);
    regs.write32(BAR, Common::QUEUE_DESC + 4, 0xAB);
    regs.write16(BAR, Common::QUEUE_ENABLE, 1);
    regs.write16(BAR, Common::CONFIG_MSIX_VECTOR, 0);
    let queue = device.queue(1).unwrap();
    assert_eq!(
        (queue.size, queue.msix_vector, queue.desc),
        (64, 1, 0xAB << 32)
    );
    assert!(queue.enabled);
    regs.write8(BAR, Common::DEVICE_STATUS, 0);
    assert_eq!(device.queue(1).unwrap(), FakeQueue::new(256, 1));
    assert_eq!(device.config_msix_vector(), VIRTIO_MSI_NO_VECTOR);
    assert!(device.violations().is_empty());
}

#[test]
fn forbidden_accesses_are_recorded_and_served_harmlessly() {
    let device = FakeVirtioPci::scsi(1).build();
    let regs: &dyn RegisterIo = &device;
    // Wrong width on a 16-bit field.
    assert_eq!(regs.read32(BAR, Common::NUM_QUEUES), u32::MAX);
    // A read-only field.
    regs.write16(BAR, Common::NUM_QUEUES, 9);
    assert_eq!(regs.read16(BAR, Common::NUM_QUEUES), 3);
    // Outside the BAR, and an unmapped BAR.
    assert_eq!(regs.read16(BAR, 0x4000), u16::MAX);
    assert_eq!(regs.read8(2, 0), u8::MAX);
    // Clearing a status bit.
    regs.write8(BAR, Common::DEVICE_STATUS, 3);
    regs.write8(BAR, Common::DEVICE_STATUS, 1);
    // A read-only device configuration byte (num_queues).
    regs.write32(BAR, 0x2000, 7);
    assert_eq!(device.device_config_bytes()[0], 1);
    let what: Vec<_> = device.violations().iter().map(|v| v.what).collect();
    assert_eq!(
        what,
        [
            "read of the wrong width or misaligned",
            "write to a read-only field",
            "read outside a mapped BAR",
            "read outside a mapped BAR",
            "cleared a status bit",
            "write to a read-only device configuration byte",
        ]
    );
}

#[test]
fn the_msix_control_word_is_writable_and_the_rest_is_not() {
    let device = FakeVirtioPci::scsi(1).build();
    let config: &dyn PciConfig = &device;
    let msix = device.capability_offsets()[0];
    assert_eq!(config.read8(u16::from(msix)), PCI_CAP_ID_MSIX);
    config.write16(u16::from(msix) + 2, 0x8000 | 3);
    assert_eq!(config.read16(u16::from(msix) + 2), 0x8003);
    config.write16(PCI_DEVICE_ID, 0);
    assert_eq!(config.read16(PCI_DEVICE_ID), 0x1048);
    assert_eq!(device.violations().len(), 1);
    assert_eq!(config.read32(0xFE), 0xFFFF_0000);
}

#[test]
fn raw_config_space_reads_little_endian_and_all_ones_past_the_end() {
    let mut bytes = [0u8; CONFIG_SPACE_SIZE];
    bytes[0xFC..].copy_from_slice(&[0x78, 0x56, 0x34, 0x12]);
    let config = RawConfigSpace::new(bytes);
    assert_eq!(config.read32(0xFC), 0x1234_5678);
    assert_eq!(config.read16(0xFE), 0x1234);
    assert_eq!(config.read16(0xFF), 0xFF12);
    assert_eq!(config.read8(0x100), 0xFF);
    config.write16(0xFF, 0xABCD);
    assert_eq!(config.bytes()[0xFF], 0xCD);
    assert_eq!(config.read8(0xFF), 0xCD);
}
