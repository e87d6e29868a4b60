//! Dense-to-MoE upcycling and the default model (work in progress).
