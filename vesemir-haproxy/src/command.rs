//! The runtime API commands this adapter sends, built only from validated names, one command
//! per line: a request value can never be chained into a command.

use std::fmt;

use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{AdminState, Weight};

/// One runtime API command. Every name in it is a validated [`BackendName`] or [`ServerName`]
/// (HAProxy's legal characters only), so its line carries no `;`, newline or space of a
/// request's making.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `show stat <backend> 4 -1`: the backend's servers, CSV.
    ShowStat(BackendName),
    /// `show stat <backend> 4 <sid>`: one server's row, by its numeric id.
    ShowStatServer(BackendName, u32),
    /// `show servers state <backend>`: names, addresses, admin state and weights.
    ShowServersState(BackendName),
    /// `set server <backend>/<server> state <state>`.
    SetState(BackendName, ServerName, AdminState),
    /// `set server <backend>/<server> weight <n>%`.
    SetWeightPercent(BackendName, ServerName, Weight),
    /// `set server <backend>/<server> weight <n>`: an absolute weight (restored, or put back).
    SetWeightAbsolute(BackendName, ServerName, u32),
    /// `shutdown sessions server <backend>/<server>`.
    ShutdownSessions(BackendName, ServerName),
    /// `set server <backend>/<server> health down`: the server DOWN, its checks running, so
    /// that only checks made from now on bring it back.
    HealthDown(BackendName, ServerName),
}

impl Command {
    /// Whether the command changes the instance (and so answers with an empty line on success).
    pub(crate) fn is_change(&self) -> bool {
        !matches!(self, Command::ShowStat(_) | Command::ShowStatServer(..) | Command::ShowServersState(_))
    }

    /// The command's line, newline included. Refuses (returns `None`) a line that would hold
    /// anything but printable ASCII without `;`: names are validated, so this is a second lock.
    pub(crate) fn line(&self) -> Option<String> {
        let text = self.to_string();
        let safe = text.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b';' && b != b'#');
        safe.then(|| format!("{text}\n"))
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::ShowStat(backend) => write!(f, "show stat {backend} 4 -1"),
            Command::ShowStatServer(backend, sid) => write!(f, "show stat {backend} 4 {sid}"),
            Command::ShowServersState(backend) => write!(f, "show servers state {backend}"),
            Command::SetState(backend, server, state) => {
                write!(f, "set server {backend}/{server} state {state}")
            }
            Command::SetWeightPercent(backend, server, weight) => {
                write!(f, "set server {backend}/{server} weight {}%", weight.get())
            }
            Command::SetWeightAbsolute(backend, server, weight) => {
                write!(f, "set server {backend}/{server} weight {weight}")
            }
            Command::ShutdownSessions(backend, server) => {
                write!(f, "shutdown sessions server {backend}/{server}")
            }
            Command::HealthDown(backend, server) => write!(f, "set server {backend}/{server} health down"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (BackendName, ServerName) {
        (BackendName::new("be_web").unwrap(), ServerName::new("web-01.a:b").unwrap())
    }

    #[test]
    fn commands_render_one_line_each() {
        let (b, s) = names();
        let cases = [
            (Command::ShowStat(b.clone()), "show stat be_web 4 -1\n"),
            (Command::ShowServersState(b.clone()), "show servers state be_web\n"),
            (Command::ShowStatServer(b.clone(), 7), "show stat be_web 4 7\n"),
            (
                Command::SetState(b.clone(), s.clone(), AdminState::Drain),
                "set server be_web/web-01.a:b state drain\n",
            ),
            (
                Command::SetState(b.clone(), s.clone(), AdminState::Maint),
                "set server be_web/web-01.a:b state maint\n",
            ),
            (
                Command::SetState(b.clone(), s.clone(), AdminState::Ready),
                "set server be_web/web-01.a:b state ready\n",
            ),
            (
                Command::SetWeightPercent(b.clone(), s.clone(), Weight::percent(25).unwrap()),
                "set server be_web/web-01.a:b weight 25%\n",
            ),
            (Command::SetWeightAbsolute(b.clone(), s.clone(), 7), "set server be_web/web-01.a:b weight 7\n"),
            (Command::HealthDown(b.clone(), s.clone()), "set server be_web/web-01.a:b health down\n"),
            (Command::ShutdownSessions(b, s), "shutdown sessions server be_web/web-01.a:b\n"),
        ];
        for (command, line) in cases {
            assert_eq!(command.line().as_deref(), Some(line));
        }
    }

    #[test]
    fn names_with_separators_cannot_become_commands() {
        for bad in ["web;shutdown", "web\nshow stat", "web 1", "web\r", "web/x", "web#"] {
            assert!(ServerName::new(bad).is_err(), "{bad:?} must not be a server name");
            assert!(BackendName::new(bad).is_err(), "{bad:?} must not be a backend name");
        }
    }

    #[test]
    fn only_changes_are_changes() {
        let (b, s) = names();
        assert!(!Command::ShowStat(b.clone()).is_change());
        assert!(!Command::ShowServersState(b.clone()).is_change());
        assert!(Command::ShutdownSessions(b, s).is_change());
    }
}
