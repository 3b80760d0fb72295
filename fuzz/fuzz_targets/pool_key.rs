//! Pool keys, as stored (`{variant}_{tc}_{mode}_{region}`) and as a join asks
//! for one (four fields, through the default tenant's rules): parsed or
//! refused with the field named, never a panic; stored keys round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchmaking_api::domain::{PoolKey, TenantConfig};

fuzz_target!(|text: &str| {
    if let Ok(key) = text.parse::<PoolKey>() {
        assert_eq!(key.to_string().parse::<PoolKey>().ok(), Some(key.clone()));
        let _ = key.rating_pool();
    }
    let mut fields = text.split('\0');
    let (tc, mode) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    let (variant, region) = (fields.next(), fields.next());
    match TenantConfig::default().pool_key(tc, mode, variant, region) {
        Ok(key) => assert_eq!(key.to_string().parse::<PoolKey>().ok(), Some(key)),
        Err(e) => assert!(!e.field.is_empty()),
    }
});
