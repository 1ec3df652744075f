//! Tests of the typed errors' `Display` messages: each names what went wrong and the offending
//! value, so a trace line or a test failure reads without the source at hand.

use std::string::{String, ToString};
use std::vec::Vec;

use crate::fake::packed_device::PackedError;
use crate::features::{FeatureError, Features};
use crate::hal::HalError;
use crate::pci::{DeviceStatus, TransportError, VIRTIO_PCI_CAP_ISR_CFG};
use crate::queue::{DeviceError, QueueError};
use crate::scsi::{
    ConfigError, ConfigureError, EventError, LunError, ProtocolViolation, RequestError,
};

/// Every message is non-empty and distinct: no two variants read alike.
fn assert_distinct(messages: &[String]) {
    let mut seen: Vec<&String> = Vec::new();
    for message in messages {
        assert!(!message.is_empty());
        assert!(!seen.contains(&message), "two variants read `{message}`");
        seen.push(message);
    }
}

#[test]
fn transport_errors_name_the_structure_and_the_values() {
    let cases = [
        (
            TransportError::NotVirtio {
                vendor_id: 0x8086,
                device_id: 0x1234,
            },
            "PCI function 8086:1234 is not a virtio device",
        ),
        (
            TransportError::CapabilityOutsideBar {
                cfg_type: VIRTIO_PCI_CAP_ISR_CFG,
                offset: 0x3000,
                length: 0x1000,
                bar_len: 0x2000,
            },
            "ISR structure at 0x3000+0x1000 runs past its BAR of 0x2000 bytes",
        ),
        (
            TransportError::BarNotMapped {
                cfg_type: 9,
                bar: 2,
            },
            "type 9 structure lies in BAR 2, which is not mapped",
        ),
        (
            TransportError::MissingCapability(crate::pci::VIRTIO_PCI_CAP_COMMON_CFG),
            "the device has no usable common configuration structure",
        ),
        (
            TransportError::MsixVectorOutOfRange {
                vector: 7,
                table_size: Some(3),
            },
            "MSI-X vector 7 is outside the table of 3 entries",
        ),
        (
            TransportError::InvalidState {
                driver_status: DeviceStatus::ACKNOWLEDGE | DeviceStatus::FAILED,
            },
            "not allowed with driver status 0x81",
        ),
        (
            TransportError::Version1Missing {
                offered: Features::INDIRECT_DESC,
            },
            "the device does not offer VIRTIO_F_VERSION_1 (offered 0x10000000)",
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(error.to_string(), expected);
    }
}

#[test]
fn every_transport_error_variant_has_its_own_message() {
    let all = [
        TransportError::NotVirtio {
            vendor_id: 1,
            device_id: 2,
        },
        TransportError::UnknownTransitionalDevice(0x1006),
        TransportError::NoCapabilityList,
        TransportError::CapabilityPointerInvalid {
            at: 0x34,
            pointer: 8,
        },
        TransportError::CapabilityLoop { at: 0x40 },
        TransportError::CapabilityTruncated {
            at: 0xF8,
            cap_len: 4,
        },
        TransportError::BarOutOfRange {
            cfg_type: 1,
            bar: 6,
        },
        TransportError::BarNotMapped {
            cfg_type: 1,
            bar: 2,
        },
        TransportError::CapabilityOutsideBar {
            cfg_type: 1,
            offset: 0,
            length: 8,
            bar_len: 4,
        },
        TransportError::CapabilityMisaligned {
            cfg_type: 1,
            offset: 2,
        },
        TransportError::CapabilityTooSmall {
            cfg_type: 1,
            length: 4,
        },
        TransportError::NotifyMultiplierInvalid(3),
        TransportError::MissingCapability(2),
        TransportError::ResetTimeout { status: 0xFF },
        TransportError::Version1Missing {
            offered: Features::empty(),
        },
        TransportError::FeaturesRejected {
            accepted: Features::VERSION_1,
        },
        TransportError::InvalidState {
            driver_status: DeviceStatus::empty(),
        },
        TransportError::QueueUnavailable(9),
        TransportError::QueueAlreadyEnabled(9),
        TransportError::QueueSizeInvalid { queue: 2, size: 3 },
        TransportError::QueueTooLarge {
            queue: 2,
            size: 512,
            max: 256,
        },
        TransportError::MsixVectorOutOfRange {
            vector: 0x800,
            table_size: None,
        },
        TransportError::MsixVectorRefused {
            queue: 2,
            vector: 1,
        },
        TransportError::ConfigMsixVectorRefused { vector: 1 },
        TransportError::NotifyOffsetOutOfRange {
            queue: 2,
            notify_off: 99,
        },
        TransportError::DeviceConfigOutOfRange { offset: 36, len: 4 },
        TransportError::DeviceConfigMisaligned { offset: 1 },
        TransportError::ConfigGenerationUnstable,
        TransportError::DeviceNeedsReset,
    ];
    assert_distinct(&all.map(|error| error.to_string()));
}

#[test]
fn queue_and_device_errors_carry_their_values() {
    assert_eq!(
        QueueError::Full { needed: 3, free: 1 }.to_string(),
        "queue full: 3 descriptors needed, 1 free"
    );
    assert_eq!(
        DeviceError::UsedLengthTooLarge {
            id: 4,
            written: 9000,
            posted: 4096,
        }
        .to_string(),
        "used length 9000 for id 4 exceeds the 4096 bytes posted"
    );
    assert_eq!(
        DeviceError::UsedIndexJump {
            last_seen: 10,
            published: 50,
        }
        .to_string(),
        "used index jumped from 10 to 50, past the chains in flight"
    );
    assert_eq!(
        HalError::Untranslatable { address: 0x1000 }.to_string(),
        "address 0x1000 is not reachable by DMA"
    );
    assert_eq!(
        FeatureError::Version1Missing {
            offered: Features::empty()
        }
        .to_string(),
        "VIRTIO_F_VERSION_1 is not both offered and wanted (offered 0x0)"
    );
    assert_eq!(
        PackedError::IndirectInChain { position: 5 }.to_string(),
        "indirect descriptor 5 is part of a chain"
    );
}

#[test]
fn scsi_errors_carry_their_values_and_chain_their_causes() {
    use core::error::Error as _;

    assert_eq!(
        RequestError::CdbLength { len: 40 }.to_string(),
        "CDB of 40 bytes (must be 1 to 32)"
    );
    assert_eq!(
        ProtocolViolation::ResidualExceedsTransfer {
            residual: 600,
            length: 512,
        }
        .to_string(),
        "residual 600 exceeds the 512 bytes of data posted"
    );
    assert_eq!(
        LunError::OutOfRange { lun: 0x4000 }.to_string(),
        "LUN 16384 is above the highest single-level LUN 16383"
    );
    assert_eq!(
        LunError::Malformed {
            bytes: [2, 0, 0x40, 1, 0, 0, 0, 0]
        }
        .to_string(),
        "LUN field [02, 00, 40, 01, 00, 00, 00, 00] is not a target plus single-level LUN"
    );
    let lun = EventError::MalformedLun(LunError::OutOfRange { lun: 0x4000 });
    assert_eq!(
        lun.to_string(),
        "event LUN: LUN 16384 is above the highest single-level LUN 16383"
    );
    assert!(lun.source().is_some());
    let configure = ConfigureError::Config(ConfigError::SenseSize { found: 252 });
    assert_eq!(
        configure.to_string(),
        "unusable device configuration: sense_size reads 252 after writing 96"
    );
    assert_eq!(
        configure.source().map(ToString::to_string).as_deref(),
        Some("sense_size reads 252 after writing 96")
    );
}
