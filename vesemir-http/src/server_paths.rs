//! Texts shown to API callers never carry the server's file paths (key files, known_hosts,
//! sockets, the database, playbook files): [`hide`] replaces each absolute path whose first
//! directory exists on this machine (`/etc/...`, `/var/...`, `/run/...`) by [`HIDDEN`]. Paths
//! of the API itself (`/v1/...`, `/openapi.json`) and URLs are left as they are. Applied where
//! texts leave the server: error answers (`api::ApiError`), a deployment's and its hosts'
//! errors, a recovery's reasons and the history's errors (`wire`), and events on the stream
//! (`sse`; command output lines excepted: they are the host's, shown as the command printed
//! them). The store and the server's log keep the full texts for the operators.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// What a hidden path reads as.
pub const HIDDEN: &str = "<server path>";

/// The names in this machine's root directory, read once.
fn roots() -> &'static BTreeSet<String> {
    static ROOTS: OnceLock<BTreeSet<String>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        std::fs::read_dir("/")
            .map(|entries| {
                entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect()
            })
            .unwrap_or_default()
    })
}

/// A character a path may hold here (an unusual one ends it: a path with spaces is hidden up
/// to the first).
fn in_path(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '@' | '~' | '%')
}

/// `text` with each absolute path of this machine replaced by [`HIDDEN`].
pub fn hide(text: &str) -> Cow<'_, str> {
    hide_with(text, roots())
}

fn hide_with<'a>(text: &'a str, roots: &BTreeSet<String>) -> Cow<'a, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut previous: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let starts_path = c == '/'
            && previous.is_none_or(|p| p.is_whitespace() || "'\"`(=:,[<{".contains(p))
            && chars.peek().is_some_and(|&(_, next)| next != '/' && in_path(next));
        previous = Some(c);
        if !starts_path {
            continue;
        }
        let mut end = start + 1;
        while let Some(&(i, next)) = chars.peek() {
            if !in_path(next) {
                break;
            }
            end = i + next.len_utf8();
            previous = Some(next);
            chars.next();
        }
        let path = text[start..end].trim_end_matches('.');
        let first = path[1..].split('/').next().unwrap_or_default();
        if roots.contains(first) {
            out.push_str(&text[copied..start]);
            out.push_str(HIDDEN);
            copied = start + path.len();
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// `text` hidden, owned.
pub fn hidden(text: &str) -> String {
    hide(text).into_owned()
}

/// Every string of `value` (an event's JSON) hidden, but a command's output line.
pub fn hide_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            if let Cow::Owned(changed) = hide(text) {
                *text = changed;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(hide_json),
        serde_json::Value::Object(fields) => {
            let output = fields.get("type").and_then(serde_json::Value::as_str) == Some("host_output");
            for (key, field) in fields.iter_mut() {
                if !(output && key == "line") {
                    hide_json(field);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> BTreeSet<String> {
        ["etc", "var", "run", "tmp", "home"].into_iter().map(String::from).collect()
    }

    #[test]
    fn server_paths_are_hidden_and_api_paths_and_urls_are_not() {
        for (text, shown) in [
            (
                "cannot read key file /etc/vesemir/id_ed25519: Permission denied (os error 13)",
                "cannot read key file <server path>: Permission denied (os error 13)",
            ),
            ("unix:/run/haproxy/admin.sock: connection refused", "unix:<server path>: connection refused"),
            (
                "host key of web-1 not in known_hosts '/var/lib/vesemir/.ssh/known_hosts'.",
                "host key of web-1 not in known_hosts '<server path>'.",
            ),
            ("UNPROTECTED PRIVATE KEY FILE: permissions 0644 for /tmp/x/key.pem are too open: run `chmod 600 /tmp/x/key.pem`",
             "UNPROTECTED PRIVATE KEY FILE: permissions 0644 for <server path> are too open: run `chmod 600 <server path>`"),
            ("no such path: see /openapi.json", "no such path: see /openapi.json"),
            ("see /v1/deployments/3 and https://chef.example/organizations/acme", "see /v1/deployments/3 and https://chef.example/organizations/acme"),
            ("weights 50/100 and a/b", "weights 50/100 and a/b"),
            ("/", "/"),
            ("", ""),
            ("/etc", "<server path>"),
            ("é /home/ü/k — ok", "é <server path> — ok"),
        ] {
            assert_eq!(hide_with(text, &roots()), shown, "{text}");
        }
        assert!(matches!(hide_with("nothing here", &roots()), Cow::Borrowed(_)));
    }

    #[test]
    fn events_are_hidden_but_output_lines() {
        let mut event = serde_json::json!({
            "type": "host_finished", "host": "web-1", "error": "cannot read key file /etc/vesemir/key",
        });
        let mut output = serde_json::json!({ "type": "host_output", "step": "ls", "line": "/etc/hosts" });
        let before = output.clone();
        hide_json(&mut event);
        hide_json(&mut output);
        assert_eq!(event["error"], "cannot read key file <server path>");
        assert_eq!(output, before);
    }
}
