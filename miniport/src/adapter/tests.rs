//! Unit tests of the adapter's pure logic: interrupt routing, the choice of queue and sizing.
use virtio_core::scsi::queue_index;

use super::interrupts::{MessageRoute, queue_of_message, queue_of_processor};
use super::{Adapter, AdapterError, InterruptMode};
use crate::limits::LimitsError;

#[test]
fn message_zero_is_the_configuration_and_the_next_two_the_eventq_and_the_controlq() {
    assert_eq!(MessageRoute::of(0, 4), MessageRoute::Config);
    assert_eq!(
        MessageRoute::of(u32::from(queue_index::CONTROL) + 1, 4),
        MessageRoute::Control
    );
    assert_eq!(
        MessageRoute::of(u32::from(queue_index::EVENT) + 1, 4),
        MessageRoute::Event
    );
}

#[test]
fn request_queue_messages_follow_and_end_with_the_queues_in_use() {
    let first = u32::from(queue_index::REQUEST_BASE) + 1;
    assert_eq!(MessageRoute::of(first, 4), MessageRoute::Request(0));
    assert_eq!(MessageRoute::of(first + 3, 4), MessageRoute::Request(3));
    // A message past the queues in use (HwInitialize may use fewer than were prepared).
    assert_eq!(MessageRoute::of(first + 4, 4), MessageRoute::NotOurs);
    assert_eq!(MessageRoute::of(u32::MAX, 4), MessageRoute::NotOurs);
    assert_eq!(MessageRoute::of(first, 0), MessageRoute::NotOurs);
    // The most queues a 16-bit count names: the last is routed, the message after it is no
    // virtqueue's at all (its index does not fit the transport's 16 bits).
    assert_eq!(
        MessageRoute::of(first + 65_534, u16::MAX),
        MessageRoute::Request(65_534)
    );
    assert_eq!(
        MessageRoute::of(first + 65_535, u16::MAX),
        MessageRoute::NotOurs
    );
}

#[test]
fn every_request_queue_message_routes_back_to_its_queue() {
    for queue in 0..64 {
        let message = u32::from(Adapter::vector_of_queue(queue + queue_index::REQUEST_BASE));
        assert_eq!(MessageRoute::of(message, 64), MessageRoute::Request(queue));
        assert_eq!(queue_of_message(message, 64), Some(queue));
    }
}

#[test]
fn a_message_storport_names_picks_its_queue_only_if_it_is_a_request_queues() {
    let first = u32::from(Adapter::vector_of_queue(queue_index::REQUEST_BASE));
    assert_eq!(queue_of_message(first, 2), Some(0));
    assert_eq!(queue_of_message(first + 1, 2), Some(1));
    assert_eq!(queue_of_message(first + 2, 2), None);
    // The configuration, controlq and eventq messages are below the first request queue's.
    assert_eq!(queue_of_message(0, 2), None);
    assert_eq!(queue_of_message(first - 1, 2), None);
    // At the edges of the 16-bit queue count and the 32-bit message number.
    assert_eq!(queue_of_message(first + 65_534, u16::MAX), Some(65_534));
    assert_eq!(queue_of_message(first + 65_535, u16::MAX), None);
    assert_eq!(queue_of_message(u32::MAX, u16::MAX), None);
    assert_eq!(queue_of_message(first, 0), None);
}

#[test]
fn without_message_ranges_the_processor_number_spreads_requests_over_the_queues() {
    assert_eq!(queue_of_processor(0, 4), 0);
    assert_eq!(queue_of_processor(5, 4), 1);
    assert_eq!(queue_of_processor(u32::MAX, 4), 3);
    // No queue recorded yet counts as one.
    assert_eq!(queue_of_processor(7, 0), 0);
    // Below the queue count each processor has its own queue; past it, always a valid queue.
    for queues in 1..=64u16 {
        for processor in 0..1024u32 {
            let queue = queue_of_processor(processor, queues);
            assert!(queue < queues, "{processor} {queues}");
            if processor < u32::from(queues) {
                assert_eq!(u32::from(queue), processor);
            }
        }
    }
    assert_eq!(queue_of_processor(5, 3), 1);
    assert_eq!(queue_of_processor(9, 6), 1);
}

#[test]
fn a_ring_needs_its_layout_s_bytes_and_packed_differs_from_split() {
    for size in [1u16, 2, 128, 1024] {
        let split = Adapter::ring_len(false, size);
        let packed = Adapter::ring_len(true, size);
        // Split: 16-byte descriptors plus the available and used rings (virtio 1.x 2.7).
        assert!(split >= usize::from(size) * 16 + 6 + usize::from(size) * 2);
        // Packed: 16-byte descriptors and two 4-byte event suppression structures (2.8).
        assert_eq!(packed, usize::from(size) * 16 + 8);
    }
}

#[test]
fn table_sizes_grow_with_their_slots_and_cover_the_alignment_padding() {
    assert!(Adapter::lun_table_len(0) > 0);
    assert!(Adapter::lun_table_len(2) > Adapter::lun_table_len(1));
    assert!(Adapter::tmf_len(2) > Adapter::tmf_len(1));
}

#[test]
fn the_mode_in_per_queue_uses_as_many_request_queues_as_messages_allow() {
    // Three messages for configuration, controlq and eventq; the rest for request queues.
    assert_eq!(InterruptMode::choose(5, 4), (InterruptMode::PerQueue, 2));
}

#[test]
fn adapter_errors_name_their_value() {
    let shown = AdapterError::NoUncachedExtension { len: 4096 }.to_string();
    assert!(shown.contains("4096"), "{shown}");
    let shown = AdapterError::Limits(LimitsError::QueueTooSmall { size: 2 }).to_string();
    assert!(shown.contains("2 descriptors"), "{shown}");
    let shown = AdapterError::OverDumpBudget { len: 10, budget: 5 }.to_string();
    assert!(shown.contains("10") && shown.contains('5'), "{shown}");
}

#[test]
fn the_dump_stack_s_uncached_extension_fits_its_budget_and_is_smaller_than_the_normal_one() {
    use crate::dump::{
        DUMP_REQUEST_QUEUE_SIZE, DUMP_SIDE_QUEUE_SIZE, DUMP_UNCACHED_BUDGET, Sizing,
    };
    // The queues the dump stack sizes: controlq and eventq small, one request queue.
    let dump_queues = [
        DUMP_SIDE_QUEUE_SIZE,
        DUMP_SIDE_QUEUE_SIZE,
        DUMP_REQUEST_QUEUE_SIZE,
    ];
    for packed in [false, true] {
        let dump = Adapter::uncached_len_for(Sizing::Dump, packed, &dump_queues);
        assert!(dump <= DUMP_UNCACHED_BUDGET, "dump mode needs {dump} bytes");
        // The normal stack adds the LUN table, the WMI scratch and page-aligned rings.
        let normal = Adapter::uncached_len_for(Sizing::Normal, packed, &dump_queues);
        assert!(normal > dump, "normal {normal} <= dump {dump}");
    }
}

#[test]
fn the_uncached_extension_counts_every_queue_s_ring_and_slot_table_once() {
    use crate::dump::Sizing;
    use virtio_core::queue::Slot;
    let base = [64u16, 64, 256];
    for sizing in [Sizing::Normal, Sizing::Dump] {
        for packed in [false, true] {
            let three = Adapter::uncached_len_for(sizing, packed, &base);
            // One more request queue of 1024 entries: at least its ring and its tables.
            let four = Adapter::uncached_len_for(sizing, packed, &[64, 64, 256, 1024]);
            let least = Adapter::ring_len(packed, 1024)
                + 1024 * (size_of::<Slot>() + size_of::<usize>())
                + size_of::<crate::counters::QueueCounters>();
            assert!(four >= three + least, "{four} < {three} + {least}");
            // A larger queue needs more.
            assert!(Adapter::uncached_len_for(sizing, packed, &[64, 64, 512]) > three);
        }
        // The two layouts differ by exactly their rings' sizes, queue by queue.
        let split = Adapter::uncached_len_for(sizing, false, &base);
        let packed = Adapter::uncached_len_for(sizing, true, &base);
        let rings = |packed| {
            base.iter()
                .map(|&size| Adapter::ring_len(packed, size))
                .sum::<usize>()
        };
        assert_eq!(split - packed, rings(false) - rings(true));
    }
}
