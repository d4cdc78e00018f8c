//! Simulators, kept beside production and never inside it: a fault layer
//! that injects every kind of damage the verifier claims to catch (with the
//! ground truth of what verify must report), a power-cut target that drops
//! unflushed writes, and the selftest scenario that drives them. The data
//! path (storage, engine, writer, verify, manifest) never imports this
//! module; the `selftest` command and the tests do.

pub mod fault;
pub mod powercut;
pub mod scenario;
