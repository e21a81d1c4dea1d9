//! A real OpenLDAP directory for tests: Debian's `slapd`, configured by a generated
//! `slapd.conf` (MDB database, the core/cosine/inetorgperson schemas) in its own temp dir,
//! loaded with `slapadd`, served on a free loopback port, stopped by its own child handle when
//! the guard drops.
//!
//! The tree is `dc=vesemir,dc=test` with `ou=people` (`inetOrgPerson` entries named by `uid`,
//! with a plain `userPassword`), `ou=groups` (`groupOfNames`, members by DN) and a read-only
//! service account [`Slapd::SERVICE_DN`]. Anonymous clients may only bind; the service account
//! and bound users may read everything except passwords.
//!
//! Run as root (CI machines, containers), `slapadd` and `slapd` run as `nobody` through
//! `setpriv`, the way the PostgreSQL harness does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::postgres::{as_user, run_as_nobody};
use crate::process::{free_port, require_binary, wait_for_tcp, ServerProcess};

/// The Debian package with `slapd` and `slapadd`.
const PACKAGE: &str = "slapd";

/// One person in the test directory.
#[derive(Debug, Clone)]
pub struct SlapdUser {
    /// The `uid` (the name a person types at sign-in).
    pub uid: String,
    /// The password (stored as given).
    pub password: String,
    /// The `cn` of each group the person is a member of.
    pub groups: Vec<String>,
}

impl SlapdUser {
    /// A person `uid` with `password`, a member of `groups`.
    pub fn new(uid: &str, password: &str, groups: &[&str]) -> Self {
        Self {
            uid: uid.to_owned(),
            password: password.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }
}

/// A running slapd. Dropping it stops it and removes its files.
#[derive(Debug)]
pub struct Slapd {
    /// The server process (its temp dir holds the config, the database and the log).
    pub server: ServerProcess,
    /// The port it listens on at 127.0.0.1.
    pub port: u16,
}

impl Slapd {
    /// The directory's base DN.
    pub const BASE: &'static str = "dc=vesemir,dc=test";
    /// Where people are.
    pub const PEOPLE: &'static str = "ou=people,dc=vesemir,dc=test";
    /// Where groups are.
    pub const GROUPS: &'static str = "ou=groups,dc=vesemir,dc=test";
    /// The service account that may search (not see passwords).
    pub const SERVICE_DN: &'static str = "cn=vesemir,dc=vesemir,dc=test";
    /// The service account's password.
    pub const SERVICE_PASSWORD: &'static str = "service-secret";

    /// Generates the config and the tree for `users` (and the groups they name), loads it and
    /// starts slapd; panics naming the Debian package when it is missing, or with the log when
    /// it does not start.
    pub fn start(users: &[SlapdUser]) -> Self {
        let slapd = require_binary("slapd", PACKAGE);
        let slapadd = require_binary("slapadd", PACKAGE);
        let dir = ServerProcess::temp_dir("slapd");
        let run_as = run_as_nobody(dir.path());
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap_or_else(|e| panic!("cannot create {}: {e}", data.display()));
        if let Some(uid) = run_as {
            std::os::unix::fs::chown(&data, Some(uid), None)
                .unwrap_or_else(|e| panic!("cannot give {} to nobody: {e}", data.display()));
        }
        let config = dir.path().join("slapd.conf");
        write(&config, &slapd_conf(dir.path(), &data));
        let ldif = dir.path().join("tree.ldif");
        write(&ldif, &tree_ldif(users));

        let mut load = as_user(run_as, &slapadd);
        load.arg("-f").arg(&config).arg("-l").arg(&ldif).current_dir(dir.path());
        let output = load.output().unwrap_or_else(|e| panic!("cannot run slapadd ({load:?}): {e}"));
        if !output.status.success() {
            panic!(
                "slapadd failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }

        let port = free_port();
        let mut command = as_user(run_as, &slapd);
        command.arg("-d").arg("0").arg("-h").arg(format!("ldap://127.0.0.1:{port}/")).arg("-f").arg(&config);
        let mut server = ServerProcess::start("slapd", command, dir);
        wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(20), &mut server);
        Self { server, port }
    }

    /// The `ldap://` URL of this directory.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The DN of person `uid`.
    pub fn user_dn(uid: &str) -> String {
        format!("uid={},{}", escape_dn_value(uid), Self::PEOPLE)
    }

    /// Stops the directory now (the port then refuses connections: "directory down").
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

/// The generated `slapd.conf`: schemas, MDB in `data`, ACLs (see the module doc).
fn slapd_conf(dir: &std::path::Path, data: &std::path::Path) -> String {
    let base = Slapd::BASE;
    let service = Slapd::SERVICE_DN;
    let dir = dir.display();
    let data = data.display();
    format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         pidfile {dir}/slapd.pid\n\
         argsfile {dir}/slapd.args\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         loglevel stats\n\
         database mdb\n\
         maxsize 104857600\n\
         suffix \"{base}\"\n\
         rootdn \"cn=admin,{base}\"\n\
         directory {data}\n\
         index objectClass eq\n\
         index uid eq\n\
         index member eq\n\
         access to attrs=userPassword\n  by anonymous auth\n  by * none\n\
         access to *\n  by dn.exact=\"{service}\" read\n  by users read\n  by * none\n"
    )
}

/// The tree: base, people, groups and the service account, as LDIF.
fn tree_ldif(users: &[SlapdUser]) -> String {
    let base = Slapd::BASE;
    let mut ldif = format!(
        "dn: {base}\nobjectClass: dcObject\nobjectClass: organization\ndc: vesemir\no: Vesemir tests\n\n\
         dn: {people}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {groups}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: {service}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: vesemir\nsn: service\n\
         userPassword: {password}\n\n",
        people = Slapd::PEOPLE,
        groups = Slapd::GROUPS,
        service = Slapd::SERVICE_DN,
        password = Slapd::SERVICE_PASSWORD,
    );
    let mut members: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for user in users {
        ldif.push_str(&format!(
            "dn: {}\nobjectClass: inetOrgPerson\nuid:: {}\ncn:: {}\nsn: test\nuserPassword:: {}\n\n",
            Slapd::user_dn(&user.uid),
            base64(&user.uid),
            base64(&user.uid),
            base64(&user.password)
        ));
        for group in &user.groups {
            members.entry(group).or_default().push(Slapd::user_dn(&user.uid));
        }
    }
    for (group, dns) in members {
        ldif.push_str(&format!("dn: cn={group},{}\nobjectClass: groupOfNames\ncn: {group}\n", Slapd::GROUPS));
        for dn in dns {
            ldif.push_str(&format!("member:: {}\n", base64(&dn)));
        }
        ldif.push('\n');
    }
    ldif
}

/// Escapes an attribute value for a DN (RFC 4514).
fn escape_dn_value(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Standard base64 (LDIF's `attr:: value`), so any value survives.
fn base64(value: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = value.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    // Readable by `nobody` when the server runs as it.
    let _ = Command::new("chmod").arg("a+r").arg(path).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let vectors = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain), encoded, "{plain}");
        }
    }

    #[test]
    fn dn_values_escape_the_specials() {
        assert_eq!(escape_dn_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
    }
}
