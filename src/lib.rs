//! blockstamp: a write-integrity verifier for block devices and disk images.
//!
//! The data path, in module order: the command line (`cli`) becomes a
//! configuration (`config`); a `workload` schedules which blocks to write;
//! the `writer` builds `stamp`s and hands them to an `engine`, which carries
//! them to a target (`storage`: files, block devices, NBD exports); the
//! `manifest` remembers what was written; `verify` reads the target back and
//! classifies each block; `report` tells the user (and reads reports back
//! for the HTML page, night-over-night comparisons and fleets). `metrics`
//! records throughput and latency on the way (and exports them as a
//! Prometheus textfile); `on_finding` acts on a finding the moment it is
//! confirmed (the user's command, a stop); `outfile` replaces the files
//! other systems read whole; `rng` is the seedable randomness everything
//! draws from. `app` has one file per command, the glue on top. `sim` holds the simulators (fault layer, power cut, the
//! selftest scenario), which the data path never imports.
//!
//! The contract users and scripts build on (commands, exit codes, finding
//! classes, the JSON report) is docs/CONTRACT.md.

pub mod app;
pub mod buf;
pub mod cli;
pub mod clock;
pub mod config;
pub mod disrupt;
pub mod engine;
pub mod error;
pub mod exit;
pub mod manifest;
pub mod metrics;
pub mod on_finding;
pub mod outfile;
pub mod progress;
pub mod recovery;
pub mod report;
pub mod rng;
pub mod signals;
pub mod sim;
pub mod stamp;
pub mod storage;
pub mod units;
pub mod verify;
pub mod workload;
pub mod writer;
