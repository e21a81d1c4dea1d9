//! `show stat` replies, read by header names (never by column position, which changes between
//! HAProxy versions), and the composite statuses it reports (`DOWN 1/2`, `MAINT (via b/s)`).

use std::collections::HashMap;

use vesemir_core::ports::ServerStatus;

/// One server's row of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatRow {
    /// `pxname`: the backend.
    pub(crate) backend: String,
    /// `svname`: the server.
    pub(crate) server: String,
    /// `scur`: current sessions.
    pub(crate) sessions: u64,
    /// `status`, parsed.
    pub(crate) status: Health,
    /// `weight`: the current effective weight.
    pub(crate) weight: u32,
    /// `sid`: the server's numeric id, to ask for its row alone next time.
    pub(crate) sid: Option<u32>,
    /// `check_status`: the last health check's status (`L7OK`, `L4CON`...), without the `* `
    /// HAProxy puts before it while a check runs; `None` when checks are off or paused, or the
    /// column is missing.
    pub(crate) check: Option<String>,
    /// `chkdown`: how many times the server's checks took it from UP to DOWN since the
    /// instance started; `None` when the column is missing or empty.
    pub(crate) chkdown: Option<u64>,
}

/// What `show stat` could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatError(pub(crate) String);

/// Parses a `show stat` CSV reply into its server rows (`BACKEND`/`FRONTEND` rows skipped).
pub(crate) fn parse(reply: &str) -> Result<Vec<StatRow>, StatError> {
    let mut lines = reply.lines().filter(|line| !line.trim().is_empty());
    let header = lines
        .next()
        .and_then(|line| line.strip_prefix("# "))
        .ok_or_else(|| StatError("no `# pxname,svname,...` header line".into()))?;
    let columns: HashMap<&str, usize> = header.split(',').enumerate().map(|(i, name)| (name, i)).collect();
    let column = |name: &'static str| {
        columns.get(name).copied().ok_or_else(|| StatError(format!("no `{name}` column in the header")))
    };
    let (px, sv, scur, status, weight) =
        (column("pxname")?, column("svname")?, column("scur")?, column("status")?, column("weight")?);
    let sid = columns.get("sid").copied();
    let check_status = columns.get("check_status").copied();
    let chkdown = columns.get("chkdown").copied();
    let mut rows = Vec::new();
    for line in lines {
        let fields = split_csv(line);
        let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or_default();
        let server = field(sv);
        if server == "BACKEND" || server == "FRONTEND" {
            continue;
        }
        let number = |i: usize, name: &str| -> Result<u64, StatError> {
            let text = field(i);
            if text.is_empty() {
                return Ok(0);
            }
            text.parse().map_err(|_| StatError(format!("`{name}` of {server} is {text:?}, not a number")))
        };
        rows.push(StatRow {
            backend: field(px).to_owned(),
            server: server.to_owned(),
            sessions: number(scur, "scur")?,
            status: Health::parse(field(status)),
            weight: u32::try_from(number(weight, "weight")?)
                .map_err(|_| StatError(format!("`weight` of {server} is out of range")))?,
            sid: sid.and_then(|i| field(i).parse().ok()),
            check: check_status
                .map(|i| field(i).trim_start_matches("* ").trim())
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            chkdown: chkdown.and_then(|i| field(i).parse().ok()),
        });
    }
    Ok(rows)
}

/// Splits one CSV line; HAProxy quotes fields holding commas or quotes (`""` inside quotes).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The main word of a `status` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HealthKind {
    /// `UP`.
    Up,
    /// `DOWN`.
    Down,
    /// `NOLB`: up, but takes no new traffic (weight 0 by an agent, or `disable-on-404`).
    Nolb,
    /// `DRAIN`.
    Drain,
    /// `MAINT`.
    Maint,
    /// `no check`: no health checks configured; the server takes traffic.
    NoCheck,
    /// Anything else.
    Other,
}

/// A parsed `status` field: `UP`, `UP 1/3` (up, going down after failed checks), `DOWN 1/2`
/// (down, going up after passed checks), `MAINT (via be/web1)`, `no check`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Health {
    /// The main word.
    pub(crate) kind: HealthKind,
    /// `n/m` of a transition, when one is under way.
    pub(crate) transition: Option<(u32, u32)>,
    /// A parenthesised detail such as `via be/web1`, `resolution`, `agent`.
    pub(crate) detail: Option<String>,
    /// The field as HAProxy wrote it.
    pub(crate) raw: String,
}

impl Health {
    /// Parses a `status` field.
    pub(crate) fn parse(raw: &str) -> Self {
        let raw = raw.trim();
        let (head, detail) = match raw.split_once('(') {
            Some((head, rest)) => (head.trim(), Some(rest.trim_end_matches(')').trim().to_owned())),
            None => (raw, None),
        };
        let (word, transition) = match head.rsplit_once(' ') {
            Some((word, fraction)) => match fraction.split_once('/') {
                Some((n, m)) => match (n.parse(), m.parse()) {
                    (Ok(n), Ok(m)) => (word.trim(), Some((n, m))),
                    _ => (head, None),
                },
                None => (head, None),
            },
            None => (head, None),
        };
        let kind = match word {
            "UP" => HealthKind::Up,
            "DOWN" => HealthKind::Down,
            "NOLB" => HealthKind::Nolb,
            "DRAIN" => HealthKind::Drain,
            "MAINT" => HealthKind::Maint,
            "no check" => HealthKind::NoCheck,
            _ => HealthKind::Other,
        };
        Self { kind, transition, detail, raw: raw.to_owned() }
    }

    /// The port's view: `UP` in any transition and `no check` are up (the server takes
    /// traffic), `MAINT` in any form is maintenance.
    pub(crate) fn status(&self) -> ServerStatus {
        match self.kind {
            HealthKind::Up | HealthKind::NoCheck => ServerStatus::Up,
            HealthKind::Down => ServerStatus::Down,
            HealthKind::Drain => ServerStatus::Drain,
            HealthKind::Maint => ServerStatus::Maint,
            HealthKind::Nolb | HealthKind::Other => ServerStatus::Other(self.raw.clone()),
        }
    }

    /// Whether the health checks prove the server up: plain `UP` (HAProxy writes `UP n/m` while
    /// the health is below its top, which is where it puts a server that just left
    /// maintenance, before any check), or `no check` when there are no checks to wait for.
    pub(crate) fn proven_up(&self) -> bool {
        match self.kind {
            HealthKind::Up => self.transition.is_none() && self.detail.is_none(),
            HealthKind::NoCheck => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,check_desc,addr,uweight,\n\
be,web1,0,0,3,4,,10,0,0,,0,,0,0,0,0,DOWN 1/2,10,1,0,1,1,0,0,,1,3,1,,0,,2,0,,0,L4CON,,0,0,\"Layer4, problem\",127.0.0.1:19101,10,\n\
be,web3,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT (via be/web1),1,1,0,,,0,,,1,3,3,,0,,2,0,,0,,,,0,,127.0.0.1:19101,1,\n\
be,web2,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,20,1,0,,,0,,,1,3,2,,0,,2,0,,0,,,,0,,127.0.0.2:19102,20,\n\
be,BACKEND,0,0,3,0,999,0,0,0,0,0,,0,0,0,0,UP,20,1,0,,0,0,0,,1,3,0,,0,,1,0,,0,,,,0,,,20,\n\n";

    #[test]
    fn rows_are_read_by_header_names() {
        let rows = parse(REPLY).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].server.as_str(), rows[0].sessions, rows[0].weight), ("web1", 3, 10));
        assert_eq!(rows[0].status.status(), ServerStatus::Down);
        assert_eq!(rows[0].status.transition, Some((1, 2)));
        assert_eq!(rows[1].status.status(), ServerStatus::Maint);
        assert_eq!(rows[1].status.detail.as_deref(), Some("via be/web1"));
        assert_eq!(rows[2].status.status(), ServerStatus::Up);
        assert_eq!(rows[2].weight, 20);
        assert_eq!(rows[2].sid, Some(2));
        assert_eq!(rows[0].check.as_deref(), Some("L4CON"));
        assert_eq!(rows[1].check, None, "paused in maintenance");
        assert_eq!(rows[0].chkdown, Some(1), "taken DOWN by its checks once");
        assert_eq!(rows[2].chkdown, None, "no checks, no count");
    }

    #[test]
    fn a_check_under_way_is_read_without_its_star() {
        let reply =
            "# pxname,svname,scur,status,weight,check_status\nbe,web1,0,UP,5,* L7OK\nbe,web2,0,no check,5,\n";
        let rows = parse(reply).unwrap();
        assert_eq!(rows[0].check.as_deref(), Some("L7OK"));
        assert_eq!(rows[1].check, None);
    }

    #[test]
    fn columns_in_another_order_still_parse() {
        let reply = "# svname,status,pxname,weight,scur\nweb1,DRAIN 1/2,be,5,7\n";
        let rows = parse(reply).unwrap();
        assert_eq!(rows[0].backend, "be");
        assert_eq!(rows[0].sessions, 7);
        assert_eq!(rows[0].status.status(), ServerStatus::Drain);
        assert_eq!(rows[0].sid, None);
        assert_eq!(rows[0].check, None, "no check_status column");
        assert_eq!(rows[0].chkdown, None, "no chkdown column");
    }

    #[test]
    fn missing_columns_and_garbage_are_errors() {
        assert!(parse("No such proxy.\n").is_err());
        assert!(parse("# pxname,svname,status\nbe,web1,UP\n").is_err());
        assert!(parse("# pxname,svname,scur,status,weight\nbe,web1,many,UP,1\n").is_err());
    }

    #[test]
    fn composite_statuses() {
        let cases = [
            ("UP", ServerStatus::Up, true),
            ("UP 1/3", ServerStatus::Up, false),
            ("DOWN", ServerStatus::Down, false),
            ("DOWN 1/2", ServerStatus::Down, false),
            ("DRAIN", ServerStatus::Drain, false),
            ("DRAIN 1/2", ServerStatus::Drain, false),
            ("MAINT", ServerStatus::Maint, false),
            ("MAINT (via be/web1)", ServerStatus::Maint, false),
            ("MAINT (resolution)", ServerStatus::Maint, false),
            ("no check", ServerStatus::Up, true),
            ("NOLB", ServerStatus::Other("NOLB".into()), false),
            ("DOWN (agent)", ServerStatus::Down, false),
            ("weird", ServerStatus::Other("weird".into()), false),
        ];
        for (raw, status, proven) in cases {
            let health = Health::parse(raw);
            assert_eq!(health.status(), status, "{raw}");
            assert_eq!(health.proven_up(), proven, "{raw}");
        }
    }
}
