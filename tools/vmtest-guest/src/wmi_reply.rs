//! The image's own per-queue counters, as WMI returns them: the request for
//! `Rvscsi_QueueStatistics` (IRP_MN_QUERY_ALL_DATA) and the parsing of the WNODE_ALL_DATA
//! reply, either layout (fixed instance size, or the offset/length table).

use rvscsi_wmi::wnode::{
    OffsetInstanceDataAndLength, WNODE_ALL_DATA_UNION_OFFSET, WNODE_FLAG_FIXED_INSTANCE_SIZE,
    WNODE_FLAG_STATIC_INSTANCE_NAMES, WnodeAllData, WnodeHeader,
};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

pub use rvscsi_wmi::hba::rvscsi::RVSCSI_QUEUE_STATISTICS_GUID;

/// One queue's counters (`Rvscsi_QueueStatistics`: two `uint32`, five `uint64`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Request queue index (0-based, not counting the control and event queues).
    pub index: u32,
    /// Ring size in descriptors.
    pub size: u32,
    /// Requests submitted.
    pub requests: u64,
    /// Notifications (kicks) sent to the device.
    pub kicks: u64,
    /// Interrupts handled.
    pub interrupts: u64,
    /// Times the queue was full.
    pub queue_full: u64,
    /// Resets that affected the queue.
    pub resets: u64,
}

/// Bytes of one instance.
const INSTANCE_LEN: usize = 48;

/// Why a reply does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// Shorter than its header, or an instance outside the reply.
    Truncated,
    /// The reply is about another GUID.
    WrongGuid,
}

/// Writes the IRP_MN_QUERY_ALL_DATA request WNODE for `RVSCSI_QUEUE_STATISTICS_GUID` into
/// `buffer` (which WMI hands over whole: `BufferSize` is its length). Returns the bytes written,
/// or `None` if `buffer` is shorter than the request.
pub fn queue_statistics_request(buffer: &mut [u8]) -> Option<usize> {
    let request = WnodeAllData {
        header: WnodeHeader {
            buffer_size: U32::new(u32::try_from(buffer.len()).ok()?),
            provider_id: U32::new(0),
            historical_context: U64::new(0),
            timestamp: U64::new(0),
            guid: RVSCSI_QUEUE_STATISTICS_GUID,
            client_context: U32::new(0),
            flags: U32::new(WNODE_FLAG_STATIC_INSTANCE_NAMES),
        },
        data_block_offset: U32::new(0),
        instance_count: U32::new(0),
        offset_instance_name_offsets: U32::new(0),
    };
    let bytes = request.as_bytes();
    buffer.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(bytes.len())
}

/// Calls `visit` with each queue's counters in the `WNODE_ALL_DATA` `reply`; returns how many.
///
/// # Errors
/// [`ReplyError`] for a reply about another GUID or with data outside it.
pub fn parse_queue_statistics(
    reply: &[u8],
    mut visit: impl FnMut(QueueCounters),
) -> Result<usize, ReplyError> {
    let (all, _) = WnodeAllData::read_from_prefix(reply).map_err(|_| ReplyError::Truncated)?;
    if all.header.guid != RVSCSI_QUEUE_STATISTICS_GUID {
        return Err(ReplyError::WrongGuid);
    }
    let count = all.instance_count.get() as usize;
    let fixed = all.header.flags.get() & WNODE_FLAG_FIXED_INSTANCE_SIZE != 0;
    for index in 0..count {
        let (offset, len) = if fixed {
            let size = read_u32(reply, WNODE_ALL_DATA_UNION_OFFSET)? as usize;
            // Each fixed-size instance starts 8-byte aligned (wmistr.h).
            let stride = size.next_multiple_of(8);
            (all.data_block_offset.get() as usize + index * stride, size)
        } else {
            let at = WNODE_ALL_DATA_UNION_OFFSET + index * size_of::<OffsetInstanceDataAndLength>();
            let (entry, _) = OffsetInstanceDataAndLength::read_from_prefix(
                reply.get(at..).ok_or(ReplyError::Truncated)?,
            )
            .map_err(|_| ReplyError::Truncated)?;
            (
                entry.offset_instance_data.get() as usize,
                entry.length_instance_data.get() as usize,
            )
        };
        if len < INSTANCE_LEN {
            return Err(ReplyError::Truncated);
        }
        let instance = reply
            .get(offset..offset + INSTANCE_LEN)
            .ok_or(ReplyError::Truncated)?;
        let word = |at: usize| read_u64(instance, at);
        visit(QueueCounters {
            index: read_u32(instance, 0)?,
            size: read_u32(instance, 4)?,
            requests: word(8)?,
            kicks: word(16)?,
            interrupts: word(24)?,
            queue_full: word(32)?,
            resets: word(40)?,
        });
    }
    Ok(count)
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, ReplyError> {
    let raw = bytes.get(at..at + 4).ok_or(ReplyError::Truncated)?;
    Ok(u32::from_le_bytes(
        raw.try_into().map_err(|_| ReplyError::Truncated)?,
    ))
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, ReplyError> {
    let raw = bytes.get(at..at + 8).ok_or(ReplyError::Truncated)?;
    Ok(u64::from_le_bytes(
        raw.try_into().map_err(|_| ReplyError::Truncated)?,
    ))
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use rvscsi_wmi::encode::Encoder;
    use rvscsi_wmi::hba::rvscsi::QueueStatistics;

    use super::*;

    /// A reply as the wmi crate's encoder lays out each instance, in either layout.
    fn reply(fixed: bool, queues: &[QueueStatistics]) -> Vec<u8> {
        let mut out = std::vec![0_u8; 1024];
        let mut request = [0_u8; 60];
        assert_eq!(queue_statistics_request(&mut request), Some(60));
        out[..60].copy_from_slice(&request);
        let data_start = 128;
        for (index, queue) in queues.iter().enumerate() {
            let at = data_start + index * INSTANCE_LEN;
            let mut encoder = Encoder::new(&mut out[at..at + INSTANCE_LEN]);
            queue.encode(&mut encoder);
            if !fixed {
                let entry = 60 + index * 8;
                out[entry..entry + 4].copy_from_slice(&(at as u32).to_le_bytes());
                out[entry + 4..entry + 8].copy_from_slice(&(INSTANCE_LEN as u32).to_le_bytes());
            }
        }
        out[52..56].copy_from_slice(&(queues.len() as u32).to_le_bytes());
        if fixed {
            let flags = WNODE_FLAG_STATIC_INSTANCE_NAMES | WNODE_FLAG_FIXED_INSTANCE_SIZE;
            out[44..48].copy_from_slice(&flags.to_le_bytes());
            out[48..52].copy_from_slice(&(data_start as u32).to_le_bytes());
            out[60..64].copy_from_slice(&(INSTANCE_LEN as u32).to_le_bytes());
        }
        out
    }

    #[test]
    fn both_layouts_parse_to_the_encoded_counters() {
        let queues = [
            QueueStatistics {
                queue_index: 0,
                queue_size: 256,
                requests: 10,
                kicks: 9,
                interrupts: 8,
                queue_full: 1,
                resets: 0,
            },
            QueueStatistics {
                queue_index: 1,
                queue_size: 256,
                requests: 2048,
                kicks: 2048,
                interrupts: 75,
                queue_full: 0,
                resets: 2,
            },
        ];
        for fixed in [true, false] {
            let mut seen = Vec::new();
            let count = parse_queue_statistics(&reply(fixed, &queues), |q| seen.push(q)).unwrap();
            assert_eq!(count, 2);
            assert_eq!(
                seen[1],
                QueueCounters {
                    index: 1,
                    size: 256,
                    requests: 2048,
                    kicks: 2048,
                    interrupts: 75,
                    queue_full: 0,
                    resets: 2
                }
            );
            assert_eq!(seen[0].kicks, 9);
        }
    }

    #[test]
    fn a_short_or_foreign_reply_is_an_error() {
        let good = reply(false, &[QueueStatistics::default()]);
        assert_eq!(
            parse_queue_statistics(&good[..59], |_| {}),
            Err(ReplyError::Truncated)
        );
        assert_eq!(
            parse_queue_statistics(&good[..150], |_| {}),
            Err(ReplyError::Truncated)
        );
        let mut foreign = good.clone();
        foreign[24] ^= 1;
        assert_eq!(
            parse_queue_statistics(&foreign, |_| {}),
            Err(ReplyError::WrongGuid)
        );
        let mut beyond = good;
        beyond[60..64].copy_from_slice(&4000_u32.to_le_bytes());
        assert_eq!(
            parse_queue_statistics(&beyond, |_| {}),
            Err(ReplyError::Truncated)
        );
    }
}
