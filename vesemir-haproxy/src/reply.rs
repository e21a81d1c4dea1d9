//! HAProxy's error replies, recognised and turned into typed errors: unknown backend or server,
//! permission denied, a static algorithm refusing weights, and anything else it refuses.

use vesemir_core::ports::LbEndpoint;

use crate::command::Command;
use crate::error::HaproxyError;

/// Checks the reply to a change command: HAProxy answers an empty line when it obeyed.
pub(crate) fn check_change(
    instance: &LbEndpoint,
    command: &Command,
    reply: &str,
) -> Result<(), HaproxyError> {
    if reply.trim().is_empty() {
        Ok(())
    } else {
        Err(classify(instance, command, reply))
    }
}

/// The error a reply to a `show` command that is not data stands for: a known error reply, or
/// an unreadable reply (never guessed to be a refusal).
pub(crate) fn classify_read(instance: &LbEndpoint, command: &Command, reply: &str) -> HaproxyError {
    match classify(instance, command, reply) {
        HaproxyError::Refused { instance, command, reply } => {
            HaproxyError::Malformed { instance, command, what: format!("unexpected reply {reply:?}") }
        }
        known => known,
    }
}

/// The error an error reply stands for.
pub(crate) fn classify(instance: &LbEndpoint, command: &Command, reply: &str) -> HaproxyError {
    let text = reply.trim();
    let (backend, server) = match command {
        Command::ShowStat(b) | Command::ShowStatServer(b, _) | Command::ShowServersState(b) => {
            (b.to_string(), String::new())
        }
        Command::SetState(b, s, _)
        | Command::SetWeightPercent(b, s, _)
        | Command::SetWeightAbsolute(b, s, _)
        | Command::ShutdownSessions(b, s)
        | Command::HealthDown(b, s) => (b.to_string(), s.to_string()),
    };
    let instance = instance.clone();
    let command = command.to_string();
    if text.starts_with("No such backend")
        || text.starts_with("Can't find backend")
        || text.starts_with("No such proxy")
    {
        HaproxyError::NoSuchBackend { instance, backend }
    } else if text.starts_with("No such server") {
        HaproxyError::NoSuchServer { instance, backend, server }
    } else if text.starts_with("Permission denied") {
        HaproxyError::PermissionDenied { instance, command }
    } else if text.contains("static LB algorithm") {
        HaproxyError::StaticAlgorithm { instance, command, backend }
    } else {
        // The first line says what is wrong; `Unknown command` lists every command after it.
        let first = text.lines().next().unwrap_or_default();
        let reply: String = first.chars().filter(|c| !c.is_control()).take(300).collect();
        HaproxyError::Refused { instance, command, reply }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesemir_core::name::{BackendName, ServerName};
    use vesemir_core::ports::AdminState;

    fn drain() -> Command {
        Command::SetState(
            BackendName::new("be").unwrap(),
            ServerName::new("web1").unwrap(),
            AdminState::Drain,
        )
    }

    fn instance() -> LbEndpoint {
        LbEndpoint::Unix { socket: "/run/haproxy/admin.sock".into() }
    }

    #[test]
    fn empty_reply_means_done() {
        assert!(check_change(&instance(), &drain(), "\n").is_ok());
        assert!(check_change(&instance(), &drain(), "").is_ok());
    }

    #[test]
    fn error_replies_are_typed() {
        type Expect = fn(&HaproxyError) -> bool;
        let cases: [(&str, Expect); 6] = [
            (
                "No such server.\n",
                |e| matches!(e, HaproxyError::NoSuchServer { server, .. } if server == "web1"),
            ),
            (
                "No such backend.\n",
                |e| matches!(e, HaproxyError::NoSuchBackend { backend, .. } if backend == "be"),
            ),
            ("Can't find backend.\n", |e| matches!(e, HaproxyError::NoSuchBackend { .. })),
            ("Permission denied\n\n", |e| matches!(e, HaproxyError::PermissionDenied { .. })),
            ("Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n", |e| {
                matches!(e, HaproxyError::StaticAlgorithm { .. })
            }),
            (
                "Unknown command, but maybe one of the following ones is a better match:\n  add acl\n",
                |e| matches!(e, HaproxyError::Refused { reply, .. } if reply == "Unknown command, but maybe one of the following ones is a better match:"),
            ),
        ];
        for (reply, expected) in cases {
            let error = check_change(&instance(), &drain(), reply).expect_err(reply);
            assert!(expected(&error), "{reply:?} gave {error:?}");
        }
    }
}
