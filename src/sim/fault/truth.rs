//! The ground truth: what each block holds, as the fault layer knows it,
//! and the findings verify must therefore report.
//!
//! The layer keeps a ledger of every block's content in symbolic form —
//! "write 2 of block 17", "write 1 of block 9 torn after 3 sectors over what
//! was there" — updated on every write, whether a fault struck it or not.
//! The expected findings follow from the ledger and the generations the
//! manifest expects, by the rules of docs/FORMAT.md. Because the ledger sees
//! every write, a fault that a later write heals is expected to leave no
//! finding, and a write the manifest does not know (one after a checkpoint)
//! is expected to show as `newer_generation`.
//!
//! Generations are write numbers: write k of a block carries generation k
//! (wrapping after 8191), which holds for a run whose every write went
//! through the layer, starting from a fresh manifest and an all-zero target.
//! Zeroings and discards keep the generation (see
//! [`crate::manifest::BlockState::after`]); a block last zeroed or
//! discarded is held to zeros or to what the target promised a discarded
//! block reads (docs/CONTRACT.md, discard and write-zeroes).

use std::cmp::Ordering;

use serde::Serialize;

use crate::manifest::{BlockKind, BlockState, GENERATION_MAX, compare_generations};
use crate::storage::DiscardReads;
use crate::verify::FindingClass;

use super::FaultType;

/// What a block holds, symbolically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// What the target held before the run: zeros (a fresh sparse image).
    Original,
    /// Write number `write` of block `block`, intact. A `block` other than
    /// the one holding it is a misdirected write that landed here.
    Write { block: u64, write: u32 },
    /// This block's write `write`, torn: its first `sectors` sectors, then
    /// what the block held before.
    Torn {
        write: u32,
        sectors: u32,
        under: Box<Content>,
    },
    /// This block's write `write` with bits flipped.
    Flipped { write: u32 },
    /// Zeros written over the block (a discarded extent).
    Zeroed,
    /// A zeroing torn: its first `sectors` sectors zeros, then what the
    /// block held before.
    ZeroTorn { sectors: u32, under: Box<Content> },
    /// Bytes that are not a stamp at all.
    Foreign,
}

/// A finding the verifier must report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpectedFinding {
    pub block: u64,
    pub class: FindingClass,
    /// For `misdirected`: the block whose write landed here.
    pub found_block: Option<u64>,
    /// Whether a second read returns the same bytes (false only for a stale
    /// read, which is right the second time).
    pub persistent: bool,
    /// For `unreadable`: the failing 512-byte sectors.
    pub unreadable_sectors: Vec<u32>,
    /// The fault (or event) behind it, for people.
    pub cause: String,
    /// The planned fault behind it (`None`: a write after the checkpoint).
    pub fault: Option<FaultType>,
}

/// The generation write number `write` carries.
pub fn generation_of_write(write: u32) -> u32 {
    if write == 0 {
        0
    } else {
        (write - 1) % GENERATION_MAX + 1
    }
}

/// The class verify gives `content` at `block`, which should be in state
/// `expected` (a block last discarded held to `promise`): `None` when the
/// block is right, `Err` when the rules cannot say (a plan never builds
/// such cases).
pub fn class_of(
    content: &Content,
    block: u64,
    expected: BlockState,
    promise: DiscardReads,
) -> Result<Option<(FindingClass, Option<u64>, String)>, String> {
    match (expected.kind, promise) {
        (BlockKind::Data, _) => class_of_data(content, block, expected.generation),
        (BlockKind::Zeroed, _)
        | (BlockKind::DiscardedZeros, _)
        | (BlockKind::Discarded, DiscardReads::Zeroes) => {
            class_of_zeroing(content, block, expected.generation)
        }
        (BlockKind::Discarded, DiscardReads::Any) if reads_zeros(content) => Ok(None),
        // Its previous contents: the latest data write (or zeros).
        (BlockKind::Discarded, _) => class_of_data(content, block, expected.generation),
    }
}

fn reads_zeros(content: &Content) -> bool {
    match content {
        Content::Original | Content::Zeroed => true,
        Content::ZeroTorn { under, .. } => reads_zeros(under),
        _ => false,
    }
}

/// A block that must read all zeros, last written with `generation`.
fn class_of_zeroing(
    content: &Content,
    block: u64,
    generation: u32,
) -> Result<Option<(FindingClass, Option<u64>, String)>, String> {
    if reads_zeros(content) {
        return Ok(None);
    }
    let found = |class: FindingClass, cause: String| Ok(Some((class, None, cause)));
    match content {
        Content::Write { block: from, write } if *from != block => Ok(Some((
            FindingClass::Misdirected,
            Some(*from),
            format!("write {write} of block {from} where zeros belong"),
        ))),
        Content::Write { write, .. } => {
            let held = generation_of_write(*write);
            if generation != 0 && compare_generations(held, generation) == Ordering::Greater {
                found(
                    FindingClass::NewerGeneration,
                    format!("holds write {write}, newer than the zeroing"),
                )
            } else {
                found(
                    FindingClass::LostZeroing,
                    format!("still holds write {write}: the zeroing or discard did not happen"),
                )
            }
        }
        Content::ZeroTorn { sectors, under } => match under.as_ref() {
            Content::Write { block: from, .. } if *from == block => found(
                FindingClass::Torn,
                format!("zeroing torn after {sectors} sector(s)"),
            ),
            other => Err(format!(
                "block {block}: torn zeroing over {other:?} cannot be predicted"
            )),
        },
        Content::Foreign => found(
            FindingClass::Foreign,
            "other data where zeros belong".into(),
        ),
        Content::Flipped { write } => found(
            FindingClass::Corrupt,
            format!("bits flipped in write {write}, where zeros belong"),
        ),
        other => Err(format!(
            "block {block}: {other:?} where zeros belong cannot be predicted"
        )),
    }
}

/// A block that should hold its write of `expected_generation` (0: never
/// written).
fn class_of_data(
    content: &Content,
    block: u64,
    expected_generation: u32,
) -> Result<Option<(FindingClass, Option<u64>, String)>, String> {
    let written = expected_generation != 0;
    let found = |class: FindingClass, cause: String| Ok(Some((class, None, cause)));
    match content {
        Content::Original | Content::Zeroed if !written => Ok(None),
        Content::Original => found(FindingClass::Zeroed, "the block was never written".into()),
        Content::Zeroed => found(FindingClass::Zeroed, "zeroed extent".into()),
        Content::ZeroTorn { .. } => Err(format!(
            "block {block}: a torn zeroing where data belongs cannot be predicted"
        )),
        Content::Foreign if !written => Ok(None),
        Content::Foreign => found(FindingClass::Foreign, "overwritten by other data".into()),
        Content::Write { block: from, write } if *from != block => Ok(Some((
            FindingClass::Misdirected,
            Some(*from),
            format!("write {write} of block {from} landed here"),
        ))),
        Content::Write { write, .. } => {
            let generation = generation_of_write(*write);
            match compare_generations(generation, expected_generation) {
                Ordering::Equal => Ok(None),
                Ordering::Less => found(
                    FindingClass::LostWrite,
                    format!("holds write {write}, generation {expected_generation} expected"),
                ),
                Ordering::Greater => found(
                    FindingClass::NewerGeneration,
                    format!(
                        "holds write {write}, a write newer than the expected generation {expected_generation}"
                    ),
                ),
            }
        }
        Content::Torn { .. } | Content::Flipped { .. } if !written => Err(format!(
            "block {block}: damaged stamp on a block the run never wrote"
        )),
        Content::Flipped { write } => found(
            FindingClass::Corrupt,
            format!("bits flipped in write {write}"),
        ),
        Content::Torn {
            write,
            sectors,
            under,
        } => {
            let generation = generation_of_write(*write);
            let cause = format!("write {write} torn after {sectors} sector(s)");
            match under.as_ref() {
                Content::Write {
                    block: from,
                    write: older,
                } if *from == block => {
                    if generation_of_write(*older) == generation {
                        Err(format!("block {block}: torn between equal generations"))
                    } else {
                        found(FindingClass::Torn, cause)
                    }
                }
                // A first write torn over a never-written block is torn; a
                // later generation over zeros means data vanished: corrupt.
                Content::Original | Content::Zeroed if generation == 1 => {
                    found(FindingClass::Torn, cause)
                }
                Content::Original | Content::Zeroed => found(FindingClass::Corrupt, cause),
                other => Err(format!(
                    "block {block}: torn write over {other:?} cannot be predicted"
                )),
            }
        }
    }
}
