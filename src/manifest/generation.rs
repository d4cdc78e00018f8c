//! Generation arithmetic: the 15-bit, wrapping count of writes to a block.

/// Largest generation a map entry holds; the next write after it is 1 again.
pub const GENERATION_MAX: u32 = 0x7fff;

/// Compare generations with wrap-around (serial-number arithmetic over the
/// 15-bit space): negative when `found` is older than `expected`.
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
}
