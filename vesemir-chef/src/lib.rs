//! The Chef inventory adapter (not built yet: see issue 5).
