//! The run through the shipped image (`mode=image`): the guest's StorPort ([`super::storport`])
//! loads `rvscsi.sys`, starts it on QEMU's virtio-scsi-pci, and sends what Windows' disk stack
//! would: enumeration (REPORT LUNS, INQUIRY, VPD 0x00/0x80/0x83, READ CAPACITY(16)) on a LUN
//! with `wwn=` and one without, then pattern writes and read-verifies across the disk at queue
//! depth 1 and 32, on every request queue (one logical processor per queue), and the largest
//! transfer the image reports. Results are `RESULT image-* PASS|FAIL` lines; `IMAGE-PHASE` and
//! `IMAGE-STAT` lines carry the figures the host sets next to QEMU's trace.
#![expect(
    clippy::result_large_err,
    reason = "a check's error is its 200-byte result line, returned once per check and never on \
              an I/O path; boxing needs an allocator the guest does not have"
)]

use core::ops::ControlFlow;

use virtio_core::dma::DmaMemory;
use virtio_core::hal::Hal as _;
use vmtest_guest::exercise::Text;
use vmtest_guest::pattern;
use vmtest_guest::pci_scan::{self, Bdf, FunctionInfo};
use vmtest_guest::scsi_cmd;

use super::hal::BareMetalHal;
use super::storport::{self, Adapter, Completion, Direction, Function, Request, RequestError};
use super::{interrupts, println};

/// The image, built into the guest by `cargo xtask vmtest` (empty when the guest was built
/// without one: the run then fails saying so).
static IMAGE: &[u8] = include_bytes!(env!("RVSCSI_GUEST_IMAGE_FILE"));

/// Ticks (100 ms) a request may take before the run declares it never completed.
const REQUEST_LIMIT_TICKS: u64 = 50;
/// SRB_STATUS_SUCCESS and SRB_STATUS_BUSY.
const SRB_STATUS_SUCCESS: u8 = 0x01;
const SRB_STATUS_BUSY: u8 = 0x05;
/// SRB_STATUS_DATA_OVERRUN: also an underrun (data valid up to DataTransferLength).
const SRB_STATUS_DATA_OVERRUN: u8 = 0x12;
/// The largest transfer tried, whatever the image reports (the host's SG list capacity).
const TRANSFER_CAP: u32 = 4 << 20;

/// What the host told the guest on its command line.
struct Settings<'a> {
    serial0: &'a str,
    serial1: &'a str,
    wwn: u64,
    disk_bytes: u64,
    drop_completion: Option<u64>,
    /// `lose-interrupt=<message>:<arrival>`: the planted lost interrupt.
    lose_interrupt: Option<(u32, u64)>,
    /// `repeat-completion=<n>`: the planted double completion.
    repeat_completion: Option<u64>,
    classic: bool,
    /// The ring layout the device offers (`ring=split|packed`), which the image must take.
    packed: bool,
}

impl<'a> Settings<'a> {
    fn parse(cmdline: &'a str) -> Result<Self, &'a str> {
        let (mut serial0, mut serial1, mut wwn, mut disk_bytes) = (None, None, None, None);
        let (mut drop_completion, mut classic, mut packed) = (None, false, None);
        let (mut lose_interrupt, mut repeat_completion) = (None, None);
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').ok_or(word)?;
            let number = || {
                value
                    .strip_prefix("0x")
                    .map_or_else(|| value.parse(), |hex| u64::from_str_radix(hex, 16))
                    .map_err(|_| word)
            };
            match key {
                "mode" if value == "image" => {}
                "serial0" => serial0 = Some(value),
                "serial1" => serial1 = Some(value),
                "wwn" => wwn = Some(number()?),
                "disk-bytes" => disk_bytes = Some(number()?),
                "drop-completion" => drop_completion = Some(number()?),
                "repeat-completion" => repeat_completion = Some(number()?),
                "lose-interrupt" => {
                    let (message, arrival) = value.split_once(':').ok_or(word)?;
                    lose_interrupt = Some((
                        message.parse().map_err(|_| word)?,
                        arrival.parse().map_err(|_| word)?,
                    ));
                }
                "srb" => classic = value == "classic",
                "ring" => packed = Some(value == "packed"),
                _ => return Err(word),
            }
        }
        Ok(Self {
            serial0: serial0.ok_or("serial0")?,
            serial1: serial1.ok_or("serial1")?,
            wwn: wwn.ok_or("wwn")?,
            disk_bytes: disk_bytes.ok_or("disk-bytes")?,
            drop_completion,
            lose_interrupt,
            repeat_completion,
            classic,
            packed: packed.ok_or("ring")?,
        })
    }
}

/// Prints a result line.
fn result(name: &str, outcome: Result<Text, Text>) -> bool {
    match outcome {
        Ok(details) => {
            println!("RESULT {name} PASS {}", details.as_str());
            true
        }
        Err(why) => {
            println!("RESULT {name} FAIL {}", why.as_str());
            false
        }
    }
}

/// Formats into a [`Text`].
macro_rules! text {
    ($($arg:tt)*) => {{
        let mut text = Text::new();
        let _ = core::fmt::Write::write_fmt(&mut text, format_args!($($arg)*));
        text
    }};
}

/// Runs everything; whether it all passed.
pub fn run(cmdline: &str) -> bool {
    let settings = match Settings::parse(cmdline) {
        Ok(settings) => settings,
        Err(word) => {
            println!("RESULT image-load FAIL unusable command line word {word:?}");
            return false;
        }
    };
    if IMAGE.is_empty() {
        println!(
            "RESULT image-load FAIL the guest was built without an image (RVSCSI_GUEST_IMAGE)"
        );
        return false;
    }
    let Some(bdf) = find_function() else {
        println!("RESULT image-load FAIL no virtio-scsi function");
        return false;
    };
    let hal = BareMetalHal::new();
    interrupts::enable();
    let mut adapter = match storport::start(
        IMAGE,
        &hal,
        bdf,
        settings.classic,
        storport::Faults {
            drop_completion: settings.drop_completion,
            lose_interrupt: settings.lose_interrupt,
            repeat_completion: settings.repeat_completion,
        },
    ) {
        Ok(adapter) => adapter,
        Err(error) => {
            println!("RESULT image-load FAIL {error}");
            report_counters();
            return false;
        }
    };
    let limits = adapter.limits();
    println!(
        "RESULT image-load PASS {} bytes at {:#x} (preferred base {:#x}), {} relocations, {} imports bound",
        IMAGE.len(),
        limits.base,
        limits.preferred_base,
        limits.relocations,
        limits.imports
    );
    println!(
        "RESULT image-start PASS {} SRBs, max transfer {:#x}, physical breaks {}, {} MSI-X messages, max I/O {}, uncached {} KiB",
        if limits.extended { "SRB_EX" } else { "classic" },
        limits.max_transfer,
        limits.physical_breaks,
        limits.messages,
        limits.max_io,
        limits.uncached >> 10
    );
    let mut passed = result("image-features", features(&adapter, settings.packed))
        && exercise(&mut adapter, &hal, &settings);
    if let Some((message, arrival)) = settings.lose_interrupt {
        // At depth 1 no later interrupt comes to drain the queue: the image's HwTimer must
        // find the completion waiting (its lost-interrupt poll) and complete the request.
        let counters = storport::counters();
        let recovered = storport::recovered_in();
        let outcome = if counters.lost_interrupts == 1
            && recovered == Some(storport::Context::Timer)
        {
            Ok(text!(
                "arrival #{arrival} of message {message} withheld; its request completed from HwTimer"
            ))
        } else {
            Err(text!(
                "{} interrupts withheld; the next completion came from {recovered:?}",
                counters.lost_interrupts
            ))
        };
        passed &= result("image-lost-interrupt", outcome);
    }
    storport::final_check();
    let counters = report_counters();
    let clean = result(
        "image-rules",
        if counters.violations == 0 {
            Ok(text!(
                "completions {} (each once), DPCs {}, timer calls {}, busy {}",
                counters.completions,
                counters.dpcs,
                counters.timer_calls,
                counters.busy
            ))
        } else {
            Err(text!("{} violations", counters.violations))
        },
    );
    let all = passed && clean;
    if all {
        println!("RESULT image-done PASS");
    }
    all
}

/// VIRTIO_F_RING_PACKED, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1.
const RING_PACKED: u64 = 1 << 34;
const INDIRECT_DESC: u64 = 1 << 28;
const EVENT_IDX: u64 = 1 << 29;
const VERSION_1: u64 = 1 << 32;

/// The image negotiated virtio 1.x and the ring layout the device offers.
fn features(adapter: &Adapter, packed: bool) -> Result<Text, Text> {
    let features = adapter
        .negotiated_features()
        .ok_or_else(|| text!("the virtio capabilities do not parse"))?;
    let on = |bit: u64| if features & bit != 0 { "on" } else { "off" };
    let details = text!(
        "negotiated {features:#x}: version-1 {}, ring-packed {}, indirect {}, event-idx {}",
        on(VERSION_1),
        on(RING_PACKED),
        on(INDIRECT_DESC),
        on(EVENT_IDX)
    );
    if features & VERSION_1 != 0 && (features & RING_PACKED != 0) == packed {
        Ok(details)
    } else {
        Err(details)
    }
}

/// Prints the host's counters; returns them.
fn report_counters() -> storport::Counters {
    let counters = storport::counters();
    for (message, count) in counters.interrupts.iter().enumerate() {
        if *count > 0 {
            println!("IMAGE-STAT message {message} interrupts {count}");
        }
    }
    println!(
        "IMAGE-COUNTERS completions {} interrupts {} unclaimed {} dpcs {} timer {} busy {} debug-prints {} dropped {} lost {} timer-completions {} violations {}",
        counters.completions,
        counters.interrupts.iter().sum::<u64>(),
        counters.unclaimed_interrupts,
        counters.dpcs,
        counters.timer_calls,
        counters.busy,
        counters.debug_prints,
        counters.dropped,
        counters.lost_interrupts,
        counters.timer_completions,
        counters.violations
    );
    counters
}

/// The virtio-scsi function's address.
fn find_function() -> Option<Bdf> {
    pci_scan::scan(&super::pci::Mechanism1, |info: &FunctionInfo| {
        if info.vendor_id == 0x1af4 && (info.device_id == 0x1048 || info.device_id == 0x1004) {
            ControlFlow::Break(info.bdf)
        } else {
            ControlFlow::Continue(())
        }
    })
}

/// One request at a time: submit, wait, read back.
fn command(
    adapter: &mut Adapter,
    lun: u8,
    cdb: &[u8],
    direction: Direction,
    data: Option<(&DmaMemory, u32)>,
    processor: u32,
) -> Result<Completion, RequestError> {
    loop {
        let ticket = adapter.submit(&Request {
            function: Function::ExecuteScsi,
            target: 0,
            lun,
            cdb,
            direction,
            data,
            processor,
        })?;
        let completion = adapter.wait(ticket, REQUEST_LIMIT_TICKS)?;
        if completion.srb_status != SRB_STATUS_BUSY {
            return Ok(completion);
        }
    }
}

/// A data-in command whose answer must succeed; returns the bytes received.
fn data_in<'a>(
    adapter: &mut Adapter,
    buffer: &'a DmaMemory,
    scratch: &'a mut [u8],
    lun: u8,
    cdb: &[u8],
) -> Result<&'a [u8], Text> {
    let len = scratch.len().min(buffer.len()) as u32;
    buffer.zero();
    let completion = command(adapter, lun, cdb, Direction::In, Some((buffer, len)), 2)
        .map_err(|error| text!("{error}"))?;
    if !matches!(
        completion.srb_status,
        SRB_STATUS_SUCCESS | SRB_STATUS_DATA_OVERRUN
    ) {
        return Err(text!(
            "CDB {:#04x} on LUN {lun}: SRB status {:#x}, SCSI status {:#x}, sense {:x?}",
            cdb[0],
            completion.srb_status,
            completion.scsi_status,
            completion.sense
        ));
    }
    let got = (completion.transferred as usize).min(scratch.len());
    let scratch = &mut scratch[..got];
    // `scratch` is no longer than the buffer.
    let _ = buffer.read_bytes(0, scratch);
    Ok(scratch)
}

/// TEST UNIT READY, REPORT LUNS, INQUIRY, VPD pages and READ CAPACITY(16) on both LUNs, as
/// the disk stack enumerates them; the block length, if every check passed.
fn enumerate(adapter: &mut Adapter, buffer: &DmaMemory, settings: &Settings<'_>) -> Option<u32> {
    let mut passed = true;
    for lun in [0_u8, 1] {
        passed &= result("image-test-unit-ready", test_unit_ready(adapter, lun));
    }
    passed &= result("image-report-luns", report_luns(adapter, buffer));
    let mut block_length = 512;
    for lun in [0_u8, 1] {
        passed &= result("image-inquiry", inquiry(adapter, buffer, lun));
        passed &= result("image-vpd-00", vpd_00(adapter, buffer, lun));
        let serial = if lun == 0 {
            settings.serial0
        } else {
            settings.serial1
        };
        passed &= result("image-vpd-80", vpd_80(adapter, buffer, lun, serial));
        let wwn = (lun == 0).then_some(settings.wwn);
        passed &= result("image-vpd-83", vpd_83(adapter, buffer, lun, wwn));
        match read_capacity(adapter, buffer, lun, settings.disk_bytes) {
            Ok(length) => {
                block_length = length;
                result(
                    "image-read-capacity",
                    Ok(text!("LUN {lun}: {length}-byte blocks")),
                );
            }
            Err(why) => passed &= result("image-read-capacity", Err(why)),
        }
    }
    passed.then_some(block_length)
}

/// Enumeration, then the pattern phases.
fn exercise(adapter: &mut Adapter, hal: &BareMetalHal, settings: &Settings<'_>) -> bool {
    let Ok(buffer) = hal.dma_alloc(4096, 4096) else {
        println!("RESULT image-enumerate FAIL out of DMA memory");
        return false;
    };
    let Some(block_length) = enumerate(adapter, &buffer, settings) else {
        return false;
    };
    let disk_blocks = settings.disk_bytes / u64::from(block_length);
    let Some(mut engine) = Engine::new(hal, 32, 64 * 1024) else {
        println!("RESULT image-qd1 FAIL out of DMA memory");
        return false;
    };
    let small = 4096 / block_length;
    // Depth 1 on processor 0 (the first request queue), depth 32 on processor 1 (the second),
    // then depth 32 spread over processors 2 and 3 (the others), each across the whole disk.
    let phases: [(&str, u32, u64, u32, &[u32]); 3] = [
        ("qd1", 1, 256, small, &[0]),
        ("qd32", 32, 1024, small, &[1]),
        ("every-queue", 32, 128, 65536 / block_length, &[2, 3]),
    ];
    for (index, (name, depth, regions, blocks, processors)) in phases.into_iter().enumerate() {
        let plan = Plan {
            disk_blocks,
            regions,
            blocks,
            block_length,
            seed: 0x1000 + index as u64,
            processors,
        };
        // The host times the phase by when these lines arrive, and reads QEMU's counts for
        // its processors' queues.
        println!("IMAGE-PHASE {name} begin");
        let outcome = engine.phase(adapter, &plan, depth);
        let label = text!("image-{name}");
        let ok = result(
            label.as_str(),
            outcome.map(|(ios, nanos)| {
                let mut list = Text::new();
                for (at, processor) in processors.iter().enumerate() {
                    let separator = if at == 0 { "" } else { "," };
                    let _ = core::fmt::Write::write_fmt(
                        &mut list,
                        format_args!("{separator}{processor}"),
                    );
                }
                println!(
                    "IMAGE-PHASE {name} end processors {} depth {depth} ios {ios} nanos {nanos}",
                    list.as_str()
                );
                text!(
                    "{ios} I/Os of {} bytes at depth {depth} on processors {processors:?}",
                    blocks * block_length
                )
            }),
        );
        if !ok {
            return false;
        }
    }
    let mut passed = result(
        "image-max-transfer",
        max_transfer(adapter, hal, block_length, disk_blocks),
    );
    passed &= result("image-clusdisk", clusdisk(adapter, &buffer));
    passed &= result(
        "image-lun-reset",
        lun_reset(adapter, hal, block_length, disk_blocks),
    );
    passed &= result("image-abort", abort(adapter, hal, block_length));
    passed &= result(
        "image-bus-reset",
        bus_reset(adapter, &mut engine, block_length),
    );
    if passed {
        // The writes that run during the hot-plug go to the queues not measured alone.
        let background = Plan {
            disk_blocks,
            regions: 64,
            blocks: small,
            block_length,
            seed: 0x3000,
            processors: &[2, 3],
        };
        passed &= result(
            "image-hotplug-add",
            hotplug(adapter, &mut engine, &background, &buffer, true),
        );
        passed &= result(
            "image-hotplug-remove",
            hotplug(adapter, &mut engine, &background, &buffer, false),
        );
    }
    // Last, so that the image's counters cover every I/O QEMU traced.
    passed &= result("image-wmi", queue_statistics(adapter, hal));
    passed
}

/// LUN the host hot-plugs.
const HOTPLUG_LUN: u8 = 2;

/// Asks the host to add (or remove) a scsi-hd at LUN 2 over QMP while writes run at depth 32
/// on LUN 0, until the image reports the bus change (BusChangeDetected, from its eventq); then
/// rescans as storport.sys would: REPORT LUNS lists LUN 2 (or no longer does), and the new
/// LUN takes a write and reads it back (or the removed one fails a read).
fn hotplug(
    adapter: &mut Adapter,
    engine: &mut Engine,
    background: &Plan<'_>,
    buffer: &DmaMemory,
    add: bool,
) -> Result<Text, Text> {
    let before = storport::counters().bus_changes;
    let request = if add { "HOTPLUG add" } else { "HOTPLUG remove" };
    let start = interrupts::ticks();
    let mut passes = 0;
    loop {
        // The request goes out once the first pass has its 32 writes in flight.
        let trigger = (passes == 0).then_some(request);
        engine.pass_with(adapter, background, 32, true, trigger)?;
        passes += 1;
        if storport::counters().bus_changes != before {
            break;
        }
        if interrupts::ticks().wrapping_sub(start) > 10 * REQUEST_LIMIT_TICKS {
            return Err(text!("no BusChangeDetected after {passes} passes of I/O"));
        }
    }
    let ios = passes * background.regions;
    let mut scratch = [0_u8; 256];
    let data = data_in(
        adapter,
        buffer,
        &mut scratch,
        0,
        &scsi_cmd::report_luns(256),
    )?;
    let mut listed = false;
    let total = scsi_cmd::parse_report_luns(data, |lun| {
        listed |= scsi_cmd::lun_number(lun) == Some(u16::from(HOTPLUG_LUN));
    })
    .map_err(|error| text!("{error:?}"))?;
    if listed != add {
        return Err(text!(
            "after the bus change REPORT LUNS lists {total} LUNs, LUN 2 {}",
            if listed {
                "among them"
            } else {
                "not among them"
            }
        ));
    }
    let io = |adapter: &mut Adapter, write| {
        let ticket = submit_lun_io(adapter, buffer, HOTPLUG_LUN, (write, 8, 8, 4096), 2)?;
        adapter
            .wait(ticket, REQUEST_LIMIT_TICKS)
            .map_err(|error| text!("{error}"))
    };
    if add {
        let ready = test_unit_ready(adapter, HOTPLUG_LUN)?;
        let _ = pattern::fill(buffer, 0x4000, 8, 512, 8);
        let written = io(adapter, true)?;
        buffer.zero();
        let read = io(adapter, false)?;
        if written.srb_status != SRB_STATUS_SUCCESS || read.srb_status != SRB_STATUS_SUCCESS {
            return Err(text!("LUN 2: write {written:?}, read {read:?}"));
        }
        pattern::verify(buffer, 0x4000, 8, 512, 8).map_err(|error| text!("LUN 2: {error:?}"))?;
        Ok(text!(
            "LUN 2 found after {ios} writes on LUN 0 around the add ({total} LUNs); {}; 4 KiB written and verified",
            ready.as_str()
        ))
    } else {
        let read = io(adapter, false)?;
        if read.srb_status == SRB_STATUS_SUCCESS {
            return Err(text!("LUN 2 still reads after its removal"));
        }
        Ok(text!(
            "LUN 2 gone after {ios} writes on LUN 0 around the removal ({total} LUNs); a read of it ends SRB status {:#x}",
            read.srb_status
        ))
    }
}

/// SRB_FUNCTION_WMI IRP_MN_QUERY_ALL_DATA of the image's `Rvscsi_QueueStatistics`: its own
/// per-queue counts of requests, kicks and interrupts, printed as `IMAGE-QUEUE` lines for the
/// host to set next to QEMU's trace (nothing moves on the queues after this).
fn queue_statistics(adapter: &mut Adapter, hal: &BareMetalHal) -> Result<Text, Text> {
    use vmtest_guest::wmi_reply;
    const ROOM: usize = 4096;
    let buffer = hal
        .dma_alloc(ROOM, 4096)
        .map_err(|_| text!("out of DMA memory"))?;
    let mut bytes = [0_u8; ROOM];
    let written = wmi_reply::queue_statistics_request(&mut bytes).ok_or_else(|| text!("room"))?;
    let _ = buffer.write_bytes(0, &bytes[..written]);
    let mut guid = [0_u8; 16];
    guid.copy_from_slice(zerocopy::IntoBytes::as_bytes(
        &wmi_reply::RVSCSI_QUEUE_STATISTICS_GUID,
    ));
    let ticket = adapter
        .submit(&Request {
            function: Function::Wmi {
                sub_function: 0,
                guid,
            },
            target: 0,
            lun: 0,
            cdb: &[],
            direction: Direction::In,
            data: Some((&buffer, ROOM as u32)),
            processor: 2,
        })
        .map_err(|error| text!("{error}"))?;
    let completion = adapter
        .wait(ticket, REQUEST_LIMIT_TICKS)
        .map_err(|error| text!("{error}"))?;
    if completion.srb_status != SRB_STATUS_SUCCESS {
        return Err(text!("query: {completion:?}"));
    }
    let _ = buffer.read_bytes(0, &mut bytes);
    let reply = &bytes[..(completion.transferred as usize).min(ROOM)];
    let (mut requests, mut kicks) = (0, 0);
    let count = wmi_reply::parse_queue_statistics(reply, |queue| {
        requests += queue.requests;
        kicks += queue.kicks;
        println!(
            "IMAGE-QUEUE index {} size {} requests {} kicks {} interrupts {} queue-full {} resets {}",
            queue.index,
            queue.size,
            queue.requests,
            queue.kicks,
            queue.interrupts,
            queue.queue_full,
            queue.resets
        );
    })
    .map_err(|error| text!("{error:?}"))?;
    Ok(text!(
        "Rvscsi_QueueStatistics: {count} queues, {requests} requests, {kicks} kicks"
    ))
}

/// SRB_STATUS_BUS_RESET.
const SRB_STATUS_BUS_RESET: u8 = 0x0e;

/// HwResetBus with 32 READs just submitted, as storport.sys calls it when a request times out:
/// every READ completes exactly once, with success or SRB_STATUS_BUS_RESET, and the disk is
/// ready again afterwards (TEST UNIT READY, past the unit attention the reset leaves).
fn bus_reset(adapter: &mut Adapter, engine: &mut Engine, block_length: u32) -> Result<Text, Text> {
    let blocks = 65536 / block_length;
    let mut tickets = [None; 32];
    for (index, ticket) in tickets.iter_mut().enumerate() {
        let buffer = engine.buffers[index]
            .as_ref()
            .ok_or_else(|| text!("no buffer"))?;
        let lba = u64::from(blocks) * index as u64;
        *ticket = Some(submit_io(
            adapter,
            buffer,
            false,
            lba,
            blocks,
            blocks * block_length,
            3,
        )?);
    }
    let answered = adapter.reset_bus().map_err(|error| text!("{error}"))?;
    let (mut succeeded, mut reset) = (0, 0);
    for ticket in tickets.iter().flatten() {
        let completion = adapter
            .wait(*ticket, REQUEST_LIMIT_TICKS)
            .map_err(|error| text!("{error}"))?;
        match completion.srb_status {
            SRB_STATUS_SUCCESS => succeeded += 1,
            SRB_STATUS_BUS_RESET => reset += 1,
            other => return Err(text!("a READ around the reset ended {other:#x}")),
        }
    }
    if !answered {
        return Err(text!("HwResetBus returned FALSE"));
    }
    let ready = test_unit_ready(adapter, 0)?;
    Ok(text!(
        "32 READs around it: {succeeded} completed, {reset} ended by the reset; {}",
        ready.as_str()
    ))
}

/// IOCTL_SCSI_MINIPORT_NOT_QUORUM_CAPABLE and NOT_CLUSTER_CAPABLE (FILE_DEVICE_SCSI 0x1b).
const NOT_QUORUM_CAPABLE: u32 = 0x001b_0520;
const NOT_CLUSTER_CAPABLE: u32 = 0x001b_0521;
/// SRB_STATUS_ABORTED, SRB_STATUS_ABORT_FAILED, SRB_STATUS_ERROR, SRB_STATUS_INVALID_REQUEST.
const SRB_STATUS_ABORTED: u8 = 0x02;
const SRB_STATUS_ABORT_FAILED: u8 = 0x03;
const SRB_STATUS_ERROR: u8 = 0x04;
const SRB_STATUS_INVALID_REQUEST: u8 = 0x06;
/// NTSTATUS STATUS_NOT_SUPPORTED, SRB_IO_CONTROL's ReturnCode for both probes.
const STATUS_NOT_SUPPORTED: u32 = 0xc000_00bb;

/// The cluster disk driver's "CLUSDISK" probes fail the way that makes the cluster call the
/// disks capable: NOT_QUORUM_CAPABLE with SRB_STATUS_ERROR, NOT_CLUSTER_CAPABLE with
/// SRB_STATUS_INVALID_REQUEST, both with ReturnCode STATUS_NOT_SUPPORTED and the 28-byte header
/// returned unchanged otherwise (tests/tests/cluster.rs holds the simulator's version).
fn clusdisk(adapter: &mut Adapter, buffer: &DmaMemory) -> Result<Text, Text> {
    use vmtest_guest::storport_abi::SrbIoControl;
    use zerocopy::{FromBytes, IntoBytes};
    for (code, expected) in [
        (NOT_QUORUM_CAPABLE, SRB_STATUS_ERROR),
        (NOT_CLUSTER_CAPABLE, SRB_STATUS_INVALID_REQUEST),
    ] {
        let header = SrbIoControl {
            header_length: 28,
            signature: *b"CLUSDISK",
            timeout: 30,
            control_code: code,
            return_code: 0,
            length: 0,
        };
        buffer.zero();
        let _ = buffer.write_bytes(0, header.as_bytes());
        let ticket = adapter
            .submit(&Request {
                function: Function::IoControl,
                target: 0,
                lun: 0,
                cdb: &[],
                direction: Direction::In,
                data: Some((buffer, 28)),
                processor: 2,
            })
            .map_err(|error| text!("{error}"))?;
        let completion = adapter
            .wait(ticket, REQUEST_LIMIT_TICKS)
            .map_err(|error| text!("{error}"))?;
        let mut bytes = [0_u8; 28];
        let _ = buffer.read_bytes(0, &mut bytes);
        let back = SrbIoControl::read_from_bytes(&bytes).map_err(|_| text!("header"))?;
        let unchanged = (
            back.header_length,
            back.signature,
            back.control_code,
            back.length,
        ) == (28, *b"CLUSDISK", code, 0);
        if completion.srb_status != expected
            || completion.transferred != 28
            || back.return_code != STATUS_NOT_SUPPORTED
            || !unchanged
        {
            return Err(text!(
                "{code:#x}: SRB status {:#x} (expected {expected:#x}), {} bytes, ReturnCode {:#x}, header {}",
                completion.srb_status,
                completion.transferred,
                back.return_code,
                if unchanged { "unchanged" } else { "changed" }
            ));
        }
    }
    Ok(text!(
        "NOT_QUORUM_CAPABLE: SRB_STATUS_ERROR, NOT_CLUSTER_CAPABLE: SRB_STATUS_INVALID_REQUEST, ReturnCode STATUS_NOT_SUPPORTED"
    ))
}

/// A LUN reset of LUN 0 succeeds, the unit attention it leaves is cleared by TEST UNIT READY,
/// and the data written before it reads back.
fn lun_reset(
    adapter: &mut Adapter,
    hal: &BareMetalHal,
    block_length: u32,
    disk_blocks: u64,
) -> Result<Text, Text> {
    let ticket = adapter
        .submit(&Request {
            function: Function::ResetLogicalUnit,
            target: 0,
            lun: 0,
            cdb: &[],
            direction: Direction::None,
            data: None,
            processor: 2,
        })
        .map_err(|error| text!("{error}"))?;
    let completion = adapter
        .wait(ticket, REQUEST_LIMIT_TICKS)
        .map_err(|error| text!("{error}"))?;
    if completion.srb_status != SRB_STATUS_SUCCESS {
        return Err(text!("reset: {completion:?}"));
    }
    let ready = test_unit_ready(adapter, 0)?;
    // LBA 0 holds the every-queue phase's first region (seed 0x1002, the last written there).
    let blocks = 4096 / block_length;
    let lba = pattern::spread(disk_blocks, 128, u64::from(65536 / block_length), 0).unwrap_or(0);
    let buffer = hal
        .dma_alloc(4096, 4096)
        .map_err(|_| text!("out of DMA memory"))?;
    let ticket = submit_io(adapter, &buffer, false, lba, blocks, 4096, 2)?;
    let read = adapter
        .wait(ticket, REQUEST_LIMIT_TICKS)
        .map_err(|error| text!("{error}"))?;
    if read.srb_status != SRB_STATUS_SUCCESS {
        return Err(text!("read after the reset: {read:?}"));
    }
    pattern::verify(&buffer, 0x1002, lba, block_length, blocks)
        .map_err(|error| text!("after the reset: {error:?}"))?;
    Ok(text!("LUN 0 reset; {}; data intact", ready.as_str()))
}

/// ABORT_COMMAND: of a command that already completed, it fails (SRB_STATUS_ABORT_FAILED); of
/// a half-megabyte READ just submitted, either it aborts it (the READ ends SRB_STATUS_ABORTED) or
/// the READ won the race (the abort then fails in the image, or succeeds at the device, which
/// no longer has the task); every SRB completes exactly once either way.
fn abort(adapter: &mut Adapter, hal: &BareMetalHal, block_length: u32) -> Result<Text, Text> {
    // Half a megabyte: within the image's transfer limit, long enough to still be at the
    // device when the abort follows it.
    let len = 512 * 1024;
    let blocks = len / block_length;
    let buffer = hal
        .dma_alloc(len as usize, 4096)
        .map_err(|_| text!("out of DMA memory"))?;
    let submit_abort = |adapter: &mut Adapter, victim| {
        adapter
            .submit(&Request {
                function: Function::Abort(victim),
                target: 0,
                lun: 0,
                cdb: &[],
                direction: Direction::None,
                data: None,
                processor: 3,
            })
            .map_err(|error| text!("{error}"))
    };
    // A completed command.
    let victim = submit_io(adapter, &buffer, false, 0, blocks, len, 3)?;
    let start = interrupts::ticks();
    while !victim.is_complete() {
        if interrupts::ticks().wrapping_sub(start) > REQUEST_LIMIT_TICKS {
            return Err(text!("{}", victim.describe()));
        }
        storport::service();
        storport::sleep_unless_pending();
    }
    let late = submit_abort(adapter, victim)?;
    let late = adapter
        .wait(late, REQUEST_LIMIT_TICKS)
        .map_err(|error| text!("{error}"))?;
    let _ = adapter.finish(victim);
    if late.srb_status != SRB_STATUS_ABORT_FAILED {
        return Err(text!("abort of a completed READ: {late:?}"));
    }
    // A command in flight.
    let victim = submit_io(adapter, &buffer, false, 0, blocks, len, 3)?;
    let early = submit_abort(adapter, victim)?;
    let early = adapter
        .wait(early, REQUEST_LIMIT_TICKS)
        .map_err(|error| text!("{error}"))?;
    let read = adapter
        .wait(victim, REQUEST_LIMIT_TICKS)
        .map_err(|error| text!("{error}"))?;
    match (early.srb_status, read.srb_status) {
        (SRB_STATUS_SUCCESS, SRB_STATUS_ABORTED) => Ok(text!(
            "a completed READ: ABORT_FAILED; a READ in flight: aborted"
        )),
        // QEMU answers ABORT TASK for a command it already completed with FUNCTION COMPLETE
        // (SAM: the task no longer exists), so the abort succeeds and the READ too.
        (SRB_STATUS_SUCCESS, SRB_STATUS_SUCCESS) => Ok(text!(
            "a completed READ: ABORT_FAILED; a READ in flight completed, the device then answered the abort FUNCTION COMPLETE"
        )),
        (SRB_STATUS_ABORT_FAILED, SRB_STATUS_SUCCESS) => Ok(text!(
            "a completed READ: ABORT_FAILED; a READ in flight completed before the abort reached it"
        )),
        _ => Err(text!("abort {early:?}, READ {read:?}")),
    }
}

/// TEST UNIT READY, retried past the power-on unit attention as the class driver does.
fn test_unit_ready(adapter: &mut Adapter, lun: u8) -> Result<Text, Text> {
    let mut attentions = 0;
    loop {
        let completion = command(
            adapter,
            lun,
            &scsi_cmd::test_unit_ready(),
            Direction::None,
            None,
            2,
        )
        .map_err(|error| text!("{error}"))?;
        if completion.srb_status == SRB_STATUS_SUCCESS {
            return Ok(text!("LUN {lun} ready after {attentions} unit attentions"));
        }
        if completion.sense_valid
            && completion.sense[0] == scsi_cmd::UNIT_ATTENTION
            && attentions < 4
        {
            attentions += 1;
            continue;
        }
        return Err(text!("LUN {lun}: {completion:?}"));
    }
}

/// REPORT LUNS on LUN 0 lists LUNs 0 and 1.
fn report_luns(adapter: &mut Adapter, buffer: &DmaMemory) -> Result<Text, Text> {
    let mut scratch = [0_u8; 256];
    let data = data_in(
        adapter,
        buffer,
        &mut scratch,
        0,
        &scsi_cmd::report_luns(256),
    )?;
    let mut seen = [false; 2];
    let total = scsi_cmd::parse_report_luns(data, |lun| {
        if let Some(number) = scsi_cmd::lun_number(lun)
            && let Some(flag) = seen.get_mut(usize::from(number))
        {
            *flag = true;
        }
    })
    .map_err(|error| text!("{error:?}"))?;
    if seen == [true, true] {
        Ok(text!("{total} LUNs, 0 and 1 among them"))
    } else {
        Err(text!("LUNs 0 and 1 not both listed ({total} LUNs)"))
    }
}

/// Standard INQUIRY: a connected direct-access device.
fn inquiry(adapter: &mut Adapter, buffer: &DmaMemory, lun: u8) -> Result<Text, Text> {
    let mut scratch = [0_u8; 96];
    let data = data_in(adapter, buffer, &mut scratch, lun, &scsi_cmd::inquiry(96))?;
    let inquiry = scsi_cmd::parse_inquiry(data).map_err(|error| text!("{error:?}"))?;
    if inquiry.qualifier != 0 || inquiry.device_type != 0 {
        return Err(text!("LUN {lun}: {inquiry:?}"));
    }
    Ok(text!(
        "LUN {lun}: {} {}",
        core::str::from_utf8(&inquiry.vendor)
            .unwrap_or("?")
            .trim_end(),
        core::str::from_utf8(&inquiry.product)
            .unwrap_or("?")
            .trim_end()
    ))
}

/// VPD 0x00 lists pages 0x80 and 0x83.
fn vpd_00(adapter: &mut Adapter, buffer: &DmaMemory, lun: u8) -> Result<Text, Text> {
    let mut scratch = [0_u8; 64];
    let data = data_in(
        adapter,
        buffer,
        &mut scratch,
        lun,
        &scsi_cmd::inquiry_vpd(0, 64),
    )?;
    let pages = scsi_cmd::vpd_payload(data, 0).map_err(|error| text!("{error:?}"))?;
    if pages.contains(&0x80) && pages.contains(&0x83) {
        Ok(text!("LUN {lun}: pages {pages:x?}"))
    } else {
        Err(text!("LUN {lun}: pages {pages:x?} lack 0x80 or 0x83"))
    }
}

/// VPD 0x80 is the serial the host gave the disk.
fn vpd_80(adapter: &mut Adapter, buffer: &DmaMemory, lun: u8, serial: &str) -> Result<Text, Text> {
    let mut scratch = [0_u8; 64];
    let data = data_in(
        adapter,
        buffer,
        &mut scratch,
        lun,
        &scsi_cmd::inquiry_vpd(0x80, 64),
    )?;
    let payload = scsi_cmd::vpd_payload(data, 0x80).map_err(|error| text!("{error:?}"))?;
    let found = core::str::from_utf8(payload)
        .unwrap_or("")
        .trim_end_matches([' ', '\0']);
    if found == serial {
        Ok(text!("LUN {lun}: {found}"))
    } else {
        Err(text!("LUN {lun}: serial {found:?}, expected {serial:?}"))
    }
}

/// VPD 0x83: with `wwn`, an NAA designator equal to it; without, none.
fn vpd_83(
    adapter: &mut Adapter,
    buffer: &DmaMemory,
    lun: u8,
    wwn: Option<u64>,
) -> Result<Text, Text> {
    let mut scratch = [0_u8; 255];
    let data = data_in(
        adapter,
        buffer,
        &mut scratch,
        lun,
        &scsi_cmd::inquiry_vpd(0x83, 255),
    )?;
    let payload = scsi_cmd::vpd_payload(data, 0x83).map_err(|error| text!("{error:?}"))?;
    let mut naa = None;
    let mut count_naa = 0;
    let count = scsi_cmd::parse_designators(payload, |designator| {
        if designator.designator_type == 3 && designator.association == 0 {
            count_naa += 1;
            naa = designator
                .designator
                .try_into()
                .ok()
                .map(u64::from_be_bytes);
        }
    })
    .map_err(|error| text!("{error:?}"))?;
    match (wwn, naa) {
        (Some(wanted), Some(found)) if wanted == found && count_naa == 1 => Ok(text!(
            "LUN {lun}: {count} designators, NAA {found:#018x} = wwn"
        )),
        (None, None) if count > 0 => Ok(text!("LUN {lun}: {count} designators, no NAA (no wwn)")),
        _ => Err(text!(
            "LUN {lun}: wwn {wwn:x?}, NAA designators {count_naa}: {naa:x?}"
        )),
    }
}

/// READ CAPACITY(16) gives the disk's size; returns its block length.
fn read_capacity(
    adapter: &mut Adapter,
    buffer: &DmaMemory,
    lun: u8,
    disk_bytes: u64,
) -> Result<u32, Text> {
    let mut scratch = [0_u8; 32];
    let data = data_in(
        adapter,
        buffer,
        &mut scratch,
        lun,
        &scsi_cmd::read_capacity_16(32),
    )?;
    let capacity = scsi_cmd::parse_read_capacity_16(data).map_err(|error| text!("{error:?}"))?;
    let bytes = capacity.blocks() * u64::from(capacity.block_length);
    if bytes == disk_bytes {
        Ok(capacity.block_length)
    } else {
        Err(text!("LUN {lun}: {bytes} bytes, expected {disk_bytes}"))
    }
}

/// One pattern phase: `regions` regions of `blocks` blocks spread over the disk, written then
/// read back and verified, submissions rotating over `processors`.
struct Plan<'a> {
    disk_blocks: u64,
    regions: u64,
    blocks: u32,
    block_length: u32,
    seed: u64,
    processors: &'a [u32],
}

/// The requests of a pass in flight: ticket, LBA, buffer.
type InFlight = [Option<(storport::Ticket, u64, usize)>; 32];

/// Buffers for up to `depth` requests in flight.
struct Engine {
    buffers: [Option<DmaMemory>; 32],
}

impl Engine {
    fn new(hal: &BareMetalHal, depth: usize, bytes: usize) -> Option<Self> {
        let mut buffers = [const { None }; 32];
        for buffer in buffers.iter_mut().take(depth) {
            *buffer = Some(hal.dma_alloc(bytes, 4096).ok()?);
        }
        Some(Self { buffers })
    }

    /// Writes then verifies every region at `depth`; returns (I/Os, nanoseconds taken).
    fn phase(
        &mut self,
        adapter: &mut Adapter,
        plan: &Plan<'_>,
        depth: u32,
    ) -> Result<(u64, u64), Text> {
        let started = interrupts::now_nanos();
        let mut ios = 0;
        for write in [true, false] {
            ios += self.pass(adapter, plan, depth, write)?;
        }
        Ok((ios, interrupts::now_nanos().saturating_sub(started)))
    }

    /// One pass (all writes, or all reads with verification) keeping `depth` in flight.
    fn pass(
        &mut self,
        adapter: &mut Adapter,
        plan: &Plan<'_>,
        depth: u32,
        write: bool,
    ) -> Result<u64, Text> {
        self.pass_with(adapter, plan, depth, write, None)
    }

    /// [`Engine::pass`], printing `trigger` (a request to the host) once the first window of
    /// requests is in flight.
    fn pass_with(
        &mut self,
        adapter: &mut Adapter,
        plan: &Plan<'_>,
        depth: u32,
        write: bool,
        trigger: Option<&str>,
    ) -> Result<u64, Text> {
        let mut in_flight: InFlight = [None; 32];
        let outcome = self.pass_within(adapter, plan, (depth, write), trigger, &mut in_flight);
        if outcome.is_err() {
            // Whatever else was in flight completes before the error is reported, so no SRB
            // of this pass is left outstanding (the host checks that at the end).
            for (ticket, _, _) in in_flight.iter().flatten() {
                let _ = adapter.wait(*ticket, REQUEST_LIMIT_TICKS);
            }
        }
        outcome
    }

    /// [`Engine::pass`] with its requests in flight kept in `in_flight`.
    fn pass_within(
        &mut self,
        adapter: &mut Adapter,
        plan: &Plan<'_>,
        (depth, write): (u32, bool),
        mut trigger: Option<&str>,
        in_flight: &mut InFlight,
    ) -> Result<u64, Text> {
        let depth = (depth as usize).min(self.buffers.len());
        let mut retries = 0;
        let mut next = 0_u64;
        let mut done = 0_u64;
        let mut last_progress = interrupts::ticks();
        let len = plan.blocks * plan.block_length;
        while done < plan.regions {
            // Fill the window.
            for (slot, entry) in in_flight.iter_mut().enumerate().take(depth) {
                if entry.is_some() || next >= plan.regions {
                    continue;
                }
                let lba =
                    pattern::spread(plan.disk_blocks, plan.regions, u64::from(plan.blocks), next)
                        .ok_or_else(|| text!("region {next} does not fit the disk"))?;
                let buffer = self.buffers[slot]
                    .as_ref()
                    .ok_or_else(|| text!("no buffer"))?;
                if write && !pattern::fill(buffer, plan.seed, lba, plan.block_length, plan.blocks) {
                    return Err(text!("pattern does not fit"));
                }
                let processor = plan.processors[(next as usize) % plan.processors.len()];
                let ticket = submit_io(adapter, buffer, write, lba, plan.blocks, len, processor)?;
                *entry = Some((ticket, lba, slot));
                next += 1;
            }
            if let Some(line) = trigger.take() {
                println!("{line}");
            }
            // Reap what completed.
            storport::service();
            let mut progressed = false;
            for entry in in_flight.iter_mut() {
                let Some((ticket, lba, slot)) = *entry else {
                    continue;
                };
                let Some(completion) = adapter.finish(ticket) else {
                    continue;
                };
                *entry = None;
                progressed = true;
                let buffer = self.buffers[slot]
                    .as_ref()
                    .ok_or_else(|| text!("no buffer"))?;
                // StorPort sends a BUSY request again, and the class driver one that met a
                // unit attention (a LUN added or removed beside this one: 3F/0E).
                let attention =
                    completion.sense_valid && completion.sense[0] == scsi_cmd::UNIT_ATTENTION;
                if (completion.srb_status == SRB_STATUS_BUSY || attention) && retries < 16 {
                    retries += 1;
                    let processor = plan.processors[slot % plan.processors.len()];
                    let ticket =
                        submit_io(adapter, buffer, write, lba, plan.blocks, len, processor)?;
                    *entry = Some((ticket, lba, slot));
                    continue;
                }
                if completion.srb_status != SRB_STATUS_SUCCESS || completion.transferred != len {
                    return Err(text!(
                        "{} at LBA {lba}: SRB status {:#x}, SCSI status {:#x}, {} of {len} bytes, sense {:x?}",
                        if write { "WRITE" } else { "READ" },
                        completion.srb_status,
                        completion.scsi_status,
                        completion.transferred,
                        completion.sense
                    ));
                }
                if !write {
                    pattern::verify(buffer, plan.seed, lba, plan.block_length, plan.blocks)
                        .map_err(|error| text!("{error:?}"))?;
                }
                done += 1;
            }
            if progressed {
                last_progress = interrupts::ticks();
            } else if interrupts::ticks().wrapping_sub(last_progress) > REQUEST_LIMIT_TICKS {
                let stuck = in_flight
                    .iter()
                    .flatten()
                    .next()
                    .map(|(ticket, _, _)| *ticket);
                return Err(stuck.map_or_else(
                    || text!("no progress"),
                    |ticket| text!("{}", ticket.describe()),
                ));
            } else {
                storport::sleep_unless_pending();
            }
        }
        Ok(plan.regions)
    }
}

/// Submits a READ(16) or WRITE(16) of `blocks` at `lba` from `buffer`.
fn submit_io(
    adapter: &mut Adapter,
    buffer: &DmaMemory,
    write: bool,
    lba: u64,
    blocks: u32,
    len: u32,
    processor: u32,
) -> Result<storport::Ticket, Text> {
    submit_lun_io(adapter, buffer, 0, (write, lba, blocks, len), processor)
}

/// Submits a READ(16) or WRITE(16) of `blocks` at `lba` on `lun` from `buffer`.
fn submit_lun_io(
    adapter: &mut Adapter,
    buffer: &DmaMemory,
    lun: u8,
    (write, lba, blocks, len): (bool, u64, u32, u32),
    processor: u32,
) -> Result<storport::Ticket, Text> {
    let cdb = if write {
        scsi_cmd::write_16(lba, blocks)
    } else {
        scsi_cmd::read_16(lba, blocks)
    };
    adapter
        .submit(&Request {
            function: Function::ExecuteScsi,
            target: 0,
            lun,
            cdb: &cdb,
            direction: if write { Direction::Out } else { Direction::In },
            data: Some((buffer, len)),
            processor,
        })
        .map_err(|error| text!("{error}"))
}

/// Writes and verifies the largest transfer the image reports (capped by this host's SG list).
fn max_transfer(
    adapter: &mut Adapter,
    hal: &BareMetalHal,
    block_length: u32,
    disk_blocks: u64,
) -> Result<Text, Text> {
    let limits = adapter.limits();
    let by_breaks = limits.physical_breaks.saturating_mul(4096);
    let bytes = limits.max_transfer.min(by_breaks).min(TRANSFER_CAP);
    let blocks = bytes / block_length;
    if blocks == 0 || u64::from(blocks) > disk_blocks {
        return Err(text!("unusable limit {:#x}", limits.max_transfer));
    }
    let len = blocks * block_length;
    let buffer = hal
        .dma_alloc(len as usize, 4096)
        .map_err(|_| text!("out of DMA memory for {len} bytes"))?;
    let lba = disk_blocks - u64::from(blocks);
    for write in [true, false] {
        if write {
            let _ = pattern::fill(&buffer, 0x7777, lba, block_length, blocks);
        } else {
            buffer.zero();
        }
        let ticket = submit_io(adapter, &buffer, write, lba, blocks, len, 3)?;
        let completion = adapter
            .wait(ticket, REQUEST_LIMIT_TICKS)
            .map_err(|error| text!("{error}"))?;
        if completion.srb_status != SRB_STATUS_SUCCESS || completion.transferred != len {
            return Err(text!("{completion:?}"));
        }
    }
    pattern::verify(&buffer, 0x7777, lba, block_length, blocks)
        .map_err(|error| text!("{error:?}"))?;
    Ok(text!(
        "{len} bytes ({blocks} blocks) written and verified at LBA {lba}"
    ))
}

/// The shipped image as a node's port for the two-node reservation plan: each command an
/// SRB_EX to LUN 0 (the `scsi-block` iSCSI disk), its outcome read back from the SRB as
/// Windows' disk stack reads it.
struct ImagePort<'a> {
    adapter: &'a mut Adapter,
}

impl vmtest_guest::cluster::Port for ImagePort<'_> {
    fn command(
        &mut self,
        cdb: &[u8],
        data: vmtest_guest::driver::Data,
    ) -> Result<vmtest_guest::cluster::Status, Text> {
        use vmtest_guest::cluster::Status;
        use vmtest_guest::driver::Data;
        /// SCSI status GOOD, CHECK CONDITION, RESERVATION CONFLICT.
        const GOOD: u8 = 0x00;
        const CHECK_CONDITION: u8 = 0x02;
        const RESERVATION_CONFLICT: u8 = 0x18;
        let (direction, memory) = match &data {
            Data::None => (Direction::None, None),
            Data::In(memory) => (Direction::In, Some(memory)),
            Data::Out(memory) => (Direction::Out, Some(memory)),
        };
        let data = memory.map(|memory| (memory, memory.len() as u32));
        let completion =
            command(self.adapter, 0, cdb, direction, data, 0).map_err(|error| text!("{error}"))?;
        Ok(match (completion.srb_status, completion.scsi_status) {
            (SRB_STATUS_SUCCESS, GOOD) => Status::Good,
            // Short parameter data is an underrun, still GOOD.
            (SRB_STATUS_DATA_OVERRUN, GOOD) if completion.transferred > 0 => Status::Good,
            (_, RESERVATION_CONFLICT) => Status::Conflict,
            (_, CHECK_CONDITION) if completion.sense_valid => {
                Status::CheckCondition(Ok(scsi_cmd::Sense {
                    key: completion.sense[0],
                    asc: completion.sense[1],
                    ascq: completion.sense[2],
                }))
            }
            (_, CHECK_CONDITION) => Status::CheckCondition(Err(scsi_cmd::ParseError::Short {
                received: 0,
                needed: 1,
            })),
            (srb_status, status) => Status::Srb { srb_status, status },
        })
    }
}

/// `mode=image-pr node=a|b`: one node of the two-node persistent-reservation plan
/// (`vmtest_guest::cluster`), each command sent by the shipped image on `scsi-block` over
/// tgtd's iSCSI LUN, steps released by the host over the serial port.
pub fn run_reservations(cmdline: &str) -> bool {
    let node = cmdline
        .split_ascii_whitespace()
        .find_map(|word| match word {
            "node=a" => Some(vmtest_guest::cluster::Node::A),
            "node=b" => Some(vmtest_guest::cluster::Node::B),
            _ => None,
        });
    let Some(node) = node else {
        println!("RESULT image-load FAIL no node=a|b on the command line");
        return false;
    };
    let Some(bdf) = find_function() else {
        println!("RESULT image-load FAIL no virtio-scsi function");
        return false;
    };
    let hal = BareMetalHal::new();
    interrupts::enable();
    let mut adapter = match storport::start(IMAGE, &hal, bdf, false, storport::Faults::default()) {
        Ok(adapter) => adapter,
        Err(error) => {
            println!("RESULT image-load FAIL {error}");
            return false;
        }
    };
    let limits = adapter.limits();
    println!(
        "RESULT image-load PASS {} bytes at {:#x}, {} relocations, {} imports bound",
        IMAGE.len(),
        limits.base,
        limits.relocations,
        limits.imports
    );
    println!(
        "RESULT image-start PASS {} MSI-X messages, max transfer {:#x}",
        limits.messages, limits.max_transfer
    );
    let Ok(buffer) = hal.dma_alloc(vmtest_guest::cluster::BUFFER_LEN, 4096) else {
        println!("RESULT pr-ready FAIL out of DMA memory");
        return false;
    };
    let port = ImagePort {
        adapter: &mut adapter,
    };
    let passed = vmtest_guest::cluster::run_plan(
        port,
        buffer,
        node,
        super::serial::Serial,
        &mut super::SerialConductor,
    );
    storport::final_check();
    let counters = report_counters();
    passed
        && result(
            "image-rules",
            if counters.violations == 0 {
                Ok(text!("completions {} (each once)", counters.completions))
            } else {
                Err(text!("{} violations", counters.violations))
            },
        )
}
