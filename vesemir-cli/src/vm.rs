//! `vesemir vm ...` (issue 19): VMs through the server's API. `create` asks for one and follows
//! its events step by step, then says how to reach it; `list`, `show`, `cancel` and `destroy`
//! (which asks first on a terminal). Every decision is the server's; this module validates the
//! names at the edge, renders events and views, and maps the end to an exit code.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use vesemir_core::ports::OutputStream;
use vesemir_core::provision::{
    FlavorName, Mode, ProvisionEvent, ProvisionEventKind, ProvisionOutcome, Step, VmName,
};
use vesemir_http::store::vms::VmStatus;
use vesemir_http::vm_wire::{VmCreateRequest, VmList, VmView};

use crate::cli::{VmCommand, VmCreateArgs};
use crate::client::{Client, VmFilter};
use crate::exit::{Exit, Failure};
use crate::output::OutputFormat;

/// Runs one `vesemir vm` command.
pub async fn run(command: &VmCommand) -> Result<Exit, Failure> {
    match command {
        VmCommand::Create(args) => create(args).await,
        VmCommand::List { owner, status, limit, output, server } => {
            if let Some(status) = status {
                if VmStatus::parse(status).is_none() {
                    return Err(Failure::input(format!(
                        "--status {status:?}: use creating, ready, failed, cancelled, destroying, destroyed or interrupted"
                    )));
                }
            }
            let filter = VmFilter { owner: owner.clone(), status: status.clone(), limit: Some(*limit) };
            let list = Client::new(&server.server)?.vms(&filter).await?;
            match output {
                OutputFormat::Json => print_json(&list)?,
                OutputFormat::Text => print!("{}", list_text(&list)),
            }
            Ok(Exit::Success)
        }
        VmCommand::Show { name, output, server } => {
            let name = vm_name(name)?;
            let view = Client::new(&server.server)?.vm(&name).await?;
            match output {
                OutputFormat::Json => print_json(&view)?,
                OutputFormat::Text => print!("{}", describe(&view)),
            }
            Ok(show_exit(&view))
        }
        VmCommand::Cancel { name, output, server } => {
            let name = vm_name(name)?;
            let client = Client::new(&server.server)?;
            let seen = client.vm_events(&name, 0, false, &mut |_| {}).await?;
            let progress = Progress::new(*output);
            progress.line(&format!("vesemir: cancelling the create of VM {name}"));
            client.cancel_vm(&name).await?;
            let view = follow(&client, &name, seen, &progress).await?;
            progress.finish(&view)?;
            Ok(end_exit(&view, Wanted::Cancelled))
        }
        VmCommand::Destroy { name, yes, output, server } => {
            let name = vm_name(name)?;
            let on_terminal = crate::control_socket::stdin_is_terminal();
            if !yes && !on_terminal {
                return Err(Failure::input(format!(
                    "vm destroy {name}: stdin is not a terminal, so nobody can confirm: pass --yes to destroy it without asking"
                )));
            }
            let client = Client::new(&server.server)?;
            let view = client.vm(&name).await?;
            if !yes && !confirm(&view)? {
                eprintln!("vesemir: nothing destroyed");
                return Ok(Exit::BadInput);
            }
            let seen = client.vm_events(&name, 0, false, &mut |_| {}).await?;
            let progress = Progress::new(*output);
            client.destroy_vm(&name).await?;
            let view = follow(&client, &name, seen, &progress).await?;
            progress.finish(&view)?;
            Ok(end_exit(&view, Wanted::Destroyed))
        }
    }
}

/// `vesemir vm create`.
async fn create(args: &VmCreateArgs) -> Result<Exit, Failure> {
    let owner = args.owner.trim();
    if owner.is_empty() {
        return Err(Failure::input("--owner is empty: give the directory user the VM is for"));
    }
    let flavor = FlavorName::new(&args.flavor).map_err(|e| Failure::input(format!("--flavor: {e}")))?;
    let name = args.name.as_deref().map(vm_name).transpose()?;
    let client = Client::new(&args.server.server)?;
    let body = VmCreateRequest {
        owner: owner.to_owned(),
        flavor: flavor.to_string(),
        name: name.map(|name| name.to_string()),
    };
    let accepted = client.create_vm(&body).await?;
    let name = vm_name(&accepted.name)?;
    if args.detach {
        match args.output {
            OutputFormat::Json => print_json(&accepted)?,
            OutputFormat::Text => println!(
                "VM {name} ({}) for {}: {}; see how it goes with `vesemir vm show {name}`",
                accepted.fqdn, accepted.owner, accepted.status
            ),
        }
        return Ok(Exit::Success);
    }
    let progress = Progress::new(args.output);
    progress
        .line(&format!("vesemir: VM {name} accepted for {} (following its events)", accepted.requested_by));
    let view = follow(&client, &name, 0, &progress).await?;
    progress.finish(&view)?;
    Ok(end_exit(&view, Wanted::Ready))
}

/// A VM name from the command line, refused here when it cannot be one.
fn vm_name(text: &str) -> Result<VmName, Failure> {
    VmName::new(text).map_err(|e| Failure::input(e.to_string()))
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string(value).map_err(|e| Failure::input(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// How the command shows progress: on stdout for text, on stderr when stdout carries JSON.
struct Progress {
    format: OutputFormat,
    lines: std::sync::Mutex<Lines>,
}

impl Progress {
    fn new(format: OutputFormat) -> Self {
        Self { format, lines: std::sync::Mutex::new(Lines::default()) }
    }

    fn line(&self, text: &str) {
        match self.format {
            OutputFormat::Text => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{text}");
                let _ = stdout.flush();
            }
            OutputFormat::Json => eprintln!("{text}"),
        }
    }

    fn event(&self, event: &ProvisionEvent) {
        let line = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).line(event);
        if let Some(line) = line {
            self.line(&line);
        }
    }

    /// The end: the VM as the API shows it (JSON), or its summary with the step times.
    fn finish(&self, view: &VmView) -> Result<(), Failure> {
        match self.format {
            OutputFormat::Json => print_json(view),
            OutputFormat::Text => {
                let lines = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                self.line("");
                self.line(summary(view, &lines).trim_end());
                Ok(())
            }
        }
    }
}

/// Follows VM `name`'s events after stream id `after` until its create or destroy ends, then
/// reads the VM. The record can lag the last event by a moment: after the `finished` event it
/// is read again while it runs, at most 30 s. A stream that ends before that event (a restart,
/// a proxy's idle timeout) is followed again, from the last event read, while the server says
/// the VM's run goes on. Ctrl-C stops following (the server goes on) and says how to go on.
async fn follow(client: &Client, name: &VmName, after: u64, progress: &Progress) -> Result<VmView, Failure> {
    let following = async {
        let mut last = after;
        let mut ended_at = None;
        loop {
            let finished = progress.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).finished;
            if !finished {
                let before = last;
                last = client.vm_events(name, last, true, &mut |event| progress.event(event)).await?;
                if last == before {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let view = client.vm(name).await?;
            let finished = progress.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).finished;
            if !view.status.is_running() {
                return Ok(view);
            }
            if finished {
                let since = *ended_at.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= Duration::from_secs(30) {
                    return Ok(view);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    tokio::select! {
        view = following => view,
        _ = tokio::signal::ctrl_c() => Err(Failure {
            exit: Exit::DeploymentFailed,
            message: format!(
                "stopped following VM {name}: the server goes on with it; `vesemir vm show {name}` tells how it went, `vesemir vm cancel {name}` stops a create"
            ),
        }),
    }
}

/// Renders events as lines, remembering when each step started (for its time) and how the
/// last machine ended.
#[derive(Debug, Default)]
struct Lines {
    started: BTreeMap<Step, Duration>,
    /// Each step's time, from its start to its end, in order.
    times: Vec<(Step, Duration)>,
    /// How long the whole create or destroy took.
    total: Option<Duration>,
    finished: bool,
}

impl Lines {
    /// The line for `event`, if it gets one.
    fn line(&mut self, event: &ProvisionEvent) -> Option<String> {
        let at = event.elapsed;
        let text = match &event.kind {
            ProvisionEventKind::Started { mode: Mode::Create, vm, fqdn, flavor } => {
                self.started.clear();
                self.times.clear();
                self.finished = false;
                format!(
                    "create {vm} ({fqdn}), flavor {} ({} cores, {} MiB, {} GiB)",
                    flavor.name, flavor.size.cores, flavor.size.memory_mib, flavor.size.disk_gib
                )
            }
            ProvisionEventKind::Started { mode: Mode::Destroy, vm, fqdn, .. } => {
                self.started.clear();
                self.times.clear();
                self.finished = false;
                format!("destroy {vm} ({fqdn})")
            }
            ProvisionEventKind::StepStarted { step } => {
                self.started.insert(*step, at);
                format!("{step}: {}", doing(*step))
            }
            ProvisionEventKind::Placed { placement } => {
                format!("  placed on hypervisor {} at {}", placement.hypervisor, placement.address)
            }
            ProvisionEventKind::HostKeyRecorded { key, confirmed_by_console } => format!(
                "  host key {key} ({})",
                if *confirmed_by_console {
                    "the console showed the same key"
                } else {
                    "trusted on first use: no console key to check it against"
                }
            ),
            ProvisionEventKind::Output { step, stream, text } => {
                let mark = match stream {
                    OutputStream::Stdout => '|',
                    OutputStream::Stderr => '!',
                };
                format!("  {step} {mark} {text}")
            }
            ProvisionEventKind::StepDone { step } => {
                let took = self.took(*step, at);
                self.times.push((*step, took));
                format!("{step}: done in {}", seconds(took))
            }
            ProvisionEventKind::StepFailed { step, reason, partial } => {
                let took = self.took(*step, at);
                let undone = if *partial { " (it may have changed something: it is undone too)" } else { "" };
                format!("{step}: FAILED after {}: {reason}{undone}", seconds(took))
            }
            ProvisionEventKind::CancelRequested => {
                "cancel requested: the step in flight ends, then every step done is undone".to_owned()
            }
            ProvisionEventKind::UndoStarted { step, attempt } => {
                let again = if *attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                format!("undo {step}: {}{again}", undoing(*step))
            }
            ProvisionEventKind::UndoDone { step } => format!("undo {step}: done"),
            ProvisionEventKind::UndoFailed { step, reason, will_retry } => {
                let then = if *will_retry { "trying again" } else { "LEFT BEHIND" };
                format!("undo {step}: FAILED: {reason}; {then}")
            }
            ProvisionEventKind::Finished { outcome } => {
                self.finished = true;
                self.total = Some(at);
                match outcome {
                    ProvisionOutcome::Ready { .. } => "ready".to_owned(),
                    ProvisionOutcome::Failed { step, .. } => {
                        format!("failed at {step}; every step done was undone{}", left(outcome))
                    }
                    ProvisionOutcome::Cancelled { .. } => {
                        format!("cancelled; every step done was undone{}", left(outcome))
                    }
                    ProvisionOutcome::Destroyed { .. } => format!("destroyed{}", left(outcome)),
                }
            }
            _ => return None,
        };
        Some(format!("{:>8}  {text}", seconds(at)))
    }

    fn took(&self, step: Step, at: Duration) -> Duration {
        self.started.get(&step).map_or(Duration::ZERO, |start| at.saturating_sub(*start))
    }
}

fn left(outcome: &ProvisionOutcome) -> String {
    let steps = outcome.left_behind();
    if steps.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = steps.iter().map(|s| s.as_str()).collect();
        format!(" except {} (left behind)", names.join(", "))
    }
}

/// `12.3s`.
fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// What a step does, for its start line.
fn doing(step: Step) -> &'static str {
    match step {
        Step::Reserve => "reserving an address and a hypervisor slot",
        Step::Dns => "adding the A and PTR records",
        Step::Disk => "copying the disk template",
        Step::Domain => "defining and starting the domain",
        Step::WaitSsh => "waiting for SSH and its host key",
        Step::Chef => "registering the node and its client in Chef",
        Step::Bootstrap => "running the first bootstrap over SSH",
        Step::Verify => "checking DNS, SSH with the recorded key and Chef search",
    }
}

/// What an undo takes back.
fn undoing(step: Step) -> &'static str {
    match step {
        Step::Reserve => "releasing the address and the hypervisor slot",
        Step::Dns => "removing the A and PTR records",
        Step::Disk => "deleting the disk",
        Step::Domain => "destroying and undefining the domain",
        Step::Chef => "deleting the Chef node and client",
        Step::WaitSsh | Step::Bootstrap | Step::Verify => "nothing to take back",
    }
}

/// What `destroy` takes down, for the confirmation and the summary.
fn parts(view: &VmView) -> String {
    let address = view.address.as_deref().map_or(String::new(), |a| format!(" → {a}"));
    let on = view.hypervisor.as_deref().map_or(String::new(), |h| format!(" on {h}"));
    format!(
        "its DNS records ({}{address}), its domain and disk{on}, its Chef node and client, and its address reservation",
        view.fqdn
    )
}

/// Asks on the terminal; true for `y`/`yes`.
fn confirm(view: &VmView) -> Result<bool, Failure> {
    confirm_with(view, &mut std::io::stdin().lock(), &mut std::io::stderr())
}

/// Writes the question naming what will be removed to `out`, reads the answer from `input`.
fn confirm_with(view: &VmView, input: &mut dyn BufRead, out: &mut dyn Write) -> Result<bool, Failure> {
    let _ = write!(
        out,
        "destroy VM {} of {} ({}): {} will be removed. Destroy it? [y/N] ",
        view.name,
        view.owner,
        view.status,
        parts(view)
    );
    let _ = out.flush();
    let mut answer = String::new();
    input.read_line(&mut answer).map_err(|e| Failure::input(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// What the command waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Ready,
    Cancelled,
    Destroyed,
}

/// 0 when the VM ended as wanted with nothing left behind, else 1.
fn end_exit(view: &VmView, wanted: Wanted) -> Exit {
    let reached = match wanted {
        Wanted::Ready => view.status == VmStatus::Ready,
        Wanted::Cancelled => view.status == VmStatus::Cancelled,
        Wanted::Destroyed => view.status == VmStatus::Destroyed,
    };
    if reached && view.left_behind.is_empty() {
        Exit::Success
    } else {
        Exit::DeploymentFailed
    }
}

/// `show`: 0 unless the VM failed, was cancelled or interrupted, or left parts behind.
fn show_exit(view: &VmView) -> Exit {
    let bad = matches!(view.status, VmStatus::Failed | VmStatus::Cancelled | VmStatus::Interrupted);
    if bad || !view.left_behind.is_empty() {
        Exit::DeploymentFailed
    } else {
        Exit::Success
    }
}

/// The command to go on with, when parts are left or the VM was interrupted.
fn next_step(view: &VmView) -> Option<String> {
    if let Some(next) = &view.next {
        return Some(next.clone());
    }
    (view.status == VmStatus::Interrupted || !view.left_behind.is_empty())
        .then(|| format!("vesemir vm destroy {}", view.name))
}

/// The end of a create, cancel or destroy, for a person.
fn summary(view: &VmView, lines: &Lines) -> String {
    let mut out = String::new();
    let took = lines.total.map_or(String::new(), |t| format!(" in {}", seconds(t)));
    match view.status {
        VmStatus::Ready => {
            out.push_str(&format!("VM {} is ready{took}\n", view.name));
            out.push_str(&format!("  DNS name:    {}\n", view.fqdn));
            if let Some(address) = &view.address {
                let on = view.hypervisor.as_deref().map_or(String::new(), |h| format!(" (hypervisor {h})"));
                out.push_str(&format!("  address:     {address}{on}\n"));
            }
            let login = view.login.clone().unwrap_or_else(|| format!("ssh {}@{}", view.owner, view.fqdn));
            out.push_str(&format!("  log in:      {login}\n"));
            if let Some(key) = &view.ssh_host_key {
                let names = match &view.address {
                    Some(address) => format!("{},{address}", view.fqdn),
                    None => view.fqdn.clone(),
                };
                out.push_str(&format!("  known_hosts: {names} {key}\n"));
            }
        }
        VmStatus::Failed => {
            let why = view.failure.as_ref().map_or_else(
                || "no reason recorded".to_owned(),
                |f| format!("step {} failed: {}", f.step, f.reason),
            );
            out.push_str(&format!("VM {} FAILED{took}: {why}\n", view.name));
        }
        VmStatus::Cancelled => out.push_str(&format!("VM {} cancelled{took}\n", view.name)),
        VmStatus::Destroyed => out.push_str(&format!("VM {} destroyed{took}\n", view.name)),
        other => out.push_str(&format!("VM {}: {other}{took}\n", view.name)),
    }
    if !lines.times.is_empty() {
        let times: Vec<String> =
            lines.times.iter().map(|(step, t)| format!("{step} {}", seconds(*t))).collect();
        out.push_str(&format!("  steps:       {}\n", times.join(", ")));
    }
    out.push_str(&leftovers(view));
    out
}

/// What is left and the command to go on, or that nothing is left after an unwinding.
fn leftovers(view: &VmView) -> String {
    let mut out = String::new();
    if !view.left_behind.is_empty() {
        out.push_str(&format!(
            "  LEFT BEHIND: {} (their parts are still there: an operator has to remove them)\n",
            view.left_behind.join(", ")
        ));
    } else if matches!(view.status, VmStatus::Failed | VmStatus::Cancelled | VmStatus::Destroyed) {
        out.push_str("  nothing is left: every part was removed\n");
    }
    if let Some(next) = next_step(view) {
        out.push_str(&format!("  next:        {next}\n"));
    }
    out
}

/// `vm show` as text.
fn describe(view: &VmView) -> String {
    let mut out = format!(
        "VM {}: {} (owner {}, team {}, flavor {}, asked by {} at {})\n",
        view.name, view.status, view.owner, view.team, view.flavor, view.requested_by, view.created_at
    );
    out.push_str(&format!("  DNS name:    {}\n", view.fqdn));
    if let Some(address) = &view.address {
        out.push_str(&format!("  address:     {address}\n"));
    }
    if let Some(hypervisor) = &view.hypervisor {
        out.push_str(&format!("  hypervisor:  {hypervisor}\n"));
    }
    if let Some(key) = &view.ssh_host_key {
        out.push_str(&format!("  host key:    {key}\n"));
    }
    if let Some(login) = &view.login {
        out.push_str(&format!("  log in:      {login}\n"));
    }
    if let Some(finished) = &view.finished_at {
        out.push_str(&format!("  ended at:    {finished}\n"));
    }
    if let Some(failure) = &view.failure {
        out.push_str(&format!("  failed at:   {}: {}\n", failure.step, failure.reason));
    }
    out.push_str(&leftovers(view));
    out
}

/// `vm list` as text: one line per VM.
fn list_text(list: &VmList) -> String {
    if list.vms.is_empty() {
        return "no VMs\n".to_owned();
    }
    let mut out = format!(
        "{:<20} {:<11} {:<12} {:<8} {:<15} {:<32} {}\n",
        "NAME", "STATUS", "OWNER", "FLAVOR", "ADDRESS", "DNS NAME", "CREATED"
    );
    for vm in &list.vms {
        out.push_str(&format!(
            "{:<20} {:<11} {:<12} {:<8} {:<15} {:<32} {}\n",
            vm.name,
            vm.status.as_str(),
            vm.owner,
            vm.flavor,
            vm.address.as_deref().unwrap_or("-"),
            vm.fqdn,
            vm.created_at
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vesemir_core::provision::{Flavor, Placement, Size};
    use vesemir_http::vm_wire::{VmFailure, VmLinks};

    fn event(seq: u64, millis: u64, kind: ProvisionEventKind) -> ProvisionEvent {
        ProvisionEvent { seq, elapsed: Duration::from_millis(millis), kind }
    }

    fn view(status: VmStatus) -> VmView {
        VmView {
            name: "alice-1".into(),
            owner: "alice".into(),
            team: "dev".into(),
            flavor: "small".into(),
            status,
            fqdn: "alice-1.lab.test".into(),
            address: Some("10.0.0.12".into()),
            hypervisor: Some("hv-1".into()),
            ssh_host_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHLx".into()),
            login: Some("ssh alice@alice-1.lab.test".into()),
            requested_by: "ci".into(),
            created_at: "2026-12-01T10:00:00Z".into(),
            finished_at: None,
            failure: None,
            left_behind: vec![],
            next: None,
            links: VmLinks {
                self_: "/v1/vms/alice-1".into(),
                events: "/v1/vms/alice-1/events".into(),
                cancel: None,
                page: "/vms/alice-1".into(),
            },
        }
    }

    #[test]
    fn events_read_as_steps_with_their_times_output_and_undos() {
        let mut lines = Lines::default();
        let flavor = Flavor {
            name: FlavorName::new("small").unwrap(),
            size: Size { cores: 2, memory_mib: 5120, disk_gib: 40 },
        };
        let events = [
            event(
                1,
                0,
                ProvisionEventKind::Started {
                    mode: Mode::Create,
                    vm: VmName::new("alice-1").unwrap(),
                    fqdn: "alice-1.lab.test".parse().unwrap(),
                    flavor,
                },
            ),
            event(2, 0, ProvisionEventKind::StepStarted { step: Step::Reserve }),
            event(
                3,
                120,
                ProvisionEventKind::Placed {
                    placement: Placement {
                        hypervisor: vesemir_core::provision::HypervisorName::new("hv-1").unwrap(),
                        address: "10.0.0.12".parse().unwrap(),
                    },
                },
            ),
            event(4, 150, ProvisionEventKind::StepDone { step: Step::Reserve }),
            event(5, 150, ProvisionEventKind::StepStarted { step: Step::Bootstrap }),
            event(
                6,
                900,
                ProvisionEventKind::Output {
                    step: Step::Bootstrap,
                    stream: OutputStream::Stdout,
                    text: "node_name alice-1.lab.test".into(),
                },
            ),
            event(
                7,
                2150,
                ProvisionEventKind::StepFailed {
                    step: Step::Bootstrap,
                    reason: "chef-client exited 1".into(),
                    partial: false,
                },
            ),
            event(8, 2200, ProvisionEventKind::UndoStarted { step: Step::Reserve, attempt: 2 }),
            event(
                9,
                2300,
                ProvisionEventKind::UndoFailed {
                    step: Step::Reserve,
                    reason: "store down".into(),
                    will_retry: false,
                },
            ),
            event(
                10,
                2400,
                ProvisionEventKind::Finished {
                    outcome: ProvisionOutcome::Failed {
                        step: Step::Bootstrap,
                        reason: "chef-client exited 1".into(),
                        left_behind: vec![Step::Reserve],
                    },
                },
            ),
        ];
        let text: Vec<String> = events.iter().filter_map(|e| lines.line(e)).collect();
        assert_eq!(
            text,
            [
                "    0.0s  create alice-1 (alice-1.lab.test), flavor small (2 cores, 5120 MiB, 40 GiB)",
                "    0.0s  reserve: reserving an address and a hypervisor slot",
                "    0.1s    placed on hypervisor hv-1 at 10.0.0.12",
                "    0.1s  reserve: done in 0.1s",
                "    0.1s  bootstrap: running the first bootstrap over SSH",
                "    0.9s    bootstrap | node_name alice-1.lab.test",
                "    2.1s  bootstrap: FAILED after 2.0s: chef-client exited 1",
                "    2.2s  undo reserve: releasing the address and the hypervisor slot (attempt 2)",
                "    2.3s  undo reserve: FAILED: store down; LEFT BEHIND",
                "    2.4s  failed at bootstrap; every step done was undone except reserve (left behind)",
            ]
        );
        assert_eq!(lines.times, [(Step::Reserve, Duration::from_millis(150))]);
        assert_eq!(lines.total, Some(Duration::from_millis(2400)));
    }

    #[test]
    fn a_ready_vm_says_its_name_address_login_and_known_hosts_line() {
        let lines = Lines {
            times: vec![(Step::Reserve, Duration::from_millis(100)), (Step::WaitSsh, Duration::from_secs(3))],
            total: Some(Duration::from_millis(41_200)),
            ..Lines::default()
        };
        let text = summary(&view(VmStatus::Ready), &lines);
        assert_eq!(
            text,
            "VM alice-1 is ready in 41.2s\n  DNS name:    alice-1.lab.test\n  address:     10.0.0.12 (hypervisor hv-1)\n  log in:      ssh alice@alice-1.lab.test\n  known_hosts: alice-1.lab.test,10.0.0.12 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHLx\n  steps:       reserve 0.1s, wait_ssh 3.0s\n"
        );
        assert_eq!(end_exit(&view(VmStatus::Ready), Wanted::Ready), Exit::Success);
    }

    #[test]
    fn a_failure_names_the_step_the_reason_and_what_is_left_with_the_command_to_go_on() {
        let mut failed = view(VmStatus::Failed);
        failed.failure = Some(VmFailure { step: "dns".into(), reason: "TSIG refused".into() });
        let text = summary(&failed, &Lines::default());
        assert!(text.contains("VM alice-1 FAILED: step dns failed: TSIG refused"), "{text}");
        assert!(text.contains("nothing is left"), "{text}");
        assert_eq!(end_exit(&failed, Wanted::Ready), Exit::DeploymentFailed);

        failed.left_behind = vec!["domain".into()];
        let text = summary(&failed, &Lines::default());
        assert!(text.contains("LEFT BEHIND: domain"), "{text}");
        assert!(text.contains("next:        vesemir vm destroy alice-1"), "{text}");
        assert_eq!(show_exit(&failed), Exit::DeploymentFailed);

        let mut destroyed = view(VmStatus::Destroyed);
        assert_eq!(end_exit(&destroyed, Wanted::Destroyed), Exit::Success);
        destroyed.left_behind = vec!["chef".into()];
        assert_eq!(end_exit(&destroyed, Wanted::Destroyed), Exit::DeploymentFailed);
        assert_eq!(end_exit(&view(VmStatus::Interrupted), Wanted::Ready), Exit::DeploymentFailed);
        assert!(describe(&view(VmStatus::Interrupted)).contains("next:        vesemir vm destroy alice-1"));
        assert_eq!(show_exit(&view(VmStatus::Ready)), Exit::Success);
        assert_eq!(end_exit(&view(VmStatus::Cancelled), Wanted::Cancelled), Exit::Success);
    }

    #[test]
    fn destroy_asks_naming_what_goes_and_only_yes_destroys() {
        for (answer, yes) in [("y\n", true), ("YES\n", true), ("\n", false), ("n\n", false), ("", false)] {
            let mut out = Vec::new();
            let said = confirm_with(&view(VmStatus::Ready), &mut answer.as_bytes(), &mut out).unwrap();
            assert_eq!(said, yes, "{answer:?}");
            let question = String::from_utf8(out).unwrap();
            assert_eq!(
                question,
                "destroy VM alice-1 of alice (ready): its DNS records (alice-1.lab.test → 10.0.0.12), its domain and disk on hv-1, its Chef node and client, and its address reservation will be removed. Destroy it? [y/N] "
            );
        }
    }

    #[test]
    fn the_list_has_one_line_per_vm() {
        let list = VmList { vms: vec![view(VmStatus::Ready), view(VmStatus::Failed)] };
        let text = list_text(&list);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with("alice-1              ready       alice"), "{text}");
        assert_eq!(list_text(&VmList { vms: vec![] }), "no VMs\n");
    }
}
