//! Test support for Vesemir.
//!
//! - [`process`]: start a real server (haproxy, sshd, goiardi...) on loopback in its own temp
//!   dir, on a free port, stopped when the guard drops, also on panic.
//! - [`haproxy`]: a real haproxy with a generated config and admin runtime API sockets.
//! - [`goiardi`]: a real Chef server (goiardi) with authentication on.
//! - [`chromium`]: chromedriver and a headless Chromium (a WebDriver session) for the web
//!   page's browser tests; every process it started is killed on drop, also on panic.
//! - [`conformance`]: one suite per port, run against the core's fake and against the real
//!   adapter, so the fake cannot drift from reality.
//! - [`postgres`]: a real PostgreSQL cluster (`initdb` + `postgres`, as `nobody` when run as
//!   root), one fresh database per call.
//! - [`named`]: a real BIND 9 with a TSIG key and dynamic forward and reverse zones.
//! - [`libvirt`]: a libvirt lab (session libvirtd, virtlogd, TCG guests with SSH on loopback).
//! - [`slapd`]: a real OpenLDAP slapd with a generated config, people and groups.
//! - [`sshd`]: a real OpenSSH sshd with generated host and client keys, and an ssh-agent.
#![warn(missing_docs)]

pub mod chromium;
pub mod conformance;
pub mod goiardi;
pub mod haproxy;
pub mod libvirt;
pub mod named;
pub mod postgres;
pub mod process;
pub mod slapd;
pub mod sshd;
