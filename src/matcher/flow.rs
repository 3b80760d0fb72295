//! What a pool's recent arrivals say about the partners still to come, and
//! how long a player is worth holding for a closer one (issue 18).
//!
//! The SPEC §5 window says who *may* meet. When arrivals are plentiful,
//! pairing an arrival at once with anyone inside its window gives away
//! closeness for nothing: a closer partner would have come within a second.
//! [`Flow`] learns the pool's arrival rate and rating distribution (moving
//! averages of what arrives), and [`Hold`] turns them into a *hold gap* per
//! player: pairs wider than it wait, because waiting a little is expected to
//! find a closer partner. The hold gap only ever narrows the window, never
//! widens it, and lapses after [`Hold::max_ms`] of waiting, so the extra wait
//! is bounded. When arrivals are scarce the hold gap is wider than any window
//! and nothing changes.
//!
//! The rule is one-step optimal stopping. A player whose best partner is
//! `g` points away gains, by waiting `dt` more, the chance that someone
//! closer arrives: arrivals `y` points away come at `2 f(r) λ dy` a second
//! (`λ` the arrival rate, `f(r)` the rating density near the player), each
//! saving `g - y`, so waiting saves `f(r) λ g²` points a second. It costs
//! [`Hold::cost_per_second`] points a second (the exchange rate of wait
//! against gap). Waiting pays while `f(r) λ g² > cost`: the hold gap is
//! `sqrt(cost / (f(r) λ))`, and it widens by [`Hold::growth_per_second`] for
//! each second already waited.

use crate::domain::{Millis, Rating};

/// The moving picture of a pool's arrivals.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flow {
    /// Mean time between arrivals (ms), a moving average.
    mean_interval_ms: f64,
    mean_rating: f64,
    rating_variance: f64,
    last_arrival: Option<Millis>,
    arrivals: u64,
}

/// Weight of the newest arrival in the moving averages: the picture follows
/// the last hundred or so arrivals.
const SMOOTHING: f64 = 0.01;
/// Arrivals seen before the picture is trusted.
const WARM_UP: u64 = 30;
/// The least rating spread assumed, so one rating repeated does not make
/// the density infinite.
const MIN_SD: f64 = 25.0;

impl Flow {
    /// Takes one arrival into the picture.
    pub fn observe(&mut self, at: Millis, rating: Rating) {
        let rating = f64::from(rating);
        if let Some(last) = self.last_arrival {
            let interval = (at - last).max(0) as f64;
            self.mean_interval_ms = if self.arrivals == 1 {
                interval
            } else {
                self.mean_interval_ms
                    + SMOOTHING.max(1.0 / self.arrivals as f64) * (interval - self.mean_interval_ms)
            };
        }
        if self.arrivals == 0 {
            self.mean_rating = rating;
        } else {
            // Welford's update with a floor on the weight: exact averages
            // for the first hundred arrivals, moving ones after.
            let weight = SMOOTHING.max(1.0 / (self.arrivals + 1) as f64);
            let delta = rating - self.mean_rating;
            self.mean_rating += weight * delta;
            self.rating_variance = (1.0 - weight) * (self.rating_variance + weight * delta * delta);
        }
        self.last_arrival = Some(self.last_arrival.map_or(at, |l| l.max(at)));
        self.arrivals += 1;
    }

    /// Arrivals per second, once enough have been seen.
    pub fn arrivals_per_second(&self) -> Option<f64> {
        (self.arrivals >= WARM_UP && self.mean_interval_ms > 0.0)
            .then(|| 1000.0 / self.mean_interval_ms)
    }

    /// Arrivals per second whose rating is within one point of `rating`:
    /// the arrival rate times the rating density there (a normal fit).
    fn arrivals_per_second_near(&self, rating: Rating) -> Option<f64> {
        let rate = self.arrivals_per_second()?;
        let sd = self.rating_variance.sqrt().max(MIN_SD);
        let z = (f64::from(rating) - self.mean_rating) / sd;
        let density = (-0.5 * z * z).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt());
        Some(rate * density)
    }
}

/// How much closeness is worth a wait: a pool's holding policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hold {
    /// Rating points of gap one second of waiting is worth.
    pub cost_per_second: f64,
    /// How fast a held player's hold gap widens, points per second waited.
    pub growth_per_second: f64,
    /// Nobody is held past this wait: from then on only the window counts.
    pub max_ms: Millis,
}

/// The defaults: chosen with `mm-sim` against lila's pools at 20, 200 and
/// 2,000 arrivals a minute (BENCHMARKS.md, "Pairing quality against lila").
impl Default for Hold {
    fn default() -> Self {
        Self {
            cost_per_second: 2.0,
            growth_per_second: 2.0,
            max_ms: 10_000,
        }
    }
}

impl Hold {
    /// The widest gap a player of `rating` who has waited `waited_ms` takes
    /// now; `None` when they take anyone their window allows.
    pub fn gap(&self, flow: &Flow, rating: Rating, waited_ms: Millis) -> Option<i32> {
        if waited_ms >= self.max_ms || self.cost_per_second <= 0.0 {
            return None;
        }
        let near = flow.arrivals_per_second_near(rating)?;
        let gap = (self.cost_per_second / near).sqrt()
            + self.growth_per_second * waited_ms.max(0) as f64 / 1000.0;
        (gap < f64::from(i32::MAX)).then_some(gap as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(per_minute: i64, n: i64) -> Flow {
        // Ratings spread evenly over 1200..1800, arrivals evenly spaced.
        let mut flow = Flow::default();
        for k in 0..n {
            flow.observe(k * 60_000 / per_minute, 1200 + (k * 37 % 600) as i32);
        }
        flow
    }

    #[test]
    fn learns_the_arrival_rate_and_ratings() {
        let flow = steady(600, 500);
        let rate = flow.arrivals_per_second().unwrap();
        assert!((rate - 10.0).abs() < 0.01, "{rate}");
        assert!(
            (flow.mean_rating - 1500.0).abs() < 40.0,
            "{}",
            flow.mean_rating
        );
        let sd = flow.rating_variance.sqrt();
        assert!((sd - 173.0).abs() < 30.0, "{sd}");
    }

    #[test]
    fn nothing_is_held_before_the_flow_is_known() {
        let hold = Hold::default();
        assert_eq!(hold.gap(&steady(600, WARM_UP as i64 - 1), 1500, 0), None);
        assert!(hold.gap(&steady(600, WARM_UP as i64), 1500, 0).is_some());
    }

    #[test]
    fn plentiful_arrivals_hold_closer_and_scarce_ones_do_not() {
        let hold = Hold::default();
        let busy = hold.gap(&steady(2_000, 300), 1500, 0).unwrap();
        let quiet = hold.gap(&steady(20, 300), 1500, 0).unwrap();
        assert!(busy < 25, "{busy}");
        assert!(quiet > 4 * busy, "{quiet} vs {busy}");
        // Far from the usual ratings partners are rare: hold less.
        let tail = hold.gap(&steady(2_000, 300), 2400, 0).unwrap();
        assert!(tail > 10 * busy, "{tail} vs {busy}");
    }

    #[test]
    fn the_hold_widens_with_the_wait_and_lapses() {
        let hold = Hold::default();
        let flow = steady(2_000, 300);
        let fresh = hold.gap(&flow, 1500, 0).unwrap();
        let waited = hold.gap(&flow, 1500, 2_000).unwrap();
        assert_eq!(waited - fresh, (2.0 * hold.growth_per_second) as i32);
        assert_eq!(hold.gap(&flow, 1500, hold.max_ms), None);
    }
}
