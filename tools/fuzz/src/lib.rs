//! Shared harnesses for the fuzz targets: the virtqueue driver model both ring targets run.
#![forbid(unsafe_code)]

pub mod ring;
