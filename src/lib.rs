//! blockstamp: a write-integrity verifier for block devices and disk images.
//!
//! The data path, in module order: the command line (`cli`) becomes a
//! configuration; a `workload` schedules which blocks to write; the `writer`
//! builds `stamp`s and hands them to an `engine`, which carries them to a
//! `target`; the `manifest` remembers what was written; `verify` reads the
//! target back and classifies each block; `report` tells the user.

pub mod buf;
pub mod engine;
pub mod error;
pub mod exit;
pub mod target;
