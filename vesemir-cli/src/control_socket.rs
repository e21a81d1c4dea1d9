//! Controlling a local deploy from another terminal: while it runs, `vesemir deploy` listens on
//! a unix socket beside its journal (`runs/<run-id>.sock` in the state directory, mode 0600)
//! and takes one-line commands (`pause`, `resume`, `confirm`, `cancel`), answering one line that
//! starts with `ok:` or `error:`. `vesemir pause|resume|confirm|cancel RUN-ID` are its clients.
//!
//! The same place holds the canary prompt of a deploy on a terminal, since both act on the same
//! [`LocalControl`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use vesemir_core::event::{Event, EventKind, EventSink, WaitReason};
use vesemir_core::Control;

use crate::exit::{Exit, Failure};

/// How long a client may take to send its line, and `vesemir pause` waits for the answer.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest command line read (the longest command is 7 bytes).
const MAX_LINE: u64 = 64;

/// An order for a running local deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// No new host starts until resumed; hosts in flight finish.
    Pause,
    /// Hosts start again.
    Resume,
    /// The canary waits for confirmation: go on with the rest.
    Confirm,
    /// No new host starts; hosts in flight finish; the deploy ends cancelled.
    Cancel,
}

impl Order {
    /// The command's word on the socket.
    pub fn word(self) -> &'static str {
        match self {
            Order::Pause => "pause",
            Order::Resume => "resume",
            Order::Confirm => "confirm",
            Order::Cancel => "cancel",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        [Order::Pause, Order::Resume, Order::Confirm, Order::Cancel].into_iter().find(|o| o.word() == word)
    }
}

/// What the deploy's events say the orders may act on.
#[derive(Debug, Default)]
struct Seen {
    /// The canary waits for confirmation now.
    waiting_for_confirmation: bool,
    /// The deployment ended.
    finished: bool,
}

/// The operator's side of a local deploy: its [`Control`], and what its events say (so that a
/// `confirm` when nothing waits is refused rather than lost). Also an [`EventSink`]: put it among
/// the deploy's sinks.
#[derive(Debug, Clone)]
pub struct LocalControl {
    control: Control,
    seen: Arc<Mutex<Seen>>,
    /// Woken when the canary starts waiting for confirmation.
    waiting: Arc<Notify>,
}

impl LocalControl {
    /// Wraps the deploy's control.
    pub fn new(control: Control) -> Self {
        Self { control, seen: Arc::default(), waiting: Arc::new(Notify::new()) }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out `order`; the answer's line, `ok: ...` or `error: ...`.
    pub fn apply(&self, order: Order) -> String {
        if self.seen().finished {
            return "error: the deployment has ended".to_owned();
        }
        match order {
            Order::Pause if self.control.is_paused() => "ok: already paused".to_owned(),
            Order::Pause => {
                self.control.pause();
                "ok: paused: no new host starts until resumed; hosts in flight finish".to_owned()
            }
            Order::Resume if !self.control.is_paused() => "error: the deployment is not paused".to_owned(),
            Order::Resume => {
                self.control.resume();
                "ok: resumed: hosts start again".to_owned()
            }
            Order::Confirm => {
                let mut seen = self.seen();
                if !seen.waiting_for_confirmation {
                    return "error: the canary is not waiting for confirmation".to_owned();
                }
                seen.waiting_for_confirmation = false;
                drop(seen);
                self.control.confirm();
                if self.control.is_paused() {
                    "ok: confirmed; the deployment is paused: the rest starts once resumed".to_owned()
                } else {
                    "ok: confirmed: the rest of the hosts start".to_owned()
                }
            }
            Order::Cancel => {
                self.control.cancel();
                "ok: cancelling: hosts in flight finish, no new host starts".to_owned()
            }
        }
    }

    /// Asks on the terminal whether to go on each time the canary waits for confirmation:
    /// `y` confirms, anything else (end of input included) cancels. An answer that comes after
    /// the canary was confirmed another way changes nothing.
    pub async fn prompt_on_terminal(self, canary: String, rest: usize) {
        loop {
            self.waiting.notified().await;
            eprint!("\nvesemir: canary done on {canary}: continue with {rest} hosts? [y/N] ");
            let answer = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|_| line)
            })
            .await;
            let yes = matches!(&answer, Ok(Ok(line)) if matches!(line.trim(), "y" | "Y" | "yes"));
            if !self.seen().waiting_for_confirmation {
                eprintln!("vesemir: the canary was already confirmed or the deployment ended");
                continue;
            }
            let reply = self.apply(if yes { Order::Confirm } else { Order::Cancel });
            eprintln!("vesemir: {}", reply.trim_start_matches("ok: "));
        }
    }
}

impl EventSink for LocalControl {
    fn emit(&self, event: &Event) {
        let mut seen = self.seen();
        match &event.kind {
            EventKind::Waiting { reason: WaitReason::CanaryConfirmation } => {
                seen.waiting_for_confirmation = true;
                self.waiting.notify_one();
            }
            EventKind::BatchStarted { .. } | EventKind::Stopping { .. } => {
                seen.waiting_for_confirmation = false;
            }
            EventKind::DeploymentFinished { .. } => {
                seen.waiting_for_confirmation = false;
                seen.finished = true;
            }
            _ => {}
        }
    }
}

/// Whether the deploy can ask on a terminal (stdin is one).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The listening socket of a running deploy; removed when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ControlSocket {
    /// Listens at `path` (mode 0600: only this user may control the deploy) and carries out
    /// every command on `control`.
    pub fn bind(path: &Path, control: LocalControl) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        // A socket left by a dead process of the same run id cannot be: run ids carry the pid
        // and are unique in the state directory. Remove a stale file anyway.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let control = control.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(LINE_TIMEOUT, serve(stream, control)).await;
                });
            }
        });
        Ok(Self { path: path.to_owned(), task })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One connection: one command line, one answer line.
async fn serve(stream: UnixStream, control: LocalControl) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE)).read_line(&mut line).await?;
    let word = line.trim();
    let reply = match Order::parse(word) {
        Some(order) => control.apply(order),
        None => format!(
            "error: unknown command {:?}: expected pause, resume, confirm or cancel",
            word.chars().take(16).collect::<String>()
        ),
    };
    write.write_all(format!("{reply}\n").as_bytes()).await?;
    write.shutdown().await
}

/// `vesemir pause|resume|confirm|cancel RUN-ID` for a local deploy: sends `order` to the
/// socket at `path` and prints the answer. Exit 0 when it was carried out, 2 when refused or no
/// deploy listens there.
pub async fn send(path: &Path, run: &str, order: Order) -> Result<Exit, Failure> {
    let not_running = |e: std::io::Error| {
        Failure::input(format!(
            "no local deploy {run} is running here ({}: {e}); a deploy on a server takes --server URL (or VESEMIR_SERVER) and its numeric id",
            path.display()
        ))
    };
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.map_err(not_running)?;
        stream
            .write_all(format!("{}\n", order.word()).as_bytes())
            .await
            .map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
        let mut reply = String::new();
        BufReader::new(stream)
            .read_line(&mut reply)
            .await
            .map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
        Ok::<_, Failure>(reply)
    };
    let reply = tokio::time::timeout(LINE_TIMEOUT, exchange)
        .await
        .map_err(|_| Failure::input(format!("the deploy {run} did not answer within 10s")))??;
    let reply = reply.trim();
    match reply.strip_prefix("ok: ") {
        Some(done) => {
            println!("run {run}: {done}");
            Ok(Exit::Success)
        }
        None => Err(Failure::input(format!(
            "run {run}: {}",
            reply.strip_prefix("error: ").unwrap_or(if reply.is_empty() { "no answer" } else { reply })
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_over_the_socket_reach_the_control() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.sock");
        let control = Control::new();
        let local = LocalControl::new(control.clone());
        let socket = ControlSocket::bind(&path, local.clone()).expect("binds");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        assert_eq!(send(&path, "r1", Order::Pause).await.expect("paused"), Exit::Success);
        assert!(control.is_paused());
        let refused = send(&path, "r1", Order::Confirm).await.expect_err("nothing waits");
        assert_eq!(refused.to_string(), "run r1: the canary is not waiting for confirmation");
        local.emit(&Event {
            seq: 1,
            elapsed: Duration::ZERO,
            kind: EventKind::Waiting { reason: WaitReason::CanaryConfirmation },
        });
        assert_eq!(send(&path, "r1", Order::Confirm).await.expect("confirmed"), Exit::Success);
        assert_eq!(send(&path, "r1", Order::Resume).await.expect("resumed"), Exit::Success);
        assert!(!control.is_paused());
        assert!(send(&path, "r1", Order::Resume).await.is_err(), "not paused any more");
        assert_eq!(send(&path, "r1", Order::Cancel).await.expect("cancelled"), Exit::Success);
        assert!(control.is_cancelled());

        let mut raw = UnixStream::connect(&path).await.expect("connects");
        raw.write_all(b"reboot\n").await.expect("writes");
        let mut reply = String::new();
        BufReader::new(raw).read_line(&mut reply).await.expect("answers");
        assert!(reply.starts_with("error: unknown command \"reboot\""), "{reply}");

        drop(socket);
        assert!(!path.exists(), "the socket goes with the deploy");
        let gone = send(&path, "r1", Order::Pause).await.expect_err("nobody listens");
        assert!(gone.to_string().starts_with("no local deploy r1 is running here"), "{gone}");
    }
}
