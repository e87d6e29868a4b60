//! `tokenizer.json`: loading it, then encoding and decoding a fixed text with it, as a
//! search does.
#![no_main]

#[path = "common.rs"]
mod common;

use latentevo_model::load_tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::default_panic_hook();
    let path = common::write_scratch("tokenizer.json", data);
    if let Ok(tokenizer) = load_tokenizer(&path) {
        if let Ok(encoding) = tokenizer.encode("Hello world, café 日本 2024!", false) {
            let _ = tokenizer.decode(encoding.get_ids(), true);
        }
        let _ = tokenizer.get_vocab_size(true);
    }
});
