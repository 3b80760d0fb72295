//! Every id type: parsed or refused, never a panic; what parses prints back
//! as given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchmaking_api::domain::{ChallengeId, GameId, MatchId, QueueEntryId, TenantId, UserId};

fuzz_target!(|text: &str| {
    if let Ok(id) = QueueEntryId::parse(text) {
        assert_eq!(id.to_string(), text);
    }
    if let Ok(id) = MatchId::parse(text) {
        assert_eq!(id.to_string(), text);
    }
    if let Ok(id) = ChallengeId::parse(text) {
        assert_eq!(id.to_string(), text);
    }
    if let Ok(id) = TenantId::parse(text) {
        assert_eq!(id.as_str(), text);
    }
    if let Ok(id) = UserId::parse(text) {
        assert_eq!(id.as_str(), text);
    }
    if let Ok(id) = GameId::parse(text) {
        assert_eq!(id.as_str(), text);
    }
});
