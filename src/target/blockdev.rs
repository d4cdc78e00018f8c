//! Block devices: `/dev/sdX`, `/dev/nvmeXnY`, `/dev/vdX`, `/dev/loopN`, …

pub mod safety;
pub mod signature;
