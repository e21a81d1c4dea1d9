//! Conformance suites: the behaviour every implementation of a port must show. Each adapter's
//! tests run the suite of its port against the real adapter and a real server; the core's fakes
//! run the same suites.

pub mod executor;
pub mod inventory;
pub mod load_balancer;
