//! The guest proper: hardware access for `x86_64-unknown-none`, and the entry point.

mod boot;
mod exit;
mod hal;
mod image_run;
mod interrupts;
mod paging;
mod pci;
mod port;
mod serial;
mod storport;

use core::ops::ControlFlow;
use core::panic::PanicInfo;

use virtio_core::hal::Hal as _;
use virtio_core::pci::PciTransport;
use vmtest_guest::cluster;
use vmtest_guest::exercise::{self, Mode, Settings};
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
/// Offset of `cmdline_paddr` in `hvm_start_info`.
const HVM_START_CMDLINE: usize = 24;
/// Longest command line read.
const CMDLINE_MAX: usize = 512;

/// The virtio vendor ID.
const VIRTIO_VENDOR: u16 = 0x1af4;
/// virtio-scsi, modern-only (0x1040 + device type 8; virtio 1.x section 4.1.2.1).
const VIRTIO_SCSI_MODERN: u16 = 0x1048;
/// virtio-scsi, transitional (legacy ID; virtio 1.x section 4.1.2.3).
const VIRTIO_SCSI_TRANSITIONAL: u16 = 0x1004;

/// Entered from [`boot`] in long mode with the physical address of `hvm_start_info`.
extern "C" fn kmain(start_info: u32) -> ! {
    serial::init();
    let magic = read_u32(start_info as usize);
    if magic != HVM_START_MAGIC {
        println!("RESULT boot FAIL hvm_start_info at {start_info:#x} has magic {magic:#x}");
        exit::exit(exit::ExitCode::Failure);
    }
    let mut cmdline_buffer = [0u8; CMDLINE_MAX];
    let cmdline = read_cmdline(start_info as usize, &mut cmdline_buffer);
    println!("RESULT boot PASS PVH entry, long mode, command line {cmdline:?}");
    let image_mode = cmdline
        .split_ascii_whitespace()
        .find(|word| *word == "mode=image" || *word == "mode=image-pr");
    if let Some(mode) = image_mode {
        let passed = if mode == "mode=image" {
            image_run::run(cmdline)
        } else {
            image_run::run_reservations(cmdline)
        };
        exit::exit(if passed {
            exit::ExitCode::Success
        } else {
            exit::ExitCode::Failure
        });
    }
    // Either the exercise's settings, or the node of the two-node sequence.
    let job = match Settings::parse(cmdline) {
        Ok((Mode::Probe, _)) => {
            // Touch as much memory as the exercise does: an accelerator that boots but pages
            // guest memory in slowly (nested KVM) shows here, within the host's probe limit.
            let hal = hal::BareMetalHal::new();
            let touched = hal
                .dma_alloc(exercise::DATA_LEN, 4096)
                .map(|memory| memory.len());
            println!("RESULT probe PASS touched {touched:?} bytes");
            exit::exit(exit::ExitCode::Success);
        }
        Ok((Mode::Exercise, Some(settings))) => Ok(settings),
        Ok((Mode::Reservations(node), _)) => Err(node),
        Ok((Mode::Exercise, None)) | Err(_) => {
            println!("RESULT boot FAIL unusable command line {cmdline:?}");
            exit::exit(exit::ExitCode::Failure);
        }
    };
    let passed = open_device().is_some_and(|transport| {
        let hal = hal::BareMetalHal::new();
        interrupts::enable();
        let passed = match job {
            Ok(settings) => exercise::run(
                &hal,
                transport,
                settings,
                serial::Serial,
                &interrupts::MsixInterrupts,
            ),
            Err(node) => cluster::run(
                &hal,
                transport,
                node,
                serial::Serial,
                &interrupts::MsixInterrupts,
                &mut SerialConductor,
            ),
        };
        println!("dma pool: {} KiB used", hal.used() >> 10);
        passed
    });
    exit::exit(if passed {
        exit::ExitCode::Success
    } else {
        exit::ExitCode::Failure
    })
}

/// How long a node waits for the host's go byte: the other node's steps run meanwhile, and
/// the host gives up on a silent guest after two minutes anyway.
const GO_LIMIT_TICKS: u64 = 1800;

/// The go bytes of the persistent-reservation sequence arrive on COM1.
struct SerialConductor;

impl cluster::Conductor for SerialConductor {
    fn go(&mut self) -> Option<u8> {
        interrupts::sleep_until(GO_LIMIT_TICKS, serial::try_read)
    }
}

/// Finds and maps the virtio-scsi function, enables it with MSI-X and probes its transport.
fn open_device() -> Option<PciTransport<pci::DeviceBars>> {
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
        return None;
    };
    println!(
        "RESULT pci-find PASS {} {:04x}:{:04x} rev {} subsystem {:04x}:{:04x} ({})",
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
    let registers = match pci::DeviceBars::map(&bars) {
        Ok(registers) => registers,
        Err(error) => {
            println!("RESULT pci-bars FAIL {error}");
            return None;
        }
    };
    pci_scan::enable(
        &access,
        info.bdf,
        command::MEMORY_SPACE | command::IO_SPACE | command::BUS_MASTER | command::INTX_DISABLE,
    );
    // Completion is interrupt-driven: each queue's vector is counted, and the driver sleeps
    // until its count moves; the host checks the counts against QEMU's own.
    let first_vector = interrupts::FIRST_VECTOR;
    let entries = match pci_scan::enable_msix(&access, info.bdf, &registers, first_vector, false) {
        Ok(entries) => entries,
        Err(error) => {
            println!("RESULT pci-bars FAIL MSI-X: {error:?}");
            return None;
        }
    };
    let mut described = exercise::Text::new();
    for bar in bars.iter().flatten().flatten() {
        let _ = core::fmt::Write::write_fmt(
            &mut described,
            format_args!(
                "bar{} {:?} {:#x}+{:#x}; ",
                bar.index, bar.kind, bar.address, bar.size
            ),
        );
    }
    println!(
        "RESULT pci-bars PASS {}MSI-X {entries} entries",
        described.as_str()
    );
    let config = pci_scan::Function::new(&access, info.bdf);
    match PciTransport::probe(&config, registers) {
        Ok(transport) => Some(transport),
        Err(error) => {
            println!("RESULT features FAIL probe: {error:?}");
            None
        }
    }
}

/// Reads a 32-bit value the firmware left in low memory.
fn read_u32(address: usize) -> u32 {
    if address == 0 || !address.is_multiple_of(4) || address >= 1 << 30 {
        return 0;
    }
    // SAFETY: QEMU's PVH option ROM passes the start info (and the command line) in low RAM,
    // which is identity-mapped; the address is aligned (checked above) and nothing writes it.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

/// Copies the NUL-terminated command line named by `hvm_start_info.cmdline_paddr` into
/// `buffer` and returns it (empty if absent or not UTF-8).
fn read_cmdline(start_info: usize, buffer: &mut [u8; CMDLINE_MAX]) -> &str {
    let low = read_u32(start_info + HVM_START_CMDLINE);
    let high = read_u32(start_info + HVM_START_CMDLINE + 4);
    let address = (u64::from(high) << 32 | u64::from(low)) as usize;
    if address == 0 || address >= 1 << 30 {
        return "";
    }
    let mut len = 0;
    for (index, slot) in buffer.iter_mut().enumerate() {
        // SAFETY: the command line lies in low RAM, identity-mapped and only read here; the
        // copy stops at the terminating NUL or the buffer's end.
        let byte = unsafe { core::ptr::read_volatile((address + index) as *const u8) };
        if byte == 0 {
            break;
        }
        *slot = byte;
        len += 1;
    }
    core::str::from_utf8(buffer.get(..len).unwrap_or(&[])).unwrap_or("")
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    println!("PANIC {info}");
    exit::exit(exit::ExitCode::Failure)
}
