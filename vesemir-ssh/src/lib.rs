//! The SSH executor adapter (not built yet: see issue 4).
