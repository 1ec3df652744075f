//! Random WMI requests against the real provider: the dispatcher never panics, never writes
//! outside the buffer, and its replies are self-consistent (reported sizes match the WNODE,
//! a `WNODE_TOO_SMALL` size is enough on retry, the same request gives the same reply).
//!
//! The proptest runs a few thousand cases per `cargo test`; `million_random_requests`
//! (ignored by default: `cargo test -p rvscsi-wmi --release --test fuzz -- --ignored`) runs
//! the same generator for 1,000,000 cases.

use proptest::prelude::*;
use rvscsi_wmi::dispatch::{Reply, dispatch};
use rvscsi_wmi::guid::Guid;
use rvscsi_wmi::hba::rvscsi::{RVSCSI_ADAPTER_LIMITS_GUID, RVSCSI_QUEUE_STATISTICS_GUID};
use rvscsi_wmi::hba::sm::{
    MS_SM_ADAPTER_INFORMATION_QUERY_GUID, MS_SM_PORT_INFORMATION_METHODS_GUID,
    MS_SM_SCSI_INFORMATION_METHODS_GUID, MS_SM_TARGET_INFORMATION_METHODS_GUID, PortState,
};
use rvscsi_wmi::hba::{
    AdapterLimits, HbaInfo, HbaProvider, LunInfo, PhyInfo, PhyStatistics, PortInfo,
    ProtocolStatistics, QueueStatistics, TargetInfo,
};
use rvscsi_wmi::sas::SasAddress;
use rvscsi_wmi::status::{WmiError, WmiStatus};
use rvscsi_wmi::wnode::WNODE_FLAG_TOO_SMALL;
use zerocopy::IntoBytes;

const GUIDS: [Guid; 6] = [
    MS_SM_ADAPTER_INFORMATION_QUERY_GUID,
    MS_SM_PORT_INFORMATION_METHODS_GUID,
    MS_SM_TARGET_INFORMATION_METHODS_GUID,
    MS_SM_SCSI_INFORMATION_METHODS_GUID,
    RVSCSI_QUEUE_STATISTICS_GUID,
    RVSCSI_ADAPTER_LIMITS_GUID,
];

const VPD83: [u8; 16] = [
    0x00, 0x83, 0x00, 0x0c, 0x61, 0x93, 0x00, 0x08, 0x50, 0x01, 0x40, 0x5a, 0xaa, 0xbb, 0xcc, 0xdd,
];

/// Reads entropy bytes; zeros once exhausted.
struct Entropy<'a>(&'a [u8]);

impl Entropy<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    /// A value likely to matter: small, near `len`, or anything.
    fn field(&mut self, len: usize) -> u32 {
        match self.byte() % 4 {
            0 | 1 => u32::from(self.byte() % 100),
            2 => (len as u32)
                .wrapping_add(u32::from(self.byte() % 9))
                .wrapping_sub(4),
            _ => self.u32(),
        }
    }
}

/// A request (minor function, buffer) built from entropy: random bytes, usually overlaid with
/// a plausible WNODE header and fields so requests get past the first checks.
fn request(entropy: &[u8]) -> (u8, Vec<u8>) {
    let mut e = Entropy(entropy);
    let minor = e.byte() % 12;
    let mut len = usize::from(u16::from_le_bytes([e.byte(), e.byte()]) % 1200);
    if e.byte() % 8 == 0 {
        len += 5000;
    }
    // The payload comes from a generator seeded by the entropy, so a long buffer does not use
    // up the entropy the header fields below are drawn from.
    let mut fill = XorShift(u64::from(e.u32()) << 32 | u64::from(e.u32()) | 1);
    let mut buffer: Vec<u8> = (0..len).map(|_| fill.next() as u8).collect();
    if e.byte() % 4 != 0 && len >= 48 {
        let guid = match e.byte() % 8 {
            index @ 0..6 => GUIDS[usize::from(index)],
            _ => Guid::from_fields(e.u32(), 0, 0, [0; 8]),
        };
        buffer[24..40].copy_from_slice(guid.as_bytes());
        let declared = if e.byte() % 4 == 0 {
            e.field(len)
        } else {
            len as u32
        };
        buffer[0..4].copy_from_slice(&declared.to_le_bytes());
        let mut flags = e.u32();
        if e.byte() % 4 != 0 {
            flags |= 0x80;
        }
        buffer[44..48].copy_from_slice(&flags.to_le_bytes());
        // The fields after the header: usually values shaped for the minor function (an
        // instance index, an item or method id, a data offset after the fixed part, an input
        // that fits), sometimes anything.
        let shaped = e.byte() % 4 != 0;
        let room = |at: u32| (len as u32).saturating_sub(at);
        let mut fields = [0u32; 6];
        for (slot, field) in fields.iter_mut().enumerate() {
            *field = e.field(len);
            if shaped {
                let offset = [64u32, 68, 72, 80][usize::from(e.byte() % 4)];
                *field = match (minor, slot) {
                    (_, 0) => 64,
                    (1..=3 | 9, 1) => [0, 0, 0, 1, 2, 3][usize::from(e.byte() % 6)],
                    (1 | 2, 2) | (3 | 9, 3) => offset,
                    (3, 2) => u32::from(e.byte() % 20),
                    (9, 2) => u32::from(e.byte() % 13),
                    (1 | 2, 3) => e.u32() % room(64).max(1),
                    (3 | 9, 4) => e.u32() % room(72).max(1),
                    _ => *field,
                };
            }
        }
        for (slot, value) in fields.into_iter().enumerate() {
            let at = 48 + 4 * slot;
            if at + 4 <= len {
                buffer[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
    }
    (minor, buffer)
}

fn with_provider(test: impl FnOnce(&mut HbaProvider<'_>)) {
    let inquiry = [0u8; 36];
    let luns = [
        LunInfo {
            lun: 0,
            os_device_name: "Disk",
            inquiry: Some(&inquiry),
            device_identification: Some(&VPD83),
            read_capacity_10: Some(&[0, 0, 1, 0, 0, 0, 2, 0]),
            ..LunInfo::default()
        },
        LunInfo {
            lun: 700,
            ..LunInfo::default()
        },
    ];
    let targets = [TargetInfo {
        sas_address: SasAddress::for_target(Some(&VPD83), 1, 0),
        bus: 0,
        target: 0,
        luns: &luns,
    }];
    let queues = [
        QueueStatistics::default(),
        QueueStatistics {
            queue_index: 1,
            ..Default::default()
        },
    ];
    let info = HbaInfo {
        unique_adapter_id: 1,
        vendor_specific_id: 0x1048_1af4,
        manufacturer: "m",
        serial_number: "s",
        model: "model",
        model_description: "d",
        hardware_version: "h",
        driver_version: "v",
        option_rom_version: "",
        firmware_version: "f",
        driver_name: "rvscsi.sys",
        hba_symbolic_name: "n",
        redundant_option_rom_version: "",
        redundant_firmware_version: "",
        mfg_domain: "x",
        port: PortInfo {
            os_device_name: "p",
            state: PortState::Online,
            local_sas_address: SasAddress::for_adapter(1),
            attached_sas_address: SasAddress::synthesize(1, 99),
            phy: PhyInfo::default(),
            protocol_statistics: ProtocolStatistics::default(),
            phy_statistics: PhyStatistics::default(),
        },
        targets: &targets,
        queues: &queues,
        limits: AdapterLimits::default(),
    };
    test(&mut HbaProvider::new(&info));
}

/// Dispatches `buffer` inside canaries and checks the invariants; returns the reply and the
/// buffer after the call.
fn check(provider: &mut HbaProvider<'_>, minor: u8, request: &[u8]) -> (Reply, Vec<u8>) {
    const CANARY: usize = 32;
    let mut backing = vec![0xA5u8; request.len() + 2 * CANARY];
    backing[CANARY..CANARY + request.len()].copy_from_slice(request);
    let reply = dispatch(
        minor,
        &mut backing[CANARY..CANARY + request.len()],
        provider,
    );
    assert!(
        backing[..CANARY].iter().all(|b| *b == 0xA5),
        "wrote before the buffer"
    );
    assert!(
        backing[CANARY + request.len()..].iter().all(|b| *b == 0xA5),
        "wrote after the buffer"
    );
    let buffer = backing[CANARY..CANARY + request.len()].to_vec();
    let bytes = reply.bytes_returned as usize;
    assert!(
        bytes <= buffer.len(),
        "{reply:?} for {} bytes",
        buffer.len()
    );
    let field = |at: usize| u32::from_le_bytes(buffer[at..at + 4].try_into().unwrap());
    match (reply.status, reply.error) {
        (WmiStatus::Success, None) => match minor {
            0 | 1 | 9 | 8 | 0x0B => {
                assert_eq!(field(0) as usize, bytes, "BufferSize == bytes returned");
            }
            _ => assert_eq!(bytes, 0),
        },
        (WmiStatus::Success, Some(WmiError::BufferTooSmall { needed })) => {
            assert_eq!(bytes, 56);
            assert_eq!(field(0), 56);
            assert_ne!(field(44) & WNODE_FLAG_TOO_SMALL, 0);
            assert_eq!(field(48), needed);
            assert!(
                needed as usize > request.len(),
                "needed {needed} but had {}",
                request.len()
            );
        }
        (WmiStatus::Success, other) => panic!("success with {other:?}"),
        (status, Some(error)) => {
            assert_eq!(status, error.status());
            if status == WmiStatus::BufferTooSmall && matches!(minor, 8 | 0x0B) {
                assert!(bytes == 4 || (bytes == 0 && request.len() < 4));
            } else {
                assert_eq!(bytes, 0);
            }
        }
        (status, None) => panic!("{status:?} without a reason"),
    }
    (reply, buffer)
}

/// The full property: invariants, determinism, and that a too-small reply's size works.
fn run(provider: &mut HbaProvider<'_>, minor: u8, request: &[u8]) {
    let (reply, after) = check(provider, minor, request);
    let (again, after_again) = check(provider, minor, request);
    assert_eq!(reply, again, "same request, same reply");
    assert_eq!(after, after_again);
    if let Some(WmiError::BufferTooSmall { needed }) = reply.error
        && reply.status == WmiStatus::Success
    {
        let mut bigger = request.to_vec();
        bigger.resize(needed as usize, 0);
        let (retry, _) = check(provider, minor, &bigger);
        assert_eq!(
            (retry.status, retry.error),
            (WmiStatus::Success, None),
            "retry with {needed}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_keep_the_invariants(entropy in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let (minor, buffer) = request(&entropy);
        with_provider(|provider| run(provider, minor, &buffer));
    }
}

/// xorshift64*: a deterministic entropy source for the long run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
#[ignore = "long: a million cases; run with --release -- --ignored"]
fn million_random_requests() {
    let mut rng = XorShift(0x5EED_5C51_F022);
    let mut entropy = vec![0u8; 1400];
    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    with_provider(|provider| {
        for _ in 0..1_000_000 {
            let used = (rng.next() % 1400) as usize;
            for chunk in entropy[..used].chunks_mut(8) {
                let bytes = rng.next().to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
            let (minor, buffer) = request(&entropy[..used]);
            let (reply, _) = check(provider, minor, &buffer);
            *outcomes.entry(format!("{:?}", reply.status)).or_default() += 1;
        }
    });
    eprintln!("outcomes: {outcomes:?}");
    assert!(
        outcomes.get("Success").copied().unwrap_or(0) > 10_000,
        "{outcomes:?}"
    );
}
