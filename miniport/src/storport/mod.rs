//! StorPort FFI: the structures, constants and storport.sys routines a virtio-scsi miniport
//! uses, for 64-bit Windows and for the Linux simulator that provides the same symbols.
//!
//! Nothing here has behaviour beyond `const fn` helpers; the safe layer that wraps these calls
//! lives elsewhere in the crate.

mod c_layout;
pub mod constants;
pub mod dma;
pub mod enums;
pub mod extension;
pub mod functions;
pub mod port;
pub mod queue_locks;
pub mod request;
pub mod srb;
pub mod start_io_lock;
pub mod state_change;
pub mod types;

pub use constants::*;
pub use enums::*;
pub use functions::*;
pub use types::*;
