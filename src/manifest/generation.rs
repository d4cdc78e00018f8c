//! Generation arithmetic: the 13-bit, wrapping count of writes to a block,
//! and the block states a map entry records (docs/FORMAT.md, generation map).

/// Largest generation a map entry holds; the next write after it is 1 again.
pub const GENERATION_MAX: u32 = 0x1fff;

/// The bits of a map entry's value: a 2-bit kind over a 13-bit generation.
pub const VALUE_MASK: u32 = 0x7fff;
const KIND_SHIFT: u32 = 13;

/// What a block's latest operation left on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// Data: the block's stamp at the generation (0: never written).
    Data,
    /// Zeroed: reads all zeros. The generation is that of its last data.
    Zeroed,
    /// Discarded after data (or never written, generation 0): reads zeros
    /// or its previous contents, as the target promises.
    Discarded,
    /// Discarded after a zeroing: its previous contents were zeros.
    DiscardedZeros,
}

/// A block's expected state: the value of its map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockState {
    pub kind: BlockKind,
    /// The generation of the block's latest data write (0: none).
    pub generation: u32,
}

/// The operations a workload issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum OpKind {
    #[default]
    Write,
    /// Write-zeroes: the blocks read as zeros.
    Zero,
    /// Discard (trim, unmap, hole punch).
    Discard,
}

impl BlockState {
    pub const NEVER_WRITTEN: BlockState = BlockState {
        kind: BlockKind::Data,
        generation: 0,
    };

    pub fn data(generation: u32) -> BlockState {
        BlockState {
            kind: BlockKind::Data,
            generation,
        }
    }

    /// The state a map entry's value (its low 15 bits) records.
    pub fn from_value(value: u32) -> BlockState {
        let kind = match (value >> KIND_SHIFT) & 3 {
            0 => BlockKind::Data,
            1 => BlockKind::Zeroed,
            2 => BlockKind::Discarded,
            _ => BlockKind::DiscardedZeros,
        };
        BlockState {
            kind,
            generation: value & GENERATION_MAX,
        }
    }

    /// The map entry value of this state.
    pub fn value(self) -> u32 {
        let kind = match self.kind {
            BlockKind::Data => 0,
            BlockKind::Zeroed => 1,
            BlockKind::Discarded => 2,
            BlockKind::DiscardedZeros => 3,
        };
        kind << KIND_SHIFT | self.generation
    }

    /// The state after `op`: a write stamps the next generation; a zeroing
    /// or discard keeps the generation of the latest data, so the next
    /// write's stamp is newer than anything the block ever held.
    pub fn after(self, op: OpKind) -> BlockState {
        let kind = match (op, self.kind) {
            (OpKind::Write, _) => return BlockState::data(next_generation(self.generation)),
            (OpKind::Zero, _) => BlockKind::Zeroed,
            (OpKind::Discard, BlockKind::Data | BlockKind::Discarded) => BlockKind::Discarded,
            (OpKind::Discard, BlockKind::Zeroed | BlockKind::DiscardedZeros) => {
                BlockKind::DiscardedZeros
            }
        };
        BlockState {
            kind,
            generation: self.generation,
        }
    }

    /// Whether the block is expected to hold one of this run's stamps.
    pub fn is_data(self) -> bool {
        self.kind == BlockKind::Data && self.generation != 0
    }

    /// Whether this state leaves zeros on the block (or may: a discard).
    pub fn may_read_zeros(self) -> bool {
        self.kind != BlockKind::Data || self.generation == 0
    }
}

/// Compare generations with wrap-around (serial-number arithmetic over the
/// 13-bit space): negative when `found` is older than `expected`.
pub fn compare_generations(found: u32, expected: u32) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if found == expected {
        return Ordering::Equal;
    }
    if found == 0 {
        return Ordering::Less;
    }
    if expected == 0 {
        return Ordering::Greater;
    }
    let span = GENERATION_MAX as i64;
    let diff = (found as i64 - expected as i64).rem_euclid(span);
    if diff != 0 && diff <= span / 2 {
        Ordering::Greater
    } else {
        Ordering::Less
    }
}

/// The generation after `generation`.
pub fn next_generation(generation: u32) -> u32 {
    if generation >= GENERATION_MAX {
        1
    } else {
        generation + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_order_wraps() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_generations(1, 2), Less);
        assert_eq!(compare_generations(3, 2), Greater);
        assert_eq!(compare_generations(1, GENERATION_MAX), Greater);
        assert_eq!(compare_generations(GENERATION_MAX, 1), Less);
        assert_eq!(compare_generations(0, 5), Less);
        assert_eq!(next_generation(GENERATION_MAX), 1);
    }

    #[test]
    fn block_states_round_trip_and_follow_their_operations() {
        use BlockKind::*;
        for kind in [Data, Zeroed, Discarded, DiscardedZeros] {
            for generation in [0, 1, 77, GENERATION_MAX] {
                let state = BlockState { kind, generation };
                assert_eq!(BlockState::from_value(state.value()), state);
                assert!(state.value() <= VALUE_MASK);
            }
        }
        let data = BlockState::data(5);
        assert_eq!(data.after(OpKind::Write), BlockState::data(6));
        let zeroed = data.after(OpKind::Zero);
        assert_eq!(
            zeroed,
            BlockState {
                kind: Zeroed,
                generation: 5
            }
        );
        assert_eq!(zeroed.after(OpKind::Discard).kind, DiscardedZeros);
        assert_eq!(data.after(OpKind::Discard).kind, Discarded);
        assert_eq!(
            data.after(OpKind::Discard).after(OpKind::Discard).kind,
            Discarded
        );
        assert_eq!(zeroed.after(OpKind::Write), BlockState::data(6));
        assert_eq!(
            BlockState::data(GENERATION_MAX).after(OpKind::Write),
            BlockState::data(1)
        );
    }
}
