//! How good a pair is, built from small named terms. The solver maximises
//! the number of pairs first, then the sum of these scores.

use crate::domain::Rating;

/// One widening interval waited, by either player, is worth this many rating
/// points of gap: serving the longest-waiting first comes before small gaps,
/// but among players who waited alike, the closest ratings win.
pub const WAIT_STEP_WEIGHT: i64 = 1_000;

/// Keeps every pair's score positive (gaps never exceed this).
const BASE: i64 = 10_000;

/// Priority earned by waiting: the widening intervals each player has already
/// waited (the same steps that widened their windows).
pub fn waiting_bonus(steps_a: i64, steps_b: i64) -> i64 {
    WAIT_STEP_WEIGHT * (steps_a + steps_b)
}

/// Cost of an uneven game: the rating gap, point for point.
pub fn gap_penalty(a: Rating, b: Rating) -> i64 {
    i64::from((a - b).abs())
}

/// The score of pairing two players.
pub fn pair_score(rating_a: Rating, steps_a: i64, rating_b: Rating, steps_b: i64) -> i64 {
    BASE + waiting_bonus(steps_a, steps_b) - gap_penalty(rating_a, rating_b)
}
