//! The exact text sent to the remote side: environment variables as shell-quoted `env`
//! arguments, the script run by `/bin/sh` in its own process group, and a watchdog that kills
//! that group when the SSH channel closes (how a timed-out command is ended).

use vesemir_core::name::EnvVarName;
use vesemir_core::request::shell_quote;

/// The wrapper `/bin/sh` runs with the step's script as `$1`.
///
/// - fd 3 keeps the channel's stdin; the script itself reads `/dev/null`.
/// - `setsid` puts the script in a new session and process group whose id is `$!` (a
///   background job of a non-interactive shell is no group leader, so `setsid` does not fork).
/// - The watchdog waits for stdin to close, which happens when the executor closes the channel
///   (timeout, cancellation) or the connection dies, then kills the whole group: TERM, then
///   KILL a second later. Its own output goes to `/dev/null`, so it never holds the channel open.
/// - When the script ends by itself the watchdog is killed and never touches the group, so
///   daemons a step starts on purpose survive.
/// - The wrapper then writes the end marker `$2` as a line on stderr (the executor takes it out
///   of the output): it proves the script ran to its end, because libssh2 reports a channel
///   that closed without an exit status (sshd's `ChannelTimeout`, for one) as exit code 0.
/// - A script killed by signal N (status 128+N, N from 1 to 15, signals that end a process)
///   ends the wrapper by the same signal, without a core file, so sshd reports an exit signal
///   rather than a code; any other status is the wrapper's exit code.
const WRAPPER: &str = r#"exec 3<&0
setsid /bin/sh -c "$1" </dev/null 3<&- &
pid=$!
( while read -r _; do :; done; kill -TERM -"$pid"; sleep 1; kill -KILL -"$pid" ) <&3 >/dev/null 2>&1 &
watchdog=$!
exec 3<&-
wait "$pid"
status=$?
kill "$watchdog" 2>/dev/null
printf '%s\n' "$2" >&2
if [ "$status" -gt 128 ] && [ "$status" -lt 144 ]; then
  ulimit -c 0
  kill -"$((status - 128))" "$$"
fi
exit "$status""#;

/// The command line for the channel's `exec` request: the environment, then the wrapper
/// running `script` and writing `end_marker` (see [`end_marker`]) on stderr when it is done.
/// Every value is one single-quoted shell word; names are shell identifiers by their type.
pub(crate) fn wrap(script: &str, env: &[(EnvVarName, String)], end_marker: &str) -> String {
    let mut line = String::from("exec env");
    for (name, value) in env {
        line.push(' ');
        line.push_str(name.as_str());
        line.push('=');
        line.push_str(&shell_quote(value));
    }
    line.push_str(" /bin/sh -c ");
    line.push_str(&shell_quote(WRAPPER));
    line.push_str(" vesemir-step ");
    line.push_str(&shell_quote(script));
    line.push(' ');
    line.push_str(&shell_quote(end_marker));
    line
}

/// The line a step's wrapper (or an upload) writes when it ran to its end: `nonce` makes it
/// one no command prints by chance.
pub(crate) fn end_marker(nonce: &str) -> String {
    format!("vesemir-end-{nonce}")
}

/// The command that writes the upload's bytes from stdin to a temporary file next to
/// `destination`, checks the size, sets `mode`, renames it into place and then prints
/// [`end_marker(nonce)`](end_marker) on stdout.
pub(crate) fn upload(destination: &str, mode: u32, size: u64, nonce: &str) -> String {
    let destination = shell_quote(destination);
    let marker = end_marker(nonce);
    format!(
        "dest={destination}; tmp=\"$dest.vesemir-{nonce}.tmp\"; \
         trap 'rm -f \"$tmp\"' EXIT; \
         (umask 077 && cat > \"$tmp\") || exit 1; \
         size=$(wc -c < \"$tmp\") || exit 1; \
         if [ \"$size\" -ne {size} ]; then echo \"received $size of {size} bytes\" >&2; exit 1; fi; \
         chmod {mode:o} \"$tmp\" && mv -f \"$tmp\" \"$dest\" && trap - EXIT && echo {marker}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_quoted() {
        let env = vec![(EnvVarName::new("A_1").expect("valid"), "x'; rm -rf /".to_owned())];
        let line = wrap("echo \"$A_1\"", &env, "vesemir-end-1");
        assert!(line.starts_with("exec env A_1='x'\\''; rm -rf /' /bin/sh -c '"), "{line}");
        assert!(line.ends_with(" vesemir-step 'echo \"$A_1\"' 'vesemir-end-1'"), "{line}");
    }
}
