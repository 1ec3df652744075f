//! Fuzzes the virtio PCI capability walk and `PciTransport::probe` on any 256-byte
//! configuration space and any BAR lengths.
#![no_main]

use std::cell::RefCell;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_core::hal::{PciConfig, RegisterIo};
use virtio_core::pci::{PciLayout, PciTransport, Region, VirtioPciCommonCfg, parse_capabilities};

#[derive(Arbitrary, Debug)]
struct Input {
    config: [u8; 256],
    bar_lens: [Option<u64>; 6],
    /// Usually make the header plausible (virtio-scsi IDs, a capability list starting in
    /// range), so most inputs reach the capability walk.
    raw_header: bool,
}

/// Configuration space over the fuzzer's bytes; reads past the end see all-ones, as on PCI.
struct Config(RefCell<[u8; 256]>);

impl Config {
    fn byte(&self, offset: u16) -> u8 {
        self.0
            .borrow()
            .get(usize::from(offset))
            .copied()
            .unwrap_or(0xff)
    }
}

impl PciConfig for Config {
    fn read8(&self, offset: u16) -> u8 {
        self.byte(offset)
    }
    fn read16(&self, offset: u16) -> u16 {
        u16::from_le_bytes([self.byte(offset), self.byte(offset.wrapping_add(1))])
    }
    fn read32(&self, offset: u16) -> u32 {
        u32::from_le_bytes([0, 1, 2, 3].map(|i| self.byte(offset.wrapping_add(i))))
    }
    fn write16(&self, offset: u16, value: u16) {
        let mut bytes = self.0.borrow_mut();
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            if let Some(slot) = bytes.get_mut(usize::from(offset) + i) {
                *slot = byte;
            }
        }
    }
}

/// BARs of the fuzzer's lengths. `probe` promises not to touch a register, so any access is a
/// finding.
struct Bars([Option<u64>; 6]);

impl RegisterIo for Bars {
    fn bar_len(&self, bar: u8) -> Option<u64> {
        self.0.get(usize::from(bar)).copied().flatten()
    }
    fn read8(&self, bar: u8, offset: u64) -> u8 {
        panic!("probe read8 BAR {bar} at {offset:#x}")
    }
    fn read16(&self, bar: u8, offset: u64) -> u16 {
        panic!("probe read16 BAR {bar} at {offset:#x}")
    }
    fn read32(&self, bar: u8, offset: u64) -> u32 {
        panic!("probe read32 BAR {bar} at {offset:#x}")
    }
    fn write8(&self, bar: u8, offset: u64, _: u8) {
        panic!("probe write8 BAR {bar} at {offset:#x}")
    }
    fn write16(&self, bar: u8, offset: u64, _: u16) {
        panic!("probe write16 BAR {bar} at {offset:#x}")
    }
    fn write32(&self, bar: u8, offset: u64, _: u32) {
        panic!("probe write32 BAR {bar} at {offset:#x}")
    }
}

/// Checks a region lies inside a mapped BAR.
fn check_region(region: Region, bars: &Bars, what: &str) {
    let len = bars
        .bar_len(region.bar)
        .unwrap_or_else(|| panic!("{what} {region:?} in an unmapped BAR"));
    assert!(
        u64::from(region.offset) + u64::from(region.length) <= len,
        "{what} {region:?} past the end of a BAR of {len}"
    );
}

fn check_layout(layout: &PciLayout, bars: &Bars) {
    check_region(layout.common, bars, "common");
    assert!(
        layout.common.length >= VirtioPciCommonCfg::MIN_LEN,
        "{layout:?}"
    );
    check_region(layout.notify, bars, "notify");
    assert!(
        layout.notify.length >= 2 && layout.notify.offset.is_multiple_of(2),
        "{layout:?}"
    );
    let multiplier = layout.notify_off_multiplier;
    assert!(
        multiplier == 0 || (multiplier.is_power_of_two() && multiplier.is_multiple_of(2)),
        "{layout:?}"
    );
    check_region(layout.isr, bars, "isr");
    assert!(layout.isr.length >= 1, "{layout:?}");
    if let Some(device) = layout.device {
        check_region(device, bars, "device");
        assert!(device.offset.is_multiple_of(4), "{layout:?}");
    }
}

fuzz_target!(|input: Input| {
    let mut bytes = input.config;
    if !input.raw_header {
        bytes[0..4].copy_from_slice(&[0xf4, 0x1a, 0x48, 0x10]);
        bytes[6] |= 0x10;
        bytes[0x34] = 0x40 | (bytes[0x34] & 0xbc);
    }
    let config = Config(RefCell::new(bytes));
    let bars = Bars(input.bar_lens);
    let parsed = parse_capabilities(&config, |bar| bars.bar_len(bar));
    if let Ok(layout) = &parsed {
        check_layout(layout, &bars);
    }
    // probe may write the configuration space (it does not today); start it from the same bytes.
    let config = Config(RefCell::new(bytes));
    match PciTransport::probe(&config, Bars(input.bar_lens)) {
        Ok(transport) => {
            assert_eq!(
                Ok(transport.layout()),
                parsed.as_ref(),
                "probe and parse agree"
            );
            check_layout(transport.layout(), &bars);
        }
        Err(_) => assert!(
            parsed.is_err()
                || virtio_core::pci::device_type(config.read16(0), config.read16(2)).is_err()
        ),
    }
});
