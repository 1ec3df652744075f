//! Tests of the PCI transport against the memory-backed FakeVirtioPci: the capability walk over
//! hostile layouts, the status handshake, queue setup, MSI-X, notify, ISR and device configuration.

use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::fake::pci::{FakeCapability, FakeRegions, FakeVirtioPci, NotifyWrite, RawConfigSpace};
use crate::features::{Features, SCSI_DRIVER_FEATURES};
use crate::hal::RegisterIo;
use crate::queue::QueueAddresses;

type Transport = PciTransport<FakeVirtioPci>;

const COMMON: u8 = VIRTIO_PCI_CAP_COMMON_CFG;
const NOTIFY: u8 = VIRTIO_PCI_CAP_NOTIFY_CFG;
const ISR: u8 = VIRTIO_PCI_CAP_ISR_CFG;
const DEVICE: u8 = VIRTIO_PCI_CAP_DEVICE_CFG;

/// QEMU's virtio-scsi-pci with 4 request queues (6 queues, 7 MSI-X vectors).
fn qemu_scsi() -> FakeVirtioPci {
    FakeVirtioPci::scsi(4).build()
}

/// [`qemu_scsi`] without the field layout, for the tests of the transport's byte-range
/// reads, which do not know the fields (the natural-width rule is the caller's, checked
/// where the virtio-scsi configuration is read: `scsi::config`).
fn qemu_scsi_any_width() -> FakeVirtioPci {
    FakeVirtioPci::scsi(4).device_config_fields(&[]).build()
}

fn probe(device: &FakeVirtioPci) -> Result<Transport, TransportError> {
    PciTransport::probe(device, device.clone())
}

/// QEMU's capability list with one entry replaced (list order: MSI-X, `PCI_CFG`, notify,
/// device, ISR, common).
fn qemu_caps_with(index: usize, cap: Option<FakeCapability>) -> Vec<FakeCapability> {
    let mut caps = FakeRegions::qemu().capabilities(Some(7));
    match cap {
        Some(cap) => caps[index] = cap,
        None => {
            caps.remove(index);
        }
    }
    caps
}

fn probe_caps(caps: Vec<FakeCapability>) -> Result<Transport, TransportError> {
    probe(&FakeVirtioPci::scsi(4).capabilities(caps).build())
}

fn addresses(queue: u64) -> QueueAddresses {
    QueueAddresses {
        descriptors: 0x1_2345_0000 + queue * 0x1_0000,
        driver: 0x2_3456_0000 + queue * 0x1_0000,
        device: 0x3_4567_0000 + queue * 0x1_0000,
    }
}

fn initialised(device: &FakeVirtioPci, wanted: Features) -> Transport {
    let mut transport = probe(device).unwrap();
    transport.begin_init(wanted).unwrap();
    transport
}

#[test]
fn walk_finds_the_qemu_layout_without_touching_registers() {
    let device = qemu_scsi();
    assert_eq!(
        device.capability_offsets(),
        [0x98, 0x84, 0x70, 0x60, 0x50, 0x40]
    );
    let transport = probe(&device).unwrap();
    assert_eq!(transport.device_type(), VIRTIO_DEVICE_TYPE_SCSI);
    let bar4 = |offset| Region {
        bar: 4,
        offset,
        length: 0x1000,
    };
    assert_eq!(
        *transport.layout(),
        PciLayout {
            common: bar4(0),
            notify: bar4(0x3000),
            notify_off_multiplier: 4,
            isr: bar4(0x1000),
            device: Some(bar4(0x2000)),
            msix_table_size: Some(7),
        }
    );
    assert!(device.status_writes().is_empty());
    assert!(device.violations().is_empty());
}

#[test]
fn device_ids_map_to_device_types() {
    assert_eq!(device_type(0x1AF4, 0x1048), Ok(8));
    assert_eq!(device_type(0x1AF4, 0x1040), Ok(0));
    assert_eq!(device_type(0x1AF4, 0x107F), Ok(0x3F));
    assert_eq!(device_type(0x1AF4, 0x1004), Ok(8));
    assert_eq!(device_type(0x1AF4, 0x1000), Ok(1));
    assert_eq!(device_type(0x1AF4, 0x1001), Ok(2));
    assert_eq!(device_type(0x1AF4, 0x1009), Ok(9));
    assert_eq!(
        device_type(0x1AF4, 0x1006),
        Err(TransportError::UnknownTransitionalDevice(0x1006))
    );
    assert_eq!(
        device_type(0x1AF4, 0x1080),
        Err(TransportError::NotVirtio {
            vendor_id: 0x1AF4,
            device_id: 0x1080
        })
    );
    assert_eq!(
        device_type(0x8086, 0x1048),
        Err(TransportError::NotVirtio {
            vendor_id: 0x8086,
            device_id: 0x1048
        })
    );
    let intel = FakeVirtioPci::scsi(1).vendor_id(0x8086).build();
    assert_eq!(
        probe(&intel).err(),
        Some(TransportError::NotVirtio {
            vendor_id: 0x8086,
            device_id: 0x1048
        })
    );
    let transitional = FakeVirtioPci::scsi(1).device_id(0x1004).build();
    assert_eq!(probe(&transitional).unwrap().device_type(), 8);
}

#[test]
fn a_function_without_a_capability_list_is_refused() {
    let device = qemu_scsi();
    device.poke_config(PCI_STATUS as u8, &[0, 0]);
    assert_eq!(probe(&device).err(), Some(TransportError::NoCapabilityList));
}

#[test]
fn reserved_and_unmapped_bars_are_refused() {
    let bad_bar = FakeCapability::virtio(COMMON, 7, 0, 0x1000);
    assert_eq!(
        probe_caps(qemu_caps_with(5, Some(bad_bar))).err(),
        Some(TransportError::BarOutOfRange {
            cfg_type: COMMON,
            bar: 7
        })
    );
    let unmapped = FakeCapability::virtio(ISR, 2, 0, 1);
    assert_eq!(
        probe_caps(qemu_caps_with(4, Some(unmapped))).err(),
        Some(TransportError::BarNotMapped {
            cfg_type: ISR,
            bar: 2
        })
    );
}

#[test]
fn structures_outside_their_bar_are_refused() {
    let past_end = FakeCapability::virtio(COMMON, 4, 0x3800, 0x1000);
    assert_eq!(
        probe_caps(qemu_caps_with(5, Some(past_end))).err(),
        Some(TransportError::CapabilityOutsideBar {
            cfg_type: COMMON,
            offset: 0x3800,
            length: 0x1000,
            bar_len: 0x4000
        })
    );
    // Offset and length that would overflow 32 bits must not wrap into the BAR.
    let wrapping = FakeCapability::virtio(DEVICE, 4, 0xFFFF_F000, 0x2000);
    assert!(matches!(
        probe_caps(qemu_caps_with(3, Some(wrapping))).err(),
        Some(TransportError::CapabilityOutsideBar {
            cfg_type: DEVICE,
            ..
        })
    ));
    // Ending exactly at the end of the BAR is fine.
    let at_end = FakeCapability::virtio(DEVICE, 4, 0x3FF0, 0x10);
    assert_eq!(
        probe_caps(qemu_caps_with(3, Some(at_end)))
            .unwrap()
            .layout()
            .device,
        Some(Region {
            bar: 4,
            offset: 0x3FF0,
            length: 0x10
        })
    );
}

#[test]
fn missing_structures_are_reported_by_type() {
    assert_eq!(
        probe_caps(qemu_caps_with(5, None)).err(),
        Some(TransportError::MissingCapability(COMMON))
    );
    assert_eq!(
        probe_caps(qemu_caps_with(2, None)).err(),
        Some(TransportError::MissingCapability(NOTIFY))
    );
    assert_eq!(
        probe_caps(qemu_caps_with(4, None)).err(),
        Some(TransportError::MissingCapability(ISR))
    );
    // The device configuration is optional for the walk, but reading it then fails.
    let transport = probe_caps(qemu_caps_with(3, None)).unwrap();
    assert_eq!(transport.layout().device, None);
    let mut out = [0u8; 4];
    assert_eq!(
        transport.read_device_config(0, &mut out),
        Err(TransportError::MissingCapability(DEVICE))
    );
}

#[test]
fn cycles_in_the_capability_list_are_detected() {
    let device = qemu_scsi();
    // The last capability (common, at 0x40) points back to the first (MSI-X, at 0x98).
    device.poke_config(0x41, &[0x98]);
    assert_eq!(
        probe(&device).err(),
        Some(TransportError::CapabilityLoop { at: 0x98 })
    );
    // A capability pointing at itself.
    let device = qemu_scsi();
    device.poke_config(0x99, &[0x98]);
    assert_eq!(
        probe(&device).err(),
        Some(TransportError::CapabilityLoop { at: 0x98 })
    );
}

#[test]
fn pointers_into_the_header_are_refused() {
    let device = qemu_scsi();
    device.poke_config(PCI_CAPABILITY_LIST as u8, &[0x20]);
    assert_eq!(
        probe(&device).err(),
        Some(TransportError::CapabilityPointerInvalid {
            at: 0x34,
            pointer: 0x20
        })
    );
    let device = qemu_scsi();
    device.poke_config(0x85, &[0x3C]); // PCI_CFG's next pointer
    assert_eq!(
        probe(&device).err(),
        Some(TransportError::CapabilityPointerInvalid {
            at: 0x85,
            pointer: 0x3C
        })
    );
}

#[test]
fn reserved_pointer_bits_are_masked_as_pci_requires() {
    // PCI 3.0 section 6.7: software masks the low two bits of capability pointers. A
    // pointer with them set reaches the same dword-aligned capability.
    let device = qemu_scsi();
    device.poke_config(PCI_CAPABILITY_LIST as u8, &[0x98 | 3]);
    device.poke_config(0x71, &[0x60 | 1]);
    let expected = *probe(&qemu_scsi()).unwrap().layout();
    assert_eq!(*probe(&device).unwrap().layout(), expected);
}

#[test]
fn notify_multiplier_must_be_zero_or_an_even_power_of_two() {
    for (multiplier, ok) in [
        (0, true),
        (1, false),
        (2, true),
        (3, false),
        (4, true),
        (6, false),
        (4096, true),
    ] {
        let cap = FakeCapability::notify(4, 0x3000, 0x1000, multiplier);
        let result = probe_caps(qemu_caps_with(2, Some(cap)));
        if ok {
            assert_eq!(result.unwrap().layout().notify_off_multiplier, multiplier);
        } else {
            assert_eq!(
                result.err(),
                Some(TransportError::NotifyMultiplierInvalid(multiplier))
            );
        }
    }
}

#[test]
fn misaligned_and_short_structures_are_refused() {
    let cases = [
        (
            5,
            FakeCapability::virtio(COMMON, 4, 2, 0x1000),
            TransportError::CapabilityMisaligned {
                cfg_type: COMMON,
                offset: 2,
            },
        ),
        (
            2,
            FakeCapability::notify(4, 0x3001, 0x100, 4),
            TransportError::CapabilityMisaligned {
                cfg_type: NOTIFY,
                offset: 0x3001,
            },
        ),
        (
            3,
            FakeCapability::virtio(DEVICE, 4, 0x2002, 0x10),
            TransportError::CapabilityMisaligned {
                cfg_type: DEVICE,
                offset: 0x2002,
            },
        ),
        (
            5,
            FakeCapability::virtio(COMMON, 4, 0, 52),
            TransportError::CapabilityTooSmall {
                cfg_type: COMMON,
                length: 52,
            },
        ),
        (
            2,
            FakeCapability::notify(4, 0x3000, 1, 4),
            TransportError::CapabilityTooSmall {
                cfg_type: NOTIFY,
                length: 1,
            },
        ),
        (
            4,
            FakeCapability::virtio(ISR, 4, 0x1000, 0),
            TransportError::CapabilityTooSmall {
                cfg_type: ISR,
                length: 0,
            },
        ),
    ];
    for (index, cap, error) in cases {
        assert_eq!(
            probe_caps(qemu_caps_with(index, Some(cap))).err(),
            Some(error)
        );
    }
    // The ISR byte has no alignment requirement; 56 bytes of common configuration suffice.
    let odd_isr = FakeCapability::virtio(ISR, 4, 0x1001, 1);
    assert!(probe_caps(qemu_caps_with(4, Some(odd_isr))).is_ok());
    let short_common = FakeCapability::virtio(COMMON, 4, 0, 56);
    assert!(probe_caps(qemu_caps_with(5, Some(short_common))).is_ok());
}

#[test]
fn truncated_capabilities_are_refused() {
    let short = FakeCapability::virtio(COMMON, 4, 0, 0x1000).with_cap_len(12);
    assert_eq!(
        probe_caps(qemu_caps_with(5, Some(short))).err(),
        Some(TransportError::CapabilityTruncated {
            at: 0x40,
            cap_len: 12
        })
    );
    // A notify capability must include notify_off_multiplier.
    let short_notify = FakeCapability::notify(4, 0x3000, 0x1000, 4).with_cap_len(16);
    assert_eq!(
        probe_caps(qemu_caps_with(2, Some(short_notify))).err(),
        Some(TransportError::CapabilityTruncated {
            at: 0x70,
            cap_len: 16
        })
    );
    // A capability at the very end of configuration space cannot hold a structure.
    let device = qemu_scsi();
    device.poke_config(0xFC, &[PCI_CAP_ID_VNDR, 0, 16, COMMON]);
    device.poke_config(PCI_CAPABILITY_LIST as u8, &[0xFC]);
    assert_eq!(
        probe(&device).err(),
        Some(TransportError::CapabilityTruncated {
            at: 0xFC,
            cap_len: 16
        })
    );
    // A longer cap_len than the structure is accepted (section 4.1.4.1).
    let long = FakeCapability::virtio(COMMON, 4, 0, 0x1000).with_cap_len(24);
    assert!(probe_caps(qemu_caps_with(5, Some(long))).is_ok());
}

#[test]
fn later_instances_are_fallbacks_and_unknown_capabilities_are_ignored() {
    // First notify capability in an unmapped I/O BAR, the second in BAR 4 (the spec's own
    // example); a reserved cfg_type and a foreign capability in between.
    let mut caps = FakeRegions::qemu().capabilities(Some(7));
    caps.insert(2, FakeCapability::notify(2, 0, 0x100, 0));
    caps.insert(3, FakeCapability::virtio(9, 4, 0, 4).with_id(3));
    caps.insert(
        3,
        FakeCapability {
            cap_id: 0x05,
            body: vec![0; 10],
        },
    );
    let transport = probe_caps(caps).unwrap();
    assert_eq!(
        transport.layout().notify,
        Region {
            bar: 4,
            offset: 0x3000,
            length: 0x1000
        }
    );
    assert_eq!(transport.layout().notify_off_multiplier, 4);
    // When two instances are both usable, the first wins.
    let mut caps = FakeRegions::qemu().capabilities(Some(7));
    caps.insert(2, FakeCapability::notify(4, 0x3800, 0x800, 0));
    let transport = probe_caps(caps).unwrap();
    assert_eq!(transport.layout().notify.offset, 0x3800);
    assert_eq!(transport.layout().notify_off_multiplier, 0);
}

#[test]
fn handshake_writes_status_in_spec_order() {
    let device = qemu_scsi();
    let mut transport = probe(&device).unwrap();
    let accepted = transport.begin_init(SCSI_DRIVER_FEATURES).unwrap();
    let expected = Features::VERSION_1
        | Features::INDIRECT_DESC
        | Features::EVENT_IDX
        | Features::RING_PACKED
        | Features::SCSI_HOTPLUG
        | Features::SCSI_CHANGE;
    assert_eq!(accepted, expected);
    assert_eq!(transport.negotiated_features(), expected);
    assert_eq!(device.driver_features(), expected);
    // Reset, ACKNOWLEDGE, +DRIVER, +FEATURES_OK.
    assert_eq!(device.status_writes(), [0, 1, 3, 11]);
    for queue in 0..transport.num_queues() {
        transport
            .setup_queue(queue, 256, addresses(queue.into()), Some(queue))
            .unwrap();
    }
    transport.set_config_msix_vector(Some(6)).unwrap();
    transport.driver_ok().unwrap();
    assert_eq!(device.status_writes(), [0, 1, 3, 11, 15]);
    assert_eq!(transport.status(), DeviceStatus::from_bits_retain(15));
    assert!(device.violations().is_empty(), "{:?}", device.violations());
}

#[test]
fn refused_features_ok_sets_failed() {
    let device = qemu_scsi();
    device.set_refuse_features_ok(true);
    let mut transport = probe(&device).unwrap();
    let error = transport.begin_init(SCSI_DRIVER_FEATURES).unwrap_err();
    assert!(matches!(error, TransportError::FeaturesRejected { .. }));
    assert_eq!(device.status_writes(), [0, 1, 3, 11, 0x8B]);
    assert!(device.status().contains(DeviceStatus::FAILED));
    assert_eq!(transport.negotiated_features(), Features::empty());
    assert!(matches!(
        transport.driver_ok(),
        Err(TransportError::InvalidState { .. })
    ));
    // A device that insists on a feature the caller turned off refuses too.
    let device = FakeVirtioPci::scsi(1)
        .required_features(Features::VERSION_1 | Features::RING_PACKED)
        .build();
    let mut transport = probe(&device).unwrap();
    let wanted = SCSI_DRIVER_FEATURES - Features::RING_PACKED;
    let error = transport.begin_init(wanted).unwrap_err();
    assert_eq!(
        error,
        TransportError::FeaturesRejected {
            accepted: Features::VERSION_1
                | Features::INDIRECT_DESC
                | Features::EVENT_IDX
                | Features::SCSI_HOTPLUG
                | Features::SCSI_CHANGE
        }
    );
    // A reset clears FAILED and a new negotiation succeeds.
    assert!(transport.begin_init(SCSI_DRIVER_FEATURES).is_ok());
    assert!(device.violations().is_empty(), "{:?}", device.violations());
}

#[test]
fn a_device_without_version_1_is_refused() {
    let offered = Features::INDIRECT_DESC | Features::EVENT_IDX | Features::SCSI_HOTPLUG;
    let device = FakeVirtioPci::scsi(1)
        .device_features(offered)
        .required_features(Features::empty())
        .build();
    let mut transport = probe(&device).unwrap();
    assert_eq!(
        transport.begin_init(SCSI_DRIVER_FEATURES),
        Err(TransportError::Version1Missing { offered })
    );
    // FAILED is set and FEATURES_OK never written.
    assert_eq!(device.status_writes(), [0, 1, 3, 3 | 128]);
    assert_eq!(device.driver_features(), Features::empty());
}

#[test]
fn features_the_transport_cannot_honour_are_never_accepted() {
    let offered = Features::VERSION_1
        | Features::NOTIFICATION_DATA
        | Features::RING_RESET
        | Features::SR_IOV
        | Features::IN_ORDER;
    let device = FakeVirtioPci::scsi(1).device_features(offered).build();
    let mut transport = probe(&device).unwrap();
    let accepted = transport.begin_init(Features::all()).unwrap();
    assert_eq!(accepted, Features::VERSION_1 | Features::IN_ORDER);
    assert_eq!(transport.offered_features(), offered);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "polls a stuck device RESET_POLL_LIMIT (100,000) times: run natively"
)]
fn reset_waits_for_status_zero_with_a_bound() {
    let device = qemu_scsi();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    device.set_reset_delay(50);
    transport.reset().unwrap();
    assert_eq!(transport.driver_status(), DeviceStatus::empty());
    assert_eq!(transport.negotiated_features(), Features::empty());
    // A device whose status never returns to 0 (or a removed one reading all ones).
    transport.begin_init(SCSI_DRIVER_FEATURES).unwrap();
    device.set_reset_delay(u32::MAX);
    assert_eq!(
        transport.reset(),
        Err(TransportError::ResetTimeout { status: 11 })
    );
    // The device is still stuck: the next initialization fails the same way.
    assert_eq!(
        transport.begin_init(SCSI_DRIVER_FEATURES),
        Err(TransportError::ResetTimeout { status: 11 })
    );
    assert_eq!(device.status_writes(), [0, 1, 3, 11, 0, 0, 1, 3, 11, 0, 0]);
}

#[test]
fn operations_need_a_completed_negotiation() {
    let device = qemu_scsi();
    let mut transport = probe(&device).unwrap();
    let not_ready = Err(TransportError::InvalidState {
        driver_status: DeviceStatus::empty(),
    });
    assert_eq!(
        transport
            .setup_queue(0, 256, addresses(0), None)
            .map(|_| ()),
        not_ready
    );
    assert_eq!(transport.write_device_config_u32(20, 64), not_ready);
    assert_eq!(transport.driver_ok(), not_ready);
    transport.begin_init(SCSI_DRIVER_FEATURES).unwrap();
    transport.driver_ok().unwrap();
    // Queue setup after DRIVER_OK is refused (no RING_RESET).
    assert!(matches!(
        transport.setup_queue(0, 256, addresses(0), None),
        Err(TransportError::InvalidState { .. })
    ));
    transport.fail();
    assert!(matches!(
        transport.driver_ok(),
        Err(TransportError::InvalidState { .. })
    ));
    assert!(device.status().contains(DeviceStatus::FAILED));
}

#[test]
fn device_needs_reset_is_seen() {
    let device = qemu_scsi();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    assert!(!transport.needs_reset());
    device.set_device_needs_reset();
    assert!(transport.needs_reset());
    assert_eq!(transport.driver_ok(), Err(TransportError::DeviceNeedsReset));
    transport.reset().unwrap();
    assert!(!transport.needs_reset());
}

#[test]
fn queue_setup_programs_every_register() {
    let device = qemu_scsi();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    assert_eq!(transport.num_queues(), 6);
    assert_eq!(transport.queue_max_size(2), Ok(256));
    let notifier = transport
        .setup_queue(2, 128, addresses(2), Some(3))
        .unwrap();
    let queue = device.queue(2).unwrap();
    assert_eq!(queue.size, 128);
    assert_eq!(queue.msix_vector, 3);
    assert!(queue.enabled);
    assert_eq!(queue.desc, addresses(2).descriptors);
    assert_eq!(queue.driver, addresses(2).driver);
    assert_eq!(queue.device, addresses(2).device);
    assert_eq!(notifier.queue(), 2);
    assert_eq!(notifier.offset(), 0x3000 + 2 * 4);
    // Other queues are untouched.
    assert!(!device.queue(1).unwrap().enabled);
    assert!(device.violations().is_empty(), "{:?}", device.violations());
}

#[test]
fn queue_setup_errors() {
    let device = FakeVirtioPci::scsi(2).queues(&[256, 0, 256, 64]).build();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES - Features::RING_PACKED);
    assert_eq!(
        transport.queue_max_size(4),
        Err(TransportError::QueueUnavailable(4))
    );
    assert_eq!(
        transport.queue_max_size(1),
        Err(TransportError::QueueUnavailable(1))
    );
    let setup = |t: &mut Transport, index, size| {
        t.setup_queue(index, size, addresses(index.into()), None)
            .map(|_| ())
    };
    assert_eq!(
        setup(&mut transport, 4, 64),
        Err(TransportError::QueueUnavailable(4))
    );
    assert_eq!(
        setup(&mut transport, 1, 64),
        Err(TransportError::QueueUnavailable(1))
    );
    assert_eq!(
        setup(&mut transport, 3, 128),
        Err(TransportError::QueueTooLarge {
            queue: 3,
            size: 128,
            max: 64
        })
    );
    assert_eq!(
        setup(&mut transport, 0, 0),
        Err(TransportError::QueueSizeInvalid { queue: 0, size: 0 })
    );
    // Split rings need a power of two.
    assert_eq!(
        setup(&mut transport, 0, 100),
        Err(TransportError::QueueSizeInvalid {
            queue: 0,
            size: 100
        })
    );
    assert_eq!(setup(&mut transport, 0, 64), Ok(()));
    assert_eq!(
        setup(&mut transport, 0, 64),
        Err(TransportError::QueueAlreadyEnabled(0))
    );
    // Packed rings take any size.
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    assert_eq!(setup(&mut transport, 0, 100), Ok(()));
    assert_eq!(device.queue(0).unwrap().size, 100);
    assert!(device.violations().is_empty(), "{:?}", device.violations());
}

#[test]
fn refused_msix_vectors_are_detected() {
    let device = qemu_scsi();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    device.refuse_msix_vector(2);
    assert_eq!(
        transport
            .setup_queue(1, 256, addresses(1), Some(2))
            .map(|_| ()),
        Err(TransportError::MsixVectorRefused {
            queue: 1,
            vector: 2
        })
    );
    assert!(!device.queue(1).unwrap().enabled);
    assert_eq!(device.queue(1).unwrap().msix_vector, VIRTIO_MSI_NO_VECTOR);
    // Retrying with another vector works.
    transport
        .setup_queue(1, 256, addresses(1), Some(1))
        .unwrap();
    assert_eq!(device.queue(1).unwrap().msix_vector, 1);
    // Beyond the MSI-X table (7 entries) is refused before touching the device.
    assert_eq!(
        transport
            .setup_queue(2, 256, addresses(2), Some(7))
            .map(|_| ()),
        Err(TransportError::MsixVectorOutOfRange {
            vector: 7,
            table_size: Some(7)
        })
    );
    assert_eq!(device.queue(2).unwrap().desc, 0);
    // No vector is always accepted.
    transport.setup_queue(2, 256, addresses(2), None).unwrap();
    assert_eq!(device.queue(2).unwrap().msix_vector, VIRTIO_MSI_NO_VECTOR);

    // The configuration vector gets the same check.
    assert_eq!(
        transport.set_config_msix_vector(Some(2)),
        Err(TransportError::ConfigMsixVectorRefused { vector: 2 })
    );
    transport.set_config_msix_vector(Some(0)).unwrap();
    assert_eq!(device.config_msix_vector(), 0);
    transport.set_config_msix_vector(None).unwrap();
    assert_eq!(device.config_msix_vector(), VIRTIO_MSI_NO_VECTOR);
    assert!(device.violations().is_empty(), "{:?}", device.violations());
}

#[test]
fn without_an_msix_capability_the_device_refuses_vectors() {
    let device = FakeVirtioPci::scsi(1).msix_table_size(None).build();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    assert_eq!(transport.layout().msix_table_size, None);
    assert_eq!(
        transport
            .setup_queue(0, 256, addresses(0), Some(0))
            .map(|_| ()),
        Err(TransportError::MsixVectorRefused {
            queue: 0,
            vector: 0
        })
    );
    assert_eq!(
        transport.set_config_msix_vector(Some(0x800)),
        Err(TransportError::MsixVectorOutOfRange {
            vector: 0x800,
            table_size: None
        })
    );
}

#[test]
fn notify_addresses_are_computed_and_bounded() {
    // queue_notify_off 0x3FF * 4 + 2 fits a 0x1000-byte structure exactly; 0x400 does not.
    let device = FakeVirtioPci::scsi(1)
        .queue_notify_offs(&[0x3FF, 0x400, 0])
        .build();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    let notifier = transport.setup_queue(0, 256, addresses(0), None).unwrap();
    assert_eq!(notifier.offset(), 0x3000 + 0x3FF * 4);
    assert_eq!(
        transport
            .setup_queue(1, 256, addresses(1), None)
            .map(|_| ()),
        Err(TransportError::NotifyOffsetOutOfRange {
            queue: 1,
            notify_off: 0x400
        })
    );
    assert!(!device.queue(1).unwrap().enabled);

    // Multiplier 0: every queue shares the structure's first two bytes.
    let regions = FakeRegions {
        notify_off_multiplier: 0,
        ..FakeRegions::qemu()
    };
    let device = FakeVirtioPci::scsi(1).regions(regions).build();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    let first = transport.setup_queue(0, 256, addresses(0), None).unwrap();
    let third = transport.setup_queue(2, 256, addresses(2), None).unwrap();
    assert_eq!(first.offset(), 0x3000);
    assert_eq!(third.offset(), 0x3000);
}

#[test]
fn notify_writes_the_queue_index_at_its_address() {
    let device = qemu_scsi();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    let control = transport
        .setup_queue(0, 256, addresses(0), Some(0))
        .unwrap();
    let request = transport
        .setup_queue(3, 256, addresses(3), Some(3))
        .unwrap();
    transport.driver_ok().unwrap();
    transport.notify(&request);
    transport.notify(&control);
    transport.notify(&request);
    assert_eq!(
        device.notifications(),
        [
            NotifyWrite {
                offset: 12,
                width: 2,
                value: 3
            },
            NotifyWrite {
                offset: 0,
                width: 2,
                value: 0
            },
            NotifyWrite {
                offset: 12,
                width: 2,
                value: 3
            },
        ]
    );
    assert_eq!(device.notify_count(3), 2);
    assert_eq!(device.notify_count(0), 1);
    assert_eq!(device.notify_count(1), 0);
}

#[test]
fn isr_reads_clear_and_drop_reserved_bits() {
    let device = qemu_scsi();
    let transport = probe(&device).unwrap();
    assert_eq!(transport.read_isr(), Isr::empty());
    device.raise_isr(Isr::from_bits_retain(0x80) | Isr::QUEUE | Isr::CONFIG);
    assert_eq!(transport.read_isr(), Isr::QUEUE | Isr::CONFIG);
    assert_eq!(device.pending_isr(), Isr::empty());
    assert_eq!(transport.read_isr(), Isr::empty());
    device.raise_isr(Isr::CONFIG);
    assert_eq!(transport.read_isr(), Isr::CONFIG);
}

/// The default `virtio_scsi_config` of `FakeVirtioPci::scsi(4)`.
fn scsi_config_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    for value in [4u32, 254, 0xFFFF, 128, 16, 96, 32] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes.extend_from_slice(&[0, 0, 255, 0]);
    bytes.extend_from_slice(&16_383u32.to_le_bytes());
    bytes
}

#[test]
fn device_config_reads_retry_while_the_generation_changes() {
    let device = qemu_scsi_any_width();
    let transport = probe(&device).unwrap();
    let mut out = [0u8; 36];
    transport.read_device_config(0, &mut out).unwrap();
    assert_eq!(out[..], scsi_config_bytes()[..]);

    // The generation changes during the first three passes; the fourth is consistent.
    let generation = transport.config_generation();
    device.bump_generation_on_config_reads(3);
    let mut passes = 0;
    let max_target = transport
        .read_device_config_with(|config| {
            passes += 1;
            config.read_u16(30)
        })
        .unwrap();
    assert_eq!(max_target, 255);
    assert_eq!(passes, 4);
    assert_eq!(transport.config_generation(), generation.wrapping_add(3));

    // A configuration that never settles is an error, not an endless loop.
    device.bump_generation_on_config_reads(u32::MAX);
    assert_eq!(
        transport.read_device_config(0, &mut out),
        Err(TransportError::ConfigGenerationUnstable)
    );
    assert!(device.violations().is_empty(), "{:?}", device.violations());
}

#[test]
fn device_config_access_is_bounded_and_aligned() {
    let device = qemu_scsi_any_width();
    let transport = probe(&device).unwrap();
    // Mixed-width fields, each with its own width.
    let (channel, target, lun, sectors) = transport
        .read_device_config_with(|c| {
            Ok((
                c.read_u16(28)?,
                c.read_u16(30)?,
                c.read_u32(32)?,
                c.read_u64(0)?,
            ))
        })
        .unwrap();
    assert_eq!((channel, target, lun), (0, 255, 16_383));
    assert_eq!(sectors, 4 | (254 << 32));
    // Unaligned byte ranges are read piecewise.
    let mut out = [0u8; 5];
    transport.read_device_config(3, &mut out).unwrap();
    assert_eq!(out[..], scsi_config_bytes()[3..8]);
    // The structure is 0x1000 bytes long in QEMU's layout.
    let mut four = [0u8; 4];
    assert!(transport.read_device_config(0xFFC, &mut four).is_ok());
    assert_eq!(
        transport.read_device_config(0xFFE, &mut four),
        Err(TransportError::DeviceConfigOutOfRange {
            offset: 0xFFE,
            len: 4
        })
    );
    assert_eq!(
        transport.read_device_config(u32::MAX, &mut four),
        Err(TransportError::DeviceConfigOutOfRange {
            offset: u32::MAX,
            len: 4
        })
    );
    let misaligned = transport.read_device_config_with(|c| c.read_u32(2));
    assert_eq!(
        misaligned,
        Err(TransportError::DeviceConfigMisaligned { offset: 2 })
    );
    let outside = transport.read_device_config_with(|c| c.read_u8(0x1000));
    assert_eq!(
        outside,
        Err(TransportError::DeviceConfigOutOfRange {
            offset: 0x1000,
            len: 1
        })
    );
    assert!(device.violations().is_empty(), "{:?}", device.violations());
}

#[test]
fn device_config_writes_reach_the_device_and_reset_restores_defaults() {
    let device = qemu_scsi();
    let mut transport = initialised(&device, SCSI_DRIVER_FEATURES);
    transport.write_device_config_u32(20, 64).unwrap(); // sense_size
    transport.write_device_config_u32(24, 16).unwrap(); // cdb_size
    let sizes = transport.read_device_config_with(|c| Ok((c.read_u32(20)?, c.read_u32(24)?)));
    assert_eq!(sizes, Ok((64, 16)));
    assert_eq!(
        transport.write_device_config_u32(22, 1),
        Err(TransportError::DeviceConfigMisaligned { offset: 22 })
    );
    assert_eq!(
        transport.write_device_config_u16(0xFFF, 1),
        Err(TransportError::DeviceConfigMisaligned { offset: 0xFFF })
    );
    assert_eq!(
        transport.write_device_config_u8(0x1000, 1),
        Err(TransportError::DeviceConfigOutOfRange {
            offset: 0x1000,
            len: 1
        })
    );
    assert!(device.violations().is_empty(), "{:?}", device.violations());
    transport.reset().unwrap();
    assert_eq!(device.device_config_bytes(), scsi_config_bytes());
}

/// The guarantees every successful walk gives.
fn check_layout(layout: &PciLayout, bar_lens: &[Option<u64>; 6]) {
    let inside = |r: Region| {
        let len = bar_lens[usize::from(r.bar)].unwrap();
        u64::from(r.offset) + u64::from(r.length) <= len
    };
    assert!(inside(layout.common) && layout.common.length >= 56);
    assert!(layout.common.offset.is_multiple_of(4));
    assert!(inside(layout.notify) && layout.notify.length >= 2);
    assert!(layout.notify.offset.is_multiple_of(2));
    let m = layout.notify_off_multiplier;
    assert!(m == 0 || (m.is_power_of_two() && m.is_multiple_of(2)));
    assert!(inside(layout.isr) && layout.isr.length >= 1);
    if let Some(device) = layout.device {
        assert!(inside(device) && device.offset.is_multiple_of(4));
    }
}

fn arbitrary_capability() -> impl Strategy<Value = FakeCapability> {
    let offset = prop_oneof![
        Just(0u32),
        Just(0x1000),
        Just(0x3FFE),
        any::<u32>(),
        0..0x5000u32
    ];
    let length = prop_oneof![Just(0u32), Just(1), Just(56), Just(0x1000), any::<u32>()];
    prop_oneof![
        (1..=9u8, 0..8u8, offset.clone(), length.clone())
            .prop_map(|(t, bar, o, l)| FakeCapability::virtio(t, bar, o, l)),
        (
            0..8u8,
            offset,
            length,
            prop_oneof![Just(0u32), Just(4), any::<u32>()]
        )
            .prop_map(|(bar, o, l, m)| FakeCapability::notify(bar, o, l, m)),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 2..18))
            .prop_map(|(cap_id, body)| FakeCapability { cap_id, body }),
    ]
    .prop_flat_map(|cap| (Just(cap), proptest::option::of(any::<u8>())))
    .prop_map(|(cap, cap_len)| match cap_len {
        Some(len) if cap.cap_id == PCI_CAP_ID_VNDR => cap.with_cap_len(len),
        _ => cap,
    })
}

proptest! {
    #[test]
    fn random_configuration_space_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 256),
        bar_lens in proptest::array::uniform6(proptest::option::of(0..0x10000u64)),
    ) {
        let mut config = [0u8; 256];
        config.copy_from_slice(&bytes);
        config[6] |= 0x10;
        let raw = RawConfigSpace::new(config);
        if let Ok(layout) = parse_capabilities(&raw, |bar| bar_lens.get(usize::from(bar)).copied().flatten()) {
            check_layout(&layout, &bar_lens);
        }
    }

    #[test]
    fn random_capability_lists_probe_or_fail_cleanly(
        caps in proptest::collection::vec(arbitrary_capability(), 0..9),
        pokes in proptest::collection::vec((0x34u8..=0xFF, any::<u8>()), 0..3),
    ) {
        let device = FakeVirtioPci::scsi(2).capabilities(caps).build();
        for (offset, value) in pokes {
            device.poke_config(offset, &[value]);
        }
        let mut bar_lens = [None; 6];
        for (bar, len) in bar_lens.iter_mut().enumerate() {
            *len = RegisterIo::bar_len(&device, bar as u8);
        }
        if let Ok(mut transport) = probe(&device) {
            check_layout(transport.layout(), &bar_lens);
            // Whatever the device advertised, the driver never accesses outside a BAR.
            let _ = transport.begin_init(SCSI_DRIVER_FEATURES);
            let _ = transport.setup_queue(0, 256, addresses(0), Some(0));
            let mut out = [0u8; 8];
            let _ = transport.read_device_config(0, &mut out);
            let _ = transport.read_isr();
            let outside = device
                .violations()
                .iter()
                .filter(|v| v.what.contains("outside a mapped BAR"))
                .count();
            prop_assert_eq!(outside, 0);
        }
    }
}

/// One step of the driver state machine for the handshake property test.
#[derive(Clone, Debug)]
enum Step {
    Reset,
    BeginInit {
        drop_packed: bool,
        refuse: bool,
    },
    Setup {
        queue: u16,
        size: u16,
        vector: Option<u16>,
    },
    ConfigVector(Option<u16>),
    DriverOk,
    Fail,
    NeedsReset,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Reset),
        (any::<bool>(), proptest::bool::weighted(0.2)).prop_map(|(drop_packed, refuse)| {
            Step::BeginInit {
                drop_packed,
                refuse,
            }
        }),
        (
            0..6u16,
            prop_oneof![Just(256u16), Just(64), Just(100), Just(0), Just(512)],
            proptest::option::of(0..9u16)
        )
            .prop_map(|(queue, size, vector)| Step::Setup {
                queue,
                size,
                vector
            }),
        proptest::option::of(0..9u16).prop_map(Step::ConfigVector),
        Just(Step::DriverOk),
        Just(Step::Fail),
        Just(Step::NeedsReset),
    ]
}

proptest! {
    #[test]
    fn any_driver_sequence_keeps_the_protocol(steps in proptest::collection::vec(step(), 1..30)) {
        let device = qemu_scsi();
        let mut transport = probe(&device).unwrap();
        let mut enabled = [false; 6];
        for step in steps {
            match step {
                Step::Reset => {
                    transport.reset().unwrap();
                    enabled = [false; 6];
                    prop_assert_eq!(device.status(), DeviceStatus::empty());
                }
                Step::BeginInit { drop_packed, refuse } => {
                    device.set_refuse_features_ok(refuse);
                    let mut wanted = SCSI_DRIVER_FEATURES;
                    if drop_packed {
                        wanted -= Features::RING_PACKED;
                    }
                    let result = transport.begin_init(wanted);
                    enabled = [false; 6];
                    prop_assert_eq!(result.is_ok(), !refuse);
                    let status = device.status();
                    prop_assert_eq!(status.contains(DeviceStatus::FEATURES_OK), !refuse);
                    prop_assert_eq!(status.contains(DeviceStatus::FAILED), refuse);
                }
                Step::Setup { queue, size, vector } => {
                    let result = transport.setup_queue(queue, size, addresses(queue.into()), vector);
                    let registers = device.queue(queue).unwrap();
                    if let Ok(notifier) = result {
                        prop_assert!(!enabled[usize::from(queue)]);
                        enabled[usize::from(queue)] = true;
                        prop_assert!(registers.enabled);
                        prop_assert_eq!(registers.size, size);
                        prop_assert_eq!(registers.msix_vector, vector.unwrap_or(VIRTIO_MSI_NO_VECTOR));
                        prop_assert_eq!(notifier.offset(), 0x3000 + u64::from(queue) * 4);
                    }
                    prop_assert_eq!(registers.enabled, enabled[usize::from(queue)]);
                }
                Step::ConfigVector(vector) => {
                    let result = transport.set_config_msix_vector(vector);
                    prop_assert_eq!(result.is_ok(), vector.is_none_or(|v| v < 7));
                }
                Step::DriverOk => {
                    let ready = transport.driver_status().contains(DeviceStatus::FEATURES_OK)
                        && !transport.driver_status().contains(DeviceStatus::FAILED);
                    let result = transport.driver_ok();
                    if ready && !device.status().contains(DeviceStatus::DEVICE_NEEDS_RESET) {
                        prop_assert!(result.is_ok());
                        prop_assert!(device.status().contains(DeviceStatus::DRIVER_OK));
                    } else {
                        prop_assert!(result.is_err());
                    }
                }
                Step::Fail => {
                    transport.fail();
                    prop_assert!(device.status().contains(DeviceStatus::FAILED));
                }
                Step::NeedsReset => device.set_device_needs_reset(),
            }
            // The device saw only legal accesses, and its status always holds exactly the
            // bits the driver set (minus a refused FEATURES_OK, plus DEVICE_NEEDS_RESET).
            prop_assert!(device.violations().is_empty(), "{:?}", device.violations());
            let device_set = device.status()
                - DeviceStatus::DEVICE_NEEDS_RESET;
            prop_assert_eq!(
                device_set | DeviceStatus::FEATURES_OK,
                transport.driver_status() | DeviceStatus::FEATURES_OK
            );
        }
    }
}
