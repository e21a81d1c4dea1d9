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
//!
//! [`Slapd::start_tls`] adds TLS: a throwaway CA and a server certificate for `127.0.0.1` and
//! `localhost` made by the test (rcgen), given to slapd (`TLSCACertificateFile`,
//! `TLSCertificateFile`, `TLSCertificateKeyFile`; the key is `nobody`'s, mode 0600), an
//! `ldaps://` listener on a second port, and StartTLS on the plain one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

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
    /// TLS, when started by [`Slapd::start_tls`].
    tls: Option<SlapdTls>,
}

/// The TLS side of a directory started by [`Slapd::start_tls`].
#[derive(Debug, Clone)]
struct SlapdTls {
    /// The `ldaps://` port at 127.0.0.1.
    ldaps_port: u16,
    /// The PEM certificate of the CA that signed the server's certificate.
    ca_file: PathBuf,
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
        Self::start_with(users, false)
    }

    /// [`start`](Self::start) with TLS: StartTLS on [`url`](Self::url) and LDAP over TLS on
    /// [`ldaps_url`](Self::ldaps_url), with a server certificate for `127.0.0.1` and `localhost`
    /// signed by a CA made here ([`ca_file`](Self::ca_file)).
    pub fn start_tls(users: &[SlapdUser]) -> Self {
        Self::start_with(users, true)
    }

    fn start_with(users: &[SlapdUser], with_tls: bool) -> Self {
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
        let tls_files = with_tls.then(|| write_tls_files(dir.path(), run_as));
        let config = dir.path().join("slapd.conf");
        write(&config, &slapd_conf(dir.path(), &data, tls_files.is_some()));
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
        let tls = tls_files.map(|ca_file| SlapdTls { ldaps_port: free_port(), ca_file });
        let mut listeners = format!("ldap://127.0.0.1:{port}/");
        if let Some(tls) = &tls {
            listeners.push_str(&format!(" ldaps://127.0.0.1:{}/", tls.ldaps_port));
        }
        let mut command = as_user(run_as, &slapd);
        command.arg("-d").arg("stats").arg("-h").arg(listeners).arg("-f").arg(&config);
        let mut server = ServerProcess::start("slapd", command, dir);
        for port in std::iter::once(port).chain(tls.as_ref().map(|t| t.ldaps_port)) {
            wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(20), &mut server);
        }
        Self { server, port, tls }
    }

    /// The `ldap://` URL of this directory.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The `ldaps://` URL of this directory; panics unless it was started by
    /// [`start_tls`](Self::start_tls).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls().ldaps_port)
    }

    /// The PEM file of the CA that signed this directory's certificate (a client's CA file);
    /// panics unless it was started by [`start_tls`](Self::start_tls).
    pub fn ca_file(&self) -> PathBuf {
        self.tls().ca_file.clone()
    }

    /// Writes the certificate of a CA made now, which signed nothing this directory holds (a
    /// client that trusts only it must refuse the directory), and answers its path.
    pub fn write_unrelated_ca(&self) -> PathBuf {
        let path = self.server.dir().join("unrelated-ca.pem");
        write(&path, &new_ca("unrelated").pem());
        path
    }

    fn tls(&self) -> &SlapdTls {
        self.tls
            .as_ref()
            .unwrap_or_else(|| panic!("this slapd was started without TLS: use Slapd::start_tls"))
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

/// A self-signed CA named `name`, for key and certificate signing only.
fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("CA params: {e}"));
    params.distinguished_name.push(DnType::CommonName, format!("Vesemir test CA {name}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
    CertifiedIssuer::self_signed(params, key).unwrap_or_else(|e| panic!("self-signing the CA: {e}"))
}

/// Makes a CA and a server certificate for `127.0.0.1` and `localhost` signed by it, writes
/// `ca.pem`, `server.pem` and `server.key` (0600, owned by `run_as` when given, since slapd
/// reads it as that user) into `dir`, and answers the CA file.
fn write_tls_files(dir: &Path, run_as: Option<u32>) -> PathBuf {
    let ca = new_ca("slapd");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap_or_else(|e| panic!("server certificate params: {e}"));
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("server key: {e}"));
    let certificate =
        params.signed_by(&key, &ca).unwrap_or_else(|e| panic!("signing the server certificate: {e}"));
    let ca_file = dir.join("ca.pem");
    write(&ca_file, &ca.pem());
    write(&dir.join("server.pem"), &certificate.pem());
    let key_file = dir.join("server.key");
    std::fs::write(&key_file, key.serialize_pem())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", key_file.display()));
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", key_file.display()));
    if let Some(uid) = run_as {
        std::os::unix::fs::chown(&key_file, Some(uid), None)
            .unwrap_or_else(|e| panic!("cannot give {} to nobody: {e}", key_file.display()));
    }
    ca_file
}

/// The generated `slapd.conf`: schemas, TLS files when `tls`, MDB in `data`, ACLs (see the
/// module doc).
fn slapd_conf(dir: &Path, data: &Path, tls: bool) -> String {
    let base = Slapd::BASE;
    let service = Slapd::SERVICE_DN;
    let dir = dir.display();
    let data = data.display();
    let tls = if tls {
        format!(
            "TLSCACertificateFile {dir}/ca.pem\n\
             TLSCertificateFile {dir}/server.pem\n\
             TLSCertificateKeyFile {dir}/server.key\n"
        )
    } else {
        String::new()
    };
    format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         pidfile {dir}/slapd.pid\n\
         argsfile {dir}/slapd.args\n\
         {tls}\
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

fn write(path: &Path, text: &str) {
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
