//! The reward spec string (`--reward "relevance + 0.5*length(30)"`): parsing never
//! panics, and a spec that parses prints to a string that parses back to it.
#![no_main]

use latentevo_reward::RewardSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = text.parse::<RewardSpec>() {
        let printed = spec.to_string();
        let again: RewardSpec = printed
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e}"));
        assert_eq!(again, spec, "{text:?} printed as {printed:?}");
    }
});
