//! Vesemir's examples: embedding the library (`examples/embedded.rs`), and [`lab`], a whole local
//! lab of hosts (sshd and an app each), two HAProxy boxes and a Chef server on loopback, used by
//! the demo (`vesemir-lab`), the benchmark (`lab-bench`) and the end-to-end tests of the CLI.
//!
//! The lab lives here, not in `vesemir-testkit`, because it uses every adapter: the adapters'
//! tests depend on the testkit, so the testkit must not depend on them.
#![warn(missing_docs)]

pub mod lab;
