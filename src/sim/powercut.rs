//! A power-cut simulator: a target that loses what a real device with a
//! volatile write cache may lose when the power fails, and nothing else —
//! unless told to lie.
//!
//! Every write goes to the inner target at once, but until a flush (or the
//! write's own FUA) it is *volatile*: the bytes it replaced are kept. At the
//! cut, each volatile write, newest first, is kept, undone, or torn (a
//! prefix of its atomic units kept, the rest undone), by a seeded choice;
//! after it, every IO fails as a dead device's would. A lying device
//! (`lie_on`) also undoes chosen writes at the flush that claims them
//! durable — a firmware that acknowledges a flush it did not do — and
//! records them: those, and only those, are losses verify must report.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};

use crate::buf::AlignedBuf;
use crate::rng::SplitMix64;
use crate::storage::{Target, TargetInfo};

struct VolatileWrite {
    offset: u64,
    previous: AlignedBuf,
    /// The device will drop this write at the next flush.
    lie: bool,
}

struct State {
    volatile: Vec<VolatileWrite>,
    acknowledged: u64,
    dead: bool,
    rng: SplitMix64,
    /// Byte offsets of writes dropped after a flush claimed them durable.
    lost_durable: Vec<u64>,
}

/// How the simulated device behaves.
#[derive(Clone, Debug, Default)]
pub struct PowerCutPlan {
    /// The power fails when this many writes have been acknowledged.
    pub cut_after_writes: u64,
    pub seed: u64,
    /// Unit a write can be torn at (bytes); the inner target's logical
    /// sector when 0.
    pub atomic_unit: usize,
    /// Byte offsets whose next write (from `lie_after_writes` on) the
    /// device drops although a flush acknowledges it.
    pub lie_on: HashSet<u64>,
    pub lie_after_writes: u64,
}

pub struct PowerCutTarget {
    inner: Arc<dyn Target>,
    plan: PowerCutPlan,
    info: TargetInfo,
    state: Mutex<State>,
}

impl PowerCutTarget {
    pub fn new(inner: Arc<dyn Target>, plan: PowerCutPlan) -> PowerCutTarget {
        let mut info = inner.info().clone();
        info.supports_fua = true;
        let rng = SplitMix64(plan.seed);
        PowerCutTarget {
            inner,
            plan,
            info,
            state: Mutex::new(State {
                volatile: Vec::new(),
                acknowledged: 0,
                dead: false,
                rng,
                lost_durable: Vec::new(),
            }),
        }
    }

    /// Has the power failed?
    pub fn is_dead(&self) -> bool {
        self.state.lock().expect("power-cut state").dead
    }

    /// Offsets of writes the device dropped after acknowledging a flush.
    pub fn lost_durable_writes(&self) -> Vec<u64> {
        self.state
            .lock()
            .expect("power-cut state")
            .lost_durable
            .clone()
    }

    fn unit(&self) -> usize {
        if self.plan.atomic_unit > 0 {
            self.plan.atomic_unit
        } else {
            self.info.logical_sector_size as usize
        }
    }

    /// The power fails: volatile writes are kept, undone or torn.
    fn cut(&self, state: &mut State) -> io::Result<()> {
        state.dead = true;
        let unit = self.unit();
        while let Some(write) = state.volatile.pop() {
            let units = write.previous.len() / unit;
            let kept_units = match state.rng.next_u64() % 3 {
                0 => units,                                                 // persisted
                1 => 0,                                                     // lost
                _ => (state.rng.next_u64() % units.max(1) as u64) as usize, // torn
            };
            let undo = &write.previous[kept_units * unit..];
            if !undo.is_empty() {
                // The inner target may be O_DIRECT: undo from an aligned copy.
                let mut aligned = AlignedBuf::new(undo.len());
                aligned.copy_from_slice(undo);
                self.inner
                    .write_at(&aligned, write.offset + (kept_units * unit) as u64, false)?;
            }
        }
        self.inner.flush()
    }
}

fn dead() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error())
}

impl Target for PowerCutTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.is_dead() {
            return Err(dead());
        }
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        let mut state = self.state.lock().expect("power-cut state");
        if state.dead {
            return Err(dead());
        }
        let mut previous = AlignedBuf::new(buf.len());
        self.inner.read_at(&mut previous, offset)?;
        self.inner.write_at(buf, offset, false)?;
        let lie =
            state.acknowledged >= self.plan.lie_after_writes && self.plan.lie_on.contains(&offset);
        if !fua || lie {
            state.volatile.push(VolatileWrite {
                offset,
                previous,
                lie,
            });
        }
        state.acknowledged += 1;
        if state.acknowledged >= self.plan.cut_after_writes {
            // This write is acknowledged; the next IO finds the device dead.
            self.cut(&mut state)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut state = self.state.lock().expect("power-cut state");
        if state.dead {
            return Err(dead());
        }
        self.inner.flush()?;
        // Everything volatile is durable now, except what the device lies
        // about: those writes are undone, newest first.
        let volatile = std::mem::take(&mut state.volatile);
        for write in volatile.iter().rev().filter(|w| w.lie) {
            self.inner.write_at(&write.previous, write.offset, false)?;
            state.lost_durable.push(write.offset);
        }
        self.inner.flush()
    }
}
