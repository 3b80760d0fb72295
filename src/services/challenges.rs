//! Direct challenges (SPEC §3.2): create, accept, decline, cancel, read,
//! list, and the sweep that expires them.
//!
//! Accepting is race-safe in four steps: the challenge moves `PENDING →
//! ACCEPTING` in one conditional update (one accepter wins against every
//! other accept, cancel, decline or expiry); both players are held in the
//! queue store atomically (neither may be searching or in a game); the
//! match is written durably with claims on both players before its game
//! exists (refused if either is in an unfinished match, whatever the queue
//! store says); then the game is created through the same `GameCreator` as
//! queue matches, the match record is persisted (`source = challenge`), the
//! challenge becomes `ACCEPTED` and the hold becomes the players'
//! active-game guard. A refusal puts the challenge back to `PENDING`; a game
//! service that does not answer leaves it `ACCEPTING` while matching's
//! recovery asks again with the same match id; an accepter that dies
//! mid-way leaves an `ACCEPTING` challenge the sweep finishes or rolls back.

use std::sync::Arc;

use rand::Rng;

use super::ServiceError;
use super::games::{GameCreationError, GameCreator, NewGame};
use super::guards::Guards;
use crate::auth::Identity;
use crate::domain::{
    Challenge, ChallengeId, ChallengeStatus, Clock, MatchId, MatchIntent, MatchRecord, MatchSide,
    MatchSource, Millis, Mode, ParseError, PoolKey, PreferredColor, Region, SystemClock,
    TenantConfig, UserId, Variant,
};
use crate::store::{Claim, Direction, DurableStore, GuardStore, PairingStore, Transition};

/// Settings of the challenge feature.
#[derive(Debug, Clone)]
pub struct ChallengeLimits {
    pub ttl_ms: Millis,
    pub max_pending_outgoing: u32,
    pub guard_ms: Millis,
    /// An `ACCEPTING` challenge older than this is finished or rolled back.
    pub accepting_timeout_ms: Millis,
}

/// A new challenge, parsed.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    pub opponent: UserId,
    pub time_control: crate::domain::TimeControl,
    pub mode: Mode,
    pub variant: Variant,
    pub preferred_color: PreferredColor,
}

impl NewChallenge {
    /// Parses the request fields with the tenant's allowed values.
    pub fn parse(
        tenants: &TenantConfig,
        opponent: &str,
        time_control: &str,
        mode: &str,
        variant: Option<&str>,
        preferred_color: Option<&str>,
    ) -> Result<Self, ParseError> {
        let opponent =
            UserId::parse(opponent).map_err(|e| ParseError::new("opponent_user_id", e.reason))?;
        let pool = tenants.pool_key(time_control, mode, variant, None)?;
        let preferred_color = preferred_color
            .map(str::parse)
            .transpose()?
            .unwrap_or(PreferredColor::Random);
        Ok(Self {
            opponent,
            time_control: pool.time_control,
            mode: pool.mode,
            variant: pool.variant,
            preferred_color,
        })
    }
}

/// What a client reads for a challenge that is not there (or not theirs).
pub const NO_CHALLENGE: &str = "no such challenge";

pub struct ChallengeService {
    durable: Arc<dyn DurableStore>,
    /// Holds both players while the game is created.
    holds: Arc<dyn GuardStore>,
    /// Commits the match (guards its players until the game finishes).
    pairing: Arc<dyn PairingStore>,
    games: Arc<dyn GameCreator>,
    ratings: super::ratings::RatingService,
    guards: Arc<Guards>,
    /// Each tenant's `challenges` flag, as set at run time.
    live: Arc<super::live::LiveConfig>,
    limits: ChallengeLimits,
    clock: Arc<dyn Clock>,
}

impl ChallengeService {
    pub fn new(
        durable: Arc<dyn DurableStore>,
        (holds, pairing): (Arc<dyn GuardStore>, Arc<dyn PairingStore>),
        games: Arc<dyn GameCreator>,
        ratings: super::ratings::RatingService,
        (guards, live): (Arc<Guards>, Arc<super::live::LiveConfig>),
        limits: ChallengeLimits,
    ) -> Self {
        Self {
            durable,
            holds,
            pairing,
            games,
            ratings,
            guards,
            live,
            limits,
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads the time from `clock` (tests move it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether challenges are on for the caller's tenant now.
    fn enabled(&self, who: &Identity) -> Result<(), ServiceError> {
        if self.live.flags(&who.tenant_id).challenges {
            Ok(())
        } else {
            Err(ServiceError::ChallengesDisabled)
        }
    }

    /// The challenge as its status reads now, if `who` is one of its players.
    async fn visible(&self, who: &Identity, id: &ChallengeId) -> Result<Challenge, ServiceError> {
        let challenge = self
            .durable
            .challenge(&who.tenant_id, id)
            .await?
            .filter(|c| c.involves(&who.user_id))
            .ok_or(ServiceError::NotFound(NO_CHALLENGE))?;
        Ok(Challenge {
            status: challenge.status_at(self.clock.now()),
            ..challenge
        })
    }

    pub async fn create(
        &self,
        who: &Identity,
        new: NewChallenge,
    ) -> Result<Challenge, ServiceError> {
        self.enabled(who)?;
        if new.opponent == who.user_id {
            return Err(
                ParseError::new("opponent_user_id", "you cannot challenge yourself").into(),
            );
        }
        let now = self.clock.now();
        let challenge = Challenge {
            id: ChallengeId::generate(),
            tenant_id: who.tenant_id.clone(),
            challenger: who.user_id.clone(),
            opponent: new.opponent,
            time_control: new.time_control,
            mode: new.mode,
            variant: new.variant,
            preferred_color: new.preferred_color,
            status: ChallengeStatus::Pending,
            created_at: now,
            expires_at: now + self.limits.ttl_ms,
            match_id: None,
            game_id: None,
        };
        if !self
            .durable
            .create_challenge(&challenge, self.limits.max_pending_outgoing, now)
            .await?
        {
            return Err(ServiceError::TooManyChallenges);
        }
        tracing::info!(
            event = "challenge_created",
            challenge_id = %challenge.id,
            tenant_id = %challenge.tenant_id,
            challenger = %challenge.challenger,
            opponent = %challenge.opponent,
            "challenge created"
        );
        Ok(challenge)
    }

    pub async fn get(&self, who: &Identity, id: &ChallengeId) -> Result<Challenge, ServiceError> {
        self.enabled(who)?;
        self.visible(who, id).await
    }

    pub async fn pending(
        &self,
        who: &Identity,
        direction: Direction,
    ) -> Result<Vec<Challenge>, ServiceError> {
        self.enabled(who)?;
        Ok(self
            .durable
            .pending_challenges(&who.tenant_id, &who.user_id, direction, self.clock.now())
            .await?)
    }

    /// Declines (the opponent) or cancels (the challenger) a pending challenge.
    pub async fn refuse(
        &self,
        who: &Identity,
        id: &ChallengeId,
        to: ChallengeStatus,
    ) -> Result<Challenge, ServiceError> {
        self.enabled(who)?;
        let challenge = self.visible(who, id).await?;
        let allowed = match to {
            ChallengeStatus::Declined => challenge.opponent == who.user_id,
            ChallengeStatus::Cancelled => challenge.challenger == who.user_id,
            _ => false,
        };
        if !allowed {
            return Err(ServiceError::InvalidState(
                "only the challenged player declines, and only the challenger cancels",
            ));
        }
        let change = Transition {
            from: ChallengeStatus::Pending,
            to,
            match_id: None,
            game_id: None,
        };
        if !self
            .durable
            .transition_challenge(&who.tenant_id, id, change, self.clock.now())
            .await?
        {
            return Err(ServiceError::InvalidState(
                "the challenge is no longer pending",
            ));
        }
        tracing::info!(event = "challenge_closed", challenge_id = %id, status = to.as_str(), by = %who.user_id, "challenge closed");
        Ok(Challenge {
            status: to,
            ..challenge
        })
    }

    /// Accepts a challenge: creates its game (see the module docs).
    /// `request_id` is carried to the game service.
    pub async fn accept(
        &self,
        who: &Identity,
        id: &ChallengeId,
        request_id: Option<String>,
    ) -> Result<Challenge, ServiceError> {
        self.enabled(who)?;
        let challenge = self.visible(who, id).await?;
        if challenge.challenger == who.user_id {
            return Err(ServiceError::CannotAccept(
                "you cannot accept your own challenge",
            ));
        }
        if challenge.status != ChallengeStatus::Pending {
            return Err(ServiceError::InvalidState(
                "the challenge is no longer pending",
            ));
        }
        let now = self.clock.now();
        let intent = self.intent(&challenge, MatchId::generate(), now).await?;
        let claim = Transition {
            from: ChallengeStatus::Pending,
            to: ChallengeStatus::Accepting,
            match_id: Some(&intent.match_id),
            game_id: None,
        };
        if !self
            .durable
            .transition_challenge(&who.tenant_id, id, claim, now)
            .await?
        {
            return Err(ServiceError::InvalidState(
                "the challenge is no longer pending",
            ));
        }
        let busy = || {
            ServiceError::CannotAccept(
                "a player is searching in a queue, playing a game, or cooling down after missing one",
            )
        };
        if !self.hold(&intent, now).await? {
            self.reopen(&challenge).await?;
            return Err(busy());
        }
        let game = NewGame::of(&intent, request_id);
        let live_since = now - self.limits.guard_ms;
        let owner = ulid::Ulid::new().to_string();
        let known = self.games.known_game_id(&game);
        let claim = match &known {
            Some(game_id) => {
                let record = intent.with_game(game_id.clone());
                self.durable
                    .insert_matches(std::slice::from_ref(&record), &[], live_since)
                    .await
            }
            None => {
                self.durable
                    .claim_matches(
                        std::slice::from_ref(&intent),
                        &owner,
                        self.limits.accepting_timeout_ms,
                        live_since,
                    )
                    .await
            }
        };
        match claim.map(|c| c.into_iter().next()) {
            Ok(Some(Claim::Stored)) => {}
            Ok(_) => {
                self.holds.drop_hold(&intent).await?;
                self.reopen(&challenge).await?;
                return Err(busy());
            }
            // The write may or may not have happened: the challenge stays
            // ACCEPTING and the sweep settles it from what is stored.
            Err(e) => return Err(e.into()),
        }
        let game_id = match known {
            Some(game_id) => game_id,
            None => match self.games.create_game(&game).await {
                Ok(game_id) => game_id,
                Err(GameCreationError::Refused(reason)) => {
                    if self.durable.drop_intent(&intent.match_id, &owner).await? {
                        self.holds.drop_hold(&intent).await?;
                        self.reopen(&challenge).await?;
                    }
                    return Err(ServiceError::Unavailable(format!(
                        "the game could not be created: {reason}"
                    )));
                }
                Err(GameCreationError::Unavailable(reason)) => {
                    // The game may exist: it is asked for again with this
                    // match id by matching's recovery, and the sweep then
                    // marks the challenge accepted. Never reopened here.
                    self.durable.yield_intent(&intent.match_id, &owner).await?;
                    return Err(ServiceError::Unavailable(format!(
                        "the game could not be created: {reason}"
                    )));
                }
            },
        };
        self.complete(&challenge, &intent.with_game(game_id)).await
    }

    /// Holds both players in the queue store, rebuilding its guards first
    /// if it lost them.
    async fn hold(&self, intent: &MatchIntent, now: Millis) -> Result<bool, ServiceError> {
        let until = now + self.limits.guard_ms;
        Ok(self
            .guards
            .admitting(|| self.holds.hold_players(intent, until, now))
            .await?)
    }

    /// The match of an accepted challenge, colors from `preferred_color`.
    async fn intent(
        &self,
        c: &Challenge,
        match_id: MatchId,
        now: Millis,
    ) -> Result<MatchIntent, ServiceError> {
        let pool = crate::domain::RatingPool {
            speed: c.time_control.speed(),
            variant: c.variant,
        };
        let side = |user: &UserId, rating| MatchSide {
            user_id: user.clone(),
            username: None,
            rating,
            entry_id: None,
            region: None,
            time_control: None,
        };
        let challenger = side(
            &c.challenger,
            self.ratings
                .rating(&c.tenant_id, &c.challenger, pool)
                .await?,
        );
        let opponent = side(
            &c.opponent,
            self.ratings.rating(&c.tenant_id, &c.opponent, pool).await?,
        );
        let challenger_white = match c.preferred_color {
            PreferredColor::White => true,
            PreferredColor::Black => false,
            PreferredColor::Random => rand::rng().random_bool(0.5),
        };
        let (white, black) = if challenger_white {
            (challenger, opponent)
        } else {
            (opponent, challenger)
        };
        Ok(MatchIntent {
            match_id,
            tenant_id: c.tenant_id.clone(),
            white,
            black,
            pool: PoolKey {
                variant: c.variant,
                time_control: c.time_control,
                mode: c.mode,
                region: Region::Global,
            },
            created_at: now,
            source: MatchSource::Challenge,
        })
    }

    /// Persists the match and marks the challenge accepted; idempotent.
    async fn complete(
        &self,
        c: &Challenge,
        record: &MatchRecord,
    ) -> Result<Challenge, ServiceError> {
        let now = self.clock.now();
        self.durable
            .insert_matches(
                std::slice::from_ref(record),
                &[],
                now - self.limits.guard_ms,
            )
            .await?;
        let accept = Transition {
            from: ChallengeStatus::Accepting,
            to: ChallengeStatus::Accepted,
            match_id: None,
            game_id: Some(&record.game_id),
        };
        self.durable
            .transition_challenge(&c.tenant_id, &c.id, accept, now)
            .await?;
        self.pairing
            .commit(
                std::slice::from_ref(record),
                now + self.limits.guard_ms,
                now,
            )
            .await?;
        tracing::info!(
            event = "challenge_accepted",
            challenge_id = %c.id,
            match_id = %record.match_id,
            game_id = %record.game_id,
            white = %record.white.user_id,
            black = %record.black.user_id,
            "challenge accepted; game created"
        );
        Ok(Challenge {
            status: ChallengeStatus::Accepted,
            match_id: Some(record.match_id),
            game_id: Some(record.game_id.clone()),
            ..c.clone()
        })
    }

    /// Puts a challenge whose accept failed back to pending.
    async fn reopen(&self, c: &Challenge) -> Result<(), ServiceError> {
        let back = Transition {
            from: ChallengeStatus::Accepting,
            to: ChallengeStatus::Pending,
            match_id: None,
            game_id: None,
        };
        self.durable
            .transition_challenge(&c.tenant_id, &c.id, back, self.clock.now())
            .await?;
        Ok(())
    }

    /// Expires pending challenges past their time, and finishes or rolls
    /// back accepts whose accepter died. Answers (expired, recovered).
    pub async fn sweep(&self) -> Result<(u64, usize), ServiceError> {
        let now = self.clock.now();
        let expired = self.durable.expire_challenges(now).await?;
        let stale = self
            .durable
            .stale_accepting(now - self.limits.accepting_timeout_ms)
            .await?;
        for c in &stale {
            let Some(m) = &c.match_id else {
                self.reopen(c).await?;
                continue;
            };
            if let Some(record) = self.durable.match_by_id(m).await? {
                tracing::warn!(challenge_id = %c.id, "finishing an accept left half-done");
                self.complete(c, &record).await?;
            } else if self.durable.intent(m).await?.is_none() {
                tracing::warn!(challenge_id = %c.id, "rolling back a stale accept (no game was asked for)");
                let held = self.intent(c, *m, c.created_at).await?;
                self.holds.drop_hold(&held).await?;
                self.reopen(c).await?;
            }
            // Else its game is being asked for: matching's recovery records
            // it (or drops the intent), and a later sweep settles the
            // challenge from that.
        }
        Ok((expired, stale.len()))
    }
}
