//! The TOML reward file (`--reward-file F.toml`): parsing never panics, and a spec read
//! from TOML prints to a string that parses back to it.
#![no_main]

use latentevo_reward::RewardSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = RewardSpec::from_toml_str(text, std::path::Path::new("reward.toml")) {
        let printed = spec.to_string();
        let again: RewardSpec = printed
            .parse()
            .unwrap_or_else(|e| panic!("TOML spec printed as {printed:?}, which does not parse: {e}"));
        assert_eq!(again, spec, "printed as {printed:?}");
    }
});
