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

/// Rating points of gap one step of colour clash is worth: two players
/// who both need white (or both black) cost this much per step of the
/// lesser need, so a partner who needs the other colour (or neither) is
/// preferred unless they are this much further away.
pub const COLOR_CLASH_WEIGHT: i64 = 100;

/// Cost of a pair whose players need the same colour (see
/// `ColorHistory::need`): one of them will not get it.
pub fn color_clash(need_a: i8, need_b: i8) -> i64 {
    if need_a.signum() * need_b.signum() > 0 {
        COLOR_CLASH_WEIGHT * i64::from(need_a.abs().min(need_b.abs()))
    } else {
        0
    }
}

/// The score of pairing two players: `(rating, widening steps waited,
/// colour need)` each.
pub fn pair_score(
    (rating_a, steps_a, need_a): (Rating, i64, i8),
    (rating_b, steps_b, need_b): (Rating, i64, i8),
) -> i64 {
    BASE + waiting_bonus(steps_a, steps_b)
        - gap_penalty(rating_a, rating_b)
        - color_clash(need_a, need_b)
}
