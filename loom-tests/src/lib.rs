//! Loom models of the lock-free protocols live in `tests/`.
