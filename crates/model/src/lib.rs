//! Mixture-of-Experts decoder on candle, with the hooks latentevo's search needs.
pub mod error;
pub mod gguf;
