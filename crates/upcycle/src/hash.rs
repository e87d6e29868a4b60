//! sha256 helpers: the assets crate's, re-exported (one implementation for every pinned
//! file latentevo checks). [`sha256_file`]'s errors convert into
//! [`UpcycleError`](crate::UpcycleError) with `?`.

pub use latentevo_assets::{sha256_bytes, sha256_file};
