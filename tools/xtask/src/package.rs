//! `cargo xtask package`: the driver package, cross-built on Linux and checked.
//!
//! For a Windows target it links the driver crate as a kernel image with rust-lld, checks the
//! PE (the `pecheck` crate), stamps and checks the INF, and optionally proves there is no panic
//! path (`--no-panic-check`) and test-signs the image (`--sign`). The output is
//! `target/package/<arch>/` for the miniport (the default crate, `rvscsi`) and
//! `target/package/<crate>/<arch>/` for any other crate (the test fixture), holding
//! `rvscsi.sys`, `rvscsi.pdb` and `rvscsi.inf`, and with `--sign` a `signed/` folder ready for
//! `pnputil` on a test-signing machine.
//!
//! A driver crate must provide, on `cfg(windows)`: a `#[no_mangle] extern "system" fn
//! DriverEntry`, a `#[panic_handler]` that needs nothing outside storport.sys, `memcpy`,
//! `memmove`, `memset` and `memcmp`, and a `link-time-panic-check` feature whose panic handler
//! calls an undefined symbol. The miniport and the fixture take all but DriverEntry from
//! `rvscsi-rt` (`miniport/rt`).

use std::path::{Path, PathBuf};
use std::process::Command;

use pecheck::Machine;
use sha2::Digest;

use crate::inf;
use crate::util::{cargo, run, workspace_root};

/// The miniport's package name (the default `--crate`).
const MINIPORT: &str = "rvscsi";
/// The test fixture's package name.
const FIXTURE: &str = "rvscsi-pe-fixture";
/// The image, PDB and INF names inside the package, whatever crate was built.
const IMAGE: &str = "rvscsi.sys";
const PDB: &str = "rvscsi.pdb";
const INF: &str = "rvscsi.inf";
/// The catalog the INF names in `CatalogFile`.
const CATALOG: &str = "rvscsi.cat";
/// The symbol the `link-time-panic-check` panic handler calls.
const PANIC_SENTINEL: &str = "rvscsi_panic_path_survived_optimisation";

/// The linker flags of a StorPort kernel image (besides `/PDB`), each with its reason.
const LINK_ARGS: &[&str] = &[
    // A kernel-mode driver image: sets the image up for the kernel loader.
    "/DRIVER",
    // Subsystem NATIVE (1): not a Win32 program.
    "/SUBSYSTEM:NATIVE",
    // The I/O manager calls DriverEntry; there is no CRT startup code to run first.
    "/ENTRY:DriverEntry",
    // No C runtime, no kernel32: everything not in this crate must come from storport.sys.
    "/NODEFAULTLIB",
    // FORCE_INTEGRITY: the kernel refuses the image unless its signature checks out.
    "/INTEGRITYCHECK",
    // Write a PDB and a CodeView record naming it.
    "/DEBUG",
    // Write the PE checksum (the PE check recomputes it independently).
    "/RELEASE",
    // The COFF timestamp becomes a content hash instead of the link time. (The PDB GUID still
    // differs between links: the PDB records the link command line, which names rustc's
    // temporary directory for its objects.)
    "/Brepro",
    // Not a Terminal Server application: lld sets that bit on every executable image unless
    // told otherwise, and a driver is an executable image (see `kernel_link`).
    "/TSAWARE:NO",
];

/// Parsed `cargo xtask package` options.
#[derive(Debug, Clone)]
struct Options {
    target: String,
    krate: String,
    features: Vec<String>,
    sign: bool,
    no_panic_check: bool,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        target: "x86_64-pc-windows-msvc".into(),
        krate: MINIPORT.into(),
        features: Vec::new(),
        sign: false,
        no_panic_check: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--target" => options.target = value("--target")?,
            "--crate" => options.krate = value("--crate")?,
            "--features" => options
                .features
                .extend(value("--features")?.split(',').map(str::to_owned)),
            "--sign" => options.sign = true,
            "--no-panic-check" => options.no_panic_check = true,
            other => {
                return Err(format!(
                    "unknown option {other}; usage: cargo xtask package [--target \
                     x86_64-pc-windows-msvc|aarch64-pc-windows-msvc] [--crate <package>] \
                     [--features <list>] [--sign] [--no-panic-check], or cargo xtask package ci"
                ));
            }
        }
    }
    Ok(options)
}

/// The machine and Windows architecture name for a target triple.
fn architecture(target: &str) -> Result<(Machine, &'static str), String> {
    match target {
        "x86_64-pc-windows-msvc" => Ok((Machine::Amd64, "amd64")),
        "aarch64-pc-windows-msvc" => Ok((Machine::Arm64, "arm64")),
        other => Err(format!(
            "target {other} is not a driver target; use x86_64-pc-windows-msvc or \
             aarch64-pc-windows-msvc"
        )),
    }
}

/// `cargo xtask package [options]`, or `cargo xtask package ci` for the package part of CI alone.
pub fn package(args: &[String]) -> Result<(), String> {
    if matches!(args, [job] if job == "ci") {
        return ci(&[]);
    }
    let options = parse_options(args)?;
    build_package(&options)
}

/// `cargo xtask pecheck <image.sys> <image.pdb> [--target <triple>]`: the PE check alone.
pub fn pecheck(args: &[String]) -> Result<(), String> {
    let (paths, target) = match args {
        [image, pdb] => ([image, pdb], "x86_64-pc-windows-msvc"),
        [image, pdb, flag, target] if flag == "--target" => ([image, pdb], target.as_str()),
        _ => {
            return Err(
                "usage: cargo xtask pecheck <image.sys> <image.pdb> [--target <triple>]".into(),
            );
        }
    };
    let (machine, _) = architecture(target)?;
    let image = read(Path::new(paths[0]))?;
    let pdb = read(Path::new(paths[1]))?;
    check_image(&image, &pdb, machine, paths[0])
}

/// What CI runs: the two links that must fail (a reachable panic, a frame needing `__chkstk`)
/// shown to fail for that reason on the fixture, the fixture without them as the control, then
/// the miniport, `rvscsi.sys`, packaged, PE-checked, no-panic-checked and signed for x64 and
/// ARM64. The miniport's packages are built last and stay in `target/package/<arch>/`.
pub fn ci(_: &[String]) -> Result<(), String> {
    let fixture = |features: &[&str]| Options {
        target: "x86_64-pc-windows-msvc".into(),
        krate: FIXTURE.into(),
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        sign: false,
        no_panic_check: true,
    };
    expect_link_failure(&fixture(&["reachable-panic"]), LinkFailure::PanicPath)?;
    let mut big_frame = fixture(&["large-stack-frame"]);
    big_frame.no_panic_check = false;
    expect_link_failure(&big_frame, LinkFailure::StackProbe)?;
    // The control: the same fixture without the faulty features packages, so the two
    // failures above come from those features and not from the pipeline.
    build_package(&fixture(&[]))?;
    for target in ["x86_64-pc-windows-msvc", "aarch64-pc-windows-msvc"] {
        build_package(&Options {
            target: target.into(),
            krate: MINIPORT.into(),
            features: Vec::new(),
            sign: true,
            no_panic_check: true,
        })?;
    }
    Ok(())
}

/// Builds the miniport package for `target` (a driver target) with `features` (`cargo xtask
/// package [--target ...] [--features ...]`; cargo rebuilds only what changed) and returns the
/// path of its `rvscsi.sys`: the shipped one (`target/package/<arch>/`) without features,
/// `target/package/rvscsi+<features>/<arch>/` with.
pub fn miniport_image(target: &str, features: &[&str]) -> Result<PathBuf, String> {
    let mut options = parse_options(&[])?;
    target.clone_into(&mut options.target);
    options.features = features.iter().map(|f| (*f).to_owned()).collect();
    let (_, arch) = architecture(target)?;
    build_package(&options)?;
    let package_root = workspace_root().join("target").join("package");
    let directory = if features.is_empty() {
        package_root.join(arch)
    } else {
        package_root
            .join(format!("{MINIPORT}+{}", features.join("+")))
            .join(arch)
    };
    Ok(directory.join(IMAGE))
}

/// Installs the Rust target `target` with rustup if it is missing.
pub fn ensure_rust_target(target: &str) -> Result<(), String> {
    ensure_target(target)
}

/// Runs a package build that must fail with `expected`.
fn expect_link_failure(options: &Options, expected: LinkFailure) -> Result<(), String> {
    eprintln!(
        "xtask package: expecting {expected:?} for features {:?}",
        options.features
    );
    match build_package(options) {
        Ok(()) => Err(format!(
            "features {:?} packaged, but the link should have failed with {expected:?}",
            options.features
        )),
        Err(message) if message.contains(expected.marker()) => {
            eprintln!("xtask package: failed as it must: {message}");
            Ok(())
        }
        Err(message) => Err(format!(
            "features {:?} failed, but not with {expected:?}: {message}",
            options.features
        )),
    }
}

/// Why a driver link failed, recognised from the linker's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkFailure {
    /// The crate has no DriverEntry or panic handler (it is not a driver crate).
    NoDriverEntry,
    /// The no-panic link found a surviving panic path.
    PanicPath,
    /// A stack frame over a page needs `__chkstk`.
    StackProbe,
    /// A memory intrinsic is missing.
    MemoryFunction,
    /// Floating point was used (`_fltused`).
    FloatingPoint,
}

impl LinkFailure {
    /// Recognises the failure in cargo's/rustc's/lld's output.
    fn recognise(output: &str) -> Option<Self> {
        if output.contains(PANIC_SENTINEL) {
            Some(Self::PanicPath)
        } else if output.contains("undefined symbol: __chkstk") {
            Some(Self::StackProbe)
        } else if output.contains("`#[panic_handler]` function required")
            || output.contains("undefined symbol: DriverEntry")
            || output.contains("entry point must be defined")
        {
            Some(Self::NoDriverEntry)
        } else if ["memcpy", "memmove", "memset", "memcmp"]
            .iter()
            .any(|name| output.contains(&format!("undefined symbol: {name}")))
        {
            Some(Self::MemoryFunction)
        } else if output.contains("undefined symbol: _fltused") {
            Some(Self::FloatingPoint)
        } else {
            None
        }
    }

    /// A phrase that the explanation always contains (tests and `ci` match on it).
    const fn marker(self) -> &'static str {
        match self {
            Self::NoDriverEntry => "has no DriverEntry",
            Self::PanicPath => "a panic path survived optimisation",
            Self::StackProbe => "needs a stack probe",
            Self::MemoryFunction => "must define memcpy",
            Self::FloatingPoint => "uses floating point",
        }
    }

    fn explain(self, krate: &str) -> String {
        let marker = self.marker();
        match self {
            Self::NoDriverEntry => format!(
                "crate {krate} {marker} (or no panic handler) on Windows, so it is not a \
                 driver crate. A driver crate exports `extern \"system\" fn DriverEntry` and \
                 links rvscsi-rt for its panic handler; package {MINIPORT} or {FIXTURE}"
            ),
            Self::PanicPath => format!(
                "no-panic link check: {marker} in {krate}. Some code can still reach a panic \
                 (an index, unwrap, overflow check or slice bound the optimiser could not \
                 prove safe); the link error above names the function that calls the panic \
                 handler. Replace it with checked code that returns an error"
            ),
            Self::StackProbe => format!(
                "{krate} {marker}: a stack frame is larger than a page, so LLVM calls \
                 __chkstk, which a kernel image has no library for. Kernel stacks are small \
                 (24 KiB on x64): keep large buffers in the device or SRB extension instead"
            ),
            Self::MemoryFunction => format!(
                "{krate} {marker}, memmove, memset and memcmp itself: a /NODEFAULTLIB image \
                 has no C runtime (link rvscsi-rt, see miniport/rt/src/mem.rs)"
            ),
            Self::FloatingPoint => format!(
                "{krate} {marker} (_fltused): kernel code must not use floating point without \
                 saving the FPU state; remove it"
            ),
        }
    }
}

/// Builds, checks and (with `--sign`) signs one package.
fn build_package(options: &Options) -> Result<(), String> {
    let (machine, arch) = architecture(&options.target)?;
    ensure_target(&options.target)?;
    let root = workspace_root();
    let target_dir = root.join("target");
    let package_root = target_dir.join("package");
    // A build with features is not the shipped package: it goes beside it, named by them.
    let directory = match (options.krate == MINIPORT, options.features.is_empty()) {
        (true, true) => package_root.join(arch),
        (true, false) => package_root
            .join(format!("{MINIPORT}+{}", options.features.join("+")))
            .join(arch),
        (false, _) => package_root.join(&options.krate).join(arch),
    };
    let link_dir = package_root.join("link").join(&options.krate).join(arch);
    for dir in [&directory, &link_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }

    let dll = link(options, "driver", &options.features, &link_dir)?;
    let mut image = read(&dll)?;
    let pdb = read(&link_dir.join(PDB))?;
    match pecheck::stamp_checksum(&mut image).map_err(|e| e.to_string())? {
        pecheck::Stamp::Written(value) => {
            eprintln!("xtask package: the linker left the checksum 0; wrote {value:#010x}");
        }
        pecheck::Stamp::AlreadySet(_) => {}
    }
    let image_path = directory.join(IMAGE);
    write(&image_path, &image)?;
    write(&directory.join(PDB), &pdb)?;
    check_image(&image, &pdb, machine, &image_path.display().to_string())?;
    check_version_independently(&image_path)?;
    if options.krate == MINIPORT {
        check_natvis(&pdb)?;
    }

    let template_path = root.join("inf").join("rvscsi.inx");
    let template = std::fs::read_to_string(&template_path)
        .map_err(|e| format!("cannot read {}: {e}", template_path.display()))?;
    let stamped = inf::stamp(&template, arch, build_date(), env!("CARGO_PKG_VERSION"))?;
    write(&directory.join(INF), stamped.as_bytes())?;
    inf::check(&stamped, arch, &directory)
        .map_err(|problems| format!("INF check failed:\n  {}", problems.join("\n  ")))?;
    eprintln!(
        "xtask package: INF stamped and checked: {}",
        directory.join(INF).display()
    );

    if options.no_panic_check {
        let mut features = options.features.clone();
        features.push("link-time-panic-check".into());
        let nopanic_dir = link_dir.join("nopanic");
        std::fs::create_dir_all(&nopanic_dir)
            .map_err(|e| format!("cannot create {}: {e}", nopanic_dir.display()))?;
        link(options, "driver-nopanic", &features, &nopanic_dir)?;
        eprintln!("xtask package: no-panic link passed: the optimiser removed every panic path");
    }

    if options.sign {
        sign(&directory, &package_root.join("cert"), machine, arch)?;
    }
    eprintln!("xtask package: package ready in {}", directory.display());
    Ok(())
}

/// Installs the rustup target if it is missing.
fn ensure_target(target: &str) -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup to look for target {target}: {e}"))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == target)
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", target])).map_err(|e| {
        format!(
            "the Rust target {target} is not installed and `rustup target add {target}` \
             failed ({e}). Install it where rustup can reach its distribution server, or \
             build for a target that is installed"
        )
    })
}

/// Links the crate as a kernel image with `profile`; returns the image (on disk under the name
/// cargo gives a cdylib, `<crate>.dll`; nothing inside the image carries that name).
fn link(
    options: &Options,
    profile: &str,
    features: &[String],
    link_dir: &Path,
) -> Result<PathBuf, String> {
    let mut command = cargo();
    command.args([
        "rustc",
        "--package",
        &options.krate,
        "--lib",
        "--target",
        &options.target,
        "--profile",
        profile,
        "--crate-type",
        "cdylib",
    ]);
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    // rustc links a cdylib as a DLL that exports its #[no_mangle] functions; the linker it
    // runs is this xtask binary in `kernel_link` mode, which takes those arguments out and
    // runs rust-lld (lld-link) for an executable image that exports nothing.
    let shim = std::env::current_exe()
        .map_err(|e| format!("cannot find the xtask binary to link with: {e}"))?;
    command.env(crate::kernel_link::ENV, "1");
    command.args(["--", "-C", "linker-flavor=lld-link", "-C"]);
    command.arg(format!("linker={}", shim.display()));
    for arg in LINK_ARGS {
        command.arg("-C").arg(format!("link-arg={arg}"));
    }
    command
        .arg("-C")
        .arg(format!("link-arg=/PDB:{}", link_dir.join(PDB).display()));
    // The version resource and the binary MOF: lld-link takes a .res file as an input and
    // converts it into the image's .rsrc section itself. Its name carries a digest of its bytes: cargo relinks only
    // when rustc's arguments change, so changed resources must change the argument.
    let mof_path = workspace_root().join("wmi").join("mof").join("rvscsi.mof");
    let mof = std::fs::read_to_string(&mof_path)
        .map_err(|e| format!("cannot read {}: {e}", mof_path.display()))?;
    let binary_mof = crate::bmf::mof_resource(&mof)
        .map_err(|e| format!("cannot compile {}: {e}", mof_path.display()))?;
    let res_bytes = crate::resources::res_file(&version_info()?, &binary_mof);
    let digest = sha2::Sha256::digest(&res_bytes)[..8]
        .iter()
        .fold(String::new(), |hex, byte| hex + &format!("{byte:02x}"));
    let res = link_dir.join(format!("rvscsi-{digest}.res"));
    write(&res, &res_bytes)?;
    command.arg("-C").arg(format!("link-arg={}", res.display()));
    eprintln!("xtask: running {command:?}");
    let output = command
        .output()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    if !output.status.success() {
        return Err(match LinkFailure::recognise(&stderr) {
            Some(failure) => failure.explain(&options.krate),
            None => format!(
                "building {} for {} failed (output above)",
                options.krate, options.target
            ),
        });
    }
    let library = options.krate.replace('-', "_");
    Ok(workspace_root()
        .join("target")
        .join(&options.target)
        .join(profile)
        .join(format!("{library}.dll")))
}

/// The file and product version of every image: the workspace's (the crate version).
fn file_version() -> Result<pecheck::FileVersion, String> {
    pecheck::FileVersion::from_cargo(env!("CARGO_PKG_VERSION"))
}

/// The version resource linked into every image.
fn version_info() -> Result<pecheck::VersionInfo, String> {
    Ok(crate::resources::driver_version_info(
        file_version()?,
        IMAGE,
    ))
}

/// Reads the linked image's version resource with the independent reader, `check_version.py`
/// (Python's pefile), against the crate version and the image's name.
fn check_version_independently(image: &Path) -> Result<(), String> {
    crate::util::ensure_python_module("pefile")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("check_version.py");
    run(Command::new("python3")
        .arg(script)
        .arg(image)
        .arg(file_version()?.to_string())
        .arg(IMAGE))
    .map_err(|e| format!("the independent version-resource check failed: {e}"))
}

/// The `natvis` rule on the miniport's PDB: it holds `miniport/rvscsi.natvis` and every type the
/// natvis names.
fn check_natvis(pdb: &[u8]) -> Result<(), String> {
    let path = workspace_root().join("miniport").join("rvscsi.natvis");
    let natvis = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let report = pecheck::check_natvis(pdb, &natvis).map_err(|violations| {
        let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
        format!("PE check of {PDB} failed:\n  {}", lines.join("\n  "))
    })?;
    eprintln!(
        "xtask pecheck: {PDB}: natvis embedded as {}; the types it names are defined: {}",
        report.stream,
        report.types.join(", ")
    );
    Ok(())
}

/// Runs the PE check and prints the report.
fn check_image(image: &[u8], pdb: &[u8], machine: Machine, name: &str) -> Result<(), String> {
    let version =
        pecheck::check_version_resource(image, IMAGE, file_version()?).map_err(|violations| {
            let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
            format!("PE check of {name} failed:\n  {}", lines.join("\n  "))
        })?;
    let mof_bytes = pecheck::check_mof_resource(image, rvscsi_wmi::hba::MOF_RESOURCE_NAME)
        .map_err(|violations| {
            let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
            format!("PE check of {name} failed:\n  {}", lines.join("\n  "))
        })?;
    eprintln!(
        "xtask pecheck: {name}: binary MOF {} ({mof_bytes} bytes decompressed)",
        rvscsi_wmi::hba::MOF_RESOURCE_NAME
    );
    eprintln!(
        "xtask pecheck: {name}: version resource {} ({}), OriginalFilename {}",
        version.file_version,
        version
            .string("FileDescription")
            .unwrap_or("no description"),
        version.string("OriginalFilename").unwrap_or("none"),
    );
    match pecheck::check(image, pdb, machine) {
        Ok(report) => {
            eprintln!(
                "xtask pecheck: {name}: OK: {}, {} bytes, entry {:#x}, checksum {:#010x}, \
                 PDB {} {} age {}, imports from storport.sys: {}",
                report.machine,
                report.size,
                report.entry_point,
                report.checksum,
                report.pdb_path,
                report.pdb.guid,
                report.pdb.age,
                report.imports.join(", ")
            );
            Ok(())
        }
        Err(violations) => {
            let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
            Err(format!(
                "PE check of {name} failed:\n  {}",
                lines.join("\n  ")
            ))
        }
    }
}

/// Signs `directory/rvscsi.sys` into `directory/signed/` with the test certificate (made once
/// under `cert_dir`), verifies the signature and re-checks the signed image.
fn sign(directory: &Path, cert_dir: &Path, machine: Machine, arch: &str) -> Result<(), String> {
    crate::util::ensure_tool("openssl", "version", "openssl")?;
    crate::util::ensure_tool("osslsigncode", "--version", "osslsigncode")?;
    let key = cert_dir.join("rvscsi-test.key");
    let certificate = cert_dir.join("rvscsi-test.pem");
    let certificate_der = cert_dir.join("rvscsi-test.cer");
    if !(key.is_file() && certificate.is_file() && certificate_der.is_file()) {
        std::fs::create_dir_all(cert_dir)
            .map_err(|e| format!("cannot create {}: {e}", cert_dir.display()))?;
        // A self-signed code-signing certificate: Windows in test-signing mode accepts it once
        // it is in the machine's Trusted Root and Trusted Publishers stores.
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:3072",
                "-sha256",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=rvscsi test signing (not for production)",
                "-addext",
                "keyUsage=critical,digitalSignature",
                "-addext",
                "extendedKeyUsage=codeSigning",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate))
        .map_err(|e| {
            format!("cannot make the test certificate with openssl (apt-get install openssl): {e}")
        })?;
        run(Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(&certificate)
            .arg("-out")
            .arg(&certificate_der))?;
    }
    let signed_dir = directory.join("signed");
    std::fs::create_dir_all(&signed_dir)
        .map_err(|e| format!("cannot create {}: {e}", signed_dir.display()))?;
    let signed = signed_dir.join(IMAGE);
    // osslsigncode refuses to overwrite its output.
    let _ = std::fs::remove_file(&signed);
    run(Command::new("osslsigncode")
        .args(["sign", "-h", "sha256", "-n", "rvscsi test build"])
        .arg("-certs")
        .arg(&certificate)
        .arg("-key")
        .arg(&key)
        .arg("-in")
        .arg(directory.join(IMAGE))
        .arg("-out")
        .arg(&signed))
    .map_err(|e| format!("signing failed (apt-get install osslsigncode): {e}"))?;
    run(Command::new("osslsigncode")
        .arg("verify")
        .arg("-CAfile")
        .arg(&certificate)
        .arg("-in")
        .arg(&signed))
    .map_err(|e| format!("the signature does not verify: {e}"))?;
    for file in [INF, PDB] {
        copy(&directory.join(file), &signed_dir.join(file))?;
    }
    copy(&certificate_der, &signed_dir.join("rvscsi-test.cer"))?;
    let image = read(&signed)?;
    let pdb = read(&signed_dir.join(PDB))?;
    check_image(&image, &pdb, machine, &signed.display().to_string())?;
    eprintln!("xtask package: signed and verified: {}", signed.display());
    let test_certificate = crate::catalog::Signer {
        certificate_pem: &certificate,
        key: &key,
    };
    crate::catalog::write_signed_catalog(
        &signed_dir,
        IMAGE,
        INF,
        CATALOG,
        arch,
        &test_certificate,
    )?;
    eprintln!(
        "xtask package: catalog written, signed and checked: {}",
        signed_dir.join(CATALOG).display()
    );
    Ok(())
}

/// Today's date (UTC), or `SOURCE_DATE_EPOCH`'s for reproducible builds.
fn build_date() -> (u32, u32, u32) {
    inf::civil_date(build_time())
}

/// The build time in seconds since 1970 (UTC): now, or `SOURCE_DATE_EPOCH` for reproducible
/// builds.
pub fn build_time() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs())
        })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_failures_are_recognised_from_lld_and_rustc_output() {
        let cases = [
            (
                "rust-lld: error: undefined symbol: rvscsi_panic_path_survived_optimisation",
                LinkFailure::PanicPath,
            ),
            (
                "rust-lld: error: undefined symbol: __chkstk",
                LinkFailure::StackProbe,
            ),
            (
                "error: `#[panic_handler]` function required, but not found",
                LinkFailure::NoDriverEntry,
            ),
            (
                "rust-lld: error: <root>: undefined symbol: DriverEntry",
                LinkFailure::NoDriverEntry,
            ),
            (
                "rust-lld: error: undefined symbol: memcpy",
                LinkFailure::MemoryFunction,
            ),
            (
                "rust-lld: error: undefined symbol: _fltused",
                LinkFailure::FloatingPoint,
            ),
        ];
        for (output, expected) in cases {
            assert_eq!(LinkFailure::recognise(output), Some(expected), "{output}");
            assert!(expected.explain("x").contains(expected.marker()));
        }
        assert_eq!(LinkFailure::recognise("error: something else"), None);
    }

    #[test]
    fn options_parse_and_reject_unknown_flags() {
        let args: Vec<String> = [
            "--target",
            "aarch64-pc-windows-msvc",
            "--crate",
            FIXTURE,
            "--features",
            "a,b",
            "--sign",
            "--no-panic-check",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let options = parse_options(&args).unwrap();
        assert_eq!(options.target, "aarch64-pc-windows-msvc");
        assert_eq!(options.krate, FIXTURE);
        assert_eq!(options.features, ["a", "b"]);
        assert!(options.sign && options.no_panic_check);
        assert_eq!(parse_options(&[]).unwrap().krate, MINIPORT);
        assert!(parse_options(&["--bogus".to_owned()]).is_err());
        assert!(parse_options(&["--target".to_owned()]).is_err());
    }

    #[test]
    fn only_the_two_windows_driver_targets_are_accepted() {
        assert_eq!(
            architecture("x86_64-pc-windows-msvc"),
            Ok((Machine::Amd64, "amd64"))
        );
        assert_eq!(
            architecture("aarch64-pc-windows-msvc"),
            Ok((Machine::Arm64, "arm64"))
        );
        assert!(architecture("x86_64-pc-windows-gnu").is_err());
    }
}
