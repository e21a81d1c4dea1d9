//! `show servers state <backend>` replies, read by header names: each server's name, address,
//! administrative and operational states and weights (the configured one included, which
//! `show stat` lacks).

use std::collections::HashMap;

use vesemir_core::ports::{AdminState, Operational};

/// `srv_admin_state` bit: forced maintenance (`set server ... state maint`).
const ADMIN_FORCED_MAINT: u32 = 0x01;
/// `srv_admin_state` bit: forced drain (`set server ... state drain`).
const ADMIN_FORCED_DRAIN: u32 = 0x08;
/// `srv_admin_state` bits of maintenance from any source: forced (0x01), inherited from a
/// tracked server (0x02), from the configuration (`disabled`, 0x04), from DNS resolution (0x20),
/// from an unresolved host name (0x40).
const ADMIN_ANY_MAINT: u32 = 0x01 | 0x02 | 0x04 | 0x20 | 0x40;
/// `srv_admin_state` bits of drain from any source: forced (0x08), inherited (0x10).
const ADMIN_ANY_DRAIN: u32 = 0x08 | 0x10;

/// One server's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerRow {
    /// `srv_name`, as HAProxy wrote it (validated before it is used in a command).
    pub(crate) name: String,
    /// `srv_addr`: the IP address (`-` when there is none).
    pub(crate) address: String,
    /// `srv_fqdn`, when the server was configured by DNS name.
    pub(crate) fqdn: Option<String>,
    /// `srv_admin_state`: the admin bit field.
    pub(crate) admin_bits: u32,
    /// `srv_op_state`: 0 stopped, 1 starting, 2 running, 3 stopping.
    pub(crate) operational: Operational,
    /// `srv_uweight`: the weight now, absolute.
    pub(crate) weight: u32,
    /// `srv_iweight`: the configured weight.
    pub(crate) configured_weight: u32,
}

impl ServerRow {
    /// The administrative state, whatever set it: any maintenance bit is maintenance, else any
    /// drain bit is drain.
    pub(crate) fn admin(&self) -> AdminState {
        self.admin_of(ADMIN_ANY_MAINT, ADMIN_ANY_DRAIN)
    }

    /// The address, when the instance has one.
    pub(crate) fn ip(&self) -> Option<String> {
        (!self.address.is_empty() && self.address != "-").then(|| self.address.clone())
    }

    /// The administrative state set on the runtime API (`set server ... state`), the only
    /// one a `set server ... state` command can put back: inherited or configured
    /// maintenance is not ours to undo.
    pub(crate) fn admin_state(&self) -> AdminState {
        self.admin_of(ADMIN_FORCED_MAINT, ADMIN_FORCED_DRAIN)
    }

    /// Maintenance when any of the `maint` bits is set, else drain when any of the `drain` bits
    /// is, else ready.
    fn admin_of(&self, maint: u32, drain: u32) -> AdminState {
        if self.admin_bits & maint != 0 {
            AdminState::Maint
        } else if self.admin_bits & drain != 0 {
            AdminState::Drain
        } else {
            AdminState::Ready
        }
    }
}

/// Parses the reply. Its first line is a format version, the second the `# ` header.
pub(crate) fn parse(reply: &str) -> Result<Vec<ServerRow>, String> {
    let mut lines = reply.lines().map(str::trim).filter(|line| !line.is_empty());
    let version = lines.next().ok_or("an empty reply")?;
    if version != "1" {
        return Err(format!("format version {version:?} (this adapter reads version 1)"));
    }
    let header =
        lines.next().and_then(|line| line.strip_prefix("# ")).ok_or("no `# be_id ...` header line")?;
    let columns: HashMap<&str, usize> = header.split_whitespace().enumerate().map(|(i, n)| (n, i)).collect();
    let column = |name: &str| columns.get(name).copied().ok_or_else(|| format!("no `{name}` column"));
    let (name, addr, op, admin, uweight, iweight) = (
        column("srv_name")?,
        column("srv_addr")?,
        column("srv_op_state")?,
        column("srv_admin_state")?,
        column("srv_uweight")?,
        column("srv_iweight")?,
    );
    let fqdn = columns.get("srv_fqdn").copied();
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let field = |i: usize| fields.get(i).copied().ok_or_else(|| format!("a short row: {line:?}"));
            let number = |i: usize| -> Result<u32, String> {
                let text = field(i)?;
                text.parse().map_err(|_| format!("{text:?} is not a number in row {line:?}"))
            };
            Ok(ServerRow {
                name: field(name)?.to_owned(),
                address: field(addr)?.to_owned(),
                fqdn: fqdn.and_then(|i| fields.get(i)).filter(|f| **f != "-").map(|f| (*f).to_owned()),
                admin_bits: number(admin)?,
                operational: match number(op)? {
                    0 => Operational::Down,
                    1 => Operational::Starting,
                    2 => Operational::Up,
                    3 => Operational::Stopping,
                    other => return Err(format!("srv_op_state {other} is none of 0 to 3 in row {line:?}")),
                },
                weight: number(uweight)?,
                configured_weight: number(iweight)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
3 be 1 web1 127.0.0.1 0 1 10 10 0 6 3 0 14 0 0 0 - 19101 - 0 0 - - 0\n\
3 be 2 web2 127.0.0.2 2 8 5 20 2 8 2 0 6 0 0 0 web2.example.com 19102 - 0 0 - - 0\n\
3 be 3 web3 127.0.0.1 0 2 1 1 0 1 0 0 0 0 0 0 - 19101 - 0 0 - - 0\n\
3 be 4 web4 - 1 16 7 10 0 1 0 0 0 0 0 0 - 19101 - 0 0 - - 0\n\
3 be 5 web5 127.0.0.5 3 32 7 10 0 1 0 0 0 0 0 0 - 19101 - 0 0 - - 0\n\n";

    #[test]
    fn rows_carry_names_addresses_states_and_weights() {
        let rows = parse(REPLY).unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].name, "web1");
        assert_eq!(rows[0].admin_state(), AdminState::Maint);
        assert_eq!(rows[1].admin_state(), AdminState::Drain);
        assert_eq!((rows[1].weight, rows[1].configured_weight), (5, 20));
        assert_eq!(rows[1].fqdn.as_deref(), Some("web2.example.com"));
        assert_eq!(rows[0].fqdn, None);
        // Maintenance inherited from a tracked server is not ours to put back.
        assert_eq!(rows[2].admin_state(), AdminState::Ready);
    }

    #[test]
    fn every_admin_bit_and_operational_state_is_read() {
        let rows = parse(REPLY).unwrap();
        let seen: Vec<(AdminState, Operational)> = rows.iter().map(|r| (r.admin(), r.operational)).collect();
        assert_eq!(
            seen,
            [
                (AdminState::Maint, Operational::Down),     // forced maintenance
                (AdminState::Drain, Operational::Up),       // forced drain
                (AdminState::Maint, Operational::Down),     // inherited maintenance
                (AdminState::Drain, Operational::Starting), // inherited drain
                (AdminState::Maint, Operational::Stopping), // maintenance by resolution
            ]
        );
        assert_eq!(rows[0].ip().as_deref(), Some("127.0.0.1"));
        assert_eq!(rows[3].ip(), None, "`-` is no address");
        let bad_op = REPLY.replacen("web1 127.0.0.1 0 1", "web1 127.0.0.1 7 1", 1);
        assert!(parse(&bad_op).is_err(), "an unknown srv_op_state is refused");
    }

    #[test]
    fn errors_and_other_versions_are_refused() {
        assert!(parse("Can't find backend.\n").is_err());
        assert!(parse("2\n# be_id be_name srv_name\n").is_err());
        assert!(parse("1\n# be_id be_name srv_id srv_name srv_addr\n3 be 1 web1 127.0.0.1\n").is_err());
    }
}
