//! Test support for Vesemir.
//!
//! - [`process`]: start a real server (haproxy, sshd, goiardi...) on loopback in its own temp
//!   dir, on a free port, stopped when the guard drops, also on panic.
//! - [`goiardi`]: a real Chef server (goiardi) with authentication on.
//! - [`conformance`]: one suite per port, run against the core's fake and against the real
//!   adapter, so the fake cannot drift from reality.
#![warn(missing_docs)]

pub mod conformance;
pub mod goiardi;
pub mod process;
