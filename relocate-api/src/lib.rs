//! Relocating caches (see the relocate-api issue); not built yet.
