//! Fuzzes the virtio-scsi response decoders: command responses against any posted transfer,
//! TMF and AN responses, events, LUN fields and the device configuration.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_core::scsi::{
    AnResp, CmdResp, Config, DataDirection, Event, Limits, Lun, SENSE_SIZE, TmfResp, Transfer,
    complete_an, complete_command, complete_tmf,
};
use zerocopy::FromBytes;

#[derive(Arbitrary, Debug)]
struct Input {
    response: [u8; 108],
    direction: u8,
    length: u32,
    sense_capacity: u32,
    tmf: [u8; 1],
    an: [u8; 5],
    event: [u8; 16],
    lun: [u8; 8],
    config: [u8; 36],
}

fuzz_target!(|input: Input| {
    let resp = CmdResp::read_from_bytes(&input.response).unwrap();
    let direction = match input.direction % 4 {
        0 => DataDirection::None,
        1 => DataDirection::ToDevice,
        2 => DataDirection::FromDevice,
        _ => DataDirection::Bidirectional,
    };
    let transfer = Transfer::new(direction, input.length, input.sense_capacity);
    let outcome = complete_command(&resp, &transfer);
    let sense_bound = (SENSE_SIZE as u32).min(input.sense_capacity);
    assert!(u32::from(outcome.sense_len) <= sense_bound, "{outcome:?}");
    assert!(outcome.transferred <= transfer.length(), "{outcome:?}");
    assert_eq!(outcome.sense(&resp).len(), usize::from(outcome.sense_len));
    if outcome.autosense_valid {
        assert!(outcome.sense_len > 0, "{outcome:?}");
    }
    assert_eq!(complete_command(&resp, &transfer), outcome, "deterministic");

    let _ = complete_tmf(&TmfResp::read_from_bytes(&input.tmf).unwrap());
    let _ = complete_an(&AnResp::read_from_bytes(&input.an).unwrap());

    let event = Event::read_from_bytes(&input.event).unwrap();
    let _ = event.events_missed();
    let _ = event.decode();

    if let Ok(lun) = Lun::decode(input.lun) {
        assert!(lun.lun() <= Lun::MAX_LUN, "{lun:?}");
        assert_eq!(
            Lun::decode(lun.encode()),
            Ok(lun),
            "encode/decode round trip"
        );
    }

    let config = Config::read_from_bytes(&input.config).unwrap();
    if let Ok(limits) = Limits::from_config(&config) {
        assert!(
            (1..=Limits::MAX_REQUEST_QUEUES).contains(&limits.num_queues),
            "{limits:?}"
        );
        assert!(limits.seg_max >= 1 && limits.cmd_per_lun >= 1, "{limits:?}");
        assert!(limits.max_lun <= Lun::MAX_LUN, "{limits:?}");
        assert_ne!(limits.max_sectors, Some(0), "{limits:?}");
    }
});
