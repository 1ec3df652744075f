//! Recovery: task management on the controlq (aborts, LUN and target resets, HwResetBus) and
//! HwStorUnitControl's surprise removal of a unit.
#![forbid(unsafe_code)]

pub mod host;
pub mod tmf;
pub mod unit_control;
