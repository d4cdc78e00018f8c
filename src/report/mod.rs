//! Reports: the JSON report of the contract (`blockstamp.report/1`, see
//! docs/CONTRACT.md) — one schema, written by verify and read back — and the
//! human summary, and the views built on reports read back from files — one
//! run as an HTML page (`html`), two nights side by side (`compare`), a fleet
//! of hosts in one view (`fleet`); and the checks of a report as JUnit XML
//! (`junit`), for CI systems.

pub mod compare;
pub mod fleet;
pub mod html;
pub mod incidents;
pub mod junit;
mod read;
mod schema;
mod summary;

pub use read::*;
pub use schema::*;
pub use summary::disruptions_summary;
