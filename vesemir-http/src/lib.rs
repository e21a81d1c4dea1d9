//! The HTTP server (not built yet: see issue 7).
