//! Host locks kept on the host itself, so deployers on different machines contend for them (as
//! Kamal keeps its lock on the hosts): the remote shell command of each lock operation, and
//! how its reply becomes an outcome. The rules are [`vesemir_core::lock`]'s.
//!
//! # On the host
//!
//! The lock directory (default `$HOME/.vesemir/lock` of the SSH user, or the one given to
//! [`SshExecutor::with_lock_dir`](crate::SshExecutor::with_lock_dir)) holds `holder.json`, the
//! lock itself: one line, the holder's JSON ([`LockHolder::encode`]).
//!
//! - **Acquire** writes the holder to a temporary file in the directory and hard-links it to
//!   `holder.json`: `link(2)` fails when the name exists, so creating the lock and its content
//!   is one atomic step, and no reader ever sees a lock without its holder. (A `mkdir` lock
//!   with the holder written inside afterwards has a moment where the lock exists and says
//!   nobody; the link does not.)
//! - **Staleness** is judged by the host's clock: `date +%s` minus `holder.json`'s mtime
//!   (`stat -c %Y`), to the second. Refresh touches the file (`touch -c`, never creating it).
//! - **The guard**, a directory `takeover` (`mkdir` is atomic), is held by whoever removes or
//!   replaces an existing lock (release, break, stale takeover), so while it is held an
//!   existing lock stays in place. A guard older than 60 s (its holder was killed) is removed.
//! - **Stale takeover**: under the guard the claimant checks again that the lock is stale,
//!   keeps a link to it, and renames its own file over it (`rename(2)` replaces atomically:
//!   the lock never disappears, so no other claimant can slip in between). Of several
//!   claimants of one stale lock exactly one takes it over and reports the previous holder;
//!   the others wait (a second at a time) for the guard and then see the new holder.
//! - **Release** and **refresh** act only when the file's line is exactly our holder's JSON;
//!   **break** renames the file away and reports what it held.
//!
//! Every operation is one remote command whose text is fixed; the values (holder JSON, lock
//! directory, staleness in seconds) travel as environment variables, shell-quoted by
//! [`crate::command::wrap`], and are only ever expanded inside double quotes. The host needs a
//! POSIX `/bin/sh`, `date +%s`, `stat -c %Y` (GNU coreutils or busybox), `ln`, `mv`, `touch`,
//! `head`, besides what every step needs.
//!
//! All deployers of a fleet must see the same lock directory: the default is in the SSH
//! user's home, so deployers logging in as different users need a shared directory (for
//! example `/var/lib/vesemir/lock`, group-writable).

use std::time::Duration;

use vesemir_core::lock::{HeldLock, LockClaim, LockHolder, LockOutcome, RefreshOutcome, ReleaseOutcome};
use vesemir_core::name::EnvVarName;
use vesemir_core::ports::{ExitStatus, OutputLine, OutputStream, RemoteCommand};

use crate::error::SshError;

/// How long one lock operation may take on the host (it waits at most a few seconds for a
/// concurrent takeover).
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// How much output a lock operation may give (a holder line is far smaller).
const OUTPUT_LIMIT: usize = 64 * 1024;

/// The one script every lock operation runs; `VESEMIR_LOCK_OP` chooses the operation.
const SCRIPT: &str = r#"set -u
dir=${VESEMIR_LOCK_DIR:-$HOME/.vesemir/lock}
lock=$dir/holder.json
guard=$dir/takeover
tmp=
guarded=
cleanup() {
  if [ -n "$tmp" ]; then rm -f "$tmp"; fi
  if [ -n "$guarded" ]; then rm -rf "$guard"; fi
}
trap cleanup EXIT
trap 'exit 143' HUP INT TERM
now=$(date +%s) || exit 1
# report FILE TAG: "TAG NOW MTIME", then the file's line. Fails when the file is gone.
report() {
  m=$(stat -c %Y "$1" 2>/dev/null) || return 1
  c=$(head -n 1 "$1" 2>/dev/null) || return 1
  printf '%s %s %s\n%s\n' "$2" "$now" "$m" "$c"
}
ours() {
  [ "$(head -n 1 "$lock" 2>/dev/null)" = "$VESEMIR_LOCK_HOLDER" ]
}
stale() {
  m=$(stat -c %Y "$lock" 2>/dev/null) && [ $((now - m)) -gt "$VESEMIR_LOCK_STALE" ]
}
# The guard: whoever removes or replaces an existing lock holds it, so a lock that exists
# stays in place while the guard is held.
take_guard() {
  for wait in 1 2 3 4 5 6 7 8 9 10; do
    if mkdir "$guard" 2>/dev/null; then guarded=1; return 0; fi
    if g=$(stat -c %Y "$guard" 2>/dev/null) && [ $((now - g)) -gt 60 ]; then
      mv "$guard" "$dir/.dead.$$" 2>/dev/null && rm -rf "$dir/.dead.$$"
      continue
    fi
    sleep 1
    now=$(date +%s) || exit 1
  done
  echo "$guard is held by another lock operation (or one killed less than a minute ago); try again" >&2
  exit 1
}
drop_guard() {
  rm -rf "$guard"
  guarded=
}
acquire() {
  mkdir -p "$dir" || exit 1
  tmp=$dir/.claim.$$
  printf '%s\n' "$VESEMIR_LOCK_HOLDER" > "$tmp" || exit 1
  for attempt in 1 2 3 4 5 6 7 8; do
    if ln "$tmp" "$lock" 2>/dev/null; then echo acquired; return; fi
    if ours; then touch -c "$lock"; echo ours; return; fi
    if ! stale; then
      if report "$lock" held; then return; fi
      continue
    fi
    take_guard
    if stale && ln "$lock" "$guard/previous" 2>/dev/null && mv -f "$tmp" "$lock"; then
      report "$guard/previous" took-over || echo took-over-unknown
      return
    fi
    drop_guard
  done
  echo "the lock $lock kept changing while it was claimed; try again" >&2
  exit 1
}
case $VESEMIR_LOCK_OP in
acquire) acquire ;;
release)
  if [ ! -e "$lock" ]; then echo none; exit 0; fi
  take_guard
  if ours; then rm -f "$lock" && echo released
  else report "$lock" other || echo none
  fi ;;
refresh)
  if ours; then touch -c "$lock" && echo refreshed
  else report "$lock" other || echo none
  fi ;;
read) report "$lock" lock || echo none ;;
break)
  if [ ! -e "$lock" ]; then echo none; exit 0; fi
  take_guard
  tmp=$dir/.broken.$$
  if mv "$lock" "$tmp" 2>/dev/null; then report "$tmp" broken || echo broken-unknown
  else echo none
  fi ;;
*) echo "unknown lock operation" >&2; exit 1 ;;
esac"#;

/// A lock operation, with the values it needs.
pub(crate) enum LockOp<'a> {
    /// Claim the lock.
    Acquire(&'a LockClaim),
    /// Release it if it is ours.
    Release(&'a LockHolder),
    /// Touch it if it is ours.
    Refresh(&'a LockHolder),
    /// Read who holds it.
    Read,
    /// Remove it whoever holds it.
    Break,
}

/// The remote command for `op` on a host whose lock directory is `dir` (the default when
/// `None`). Refuses a directory with control characters (a NUL would cut the command line).
pub(crate) fn command(op: &LockOp<'_>, dir: Option<&str>) -> Result<RemoteCommand, SshError> {
    let mut env = Vec::new();
    if let Some(dir) = dir {
        if dir.chars().any(char::is_control) {
            return Err(SshError::Invalid(format!(
                "the lock directory {dir:?} contains a control character: choose another path"
            )));
        }
        env.push((EnvVarName::builtin("VESEMIR_LOCK_DIR"), dir.to_owned()));
    }
    let (name, holder) = match op {
        LockOp::Acquire(claim) => {
            env.push((
                EnvVarName::builtin("VESEMIR_LOCK_STALE"),
                whole_seconds(claim.stale_after).to_string(),
            ));
            ("acquire", Some(&claim.holder))
        }
        LockOp::Release(holder) => ("release", Some(*holder)),
        LockOp::Refresh(holder) => ("refresh", Some(*holder)),
        LockOp::Read => ("read", None),
        LockOp::Break => ("break", None),
    };
    env.push((EnvVarName::builtin("VESEMIR_LOCK_OP"), name.to_owned()));
    if let Some(holder) = holder {
        env.push((EnvVarName::builtin("VESEMIR_LOCK_HOLDER"), holder.encode()));
    }
    Ok(RemoteCommand { script: SCRIPT.to_owned(), env, timeout: LOCK_TIMEOUT, output_limit: OUTPUT_LIMIT })
}

/// What a lock command printed and how it ended.
#[derive(Debug)]
pub(crate) struct Reply {
    /// How the lock script ended: anything but 0 is a failure, its stderr the reason.
    pub(crate) status: ExitStatus,
    /// What the script printed: on stdout a first word naming the outcome (`acquired`,
    /// `other`...) and the holder's record, when there is one.
    pub(crate) lines: Vec<OutputLine>,
}

impl Reply {
    fn stdout(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter(|l| l.stream == OutputStream::Stdout).map(|l| l.text.as_str())
    }

    /// The tag of the first stdout line and the lock it reports, if any; an error when the
    /// command failed or printed nothing understandable.
    fn parse(&self) -> Result<(String, Option<HeldLock>), SshError> {
        if !self.status.success() {
            let stderr: Vec<&str> = self
                .lines
                .iter()
                .filter(|l| l.stream == OutputStream::Stderr)
                .map(|l| l.text.as_str())
                .collect();
            return Err(SshError::Remote(format!(
                "the lock command failed ({}): {}",
                self.status,
                stderr.join("; ")
            )));
        }
        let mut stdout = self.stdout();
        let first = stdout.next().unwrap_or_default();
        let mut words = first.split(' ');
        let tag = words.next().unwrap_or_default().to_owned();
        let times: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
        let held = match times[..] {
            [now, mtime] => {
                let holder = LockHolder::decode(stdout.next().unwrap_or_default());
                Some(HeldLock {
                    held_for: Duration::from_secs(now.saturating_sub(holder.since_unix)),
                    idle_for: Duration::from_secs(now.saturating_sub(mtime)),
                    holder,
                })
            }
            _ => None,
        };
        Ok((tag, held))
    }

    fn unexpected(&self, operation: &str) -> SshError {
        let stdout: Vec<&str> = self.stdout().collect();
        SshError::Remote(format!("unexpected reply to the lock {operation}: {:?}", stdout.join("\n")))
    }
}

/// The outcome of an acquire.
pub(crate) fn acquired(reply: &Reply) -> Result<LockOutcome, SshError> {
    match reply.parse()? {
        (tag, None) if tag == "acquired" => Ok(LockOutcome::Acquired),
        (tag, None) if tag == "ours" => Ok(LockOutcome::AlreadyOurs),
        (tag, Some(held)) if tag == "held" => Ok(LockOutcome::Held(held)),
        (tag, Some(previous)) if tag == "took-over" => Ok(LockOutcome::TookOverStale { previous }),
        // The previous lock vanished from the guard before it could be read (only a break at
        // that very moment does that): ours now, its holder unknown.
        (tag, None) if tag == "took-over-unknown" => Ok(LockOutcome::TookOverStale {
            previous: HeldLock {
                holder: LockHolder::unreadable(""),
                held_for: Duration::ZERO,
                idle_for: Duration::ZERO,
            },
        }),
        _ => Err(reply.unexpected("claim")),
    }
}

/// The outcome of a release.
pub(crate) fn released(reply: &Reply) -> Result<ReleaseOutcome, SshError> {
    match reply.parse()? {
        (tag, None) if tag == "released" => Ok(ReleaseOutcome::Released),
        (tag, None) if tag == "none" => Ok(ReleaseOutcome::NotHeld),
        (tag, Some(held)) if tag == "other" => Ok(ReleaseOutcome::HeldByOther(held)),
        _ => Err(reply.unexpected("release")),
    }
}

/// The outcome of a refresh.
pub(crate) fn refreshed(reply: &Reply) -> Result<RefreshOutcome, SshError> {
    match reply.parse()? {
        (tag, None) if tag == "refreshed" => Ok(RefreshOutcome::Refreshed),
        (tag, None) if tag == "none" => Ok(RefreshOutcome::Lost { now_held_by: None }),
        (tag, Some(held)) if tag == "other" => Ok(RefreshOutcome::Lost { now_held_by: Some(held) }),
        _ => Err(reply.unexpected("refresh")),
    }
}

/// The lock a read or a break found.
pub(crate) fn found(reply: &Reply) -> Result<Option<HeldLock>, SshError> {
    match reply.parse()? {
        (tag, None) if tag == "none" => Ok(None),
        (tag, Some(held)) if tag == "lock" || tag == "broken" => Ok(Some(held)),
        (tag, None) if tag == "broken-unknown" => Ok(Some(HeldLock {
            holder: LockHolder::unreadable(""),
            held_for: Duration::ZERO,
            idle_for: Duration::ZERO,
        })),
        _ => Err(reply.unexpected("read")),
    }
}

/// `duration` in whole seconds, rounded up: the host's clock counts seconds.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder() -> LockHolder {
        LockHolder {
            deployment: "1'; touch /tmp/x; '".into(),
            requested_by: "$(id)".into(),
            application: "shop".into(),
            environment: "production".into(),
            machine: "a\nb".into(),
            since_unix: 100,
        }
    }

    fn reply(code: i32, stdout: &[&str]) -> Reply {
        let lines = stdout
            .iter()
            .map(|text| OutputLine { stream: OutputStream::Stdout, text: (*text).to_owned() })
            .collect();
        Reply { status: ExitStatus::code(code), lines }
    }

    #[test]
    fn values_travel_only_in_the_environment() {
        let claim = LockClaim { holder: holder(), stale_after: Duration::from_millis(1500) };
        let command = command(&LockOp::Acquire(&claim), Some("/srv/lock dir")).expect("command");
        assert_eq!(command.script, SCRIPT);
        let env: Vec<(&str, &str)> = command.env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            env,
            [
                ("VESEMIR_LOCK_DIR", "/srv/lock dir"),
                ("VESEMIR_LOCK_STALE", "2"),
                ("VESEMIR_LOCK_OP", "acquire"),
                ("VESEMIR_LOCK_HOLDER", holder().encode().as_str()),
            ]
        );
        assert!(matches!(command_for_dir("/a\0b"), Err(SshError::Invalid(_))));
        assert!(command_for_dir("").is_ok());
    }

    fn command_for_dir(dir: &str) -> Result<RemoteCommand, SshError> {
        command(&LockOp::Read, Some(dir))
    }

    #[test]
    fn replies_become_outcomes() {
        let line = holder().encode();
        assert_eq!(acquired(&reply(0, &["acquired"])).ok(), Some(LockOutcome::Acquired));
        match acquired(&reply(0, &["held 400 390", &line])) {
            Ok(LockOutcome::Held(held)) => {
                assert_eq!(held.holder, holder());
                assert_eq!(held.held_for, Duration::from_secs(300));
                assert_eq!(held.idle_for, Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(released(&reply(0, &["none"])), Ok(ReleaseOutcome::NotHeld)));
        assert!(matches!(
            refreshed(&reply(0, &["other 1 1", &line])),
            Ok(RefreshOutcome::Lost { now_held_by: Some(_) })
        ));
        assert!(matches!(found(&reply(0, &["none"])), Ok(None)));
        assert!(matches!(acquired(&reply(0, &["gibberish"])), Err(SshError::Remote(_))));
        assert!(matches!(acquired(&reply(1, &[])), Err(SshError::Remote(_))));
    }
}
