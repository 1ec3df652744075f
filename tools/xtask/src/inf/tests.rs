//! Tests of INF stamping against the real template.

use super::*;

const TEMPLATE: &str = include_str!("../../../../inf/rvscsi.inx");

fn package_with(files: &[&str]) -> tempdir::Dir {
    let dir = tempdir::Dir::new();
    for file in files {
        std::fs::write(dir.path().join(file), b"x").unwrap();
    }
    dir
}

fn stamped(arch: &str) -> String {
    stamp(TEMPLATE, arch, (2026, 11, 25), "0.1.0").unwrap()
}

/// A scratch directory removed on drop (std only, so xtask needs no dependency).
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "rvscsi-inf-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn the_template_stamps_and_checks_for_both_architectures() {
    let package = package_with(&["rvscsi.sys"]);
    for arch in ["amd64", "arm64"] {
        let inf = stamped(arch);
        assert!(inf.contains(&format!("[rvscsi.NT{arch}.10.0...14393]")));
        assert!(inf.contains("DriverVer   = 11/25/2026,0.1.0.0"));
        assert_eq!(check(&inf, arch, package.path()), Ok(()));
    }
}

#[test]
fn the_template_carries_the_storport_settings() {
    let inf = Inf::parse(&stamped("amd64")).unwrap();
    let service = inf.section("rvscsi_Service").unwrap();
    let value = |key| Inf::values_of(service, key).next().unwrap().values[0].clone();
    assert_eq!(value("StartType"), "0");
    assert_eq!(value("ServiceType"), "1");
    assert_eq!(value("ErrorControl"), "1");
    assert_eq!(value("LoadOrderGroup"), "SCSI miniport");
    let text = stamped("amd64");
    for needle in [
        r#"HKR, "Parameters", BusType, 0x00010001, 0x0000000A"#,
        r#"HKR, "Parameters\PnpInterface", 5, 0x00010001, 1"#,
        "MSISupported,       0x00010001, 1",
        "MessageNumberLimit, 0x00010001, 67",
        r"PCI\VEN_1AF4&DEV_1004",
        r"PCI\VEN_1AF4&DEV_1048",
        "PhysicalBreaks, 0x00010001, 511",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
}

#[test]
fn an_unstamped_template_fails() {
    let problems = check(TEMPLATE, "amd64", package_with(&["rvscsi.sys"]).path()).unwrap_err();
    assert!(
        problems.iter().any(|p| p.contains("$ARCH$")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("DriverVer")),
        "{problems:?}"
    );
}

#[test]
fn a_missing_package_file_fails() {
    let problems = check(&stamped("amd64"), "amd64", package_with(&[]).path()).unwrap_err();
    // Once per CopyFiles section: the Server 2016 one and the driver-store one.
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .all(|p| p.contains("rvscsi.sys is copied but is not in the package"))
    );
}

#[test]
fn each_broken_reference_is_reported() {
    let package = package_with(&["rvscsi.sys"]);
    let cases = [
        (
            "AddReg         = rvscsi_Parameters",
            "AddReg         = rvscsi_Parameterz",
            "[rvscsi_Parameterz], which does not exist",
        ),
        (
            "CopyFiles = rvscsi_Files",
            "CopyFiles = rvscsi_Filez",
            "[rvscsi_Filez], which does not exist",
        ),
        (
            "rvscsi_Service, rvscsi_EventLog",
            "rvscsi_Service, rvscsi_EventLogg",
            "[rvscsi_EventLogg], which does not exist",
        ),
        (
            "[rvscsi_Install.NT.Services]",
            "[rvscsi_Install.NT.Servicez]",
            "[rvscsi_Install.NT.Services], which does not exist",
        ),
        ("rvscsi.sys = 1,,", "rvscsi.sys = 2,,", "disk '2'"),
        (
            "[SourceDisksFiles]\nrvscsi.sys = 1,,",
            "[SourceDisksFiles]",
            "not listed in [SourceDisksFiles]",
        ),
        (
            "%Manufacturer% = rvscsi,",
            "%Manufacturer% = rvscsj,",
            "[rvscsj.NTamd64.10.0...14393], which does not exist",
        ),
        (
            "ServiceBinary  = %12%\\rvscsi.sys",
            "ServiceBinary  = %12%\\other.sys",
            "ServiceBinary",
        ),
        (
            "Provider    = %Provider%",
            "Provider    = %Provder%",
            "%Provder% is not defined",
        ),
        (
            "Class       = SCSIAdapter",
            "Class       = DiskDrive",
            "Class",
        ),
        (
            "rvscsi_Files             = 12",
            "",
            "no DestinationDirs entry",
        ),
    ];
    for (from, to, expected) in cases {
        let inf = stamped("amd64").replace("\r\n", "\n");
        assert!(inf.contains(from), "{from}");
        let broken = inf.replacen(from, to, 1);
        let problems = check(&broken, "amd64", package.path()).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{to}: {problems:?}"
        );
    }
}

/// Checks `inf` with `from` replaced by `to` and expects a problem containing `expected`.
fn assert_caught(from: &str, to: &str, expected: &str) {
    let package = package_with(&["rvscsi.sys"]);
    let inf = stamped("amd64").replace("\r\n", "\n");
    assert!(inf.contains(from), "{from}");
    let problems = check(&inf.replacen(from, to, 1), "amd64", package.path()).unwrap_err();
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "{to}: {problems:?}"
    );
}

#[test]
fn a_key_only_add_reg_line_without_the_empty_value_name_fails() {
    // The mistake the template once had: the flags land in the value-name field.
    assert_caught(
        "HKR, \"Interrupt Management\",, 0x00000010",
        "HKR, \"Interrupt Management\", 0x00000010",
        "needs the empty value-name field",
    );
    // A value name next to the key-only flag.
    assert_caught(
        "HKR, \"Interrupt Management\\Affinity Policy\",, 0x00000010",
        "HKR, \"Interrupt Management\\Affinity Policy\", Name, 0x00000010",
        "FLG_ADDREG_KEYONLY",
    );
}

#[test]
fn driver_store_sections_must_use_dirid_13_and_server_2016_must_not() {
    // The Server 2019+ service started from System32\drivers.
    assert_caught(
        "ServiceBinary  = %13%\\rvscsi.sys",
        "ServiceBinary  = %12%\\rvscsi.sys",
        "uses DIRID 12, not 13",
    );
    // The Server 2019+ image copied to System32\drivers.
    assert_caught(
        "rvscsi_Files_DriverStore = 13",
        "rvscsi_Files_DriverStore = 12",
        "uses DIRID 12, not 13",
    );
    // DIRID 13 in the Server 2016 section, which cannot use it.
    assert_caught(
        "rvscsi_Files             = 12",
        "rvscsi_Files             = 13",
        "cannot run a boot-start driver from the driver store",
    );
    // The Server 2016 fallback dropped.
    assert_caught(
        "rvscsi, NTamd64.10.0...14393, NTamd64.10.0...17763",
        "rvscsi, NTamd64.10.0...17763",
        "the DIRID 12 fallback is missing",
    );
}

#[test]
fn unreferenced_sections_and_other_architectures_fail() {
    let package = package_with(&["rvscsi.sys"]);
    let extra = format!("{}[Orphan]\nfoo = bar\n", stamped("amd64"));
    let problems = check(&extra, "amd64", package.path()).unwrap_err();
    assert_eq!(problems, ["section [Orphan] is never referenced"]);
    let problems = check(&stamped("amd64"), "arm64", package.path()).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no models section for NTarm64")),
        "{problems:?}"
    );
}

#[test]
fn stamping_needs_a_driver_ver_line_and_a_three_part_version() {
    assert!(stamp("[Version]\n", "amd64", (2026, 1, 1), "0.1.0").is_err());
    assert!(stamp(TEMPLATE, "amd64", (2026, 1, 1), "0.1").is_err());
    assert!(stamp(TEMPLATE, "amd64", (2026, 1, 1), "0.1.x").is_err());
}

#[test]
fn civil_dates_match_known_days() {
    assert_eq!(civil_date(0), (1970, 1, 1));
    assert_eq!(civil_date(951_868_799), (2000, 2, 29));
    assert_eq!(civil_date(1_795_651_199), (2026, 11, 25));
    assert_eq!(civil_date(4_107_542_399), (2100, 2, 28));
}

#[test]
fn comments_and_quotes_are_parsed_like_setupapi() {
    let inf = Inf::parse("[A]\nkey = \"x;y\", b ; comment\n").unwrap();
    let entry = &inf.sections[0].entries[0];
    assert_eq!(entry.values, ["x;y", "b"]);
    assert!(Inf::parse("stray = 1\n").is_err());
    assert_eq!(tokens("a %X% %12% %%SystemRoot%% b"), ["X"]);
}
