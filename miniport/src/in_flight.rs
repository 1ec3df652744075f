//! A request on a ring as recovery sees it: what a task management function needs to decide
//! whether it covers the request.
#![forbid(unsafe_code)]

/// A request on a ring, as the adapter's scan of the request queues reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// Request queue (0-based).
    pub queue: u16,
    /// Target addressed.
    pub target: u8,
    /// LUN addressed.
    pub lun: u16,
    /// The tag the request header carries (the request's address; unique while in flight).
    pub tag: u64,
    /// The SRB's address.
    pub srb: usize,
    /// The queue's submission count when the request went on the ring.
    pub sequence: u64,
}
