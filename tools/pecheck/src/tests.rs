//! Tests of the PE checks on synthesized images: each rule is shown to catch a planted offender.

use proptest::prelude::*;

use super::*;
use crate::synth::{self, GUID, Image, Imported, pdb, pdb_with_publics};

/// Checks a synthesized image against the default PDB, for AMD64.
fn run(image: &Image) -> Result<Report, Vec<Violation>> {
    check(&image.build(), &pdb(GUID, 1), Machine::Amd64)
}

/// Asserts that `image` breaks exactly `expected`.
fn fails_with(image: &Image, expected: Violation) {
    assert_eq!(run(image), Err(vec![expected]));
}

#[test]
fn a_well_formed_driver_image_passes_and_is_described() {
    let report = run(&Image::default()).unwrap();
    assert_eq!(report.machine, Machine::Amd64);
    assert_eq!(report.entry_point, 0x1000);
    assert_eq!(
        report.imports,
        ["StorPortInitialize", "StorPortNotification"]
    );
    assert_eq!(
        report.pdb,
        PdbIdentity {
            guid: Guid(GUID),
            age: 1
        }
    );
    assert_eq!(report.pdb_path, "fixture.pdb");
}

#[test]
fn machine_must_be_the_one_asked_for() {
    let i386 = Image {
        machine: 0x14c,
        ..Image::default()
    };
    fails_with(
        &i386,
        Violation::Machine {
            expected: Machine::Amd64,
            found: 0x14c,
        },
    );
    let arm64 = Image {
        machine: 0xaa64,
        ..Image::default()
    };
    assert_eq!(
        check(&arm64.build(), &pdb(GUID, 1), Machine::Arm64)
            .unwrap()
            .machine,
        Machine::Arm64
    );
    fails_with(
        &arm64,
        Violation::Machine {
            expected: Machine::Amd64,
            found: 0xaa64,
        },
    );
}

#[test]
fn subsystem_must_be_native() {
    fails_with(
        &Image {
            subsystem: 2,
            ..Image::default()
        },
        Violation::Subsystem(2),
    );
}

#[test]
fn entry_point_must_be_the_pdbs_driver_entry() {
    fails_with(
        &Image {
            entry_offset: 1,
            ..Image::default()
        },
        Violation::EntryPoint {
            entry: 0x1001,
            driver_entry: 0x1000,
        },
    );
    // DriverEntry at .text + 8 in the PDB, the entry point at .text.
    let moved = pdb_with_publics(GUID, 1, &[("memcpy", 1, 0), ("DriverEntry", 1, 8)]);
    assert_eq!(
        check(&Image::default().build(), &moved, Machine::Amd64),
        Err(vec![Violation::EntryPoint {
            entry: 0x1000,
            driver_entry: 0x1008,
        }])
    );
    // No DriverEntry among the publics, or one in a section the image does not have.
    for publics in [&[("memcpy", 1, 0)][..], &[("DriverEntry", 9, 0)]] {
        assert_eq!(
            check(
                &Image::default().build(),
                &pdb_with_publics(GUID, 1, publics),
                Machine::Amd64
            ),
            Err(vec![Violation::NoDriverEntry])
        );
    }
}

#[test]
fn a_dll_image_is_rejected() {
    fails_with(
        &Image {
            dll: true,
            ..Image::default()
        },
        Violation::DllImage {
            characteristics: 0x2022,
        },
    );
}

#[test]
fn an_export_directory_is_rejected_naming_the_image_and_its_exports() {
    let image = Image {
        exports: true,
        ..Image::default()
    };
    fails_with(
        &image,
        Violation::Exports {
            name: "fixture.dll".into(),
            functions: vec!["DriverEntry".into(), "memcpy".into()],
        },
    );
    let message = run(&image).unwrap_err()[0].to_string();
    assert!(message.starts_with("rule exports: "), "{message}");
    assert!(message.contains("fixture.dll"), "{message}");
}

#[test]
fn each_required_dll_characteristic_is_enforced() {
    for flag in [0x0040, 0x0080, 0x0100] {
        let found = 0x01e0 & !flag;
        fails_with(
            &Image {
                dll_characteristics: found,
                ..Image::default()
            },
            Violation::DllCharacteristics {
                found,
                missing: flag,
            },
        );
    }
}

#[test]
fn imports_from_outside_storport_are_rejected() {
    let mut image = Image::default();
    image
        .imports
        .push(("ntoskrnl.exe", vec![Imported::Name("KeBugCheckEx")]));
    fails_with(
        &image,
        Violation::ForeignImport {
            dll: "ntoskrnl.exe".into(),
            function: "KeBugCheckEx".into(),
        },
    );
}

#[test]
fn storport_dll_name_is_matched_without_case() {
    let image = Image {
        imports: vec![("STORPORT.SYS", vec![Imported::Name("StorPortInitialize")])],
        ..Image::default()
    };
    assert_eq!(run(&image).unwrap().imports, ["StorPortInitialize"]);
}

#[test]
fn storport_imports_must_be_real_exports() {
    let mut image = Image::default();
    image.imports[0]
        .1
        .push(Imported::Name("StorPortAllocatePool"));
    fails_with(
        &image,
        Violation::UnknownStorportImport("StorPortAllocatePool".into()),
    );
}

#[test]
fn ordinal_and_delay_imports_are_rejected() {
    let mut image = Image::default();
    image.imports[0].1.push(Imported::Ordinal(7));
    fails_with(
        &image,
        Violation::OrdinalImport {
            dll: "storport.sys".into(),
            ordinal: 7,
        },
    );
    fails_with(
        &Image {
            delay_imports: true,
            ..Image::default()
        },
        Violation::DelayImports,
    );
}

#[test]
fn a_tls_directory_is_rejected() {
    fails_with(
        &Image {
            tls: true,
            ..Image::default()
        },
        Violation::Tls,
    );
}

#[test]
fn base_relocations_are_required() {
    fails_with(
        &Image {
            relocations: false,
            ..Image::default()
        },
        Violation::NoRelocations,
    );
}

#[test]
fn writable_executable_sections_are_rejected() {
    fails_with(
        &Image {
            writable_text: true,
            ..Image::default()
        },
        Violation::WritableExecutable(".text".into()),
    );
}

#[test]
fn avx_or_x87_code_is_rejected_on_x64_only() {
    // push rbx; vmovdqu ymm0, [rcx]; pop rbx; ret
    let avx = vec![0x53, 0xC5, 0xFE, 0x6F, 0x01, 0x5B, 0xC3];
    fails_with(
        &Image {
            text: avx.clone(),
            ..Image::default()
        },
        Violation::ExtendedState {
            rva: 0x1001,
            instruction: "VEX_Vmovdqu_ymm_ymmm256".into(),
            state: "AVX (VEX/XOP)",
        },
    );
    // fld qword ptr [rcx]; ret
    let violations = run(&Image {
        text: vec![0xDD, 0x01, 0xC3],
        ..Image::default()
    })
    .unwrap_err();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].rule(), "instructions");
    // The same bytes in an ARM64 image are not x86 instructions.
    let arm64 = Image {
        machine: 0xAA64,
        text: avx,
        ..Image::default()
    };
    assert!(check(&arm64.build(), &pdb(GUID, 1), Machine::Arm64).is_ok());
}

#[test]
fn a_wrong_checksum_is_rejected_and_a_zero_one_can_be_stamped() {
    let mut bytes = Image::default().build();
    let stored = stored_checksum(&bytes).unwrap();
    // A byte in .text's padding: the image still parses, only the checksum changes.
    bytes[0x300] ^= 0x55;
    let computed = compute_checksum(&bytes).unwrap();
    assert_ne!(stored, computed);
    assert_eq!(
        check(&bytes, &pdb(GUID, 1), Machine::Amd64),
        Err(vec![Violation::Checksum { stored, computed }])
    );

    let mut zero = Image {
        zero_checksum: true,
        ..Image::default()
    }
    .build();
    let computed = compute_checksum(&zero).unwrap();
    assert_eq!(
        check(&zero, &pdb(GUID, 1), Machine::Amd64),
        Err(vec![Violation::Checksum {
            stored: 0,
            computed
        }])
    );
    assert_eq!(stamp_checksum(&mut zero), Ok(Stamp::Written(computed)));
    assert_eq!(stamp_checksum(&mut zero), Ok(Stamp::AlreadySet(computed)));
    assert!(check(&zero, &pdb(GUID, 1), Machine::Amd64).is_ok());
}

#[test]
fn the_checksum_excludes_its_own_field_and_adds_the_length() {
    // 0x40 + 88 = 0x98 is the checksum field for e_lfanew = 0x40.
    let mut bytes = vec![0_u8; 0x100];
    bytes[0x3c] = 0x40;
    bytes[0x98..0x9c].copy_from_slice(&[0xff; 4]);
    bytes[0x10] = 0x34;
    bytes[0x11] = 0x12;
    // Words: 0x0040 (e_lfanew) + 0x1234; the field's 0xffff words are skipped.
    assert_eq!(compute_checksum(&bytes), Ok(0x0040 + 0x1234 + 0x100));
    // End-around carry makes 0xffff a second zero: adding it changes nothing.
    bytes[0x20] = 0xff;
    bytes[0x21] = 0xff;
    assert_eq!(compute_checksum(&bytes), Ok(0x0040 + 0x1234 + 0x100));
    assert_eq!(
        compute_checksum(&bytes[..0x90]),
        Err(ChecksumError::Truncated { len: 0x90 })
    );
}

#[test]
fn the_pdb_must_exist_be_readable_and_match() {
    fails_with(
        &Image {
            codeview: None,
            ..Image::default()
        },
        Violation::NoCodeView,
    );
    let other_guid = *b"another-guid-16b";
    for (guid, age) in [(other_guid, 1), (GUID, 2)] {
        assert_eq!(
            check(&Image::default().build(), &pdb(guid, age), Machine::Amd64),
            Err(vec![Violation::PdbMismatch {
                image: PdbIdentity {
                    guid: Guid(GUID),
                    age: 1
                },
                pdb: PdbIdentity {
                    guid: Guid(guid),
                    age
                },
            }])
        );
    }
    assert_eq!(
        check(&Image::default().build(), b"not a pdb", Machine::Amd64),
        Err(vec![Violation::Pdb(PdbError::NotMsf)])
    );
}

#[test]
fn several_broken_rules_are_all_reported_in_table_order() {
    let image = Image {
        subsystem: 3,
        tls: true,
        relocations: false,
        ..Image::default()
    };
    let rules: Vec<_> = run(&image)
        .unwrap_err()
        .iter()
        .map(Violation::rule)
        .collect();
    assert_eq!(rules, ["subsystem", "tls", "relocations"]);
}

/// The version resource of a passing image: 1.2.3.0, `rvscsi.sys`.
fn version_resource(version: [u16; 4], strings: &[(&str, &str)]) -> Vec<u8> {
    VersionInfo::driver(FileVersion(version), strings).encode()
}

const GOOD_STRINGS: &[(&str, &str)] = &[
    ("FileVersion", "1.2.3.0"),
    ("ProductVersion", "1.2.3.0"),
    ("OriginalFilename", "rvscsi.sys"),
];

fn check_version(image: &Image) -> Result<VersionInfo, Vec<Violation>> {
    check_version_resource(&image.build(), "rvscsi.sys", FileVersion([1, 2, 3, 0]))
}

#[test]
fn a_version_resource_with_the_expected_fields_passes() {
    let image = Image {
        version_resource: Some(version_resource([1, 2, 3, 0], GOOD_STRINGS)),
        ..Image::default()
    };
    let info = check_version(&image).unwrap();
    assert_eq!(info.string("OriginalFilename"), Some("rvscsi.sys"));
    // The resource directory does not disturb the other rules.
    run(&image).unwrap();
}

#[test]
fn a_missing_version_resource_is_reported() {
    assert_eq!(
        check_version(&Image::default()),
        Err(vec![Violation::NoVersionResource])
    );
}

#[test]
fn each_wrong_version_field_is_reported() {
    let wrong_version = Image {
        version_resource: Some(version_resource([1, 2, 4, 0], GOOD_STRINGS)),
        ..Image::default()
    };
    let rules: Vec<&str> = check_version(&wrong_version)
        .unwrap_err()
        .iter()
        .map(|v| match v {
            Violation::VersionField { field, .. } => *field,
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(rules, ["dwFileVersion", "dwProductVersion"]);
    let wrong_name = Image {
        version_resource: Some(version_resource(
            [1, 2, 3, 0],
            &[
                ("FileVersion", "1.2.3.0"),
                ("ProductVersion", "1.2.3"),
                ("OriginalFilename", "rvscsi.dll"),
            ],
        )),
        ..Image::default()
    };
    assert_eq!(
        check_version(&wrong_name),
        Err(vec![
            Violation::VersionField {
                field: "ProductVersion",
                found: Some("1.2.3".into()),
                expected: "1.2.3.0".into()
            },
            Violation::VersionField {
                field: "OriginalFilename",
                found: Some("rvscsi.dll".into()),
                expected: "rvscsi.sys".into()
            },
        ])
    );
    let no_name = Image {
        version_resource: Some(version_resource([1, 2, 3, 0], &GOOD_STRINGS[..2])),
        ..Image::default()
    };
    assert!(
        check_version(&no_name).unwrap_err()[0]
            .to_string()
            .contains("has no OriginalFilename")
    );
}

#[test]
fn an_unreadable_version_resource_is_reported() {
    let mut garbage = version_resource([1, 2, 3, 0], GOOD_STRINGS);
    garbage[40] ^= 0xff; // the VS_FIXEDFILEINFO signature
    let image = Image {
        version_resource: Some(garbage),
        ..Image::default()
    };
    let violations = check_version(&image).unwrap_err();
    assert!(
        matches!(&violations[..], [Violation::BadVersionResource(why)] if why.contains("signature"))
    );
    assert!(violations[0].to_string().starts_with("rule version: "));
}

const NATVIS: &str = r#"<?xml version="1.0"?>
<!-- (not::a::Type) in a comment is not a reference -->
<AutoVisualizer>
  <Type Name="rvscsi::trace::TraceRing">
    <DisplayString>{(rvscsi::trace::ResetCause)next.v.value} (a note)</DisplayString>
  </Type>
  <Type Name="rvscsi::platform::Carved&lt;*&gt;"/>
</AutoVisualizer>
"#;

const NATVIS_STREAM: &str = "/src/files/\\tmp\\rustcX\\rvscsi-0.natvis";

/// A PDB: streams 0 (old directory), 1 (info, naming `named` streams), 2 (TPI of `types`),
/// then `extra` streams from index 3 on.
fn natvis_pdb(named: &[(&str, u32)], types: &[synth::TypeRecord<'_>], extra: &[&str]) -> Vec<u8> {
    let mut streams = vec![
        Vec::new(),
        synth::info_stream(named),
        synth::tpi_stream(types),
    ];
    streams.extend(extra.iter().map(|text| text.as_bytes().to_vec()));
    synth::msf(&streams)
}

const ALL_TYPES: &[synth::TypeRecord<'static>] = &[
    (0x1505, "rvscsi::trace::TraceRing", false, 8208),
    (0x1507, "rvscsi::trace::ResetCause", false, 0),
    (
        0x1505,
        "rvscsi::platform::Carved<rvscsi::adapter::QueueCounters>",
        false,
        16,
    ),
    (0x1506, "a::big::Union", false, 0x1_0000),
];

#[test]
fn natvis_references_are_type_names_and_casts_outside_comments() {
    assert_eq!(
        natvis_type_references(NATVIS),
        [
            "rvscsi::trace::TraceRing",
            "rvscsi::platform::Carved<*>",
            "rvscsi::trace::ResetCause"
        ]
    );
}

#[test]
fn an_embedded_natvis_whose_types_are_all_defined_passes() {
    let pdb = natvis_pdb(
        &[("/names", 4), (NATVIS_STREAM, 3)],
        ALL_TYPES,
        &[NATVIS, ""],
    );
    assert_eq!(
        pdb_named_streams(&pdb).unwrap(),
        [("/names".to_owned(), 4), (NATVIS_STREAM.to_owned(), 3)]
    );
    let defined = pdb_type_names(&pdb).unwrap();
    assert!(defined.contains("a::big::Union"), "{defined:?}");
    let report = check_natvis(&pdb, NATVIS).unwrap();
    assert_eq!(report.stream, NATVIS_STREAM);
    assert_eq!(report.types.len(), 3);
}

#[test]
fn a_missing_or_different_natvis_is_reported() {
    let none = natvis_pdb(&[("/names", 3)], ALL_TYPES, &[""]);
    assert_eq!(
        check_natvis(&none, NATVIS),
        Err(vec![Violation::NatvisMissing { embedded: vec![] }])
    );
    // A natvis stream with other text (an older build's) is not the file's.
    let stale = natvis_pdb(&[(NATVIS_STREAM, 3)], ALL_TYPES, &["<AutoVisualizer/>"]);
    let violations = check_natvis(&stale, NATVIS).unwrap_err();
    assert_eq!(
        violations,
        [Violation::NatvisMissing {
            embedded: vec![NATVIS_STREAM.to_owned()]
        }]
    );
    assert!(violations[0].to_string().starts_with("rule natvis: "));
    // A named stream that is not a natvis file is not taken for one.
    let other = natvis_pdb(&[("/src/files/x.rs", 3)], ALL_TYPES, &[NATVIS]);
    assert!(matches!(
        &check_natvis(&other, NATVIS).unwrap_err()[..],
        [Violation::NatvisMissing { .. }]
    ));
}

#[test]
fn each_type_the_natvis_names_must_be_defined_not_only_declared() {
    let types: &[synth::TypeRecord<'_>] = &[
        // Declared only: a forward reference is not a definition.
        (0x1505, "rvscsi::trace::TraceRing", true, 0),
        (0x1507, "rvscsi::trace::ResetCause", false, 0),
        // Carved<*> needs some Carved<...>; a look-alike prefix does not count.
        (0x1505, "rvscsi::platform::CarvedX", false, 16),
    ];
    let pdb = natvis_pdb(&[(NATVIS_STREAM, 3)], types, &[NATVIS]);
    assert_eq!(
        check_natvis(&pdb, NATVIS),
        Err(vec![
            Violation::NatvisType("rvscsi::trace::TraceRing".into()),
            Violation::NatvisType("rvscsi::platform::Carved<*>".into()),
        ])
    );
}

#[test]
fn the_miniport_natvis_names_the_ring_the_adapter_and_the_reset_cause() {
    let natvis = include_str!("../../../miniport/rvscsi.natvis");
    let names = natvis_type_references(natvis);
    for expected in [
        "rvscsi::trace::TraceRing",
        "rvscsi::trace::TraceRecord",
        "rvscsi::adapter::Adapter",
        "rvscsi::trace::ResetCause",
        "rvscsi::storport::queue_locks::InterruptMode",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected}: {names:?}"
        );
    }
}

#[test]
fn broken_named_stream_maps_and_type_streams_are_errors_not_panics() {
    let pdb = natvis_pdb(
        &[("/names", 4), (NATVIS_STREAM, 3)],
        ALL_TYPES,
        &[NATVIS, ""],
    );
    let info_block = 512 * 5; // block 4 holds the directory; stream 1 starts at block 5
    for offset in 28..80 {
        let mut broken = pdb.clone();
        broken[info_block + offset] = 0xff;
        let _ = pdb_named_streams(&broken);
        let _ = check_natvis(&broken, NATVIS);
    }
    let tpi_block = 512 * 6;
    for offset in 0..120 {
        let mut broken = pdb.clone();
        broken[tpi_block + offset] ^= 0x80;
        let _ = pdb_type_names(&broken);
    }
}

/// A binary MOF resource header over a two-byte DS stream.
fn mof_resource() -> Vec<u8> {
    let mut data = b"FOMB".to_vec();
    for word in [1_u32, 4, 100] {
        data.extend_from_slice(&word.to_le_bytes());
    }
    data.extend_from_slice(b"DS\x00\x01");
    data
}

#[test]
fn the_binary_mof_resource_is_found_by_name_without_case() {
    let image = Image {
        version_resource: Some(version_resource([1, 2, 3, 0], GOOD_STRINGS)),
        mof_resource: Some(mof_resource()),
        ..Image::default()
    };
    let bytes = image.build();
    assert_eq!(check_mof_resource(&bytes, "MofResource"), Ok(100));
    // The version resource is still found beside it.
    check_version(&image).unwrap();
    assert_eq!(
        check_mof_resource(&bytes, "OtherName"),
        Err(vec![Violation::NoMofResource("OtherName".into())])
    );
    assert_eq!(
        check_mof_resource(&Image::default().build(), "MofResource"),
        Err(vec![Violation::NoMofResource("MofResource".into())])
    );
}

#[test]
fn a_binary_mof_with_a_broken_header_is_reported() {
    let mut wrong_size = mof_resource();
    wrong_size[8] = 5;
    let mut not_fomb = mof_resource();
    not_fomb[0] = b'X';
    let mut no_ds = mof_resource();
    no_ds[16] = b'X';
    for (data, complaint) in [
        (wrong_size, "compressed bytes"),
        (not_fomb, "FOMB"),
        (no_ds, "DS-compressed"),
        (mof_resource()[..12].to_vec(), "truncated"),
    ] {
        let image = Image {
            mof_resource: Some(data),
            ..Image::default()
        };
        let violations = check_mof_resource(&image.build(), "MofResource").unwrap_err();
        assert!(
            matches!(&violations[..], [Violation::BadMofResource(why)] if why.contains(complaint)),
            "{violations:?}"
        );
        assert!(violations[0].to_string().starts_with("rule mof: "));
    }
}

#[test]
fn every_message_names_its_rule() {
    let violation = Violation::ForeignImport {
        dll: "hal.dll".into(),
        function: "X".into(),
    };
    assert!(violation.to_string().starts_with("rule imports: "));
    assert!(Violation::Tls.to_string().starts_with("rule tls: "));
}

#[test]
fn a_non_pe_file_is_malformed_not_a_panic() {
    for bytes in [&b""[..], b"MZ", &[0_u8; 64]] {
        let violations = check(bytes, &pdb(GUID, 1), Machine::Amd64).unwrap_err();
        assert!(
            matches!(violations.as_slice(), [Violation::Malformed(_)]),
            "{violations:?}"
        );
    }
}

#[test]
fn pdb_errors_name_the_broken_structure() {
    let good = pdb(GUID, 3);
    assert_eq!(
        pdb_identity(&good),
        Ok(PdbIdentity {
            guid: Guid(GUID),
            age: 3
        })
    );
    let mut bad_block = good.clone();
    bad_block[32..36].copy_from_slice(&100_u32.to_le_bytes());
    assert_eq!(pdb_identity(&bad_block), Err(PdbError::BadBlockSize(100)));
    assert_eq!(
        pdb_identity(&good[..6 * 512]),
        Err(PdbError::BlockOutOfRange(6))
    );
    let mut one_stream = good.clone();
    one_stream[4 * 512..4 * 512 + 4].copy_from_slice(&1_u32.to_le_bytes());
    assert_eq!(
        pdb_identity(&one_stream),
        Err(PdbError::NoInfoStream { streams: 1 })
    );
    let mut short_info = good.clone();
    short_info[4 * 512 + 8..4 * 512 + 12].copy_from_slice(&20_u32.to_le_bytes());
    assert_eq!(
        pdb_identity(&short_info),
        Err(PdbError::InfoStreamTooShort(20))
    );
    let mut nil_info = good;
    nil_info[4 * 512 + 8..4 * 512 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        pdb_identity(&nil_info),
        Err(PdbError::InfoStreamTooShort(0))
    );
}

#[test]
fn guids_print_in_registry_form() {
    let guid = Guid([
        0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ]);
    assert_eq!(guid.to_string(), "{00112233-4455-6677-8899-AABBCCDDEEFF}");
}

proptest! {
    #[test]
    fn corrupting_any_image_byte_never_panics(offset in 0_usize..4096, value: u8) {
        let mut bytes = Image::default().build();
        if let Some(byte) = bytes.get_mut(offset) {
            *byte = value;
        }
        let _ = check(&bytes, &pdb(GUID, 1), Machine::Amd64);
    }

    #[test]
    fn corrupting_any_byte_of_an_image_with_resources_never_panics(offset in 0_usize..4096, value: u8) {
        let mut bytes = Image {
            version_resource: Some(version_resource([1, 2, 3, 0], GOOD_STRINGS)),
            mof_resource: Some(mof_resource()),
            ..Image::default()
        }
        .build();
        if let Some(byte) = bytes.get_mut(offset) {
            *byte = value;
        }
        let _ = check_version_resource(&bytes, "rvscsi.sys", FileVersion([1, 2, 3, 0]));
        let _ = check_mof_resource(&bytes, "MofResource");
    }

    #[test]
    fn truncating_an_image_or_pdb_never_panics(image_len in 0_usize..4096, pdb_len in 0_usize..4096) {
        let bytes = Image::default().build();
        let pdb_bytes = pdb(GUID, 1);
        let _ = check(
            &bytes[..image_len.min(bytes.len())],
            &pdb_bytes[..pdb_len.min(pdb_bytes.len())],
            Machine::Amd64,
        );
    }

    #[test]
    fn corrupting_any_pdb_word_never_panics(word in 0_usize..(9 * 128), value: u32) {
        let mut bytes = pdb(GUID, 1);
        bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_le_bytes());
        let _ = pdb_identity(&bytes);
        let _ = pdb::pdb_public_symbol(&bytes, "DriverEntry");
    }

    #[test]
    fn the_checksum_equals_a_folded_total(mut bytes in proptest::collection::vec(any::<u8>(), 0x100..0x400)) {
        bytes[0x3c..0x40].copy_from_slice(&0x40_u32.to_le_bytes());
        // Reference: sum every word except the field in 64 bits, fold once at the end.
        let mut total: u64 = 0;
        for (index, word) in bytes.chunks(2).enumerate() {
            if index * 2 == 0x98 || index * 2 == 0x9a {
                continue;
            }
            let low = u64::from(word[0]);
            let high = word.get(1).map_or(0, |&b| u64::from(b));
            total += low | (high << 8);
        }
        while total > 0xffff {
            total = (total & 0xffff) + (total >> 16);
        }
        prop_assert_eq!(compute_checksum(&bytes), Ok(total as u32 + bytes.len() as u32));
    }
}
