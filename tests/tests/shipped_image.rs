//! The loader of the shipped image (`tests/src/image`), checked on the real `rvscsi.sys` that
//! `RVSCSI_IMAGE` names (`cargo xtask sim-image` sets it; without it these tests have nothing
//! to load and say so): placed away from its base, relocated, every import bound to the
//! simulator's Windows x64 exports, sections protected so that a planted write into `.rdata`
//! or `.text` faults, and refused, naming the reason, when it imports what the simulator lacks.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use rvscsi_tests::harness::{IMAGE_VARIABLE, shipped_image};
use rvscsi_tests::image::{Image, LinkError, LoadError, Protection};
use rvscsi_tests::sim::routine::DriverEntryRoutine;
use rvscsi_tests::sim::win64_export;

/// The image file's bytes, or `None` (and a note) when no image is named.
fn image_file() -> Option<Vec<u8>> {
    let Some(path) = std::env::var_os(IMAGE_VARIABLE) else {
        eprintln!("{IMAGE_VARIABLE} is unset: no image to check (cargo xtask sim-image sets it)");
        return None;
    };
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The protection of the page at `address` in this process, from /proc/self/maps (`r-xp` ...).
fn page_permissions(address: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .find_map(|line| {
            let (range, rest) = line.split_once(' ')?;
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (start..end)
                .contains(&address)
                .then(|| rest.split(' ').next().unwrap_or_default().to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn the_image_is_placed_away_from_its_base_relocated_bound_and_protected() {
    if image_file().is_none() {
        return;
    }
    let image = shipped_image().expect("the image loads");
    assert_ne!(image.base() as u64, image.preferred_base());
    assert!(image.relocations() >= 1, "no base relocation applied");
    assert!(!image.imports().is_empty());
    for (name, _, address) in image.imports() {
        assert!(name.starts_with("StorPort"), "{name}");
        assert_eq!(Some(*address), win64_export(name), "{name}");
    }
    for range in image.ranges() {
        let expected = match range.protection {
            Protection::ReadOnly => "r--p",
            Protection::ReadWrite => "rw-p",
            Protection::ReadExecute => "r-xp",
        };
        for page in (0..range.len).step_by(4096) {
            let found = page_permissions(image.base() + range.rva + page);
            // Under qemu-user (the AArch64 run), /proc/self/maps shows the host's view, which
            // has no execute bit: there the read and write bits are compared (execution itself
            // is proven by every scenario, and .text's lack of write by the planted write).
            let compared = if cfg!(target_arch = "x86_64") { 4 } else { 2 };
            assert_eq!(
                found.get(..compared),
                expected.get(..compared),
                "{} at +{page:#x}: {found}",
                range.name
            );
        }
    }
    let text = image.section(".text").expect(".text");
    let rdata = image.section(".rdata").expect(".rdata");
    assert!(text.contains(&image.entry()));
    assert_eq!(page_permissions(rdata.start), "r--p");
}

#[test]
fn an_import_the_simulator_lacks_fails_the_load_naming_it() {
    let Some(file) = image_file() else {
        return;
    };
    let without = |name: &str| (name != "StorPortGetBusData").then(|| win64_export(name))?;
    match Image::load_patched(&file, without, |_| {}) {
        Err(LoadError::Link(LinkError::MissingImport(name))) => {
            assert_eq!(name, "StorPortGetBusData");
            let message = LoadError::Link(LinkError::MissingImport(name)).to_string();
            assert!(message.contains("StorPortGetBusData"), "{message}");
        }
        other => panic!("expected the missing import to fail the load: {other:?}"),
    }
}

/// Sets `flags` in the characteristics of the section named `name` in the file's headers.
fn set_section_flags(file: &mut [u8], name: [u8; 8], flags: u32) {
    let header = file
        .windows(8)
        .position(|window| window == name)
        .expect("section header");
    let at = header + 36;
    let old = u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
    file[at..at + 4].copy_from_slice(&(old | flags).to_le_bytes());
}

#[test]
fn a_writable_code_section_or_an_import_from_elsewhere_is_refused() {
    let Some(file) = image_file() else {
        return;
    };
    let mut writable_code = file.clone();
    set_section_flags(&mut writable_code, *b".text\0\0\0", 0x8000_0000);
    let refused = Image::load_patched(&writable_code, win64_export, |_| {});
    assert!(
        matches!(&refused, Err(LoadError::Link(LinkError::WritableExecutable(name))) if *name == ".text"),
        "{refused:?}"
    );
    let mut foreign = file.clone();
    let dll = foreign
        .windows(12)
        .position(|window| window.eq_ignore_ascii_case(b"storport.sys"))
        .expect("the import's DLL name");
    foreign[dll..dll + 12].copy_from_slice(b"ntoskrnl.exe");
    let refused = Image::load_patched(&foreign, win64_export, |_| {});
    assert!(
        matches!(&refused, Err(LoadError::Link(LinkError::ForeignDll(dll))) if *dll == "ntoskrnl.exe"),
        "{refused:?}"
    );
}

/// The variable that makes [`a_planted_write_into_rdata_or_text_faults`] (or
/// [`a_planted_deep_stack_fails_the_limit_or_hits_the_guard_page`]) the child that executes
/// the planted write: `rdata`, `text`, `stack` (the control), `deep` (16 KiB down) or
/// `overflow` (28 KiB down).
const PLANTED_WRITE: &str = "RVSCSI_PLANTED_WRITE";

/// In the child: loads the image with DriverEntry's first bytes replaced by a store of `rax`
/// to the start of `.rdata`, of `.text`, just below the stack pointer (the control), or 16 or
/// 28 KiB below it, then `return 0`, and calls it.
fn run_planted_write(target: &str) {
    let file = image_file().expect("the parent names the image");
    let image = Image::load_patched(&file, win64_export, |linked| {
        let entry = linked.entry_rva;
        let section = |name: &str| {
            linked
                .ranges
                .iter()
                .find(|range| range.name == name)
                .map(|range| range.rva)
                .expect("section")
        };
        let destination = match target {
            "rdata" => Some(section(".rdata")),
            "text" => Some(section(".text")),
            _ => None,
        };
        let code = planted_code(target, entry, destination);
        linked.bytes[entry..entry + code.len()].copy_from_slice(&code);
    })
    .expect("the patched image loads");
    let entry = DriverEntryRoutine::at(image.entry()).expect("an entry point");
    // SAFETY: the patched DriverEntry reads no argument: it stores a register and returns.
    let status = unsafe { entry.call(std::ptr::null_mut(), std::ptr::null_mut()) };
    println!("planted write into {target} returned {status}");
}

/// DriverEntry's planted code (x64): a store of `rax` to `destination` (an RVA), 16 or 28 KiB
/// below the stack pointer (`deep`, `overflow`), or just below it, then `return 0`.
#[cfg(target_arch = "x86_64")]
fn planted_code(target: &str, entry: usize, destination: Option<usize>) -> Vec<u8> {
    let store: Vec<u8> = match (target, destination) {
        (_, Some(destination)) => {
            // mov qword ptr [rip + disp32], rax: the displacement counts from the end of the
            // 7-byte instruction.
            let displacement = i32::try_from(
                i64::try_from(destination).unwrap() - i64::try_from(entry + 7).unwrap(),
            )
            .unwrap();
            [&[0x48, 0x89, 0x05][..], &displacement.to_le_bytes()].concat()
        }
        ("deep" | "overflow", None) => {
            let depth: u32 = if target == "deep" { 0x4000 } else { 0x7000 };
            // sub rsp, depth; mov [rsp], rax; add rsp, depth
            [
                &[0x48, 0x81, 0xEC][..],
                &depth.to_le_bytes(),
                &[0x48, 0x89, 0x04, 0x24],
                &[0x48, 0x81, 0xC4],
                &depth.to_le_bytes(),
            ]
            .concat()
        }
        // mov qword ptr [rsp - 8], rax
        _ => vec![0x48, 0x89, 0x44, 0x24, 0xF8],
    };
    // xor eax, eax; ret
    [&store[..], &[0x31, 0xC0, 0xC3]].concat()
}

/// DriverEntry's planted code (ARM64): as on x64, storing `x0`.
#[cfg(target_arch = "aarch64")]
fn planted_code(target: &str, entry: usize, destination: Option<usize>) -> Vec<u8> {
    let words: Vec<u32> = match (target, destination) {
        (_, Some(destination)) => {
            // adr x9, destination; str x0, [x9]
            let offset = i64::try_from(destination).unwrap() - i64::try_from(entry).unwrap();
            let offset = u32::try_from(offset & 0x1F_FFFF).unwrap();
            let adr = 0x1000_0000 | ((offset & 3) << 29) | ((offset >> 2) << 5) | 9;
            vec![adr, 0xF900_0120]
        }
        // sub sp, sp, #depth; str x0, [sp]; add sp, sp, #depth (depth = 4 or 7 << 12)
        ("deep", None) => vec![0xD140_13FF, 0xF900_03E0, 0x9140_13FF],
        ("overflow", None) => vec![0xD140_1FFF, 0xF900_03E0, 0x9140_1FFF],
        // stur x0, [sp, #-8]
        _ => vec![0xF81F_83E0],
    };
    // mov w0, #0; ret
    words
        .into_iter()
        .chain([0x5280_0000, 0xD65F_03C0])
        .flat_map(u32::to_le_bytes)
        .collect()
}

/// What the 16 KiB planted frame measures: the frame, and on x64 the return address above it.
#[cfg(target_arch = "x86_64")]
const DEEP_BYTES: usize = 0x4000 + 8;
/// What the 16 KiB planted frame measures: the frame (ARM64 keeps the return address in x30).
#[cfg(target_arch = "aarch64")]
const DEEP_BYTES: usize = 0x4000;

/// Runs this binary's test `test` alone, as the child executing planted write `target`;
/// through cargo's runner for this target when one is set (qemu-aarch64 for the AArch64 run,
/// since the emulated process cannot execute a foreign binary itself).
fn child(test: &str, target: &str) -> std::process::Output {
    let runner = std::env::var("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER")
        .ok()
        .filter(|_| cfg!(target_arch = "aarch64"))
        .unwrap_or_default();
    let mut words = runner.split_whitespace();
    let exe = std::env::current_exe().unwrap();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(PLANTED_WRITE, target)
        .output()
        .unwrap()
}

#[test]
fn a_planted_write_into_rdata_or_text_faults() {
    if let Ok(target) = std::env::var(PLANTED_WRITE) {
        run_planted_write(&target);
        return;
    }
    if image_file().is_none() {
        return;
    }
    let child = |target: &str| child("a_planted_write_into_rdata_or_text_faults", target);
    for target in ["rdata", "text"] {
        let output = child(target);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGSEGV),
            "a write into .{target} must fault: {output:?}"
        );
    }
    // The control: the same patched entry point, storing to its own stack, returns.
    let output = child("stack");
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("planted write into stack returned 0")
    );
}

#[test]
fn a_planted_deep_stack_fails_the_limit_or_hits_the_guard_page() {
    if let Ok(target) = std::env::var(PLANTED_WRITE) {
        run_planted_write(&target);
        return;
    }
    if image_file().is_none() {
        return;
    }
    let test = "a_planted_deep_stack_fails_the_limit_or_hits_the_guard_page";
    // 16 KiB: inside the 24 KiB stack, above the 12 KiB limit, which fails the call.
    let deep = child(test, "deep");
    let printed = String::from_utf8_lossy(&deep.stderr);
    assert_eq!(deep.status.code(), Some(101), "{deep:?}");
    assert!(
        printed.contains(&format!("used {DEEP_BYTES} bytes"))
            && printed.contains("above the 12288-byte limit"),
        "{printed}"
    );
    // 28 KiB: past the stack, into the guard page.
    let overflow = child(test, "overflow");
    assert_eq!(
        overflow.status.signal(),
        Some(libc::SIGSEGV),
        "{overflow:?}"
    );
}
