//! `vesemir-lab`: the local lab from the command line.
//!
//! - `vesemir-lab demo [--hosts 6] [--rate 200] [--concurrency 2]`: starts a lab, sends steady
//!   traffic through both HAProxy boxes, runs `vesemir deploy` of a new version with live
//!   progress, then prints hosts updated, requests served and requests failed, and tears the lab
//!   down. Exits non-zero if a host was not updated or a request failed.
//! - `vesemir-lab up [--hosts 6]`: starts a lab, prints how to deploy to it, and keeps it up
//!   until Ctrl-C.
//!
//! The `vesemir` binary is found next to this one (`cargo build -p vesemir-cli`), or at
//! `$VESEMIR_BIN`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vesemir_examples::lab::{Lab, LabOptions, LoadOptions};

struct Args {
    command: String,
    hosts: usize,
    rate: u32,
    concurrency: usize,
}

const USAGE: &str = "usage: vesemir-lab demo|up [--hosts N] [--rate REQUESTS_PER_SECOND] [--concurrency N]";

fn parse() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let command = raw.next().ok_or_else(|| USAGE.to_owned())?;
    if command != "demo" && command != "up" {
        return Err(format!("unknown command {command:?}\n{USAGE}"));
    }
    let mut args = Args { command, hosts: 6, rate: 200, concurrency: 2 };
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|_| format!("{flag} {v:?}: expected a number"));
        match flag.as_str() {
            "--hosts" => args.hosts = number(&value)?,
            "--rate" => args.rate = u32::try_from(number(&value)?).map_err(|e| e.to_string())?,
            "--concurrency" => args.concurrency = number(&value)?,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if !(1..=240).contains(&args.hosts) {
        return Err("--hosts must be 1 to 240".into());
    }
    Ok(args)
}

/// The `vesemir` binary: `$VESEMIR_BIN`, else next to this executable.
fn vesemir_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("VESEMIR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let path = me.with_file_name("vesemir");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} does not exist: build it with `cargo build -p vesemir-cli` (or set VESEMIR_BIN)",
            path.display()
        ))
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("vesemir-lab: {e}");
            return ExitCode::from(2);
        }
    };
    let vesemir = match vesemir_binary() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("vesemir-lab: {e}");
            return ExitCode::from(2);
        }
    };
    // Ctrl-C reaches `vesemir` too (same process group), which cancels gracefully; this process
    // only notes it, waits for `vesemir` to finish, and then tears the lab down.
    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vesemir-lab: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let flag = Arc::clone(&interrupted);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        signals.block_on(async move {
            // Registered before the lab starts: from here on Ctrl-C no longer kills this
            // process, so the lab's guards always run.
            let mut interrupts =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
                    Ok(signal) => signal,
                    Err(e) => {
                        eprintln!("vesemir-lab: cannot listen for Ctrl-C: {e}");
                        let _ = ready_tx.send(());
                        return;
                    }
                };
            let _ = ready_tx.send(());
            while interrupts.recv().await.is_some() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));

    println!(
        "Starting a lab: {} hosts (each its own 127.x address, sshd and app), 2 HAProxy boxes, a Chef server...",
        args.hosts
    );
    let started = Instant::now();
    let lab = match Lab::start(LabOptions {
        hosts: args.hosts,
        concurrency: args.concurrency,
        ..LabOptions::default()
    }) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("vesemir-lab: cannot start the lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Lab up in {:.1} s:", started.elapsed().as_secs_f64());
    for host in lab.hosts() {
        println!(
            "  {:8} {:15} ssh :{}  app {}",
            host.name,
            host.address.to_string(),
            lab.ssh_port(),
            host.app
        );
    }
    for (i, lb) in lab.haproxy().iter().enumerate() {
        println!(
            "  lb-{}     {:15} frontend {}  runtime API :{}",
            i + 1,
            lb.address.to_string(),
            lb.frontend,
            lab.api_port()
        );
    }
    println!("  chef     {}", lab.chef_url());
    println!("  config   {}\n  deploy   {}", lab.config_path().display(), lab.deploy_path().display());
    println!(
        "  server   {} (two teams; `vesemir serve --server-config` it)",
        lab.server_config_path().display()
    );
    if interrupted.load(Ordering::SeqCst) {
        println!("Interrupted: tearing the lab down.");
        return ExitCode::from(130);
    }
    if args.command == "up" {
        println!(
            "\nDeploy to it with:\n  {} --config {} deploy -f {}\nCtrl-C stops the lab.",
            vesemir.display(),
            lab.config_path().display(),
            lab.deploy_path().display()
        );
        while !interrupted.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("\nTearing the lab down.");
        return ExitCode::SUCCESS;
    }

    let frontends: Vec<String> = lab.frontends().iter().map(ToString::to_string).collect();
    println!("\nTraffic: {} requests/s through {}", args.rate, frontends.join(" and "));
    let traffic = lab.start_load(LoadOptions {
        rate: args.rate,
        max_duration: Duration::from_secs(600),
        max_requests: u64::from(args.rate) * 600,
        ..LoadOptions::default()
    });
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "$ vesemir --config {} deploy -f {}\n",
        lab.config_path().display(),
        lab.deploy_path().display()
    );
    let status = Command::new(&vesemir)
        .arg("--config")
        .arg(lab.config_path())
        .arg("deploy")
        .arg("-f")
        .arg(lab.deploy_path())
        .current_dir(lab.dir())
        .env_remove("VESEMIR_CONFIG")
        .status();
    std::thread::sleep(Duration::from_secs(1));
    let report = match traffic.finish() {
        Ok(report) => report,
        Err(e) => {
            eprintln!("vesemir-lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    let version = "2.0.0";
    let updated =
        lab.hosts().iter().filter(|h| lab.served_version(&h.name).ok().as_deref() == Some(version)).count();
    println!(
        "\nhosts updated: {updated}/{}, requests served: {}, requests failed: {}",
        lab.hosts().len(),
        report.served,
        report.failed
    );
    let versions: Vec<String> = report.by_version.iter().map(|(v, n)| format!("{v}: {n}")).collect();
    println!("served by version: {}", versions.join(", "));
    for failure in &report.failures {
        println!("  failed: {failure}");
    }
    println!("Tearing the lab down.");
    let deployed = matches!(&status, Ok(s) if s.success());
    if let Err(e) = &status {
        eprintln!("vesemir-lab: cannot run {}: {e}", vesemir.display());
    }
    if deployed && updated == lab.hosts().len() && report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
