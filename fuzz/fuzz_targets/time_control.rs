//! Time controls: any text parses or is refused (never a panic), and what
//! parses prints back to a text that parses to the same control.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchmaking_api::domain::TimeControl;

fuzz_target!(|text: &str| {
    if let Ok(tc) = text.parse::<TimeControl>() {
        let printed = tc.to_string();
        assert_eq!(printed.parse::<TimeControl>().ok(), Some(tc), "{text:?}");
        let _ = tc.speed();
    }
});
