//! The dispatcher, minor function by minor function, against a test provider: byte-exact
//! replies (expected bytes written from the wmistr.h field offsets, not by the encoder), every
//! rejection path, and the sizes reported when the buffer is too small.

use rvscsi_wmi::dispatch::{
    Control, GuidRegistration, InstanceNames, MethodIo, Provider, RegInfo, Reply, dispatch,
    stamp_reply_time,
};
use rvscsi_wmi::encode::Encoder;
use rvscsi_wmi::guid::Guid;
use rvscsi_wmi::status::{WmiError, WmiStatus, WnodeField};
use rvscsi_wmi::wnode::{
    WNODE_FLAG_FIXED_INSTANCE_SIZE, WNODE_FLAG_STATIC_INSTANCE_NAMES, WNODE_FLAG_TOO_SMALL,
    WnodeHeader, WnodeMethodItem, WnodeSingleInstance, WnodeSingleItem,
};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

const IRP_MN_QUERY_ALL_DATA: u8 = 0;
const IRP_MN_QUERY_SINGLE_INSTANCE: u8 = 1;
const IRP_MN_CHANGE_SINGLE_INSTANCE: u8 = 2;
const IRP_MN_CHANGE_SINGLE_ITEM: u8 = 3;
const IRP_MN_ENABLE_EVENTS: u8 = 4;
const IRP_MN_DISABLE_EVENTS: u8 = 5;
const IRP_MN_ENABLE_COLLECTION: u8 = 6;
const IRP_MN_DISABLE_COLLECTION: u8 = 7;
const IRP_MN_REGINFO: u8 = 8;
const IRP_MN_EXECUTE_METHOD: u8 = 9;
const IRP_MN_REGINFO_EX: u8 = 0x0B;

const FIXED: Guid = Guid::from_fields(0x1111_1111, 0x2222, 0x3333, [1, 2, 3, 4, 5, 6, 7, 8]);
const VARIABLE: Guid = Guid::from_fields(0xaaaa_0001, 0, 0, [0; 8]);
const NAMED: Guid = Guid::from_fields(0xaaaa_0002, 0, 0, [0; 8]);
const METHODS: Guid = Guid::from_fields(0xaaaa_0003, 0, 0, [0; 8]);
const EMPTY: Guid = Guid::from_fields(0xaaaa_0004, 0, 0, [0; 8]);
const UNKNOWN: Guid = Guid::from_fields(0xdead_beef, 0, 0, [0; 8]);

/// Little-endian helpers for writing expected bytes by hand.
fn put32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn get32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
}

/// A provider with one block of each shape.
#[derive(Default)]
struct TestProvider {
    table: Vec<GuidRegistration>,
    set_blocks: Vec<(usize, u32, Vec<u8>)>,
    set_items: Vec<(usize, u32, u32, Vec<u8>)>,
    controls: Vec<(usize, Control, bool)>,
    registry_path: Option<&'static str>,
}

impl TestProvider {
    fn new() -> Self {
        let row = |guid, instance_count, flags, instance_names| GuidRegistration {
            guid,
            instance_count,
            flags,
            instance_names,
        };
        Self {
            table: vec![
                row(FIXED, 3, 0, InstanceNames::Static),
                row(VARIABLE, 2, 0x1, InstanceNames::Static),
                row(NAMED, 2, 0, InstanceNames::Dynamic),
                row(METHODS, 1, 0, InstanceNames::Static),
                row(EMPTY, 0, 0, InstanceNames::Static),
            ],
            ..Self::default()
        }
    }
}

impl Provider for TestProvider {
    fn guids(&self) -> &[GuidRegistration] {
        &self.table
    }

    fn query_reginfo(&self) -> RegInfo<'_> {
        RegInfo {
            mof_resource_name: Some("Mof"),
            registry_path: self.registry_path,
        }
    }

    fn query_data_block(
        &mut self,
        guid_index: usize,
        instance: u32,
        out: &mut Encoder<'_>,
    ) -> Result<(), WmiError> {
        match guid_index {
            // 6 bytes: uint32 0xA0 + instance, uint16 0xBEEF.
            0 => {
                out.u32(0xA0 + instance);
                out.u16(0xBEEF);
            }
            // A string of instance + 1 'x' characters.
            1 => out.string(&"x".repeat(instance as usize + 1)),
            2 => out.u32(0x100 + instance),
            3 | 4 => {}
            5 => out.u32(0xC0 + instance),
            _ => unreachable!("the dispatcher checked the index"),
        }
        Ok(())
    }

    fn instance_name(
        &self,
        guid_index: usize,
        instance: u32,
        out: &mut Encoder<'_>,
    ) -> Result<(), WmiError> {
        assert_eq!(guid_index, 2);
        out.string(["Alpha", "Beta"][instance as usize]);
        Ok(())
    }

    fn set_data_block(&mut self, index: usize, instance: u32, data: &[u8]) -> Result<(), WmiError> {
        self.set_blocks.push((index, instance, data.to_vec()));
        Ok(())
    }

    fn set_data_item(
        &mut self,
        index: usize,
        instance: u32,
        item: u32,
        data: &[u8],
    ) -> Result<(), WmiError> {
        if item != 1 {
            return Err(WmiError::ItemIdNotFound(item));
        }
        self.set_items.push((index, instance, item, data.to_vec()));
        Ok(())
    }

    fn execute_method(
        &mut self,
        guid_index: usize,
        _: u32,
        io: &mut MethodIo<'_>,
    ) -> Result<(), WmiError> {
        assert_eq!(guid_index, 3);
        match io.method_id() {
            // Echo: uint32 x in; uint32 x + 1, uint64 x * 2 out (16 bytes).
            1 => {
                let input: U32 = io.read_input()?;
                let out = io.output();
                out.u32(input.get() + 1);
                out.u64(u64::from(input.get()) * 2);
            }
            // No input, no output.
            2 => {}
            other => return Err(WmiError::MethodNotFound(other)),
        }
        Ok(())
    }

    fn function_control(
        &mut self,
        index: usize,
        control: Control,
        enable: bool,
    ) -> Result<(), WmiError> {
        self.controls.push((index, control, enable));
        Ok(())
    }
}

/// A provider implementing only the required callbacks.
struct MinimalProvider([GuidRegistration; 1]);

impl MinimalProvider {
    fn new() -> Self {
        Self([GuidRegistration {
            guid: FIXED,
            instance_count: 1,
            flags: 0,
            instance_names: InstanceNames::Static,
        }])
    }
}

impl Provider for MinimalProvider {
    fn guids(&self) -> &[GuidRegistration] {
        &self.0
    }

    fn query_reginfo(&self) -> RegInfo<'_> {
        RegInfo::default()
    }

    fn query_data_block(
        &mut self,
        _: usize,
        _: u32,
        out: &mut Encoder<'_>,
    ) -> Result<(), WmiError> {
        out.u8(1);
        Ok(())
    }
}

fn header(guid: Guid, buffer_size: u32, flags: u32) -> WnodeHeader {
    WnodeHeader {
        buffer_size: U32::new(buffer_size),
        provider_id: U32::new(0x7777),
        historical_context: U64::new(0),
        timestamp: U64::new(0x0102_0304_0506_0708),
        guid,
        client_context: U32::new(0x55),
        flags: U32::new(flags),
    }
}

/// A `QUERY_ALL_DATA` request: a header at the start of `len` bytes of 0xCC.
fn all_data_request(guid: Guid, len: usize) -> Vec<u8> {
    let mut buffer = vec![0xCC; len];
    header(guid, 72.min(len as u32), 0x1)
        .write_to_prefix(&mut buffer)
        .unwrap();
    buffer
}

fn single_instance(guid: Guid, instance: u32, data_offset: u32, len: usize) -> Vec<u8> {
    let mut buffer = vec![0xCC; len];
    let request = WnodeSingleInstance {
        header: header(guid, len as u32, WNODE_FLAG_STATIC_INSTANCE_NAMES | 0x2),
        offset_instance_name: U32::new(0),
        instance_index: U32::new(instance),
        data_block_offset: U32::new(data_offset),
        size_data_block: U32::new(0),
    };
    request.write_to_prefix(&mut buffer).unwrap();
    buffer
}

fn method_request(method: u32, input: &[u8], len: usize) -> Vec<u8> {
    let mut buffer = vec![0xCC; len];
    let request = WnodeMethodItem {
        header: header(
            METHODS,
            (72 + input.len()) as u32,
            WNODE_FLAG_STATIC_INSTANCE_NAMES,
        ),
        offset_instance_name: U32::new(0),
        instance_index: U32::new(0),
        method_id: U32::new(method),
        data_block_offset: U32::new(72),
        size_data_block: U32::new(input.len() as u32),
    };
    request.write_to_prefix(&mut buffer).unwrap();
    buffer[72..72 + input.len()].copy_from_slice(input);
    buffer
}

fn ok(bytes: u32) -> Reply {
    Reply {
        status: WmiStatus::Success,
        bytes_returned: bytes,
        error: None,
    }
}

fn failed(error: WmiError) -> Reply {
    Reply {
        status: error.status(),
        bytes_returned: 0,
        error: Some(error),
    }
}

/// Checks a `WNODE_TOO_SMALL` reply field by field (wmistr.h: header, `SizeNeeded` at 48).
fn assert_too_small(reply: Reply, buffer: &[u8], needed: u32, request_flags: u32) {
    assert_eq!(
        reply,
        Reply {
            status: WmiStatus::Success,
            bytes_returned: 56,
            error: Some(WmiError::BufferTooSmall { needed })
        }
    );
    assert_eq!(get32(buffer, 0), 56, "BufferSize");
    assert_eq!(
        get32(buffer, 44),
        request_flags | WNODE_FLAG_TOO_SMALL,
        "Flags"
    );
    assert_eq!(get32(buffer, 48), needed, "SizeNeeded");
}

#[test]
fn reginfo_is_byte_exact() {
    let mut provider = TestProvider::new();
    provider.registry_path = Some("R\\P");
    let mut buffer = vec![0xCC; 256];
    let reply = dispatch(IRP_MN_REGINFO, &mut buffer, &mut provider);
    // 24-byte WMIREGINFO, 5 x 32-byte WMIREGGUID (184), "Mof" (2 + 6), "R\P" (2 + 6).
    assert_eq!(reply, ok(200));
    let mut expected = vec![0u8; 200];
    put32(&mut expected, 0, 200); // BufferSize
    put32(&mut expected, 4, 0); // NextWmiRegInfo
    put32(&mut expected, 8, 192); // RegistryPath
    put32(&mut expected, 12, 184); // MofResourceName
    put32(&mut expected, 16, 5); // GuidCount
    let rows = [
        (FIXED, 0, 3),
        (VARIABLE, 1, 2),
        (NAMED, 0, 2),
        (METHODS, 0, 1),
        (EMPTY, 0, 0),
    ];
    for (i, (guid, flags, count)) in rows.into_iter().enumerate() {
        let at = 24 + 32 * i;
        expected[at..at + 16].copy_from_slice(guid.as_bytes());
        put32(&mut expected, at + 16, flags);
        put32(&mut expected, at + 20, count);
        // InstanceInfo (ULONG_PTR) at +24 stays 0.
    }
    expected[184..192].copy_from_slice(&[6, 0, b'M', 0, b'o', 0, b'f', 0]);
    expected[192..200].copy_from_slice(&[6, 0, b'R', 0, b'\\', 0, b'P', 0]);
    assert_eq!(&buffer[..200], &expected[..]);
    assert_eq!(&buffer[200..], &[0xCC; 56], "nothing past the reply");
}

#[test]
fn reginfo_too_small_returns_the_size_as_a_ulong() {
    let mut provider = TestProvider::new();
    let mut buffer = vec![0xCC; 100];
    let reply = dispatch(IRP_MN_REGINFO, &mut buffer, &mut provider);
    assert_eq!(
        reply,
        Reply {
            status: WmiStatus::BufferTooSmall,
            bytes_returned: 4,
            error: Some(WmiError::BufferTooSmall { needed: 192 })
        }
    );
    assert_eq!(get32(&buffer, 0), 192);
    assert_eq!(&buffer[4..], &[0xCC; 96][..]);
    // Room for the whole registration: exactly 192 bytes.
    let mut exact = vec![0; 192];
    assert_eq!(dispatch(IRP_MN_REGINFO, &mut exact, &mut provider), ok(192));
    // Not even room for the ULONG.
    let mut tiny = [0xCC; 3];
    let reply = dispatch(IRP_MN_REGINFO, &mut tiny, &mut provider);
    assert_eq!(reply.status, WmiStatus::BufferTooSmall);
    assert_eq!(reply.bytes_returned, 0);
    assert_eq!(tiny, [0xCC; 3]);
}

#[test]
fn data_replies_are_stamped_with_the_system_time_and_the_rest_are_not() {
    let now = 0x01DB_0000_1234_5678_u64;
    let timestamp = |buffer: &[u8]| u64::from_le_bytes(buffer[16..24].try_into().unwrap());
    let mut provider = TestProvider::new();
    // QUERY_ALL_DATA, QUERY_SINGLE_INSTANCE and EXECUTE_METHOD answered in full: stamped.
    let mut all = all_data_request(FIXED, 128);
    let reply = dispatch(IRP_MN_QUERY_ALL_DATA, &mut all, &mut provider);
    assert!(stamp_reply_time(
        IRP_MN_QUERY_ALL_DATA,
        &mut all,
        &reply,
        now
    ));
    assert_eq!(timestamp(&all), now);
    let mut single = single_instance(FIXED, 1, 64, 96);
    let reply = dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut single, &mut provider);
    assert!(stamp_reply_time(
        IRP_MN_QUERY_SINGLE_INSTANCE,
        &mut single,
        &reply,
        now
    ));
    assert_eq!(timestamp(&single), now);
    let mut method = method_request(1, &41u32.to_le_bytes(), 128);
    let reply = dispatch(IRP_MN_EXECUTE_METHOD, &mut method, &mut provider);
    assert_eq!(reply.status, WmiStatus::Success);
    assert!(stamp_reply_time(
        IRP_MN_EXECUTE_METHOD,
        &mut method,
        &reply,
        now
    ));
    assert_eq!(timestamp(&method), now);
    // A WNODE_TOO_SMALL, a failure and a registration keep what they had.
    let request_time = 0x0102_0304_0506_0708;
    let mut small = all_data_request(FIXED, 60);
    let reply = dispatch(IRP_MN_QUERY_ALL_DATA, &mut small, &mut provider);
    assert!(!stamp_reply_time(
        IRP_MN_QUERY_ALL_DATA,
        &mut small,
        &reply,
        now
    ));
    assert_eq!(timestamp(&small), request_time);
    let mut unknown = all_data_request(UNKNOWN, 128);
    let reply = dispatch(IRP_MN_QUERY_ALL_DATA, &mut unknown, &mut provider);
    assert!(!stamp_reply_time(
        IRP_MN_QUERY_ALL_DATA,
        &mut unknown,
        &reply,
        now
    ));
    assert_eq!(timestamp(&unknown), request_time);
    let mut registration = vec![0; 256];
    let reply = dispatch(IRP_MN_REGINFO_EX, &mut registration, &mut provider);
    let before = registration.clone();
    assert!(!stamp_reply_time(
        IRP_MN_REGINFO_EX,
        &mut registration,
        &reply,
        now
    ));
    assert_eq!(registration, before);
}

#[test]
fn reginfo_ex_answers_as_reginfo() {
    // Windows XP and later register with IRP_MN_REGINFO_EX: the same WMIREGINFO, byte for
    // byte, and the same size-as-a-ULONG answer when the buffer is too small.
    let mut provider = TestProvider::new();
    provider.registry_path = Some("R\\P");
    for len in [256, 100, 3] {
        let mut classic = vec![0xCC; len];
        let mut extended = vec![0xCC; len];
        let classic_reply = dispatch(IRP_MN_REGINFO, &mut classic, &mut provider);
        let extended_reply = dispatch(IRP_MN_REGINFO_EX, &mut extended, &mut provider);
        assert_eq!(extended_reply, classic_reply, "{len}-byte buffer");
        assert_eq!(extended, classic, "{len}-byte buffer");
    }
    let mut buffer = vec![0; 256];
    assert_eq!(
        dispatch(IRP_MN_REGINFO_EX, &mut buffer, &mut provider),
        ok(200)
    );
    assert_eq!(get32(&buffer, 16), 5, "GuidCount");
}

#[test]
fn query_all_data_fixed_instance_size_is_byte_exact() {
    let mut provider = TestProvider::new();
    let mut buffer = all_data_request(FIXED, 128);
    let reply = dispatch(IRP_MN_QUERY_ALL_DATA, &mut buffer, &mut provider);
    // FixedInstanceSize at 60, data from 64, three 6-byte instances on an 8-byte stride.
    assert_eq!(reply, ok(86));
    let mut expected = vec![0u8; 86];
    expected[..48]
        .copy_from_slice(header(FIXED, 86, 0x1 | WNODE_FLAG_FIXED_INSTANCE_SIZE).as_bytes());
    put32(&mut expected, 48, 64); // DataBlockOffset
    put32(&mut expected, 52, 3); // InstanceCount
    put32(&mut expected, 56, 0); // OffsetInstanceNameOffsets
    put32(&mut expected, 60, 6); // FixedInstanceSize
    for i in 0..3 {
        let at = 64 + 8 * i;
        put32(&mut expected, at, 0xA0 + i as u32);
        expected[at + 4..at + 6].copy_from_slice(&0xBEEFu16.to_le_bytes());
    }
    assert_eq!(&buffer[..86], &expected[..]);
}

#[test]
fn query_all_data_variable_instance_sizes_is_byte_exact() {
    let mut provider = TestProvider::new();
    let mut buffer = all_data_request(VARIABLE, 128);
    let reply = dispatch(IRP_MN_QUERY_ALL_DATA, &mut buffer, &mut provider);
    // OffsetInstanceDataAndLength[2] at 60..76; data 8-aligned from 80: "x" (4 bytes) at 80,
    // "xx" (6 bytes) at 88.
    assert_eq!(reply, ok(94));
    let mut expected = vec![0u8; 94];
    expected[..48].copy_from_slice(header(VARIABLE, 94, 0x1).as_bytes());
    put32(&mut expected, 48, 80);
    put32(&mut expected, 52, 2);
    put32(&mut expected, 60, 80);
    put32(&mut expected, 64, 4);
    put32(&mut expected, 68, 88);
    put32(&mut expected, 72, 6);
    expected[80..84].copy_from_slice(&[2, 0, b'x', 0]);
    expected[88..94].copy_from_slice(&[4, 0, b'x', 0, b'x', 0]);
    assert_eq!(&buffer[..94], &expected[..]);
}

#[test]
fn query_all_data_with_dynamic_instance_names() {
    let mut provider = TestProvider::new();
    let mut buffer = all_data_request(NAMED, 160);
    let reply = dispatch(IRP_MN_QUERY_ALL_DATA, &mut buffer, &mut provider);
    // Table 60..76, data at 80 and 88 (4 bytes each), name offsets (ULONG[2]) at 92,
    // "Alpha" at 100, "Beta" at 112; end 122.
    assert_eq!(reply, ok(122));
    let mut expected = vec![0u8; 122];
    expected[..48].copy_from_slice(header(NAMED, 122, 0x1).as_bytes());
    put32(&mut expected, 48, 80);
    put32(&mut expected, 52, 2);
    put32(&mut expected, 56, 92);
    for (i, at) in [80usize, 88].into_iter().enumerate() {
        put32(&mut expected, 60 + 8 * i, at as u32);
        put32(&mut expected, 64 + 8 * i, 4);
        put32(&mut expected, at, 0x100 + i as u32);
    }
    put32(&mut expected, 92, 100);
    put32(&mut expected, 96, 112);
    expected[100..112].copy_from_slice(&[10, 0, b'A', 0, b'l', 0, b'p', 0, b'h', 0, b'a', 0]);
    expected[112..122].copy_from_slice(&[8, 0, b'B', 0, b'e', 0, b't', 0, b'a', 0]);
    assert_eq!(&buffer[..122], &expected[..]);
}

#[test]
fn query_all_data_with_no_instances_is_a_minimal_wnode() {
    let mut provider = TestProvider::new();
    // 64 bytes: sizeof(WNODE_ALL_DATA) as Microsoft's wmistr.h declares it (open-ended
    // table), the buffer Windows sends as enough for a block with no instances.
    let mut buffer = all_data_request(EMPTY, 64);
    assert_eq!(
        dispatch(IRP_MN_QUERY_ALL_DATA, &mut buffer, &mut provider),
        ok(64)
    );
    assert_eq!(get32(&buffer, 0), 64);
    assert_eq!(
        get32(&buffer, 44) & (WNODE_FLAG_FIXED_INSTANCE_SIZE | WNODE_FLAG_TOO_SMALL),
        WNODE_FLAG_FIXED_INSTANCE_SIZE
    );
    assert_eq!(get32(&buffer, 52), 0);
    assert_eq!(get32(&buffer, 60), 0);
}

#[test]
fn query_all_data_reply_of_one_small_instance_is_not_padded_to_72() {
    // One 4-byte instance in the FixedInstanceSize form ends at 68: a 68-byte reply, where a
    // 72-byte minimum (mingw-w64's sizeof) would have answered WNODE_TOO_SMALL.
    let guid = Guid::from_fields(0xaaaa_0005, 0, 0, [0; 8]);
    let mut provider = TestProvider::new();
    provider.table.push(GuidRegistration {
        guid,
        instance_count: 1,
        flags: 0,
        instance_names: InstanceNames::Static,
    });
    // The reply is laid out with the offset table first (data from 72), so that is the size
    // the first answer asks for; the compacted reply is 68 bytes.
    let mut buffer = all_data_request(guid, 76);
    assert_eq!(
        dispatch(IRP_MN_QUERY_ALL_DATA, &mut buffer, &mut provider),
        ok(68)
    );
    assert_eq!(get32(&buffer, 0), 68);
    assert_eq!(get32(&buffer, 48), 64, "DataBlockOffset");
    assert_eq!(get32(&buffer, 60), 4, "FixedInstanceSize");
    assert_eq!(get32(&buffer, 64), 0xC0);
}

#[test]
fn query_all_data_too_small_reports_a_size_that_then_works() {
    let mut provider = TestProvider::new();
    // The variable layout is built first: table to 84, data from 88, last instance ends 110.
    let mut buffer = all_data_request(FIXED, 86);
    let reply = dispatch(IRP_MN_QUERY_ALL_DATA, &mut buffer, &mut provider);
    assert_too_small(reply, &buffer, 110, 0x1);
    let mut retry = all_data_request(FIXED, 110);
    assert_eq!(
        dispatch(IRP_MN_QUERY_ALL_DATA, &mut retry, &mut provider),
        ok(86)
    );
    // Smaller than a WNODE_TOO_SMALL: fails outright.
    let mut tiny = all_data_request(FIXED, 55);
    let reply = dispatch(IRP_MN_QUERY_ALL_DATA, &mut tiny, &mut provider);
    assert_eq!(reply, failed(WmiError::BufferTooSmall { needed: 110 }));
}

#[test]
fn query_all_data_rejections() {
    let mut provider = TestProvider::new();
    let mut buffer = all_data_request(UNKNOWN, 128);
    assert_eq!(
        dispatch(IRP_MN_QUERY_ALL_DATA, &mut buffer, &mut provider),
        failed(WmiError::GuidNotFound(UNKNOWN))
    );
    let mut short = vec![0u8; 47];
    assert_eq!(
        dispatch(IRP_MN_QUERY_ALL_DATA, &mut short, &mut provider),
        failed(WmiError::RequestTooShort {
            needed: 48,
            available: 47
        })
    );
    // BufferSize claims more than the buffer holds.
    let mut lying = all_data_request(FIXED, 128);
    put32(&mut lying, 0, 129);
    assert_eq!(
        dispatch(IRP_MN_QUERY_ALL_DATA, &mut lying, &mut provider),
        failed(WmiError::FieldOutOfBounds {
            field: WnodeField::BufferSize,
            value: 129
        })
    );
}

#[test]
fn query_single_instance_is_byte_exact_at_the_requested_offset() {
    let mut provider = TestProvider::new();
    let mut buffer = single_instance(FIXED, 2, 72, 96);
    let reply = dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut buffer, &mut provider);
    assert_eq!(reply, ok(78));
    let mut expected = single_instance(FIXED, 2, 72, 96);
    put32(&mut expected, 0, 78); // BufferSize
    put32(&mut expected, 60, 6); // SizeDataBlock
    put32(&mut expected, 72, 0xA2);
    expected[76..78].copy_from_slice(&0xBEEFu16.to_le_bytes());
    assert_eq!(
        &buffer[..],
        &expected[..],
        "only BufferSize, SizeDataBlock and the data change"
    );
}

#[test]
fn query_single_instance_rejections_and_too_small() {
    let mut provider = TestProvider::new();
    let mut bad_instance = single_instance(FIXED, 3, 64, 96);
    assert_eq!(
        dispatch(
            IRP_MN_QUERY_SINGLE_INSTANCE,
            &mut bad_instance,
            &mut provider
        ),
        failed(WmiError::InstanceNotFound {
            guid_index: 0,
            instance_index: 3
        })
    );
    let mut no_instances = single_instance(EMPTY, 0, 64, 96);
    assert_eq!(
        dispatch(
            IRP_MN_QUERY_SINGLE_INSTANCE,
            &mut no_instances,
            &mut provider
        ),
        failed(WmiError::InstanceNotFound {
            guid_index: 4,
            instance_index: 0
        })
    );
    let mut unknown = single_instance(UNKNOWN, 0, 64, 96);
    assert_eq!(
        dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut unknown, &mut provider),
        failed(WmiError::GuidNotFound(UNKNOWN))
    );
    for offset in [0u32, 63, 97, u32::MAX] {
        let mut bad_offset = single_instance(FIXED, 0, offset, 96);
        assert_eq!(
            dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut bad_offset, &mut provider),
            failed(WmiError::FieldOutOfBounds {
                field: WnodeField::DataBlockOffset,
                value: offset
            }),
            "DataBlockOffset {offset}"
        );
    }
    let mut short = single_instance(FIXED, 0, 64, 96);
    assert_eq!(
        dispatch(
            IRP_MN_QUERY_SINGLE_INSTANCE,
            &mut short[..63],
            &mut provider
        ),
        failed(WmiError::RequestTooShort {
            needed: 64,
            available: 63
        })
    );
    // BufferSize smaller than the structure it heads.
    let mut undersized = single_instance(FIXED, 0, 64, 96);
    put32(&mut undersized, 0, 60);
    assert_eq!(
        dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut undersized, &mut provider),
        failed(WmiError::FieldOutOfBounds {
            field: WnodeField::BufferSize,
            value: 60
        })
    );
    // Data at 88 needs 6 bytes; 92 available.
    let mut small = single_instance(FIXED, 1, 88, 92);
    let flags = WNODE_FLAG_STATIC_INSTANCE_NAMES | 0x2;
    let reply = dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut small, &mut provider);
    assert_too_small(reply, &small, 94, flags);
    let mut retry = single_instance(FIXED, 1, 88, 94);
    assert_eq!(
        dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut retry, &mut provider),
        ok(94)
    );
}

/// A single-instance request addressing the instance by name (no static-names flag).
fn by_name(guid: Guid, name: &[u8], len: usize) -> Vec<u8> {
    let mut buffer = vec![0xCC; len];
    let request = WnodeSingleInstance {
        header: header(guid, len as u32, 0x2),
        offset_instance_name: U32::new(64),
        instance_index: U32::new(0),
        data_block_offset: U32::new(96),
        size_data_block: U32::new(0),
    };
    request.write_to_prefix(&mut buffer).unwrap();
    buffer[64..64 + name.len()].copy_from_slice(name);
    buffer
}

#[test]
fn query_single_instance_by_dynamic_name() {
    let mut provider = TestProvider::new();
    let beta = [8, 0, b'B', 0, b'e', 0, b't', 0, b'a', 0];
    let mut buffer = by_name(NAMED, &beta, 128);
    assert_eq!(
        dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut buffer, &mut provider),
        ok(100)
    );
    assert_eq!(get32(&buffer, 96), 0x101);
    // The count may include a terminating null.
    let beta_nul = [10, 0, b'B', 0, b'e', 0, b't', 0, b'a', 0, 0, 0];
    let mut buffer = by_name(NAMED, &beta_nul, 128);
    assert_eq!(
        dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut buffer, &mut provider),
        ok(100)
    );
    assert_eq!(get32(&buffer, 96), 0x101);

    let gamma = [4, 0, b'G', 0, b'a', 0];
    let mut buffer = by_name(NAMED, &gamma, 128);
    assert_eq!(
        dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut buffer, &mut provider),
        failed(WmiError::InstanceNameNotFound { guid_index: 2 })
    );
    // A static-names block addressed by name has no such instance.
    let mut buffer = by_name(FIXED, &beta, 128);
    assert_eq!(
        dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut buffer, &mut provider),
        failed(WmiError::InstanceNameNotFound { guid_index: 0 })
    );
    // The name's count runs past BufferSize.
    let mut buffer = by_name(NAMED, &[200, 0], 128);
    assert_eq!(
        dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut buffer, &mut provider),
        failed(WmiError::FieldOutOfBounds {
            field: WnodeField::OffsetInstanceName,
            value: 200
        })
    );
    // The name's offset is past BufferSize.
    let mut buffer = by_name(NAMED, &beta, 128);
    put32(&mut buffer, 48, 127);
    assert_eq!(
        dispatch(IRP_MN_QUERY_SINGLE_INSTANCE, &mut buffer, &mut provider),
        failed(WmiError::FieldOutOfBounds {
            field: WnodeField::OffsetInstanceName,
            value: 127
        })
    );
}

fn change_instance(guid: Guid, instance: u32, offset: u32, data: &[u8], declared: u32) -> Vec<u8> {
    let mut buffer = vec![0xCC; 128];
    let request = WnodeSingleInstance {
        header: header(guid, declared, WNODE_FLAG_STATIC_INSTANCE_NAMES | 0x2),
        offset_instance_name: U32::new(0),
        instance_index: U32::new(instance),
        data_block_offset: U32::new(offset),
        size_data_block: U32::new(data.len() as u32),
    };
    request.write_to_prefix(&mut buffer).unwrap();
    let at = offset as usize;
    if at + data.len() <= buffer.len() {
        buffer[at..at + data.len()].copy_from_slice(data);
    }
    buffer
}

#[test]
fn change_single_instance_passes_the_data_and_validates_its_range() {
    let mut provider = TestProvider::new();
    let mut buffer = change_instance(FIXED, 1, 64, &[1, 2, 3, 4, 5, 6], 70);
    assert_eq!(
        dispatch(IRP_MN_CHANGE_SINGLE_INSTANCE, &mut buffer, &mut provider),
        ok(0)
    );
    assert_eq!(provider.set_blocks, vec![(0, 1, vec![1, 2, 3, 4, 5, 6])]);

    // The data runs one byte past BufferSize.
    let mut buffer = change_instance(FIXED, 1, 64, &[1, 2, 3, 4, 5, 6], 69);
    assert_eq!(
        dispatch(IRP_MN_CHANGE_SINGLE_INSTANCE, &mut buffer, &mut provider),
        failed(WmiError::FieldOutOfBounds {
            field: WnodeField::SizeDataBlock,
            value: 6
        })
    );
    // The data overlaps the header.
    let mut buffer = change_instance(FIXED, 1, 60, &[1, 2, 3, 4], 70);
    assert_eq!(
        dispatch(IRP_MN_CHANGE_SINGLE_INSTANCE, &mut buffer, &mut provider),
        failed(WmiError::FieldOutOfBounds {
            field: WnodeField::DataBlockOffset,
            value: 60
        })
    );
    let mut buffer = change_instance(FIXED, 7, 64, &[1], 65);
    assert_eq!(
        dispatch(IRP_MN_CHANGE_SINGLE_INSTANCE, &mut buffer, &mut provider),
        failed(WmiError::InstanceNotFound {
            guid_index: 0,
            instance_index: 7
        })
    );
    assert_eq!(
        provider.set_blocks.len(),
        1,
        "rejected requests never reach the provider"
    );
    // A provider without SetWmiDataBlock.
    let mut buffer = change_instance(FIXED, 0, 64, &[1], 65);
    assert_eq!(
        dispatch(
            IRP_MN_CHANGE_SINGLE_INSTANCE,
            &mut buffer,
            &mut MinimalProvider::new()
        ),
        failed(WmiError::NotImplemented)
    );
    assert_eq!(
        WmiError::NotImplemented.status(),
        WmiStatus::InvalidDeviceRequest
    );
}

fn change_item(item: u32, offset: u32, data: &[u8], declared: u32) -> Vec<u8> {
    let mut buffer = vec![0xCC; 128];
    let request = WnodeSingleItem {
        header: header(VARIABLE, declared, WNODE_FLAG_STATIC_INSTANCE_NAMES | 0x4),
        offset_instance_name: U32::new(0),
        instance_index: U32::new(1),
        item_id: U32::new(item),
        data_block_offset: U32::new(offset),
        size_data_item: U32::new(data.len() as u32),
    };
    request.write_to_prefix(&mut buffer).unwrap();
    buffer[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    buffer
}

#[test]
fn change_single_item_passes_the_item_and_validates_its_range() {
    let mut provider = TestProvider::new();
    let mut buffer = change_item(1, 72, &[9, 8], 74);
    assert_eq!(
        dispatch(IRP_MN_CHANGE_SINGLE_ITEM, &mut buffer, &mut provider),
        ok(0)
    );
    assert_eq!(provider.set_items, vec![(1, 1, 1, vec![9, 8])]);
    let mut buffer = change_item(2, 72, &[9, 8], 74);
    assert_eq!(
        dispatch(IRP_MN_CHANGE_SINGLE_ITEM, &mut buffer, &mut provider),
        failed(WmiError::ItemIdNotFound(2))
    );
    // Offset 64 is inside the 68-byte WNODE_SINGLE_ITEM.
    let mut buffer = change_item(1, 64, &[9, 8], 74);
    assert_eq!(
        dispatch(IRP_MN_CHANGE_SINGLE_ITEM, &mut buffer, &mut provider),
        failed(WmiError::FieldOutOfBounds {
            field: WnodeField::DataBlockOffset,
            value: 64
        })
    );
    let mut buffer = change_item(1, 72, &[9, 8], 73);
    assert_eq!(
        dispatch(IRP_MN_CHANGE_SINGLE_ITEM, &mut buffer, &mut provider),
        failed(WmiError::FieldOutOfBounds {
            field: WnodeField::SizeDataBlock,
            value: 2
        })
    );
    let mut short = change_item(1, 72, &[9, 8], 74);
    assert_eq!(
        dispatch(IRP_MN_CHANGE_SINGLE_ITEM, &mut short[..67], &mut provider),
        failed(WmiError::RequestTooShort {
            needed: 68,
            available: 67
        })
    );
}

#[test]
fn execute_method_writes_its_output_over_the_input() {
    let mut provider = TestProvider::new();
    let mut buffer = method_request(1, &41u32.to_le_bytes(), 96);
    let reply = dispatch(IRP_MN_EXECUTE_METHOD, &mut buffer, &mut provider);
    // Output: uint32 42 at 72, uint64 82 at 80 (8-aligned from the data block start).
    assert_eq!(reply, ok(88));
    let mut expected = method_request(1, &41u32.to_le_bytes(), 96);
    put32(&mut expected, 0, 88); // BufferSize
    put32(&mut expected, 64, 16); // SizeDataBlock
    put32(&mut expected, 72, 42);
    put32(&mut expected, 76, 0);
    expected[80..88].copy_from_slice(&82u64.to_le_bytes());
    assert_eq!(&buffer[..], &expected[..]);
    assert_eq!(get32(&buffer, 60), 72, "DataBlockOffset unchanged");

    // No output.
    let mut buffer = method_request(2, &[], 80);
    assert_eq!(
        dispatch(IRP_MN_EXECUTE_METHOD, &mut buffer, &mut provider),
        ok(72)
    );
    assert_eq!(get32(&buffer, 64), 0);
}

#[test]
fn execute_method_rejections_and_too_small() {
    let mut provider = TestProvider::new();
    let mut buffer = method_request(3, &[], 96);
    assert_eq!(
        dispatch(IRP_MN_EXECUTE_METHOD, &mut buffer, &mut provider),
        failed(WmiError::MethodNotFound(3))
    );
    assert_eq!(
        WmiError::MethodNotFound(3).status(),
        WmiStatus::ItemIdNotFound
    );
    let mut buffer = method_request(1, &[1, 2], 96);
    assert_eq!(
        dispatch(IRP_MN_EXECUTE_METHOD, &mut buffer, &mut provider),
        failed(WmiError::MethodInputTooShort {
            method_id: 1,
            needed: 4,
            available: 2
        })
    );
    // The input runs past BufferSize.
    let mut buffer = method_request(1, &7u32.to_le_bytes(), 96);
    put32(&mut buffer, 64, 5);
    assert_eq!(
        dispatch(IRP_MN_EXECUTE_METHOD, &mut buffer, &mut provider),
        failed(WmiError::FieldOutOfBounds {
            field: WnodeField::SizeDataBlock,
            value: 5
        })
    );
    // Output needs 72 + 16 bytes; 84 available.
    let mut buffer = method_request(1, &7u32.to_le_bytes(), 84);
    let reply = dispatch(IRP_MN_EXECUTE_METHOD, &mut buffer, &mut provider);
    assert_too_small(reply, &buffer, 88, WNODE_FLAG_STATIC_INSTANCE_NAMES);
    // A provider without ExecuteWmiMethod.
    let mut buffer = method_request(1, &7u32.to_le_bytes(), 96);
    buffer[24..40].copy_from_slice(FIXED.as_bytes());
    assert_eq!(
        dispatch(
            IRP_MN_EXECUTE_METHOD,
            &mut buffer,
            &mut MinimalProvider::new()
        ),
        failed(WmiError::NotImplemented)
    );
}

#[test]
fn enable_and_disable_reach_function_control() {
    let mut provider = TestProvider::new();
    let cases = [
        (IRP_MN_ENABLE_EVENTS, Control::Events, true),
        (IRP_MN_DISABLE_EVENTS, Control::Events, false),
        (IRP_MN_ENABLE_COLLECTION, Control::Collection, true),
        (IRP_MN_DISABLE_COLLECTION, Control::Collection, false),
    ];
    for (minor, _, _) in cases {
        let mut buffer = vec![0u8; 48];
        header(VARIABLE, 48, 0)
            .write_to_prefix(&mut buffer)
            .unwrap();
        assert_eq!(dispatch(minor, &mut buffer, &mut provider), ok(0));
        header(UNKNOWN, 48, 0).write_to_prefix(&mut buffer).unwrap();
        assert_eq!(
            dispatch(minor, &mut buffer, &mut provider),
            failed(WmiError::GuidNotFound(UNKNOWN))
        );
        assert_eq!(
            dispatch(minor, &mut buffer[..40], &mut provider),
            failed(WmiError::RequestTooShort {
                needed: 48,
                available: 40
            })
        );
    }
    let expected: Vec<_> = cases
        .iter()
        .map(|(_, control, enable)| (1, *control, *enable))
        .collect();
    assert_eq!(provider.controls, expected);
    let mut buffer = vec![0u8; 48];
    header(FIXED, 48, 0).write_to_prefix(&mut buffer).unwrap();
    assert_eq!(
        dispatch(
            IRP_MN_ENABLE_COLLECTION,
            &mut buffer,
            &mut MinimalProvider::new()
        ),
        failed(WmiError::NotImplemented)
    );
}

#[test]
fn unknown_minor_functions_are_invalid_device_requests() {
    let mut provider = TestProvider::new();
    for minor in [10u8, 12, 0x7F, 0xFF] {
        let mut buffer = all_data_request(FIXED, 128);
        let before = buffer.clone();
        let reply = dispatch(minor, &mut buffer, &mut provider);
        assert_eq!(reply, failed(WmiError::UnknownMinorFunction(minor)));
        assert_eq!(reply.status.ntstatus(), 0xC000_0010);
        assert_eq!(buffer, before);
    }
}
