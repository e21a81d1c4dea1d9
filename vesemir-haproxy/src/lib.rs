//! The HAProxy load balancer adapter (not built yet: see issue 3).
