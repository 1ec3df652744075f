//! The guest proper: hardware access for `x86_64-unknown-none`, and the entry point.

mod boot;
mod exit;
mod paging;
mod port;
mod serial;

use core::fmt::Write as _;
use core::panic::PanicInfo;

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

/// `hvm_start_info.magic` (Xen PVH boot ABI).
const HVM_START_MAGIC: u32 = 0x336e_c578;

/// Entered from [`boot`] in long mode with the physical address of `hvm_start_info`.
extern "C" fn kmain(start_info: u32) -> ! {
    serial::init();
    println!("vmtest-guest: started, hvm_start_info at {start_info:#x}");
    let _ = HVM_START_MAGIC;
    exit::exit(exit::ExitCode::Success)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let _ = writeln!(serial::Serial, "PANIC {info}");
    exit::exit(exit::ExitCode::Failure)
}
