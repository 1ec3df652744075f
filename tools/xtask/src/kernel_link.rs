//! The linker rustc runs when `cargo xtask package` links a kernel image: rust-lld in lld-link
//! mode, with the arguments that make a cdylib a DLL taken out.
//!
//! The crate is built as a `cdylib` (the only crate type that links a Windows image from a
//! library), and rustc links every cdylib as a DLL: `/DLL` (the `IMAGE_FILE_DLL`
//! characteristic), a module-definition file exporting every `#[no_mangle]` function
//! (`DriverEntry`, and rvscsi-rt's `memcpy`/`memmove`/`memset`/`memcmp`) under the name
//! `<crate>.dll`, and an import library. A driver is none of that: an executable image the I/O
//! manager enters at its entry point, which exports nothing (nothing imports from a miniport).
//! lld-link has no option that undoes `/DLL` or an earlier `/DEF`, so rustc's linker is this
//! program, which drops those three arguments and runs rust-lld with the rest.
//!
//! rustc passes `-flavor link` first (it names the flavour for rust-lld, which is what runs in
//! the end), and may pass the arguments in a response file (`@file`, one argument a line,
//! quoted when it has spaces) when the command line is too long; both are handled. rustc puts
//! its own `rust-lld` first on `PATH` for the linker it runs.

use std::ffi::OsString;
use std::process::{Command, ExitCode};

/// Set in the environment of the `cargo rustc` that links a kernel image: the xtask binary,
/// named as rustc's linker, then acts as this linker instead of running a job.
pub const ENV: &str = "RVSCSI_XTASK_KERNEL_LINK";

/// If this process was started as the kernel-image linker ([`ENV`] set), links and returns
/// the exit code; otherwise `None`.
pub fn run_if_asked() -> Option<ExitCode> {
    std::env::var_os(ENV)?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    Some(match link(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("xtask kernel link: {message}");
            ExitCode::FAILURE
        }
    })
}

/// Whether rustc's `argument` is one of those that make the image a DLL.
fn makes_a_dll(argument: &str) -> bool {
    let upper = argument.to_ascii_uppercase();
    let option = upper.strip_prefix(['/', '-']).unwrap_or("");
    option == "DLL" || option.starts_with("DEF:") || option.starts_with("IMPLIB:")
}

/// The arguments for rust-lld: `args` without a leading `-flavor link` and without
/// [`makes_a_dll`] arguments.
fn kernel_arguments(args: &[String]) -> Vec<String> {
    let args = match args {
        [flavor, link, rest @ ..] if flavor == "-flavor" && link == "link" => rest,
        all => all,
    };
    args.iter()
        .filter(|argument| !makes_a_dll(argument))
        .cloned()
        .collect()
}

/// The arguments of an lld-link response file: one a line, quoted (with `\"` for a quote)
/// when it contains spaces.
fn parse_response_file(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(
            |line| match line.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\\\"", "\""),
                None => line.to_owned(),
            },
        )
        .collect()
}

/// Writes `args` as an lld-link response file.
fn response_file(args: &[String]) -> String {
    args.iter()
        .map(|argument| {
            if argument.contains([' ', '"']) {
                format!("\"{}\"\n", argument.replace('"', "\\\""))
            } else {
                format!("{argument}\n")
            }
        })
        .collect()
}

fn link(args: &[OsString]) -> Result<ExitCode, String> {
    let args: Vec<String> =
        args.iter()
            .map(|argument| {
                argument.to_str().map(str::to_owned).ok_or_else(|| {
                    format!("a linker argument is not UTF-8: {}", argument.display())
                })
            })
            .collect::<Result<_, _>>()?;
    let mut command = Command::new("rust-lld");
    command.args(["-flavor", "link"]);
    match args.as_slice() {
        [flavor, link, file] if flavor == "-flavor" && link == "link" && file.starts_with('@') => {
            let path = &file[1..];
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the response file {path}: {e}"))?;
            let filtered = kernel_arguments(&parse_response_file(&text));
            let kernel = format!("{path}.kernel");
            std::fs::write(&kernel, response_file(&filtered))
                .map_err(|e| format!("cannot write {kernel}: {e}"))?;
            command.arg(format!("@{kernel}"));
        }
        _ => {
            command.args(kernel_arguments(&args));
        }
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run rust-lld (rustc puts it on PATH): {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|&argument| argument.to_owned()).collect()
    }

    #[test]
    fn the_dll_arguments_and_the_flavour_are_dropped_and_the_rest_kept_in_order() {
        let rustc = strings(&[
            "-flavor",
            "link",
            "/DEF:/tmp/rustcX/lib.def",
            "/NOLOGO",
            "/work/target/deps/rvscsi.o",
            "/NXCOMPAT",
            "/OUT:/work/target/deps/rvscsi.dll",
            "/DLL",
            "/IMPLIB:/work/target/deps/rvscsi.dll.lib",
            "/DRIVER",
            "/ENTRY:DriverEntry",
        ]);
        assert_eq!(
            kernel_arguments(&rustc),
            strings(&[
                "/NOLOGO",
                "/work/target/deps/rvscsi.o",
                "/NXCOMPAT",
                "/OUT:/work/target/deps/rvscsi.dll",
                "/DRIVER",
                "/ENTRY:DriverEntry",
            ])
        );
        // Case and the dash form do not matter to lld-link, nor here; look-alikes stay.
        assert!(makes_a_dll("/dll") && makes_a_dll("-def:x.def") && makes_a_dll("/implib:x"));
        assert!(!makes_a_dll("/DLLX") && !makes_a_dll("/DEFAULTLIB:x") && !makes_a_dll("dll"));
    }

    #[test]
    fn response_files_round_trip_quoted_arguments() {
        let args = strings(&["/OUT:C:\\a b\\x.dll", "/NOLOGO", "say \"hi\""]);
        let text = response_file(&args);
        assert_eq!(parse_response_file(&text), args);
        assert_eq!(
            kernel_arguments(&parse_response_file("/DLL\n\"/OUT:a b.dll\"\n")),
            strings(&["/OUT:a b.dll"])
        );
    }
}
