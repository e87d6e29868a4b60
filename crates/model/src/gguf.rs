//! GGUF loading (owned by the GGUF work; filled in there).
