//! blockstamp: a write-integrity verifier for block devices and disk images.
//!
//! The data path, in module order: the command line (`cli`) becomes a
//! configuration (`config`); a `workload` schedules which blocks to write;
//! the `writer` builds `stamp`s and hands them to an `engine`, which carries
//! them to a `target`; the `manifest` remembers what was written; `verify`
//! reads the target back and classifies each block; `report` tells the user.
//! `metrics` records throughput and latency on the way; `review` reads
//! reports back for an HTML page, a night-over-night comparison, a fleet.
//! `app` is the glue of the commands.

pub mod app;
pub mod buf;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod exit;
pub mod manifest;
pub mod metrics;
pub mod progress;
pub mod recovery;
pub mod report;
pub mod review;
pub mod selftest;
pub mod signals;
pub mod soak;
pub mod stamp;
pub mod target;
pub mod units;
pub mod verify;
pub mod workload;
pub mod writer;
