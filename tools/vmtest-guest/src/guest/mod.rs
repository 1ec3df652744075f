//! The guest proper: hardware access for `x86_64-unknown-none`, and the entry point.

mod boot;
mod exit;
mod hal;
mod paging;
mod pci;
mod port;
mod serial;

use core::ops::ControlFlow;
use core::panic::PanicInfo;

use virtio_core::hal::{PciConfig, RegisterIo};
use vmtest_guest::pci_scan::{self, FunctionInfo, command};

/// Prints a line on the serial port.
macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = ::core::fmt::Write::write_fmt(
            &mut $crate::guest::serial::Serial,
            ::core::format_args!("{}\n", ::core::format_args!($($arg)*)),
        );
    }};
}
pub(crate) use println;

/// `hvm_start_info.magic` (Xen PVH boot ABI, `start_info.h`).
const HVM_START_MAGIC: u32 = 0x336e_c578;

/// The virtio vendor ID.
const VIRTIO_VENDOR: u16 = 0x1af4;
/// virtio-scsi, modern-only (0x1040 + device type 8; virtio 1.x section 4.1.2.1).
const VIRTIO_SCSI_MODERN: u16 = 0x1048;
/// virtio-scsi, transitional (legacy ID; virtio 1.x section 4.1.2.3).
const VIRTIO_SCSI_TRANSITIONAL: u16 = 0x1004;

/// Entered from [`boot`] in long mode with the physical address of `hvm_start_info`.
extern "C" fn kmain(start_info: u32) -> ! {
    serial::init();
    println!("vmtest-guest: started, hvm_start_info at {start_info:#x}");
    let magic = read_start_info_magic(start_info);
    if magic != HVM_START_MAGIC {
        println!("RESULT boot FAIL hvm_start_info magic {magic:#x}");
        exit::exit(exit::ExitCode::Failure);
    }
    println!("RESULT boot PASS pvh entry, long mode");

    let access = pci::Mechanism1;
    let found = pci_scan::scan(&access, |info: &FunctionInfo| {
        let is_scsi = info.vendor_id == VIRTIO_VENDOR
            && (info.device_id == VIRTIO_SCSI_MODERN || info.device_id == VIRTIO_SCSI_TRANSITIONAL);
        if is_scsi {
            ControlFlow::Break(*info)
        } else {
            ControlFlow::Continue(())
        }
    });
    let Some(info) = found else {
        println!("RESULT pci-find FAIL no virtio-scsi function");
        exit::exit(exit::ExitCode::Failure);
    };
    println!(
        "RESULT pci-find PASS {} {:04x}:{:04x} rev {} subsystem {:04x}:{:04x} {}",
        info.bdf,
        info.vendor_id,
        info.device_id,
        info.revision,
        info.subsystem_vendor_id,
        info.subsystem_id,
        if info.device_id == VIRTIO_SCSI_MODERN {
            "modern"
        } else {
            "transitional"
        },
    );
    let bars = pci_scan::read_bars(&access, info.bdf);
    for bar in bars.iter().flatten() {
        println!("  bar {bar:x?}");
    }
    let registers = match pci::DeviceBars::map(&bars) {
        Ok(registers) => registers,
        Err(error) => {
            println!("RESULT pci-bars FAIL {error:?}");
            exit::exit(exit::ExitCode::Failure);
        }
    };
    pci_scan::enable(
        &access,
        info.bdf,
        command::MEMORY_SPACE | command::IO_SPACE | command::BUS_MASTER,
    );
    let config = pci_scan::Function::new(&access, info.bdf);
    let mut cap = config.read8(0x34) & 0xfc;
    let mut guard = 0;
    while cap != 0 && guard < 48 {
        let id = config.read8(u16::from(cap));
        if id == 0x09 {
            let cfg_type = config.read8(u16::from(cap) + 3);
            let bar = config.read8(u16::from(cap) + 4);
            let offset = config.read32(u16::from(cap) + 8);
            let length = config.read32(u16::from(cap) + 12);
            println!(
                "  virtio cap type {cfg_type} bar {bar} offset {offset:#x} len {length:#x} (bar len {:?})",
                registers.bar_len(bar)
            );
        } else {
            println!("  cap {id:#x} at {cap:#x}");
        }
        cap = config.read8(u16::from(cap) + 1) & 0xfc;
        guard += 1;
    }
    let hal = hal::BareMetalHal::new();
    println!("  dma pool used {}", hal.used());
    exit::exit(exit::ExitCode::Success)
}

/// Reads `hvm_start_info.magic`, the structure's first field.
fn read_start_info_magic(start_info: u32) -> u32 {
    if start_info == 0 || start_info % 4 != 0 {
        return 0;
    }
    // SAFETY: QEMU's PVH option ROM passes the address of the start info it wrote in low RAM,
    // which is identity-mapped; it is aligned (checked above) and nothing writes it.
    unsafe { core::ptr::read_volatile(start_info as usize as *const u32) }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    println!("PANIC {info}");
    exit::exit(exit::ExitCode::Failure)
}
