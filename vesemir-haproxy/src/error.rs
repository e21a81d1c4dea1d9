//! The adapter's own errors, each converted into the [`PortError`] variant the rollout can act
//! on, with a message that tells an operator what happened and what to do.

use std::time::Duration;

use vesemir_core::name::NameError;
use vesemir_core::ports::LbEndpoint;
use vesemir_core::PortError;

/// What went wrong talking to one HAProxy instance.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HaproxyError {
    /// The runtime API socket could not be reached.
    #[error("cannot connect to the HAProxy runtime API at {instance}: {source}; check that HAProxy runs and has `stats socket ... level admin` there")]
    Connect { instance: LbEndpoint, source: std::io::Error },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to the HAProxy runtime API at {instance} took longer than {after:?}; check the address and any firewall")]
    ConnectTimeout { instance: LbEndpoint, after: Duration },
    /// The socket exists but this process may not open it.
    #[error("no permission to open the HAProxy runtime API socket at {instance}: {source}; run as a user that can read and write the socket")]
    SocketPermission { instance: LbEndpoint, source: std::io::Error },
    /// Sending or reading failed after connecting.
    #[error("the HAProxy runtime API at {instance} broke off during `{command}`: {source}")]
    Io { instance: LbEndpoint, command: String, source: std::io::Error },
    /// The reply did not come within the read timeout.
    #[error("HAProxy at {instance} did not answer `{command}` within {after:?}")]
    ReadTimeout { instance: LbEndpoint, command: String, after: Duration },
    /// The reply was larger than this adapter accepts.
    #[error("HAProxy at {instance} answered `{command}` with more than {limit} bytes")]
    ReplyTooLarge { instance: LbEndpoint, command: String, limit: u64 },
    /// `No such backend.` / `Can't find backend.` / `No such proxy.`
    #[error("backend {backend} does not exist on HAProxy {instance}; check the backend name and that every instance has it")]
    NoSuchBackend { instance: LbEndpoint, backend: String },
    /// `No such server.`, or no row for the server.
    #[error("server {server} in backend {backend} does not exist on HAProxy {instance}; check the server name template or the host's address")]
    NoSuchServer { instance: LbEndpoint, backend: String, server: String },
    /// No server of the backend has the host's address.
    #[error("no server of backend {backend} on HAProxy {instance} has address {address}")]
    NoServerAtAddress { instance: LbEndpoint, backend: String, address: String },
    /// Several servers of the backend have the host's address.
    #[error("servers {servers} of backend {backend} on HAProxy {instance} all have address {address}; use a server name template instead")]
    AmbiguousAddress { instance: LbEndpoint, backend: String, address: String, servers: String },
    /// The instances disagree on which server a host is.
    #[error("HAProxy {instance} calls the server {here} but {elsewhere_instance} calls it {elsewhere}; make the backends' server names agree")]
    Inconsistent { instance: LbEndpoint, here: String, elsewhere_instance: LbEndpoint, elsewhere: String },
    /// `Permission denied`: the socket's level is below admin.
    #[error("HAProxy {instance} refused `{command}`: permission denied; configure the socket with `stats socket ... level admin`")]
    PermissionDenied { instance: LbEndpoint, command: String },
    /// The backend's algorithm is static, so weights other than 0% and 100% are refused.
    #[error("HAProxy {instance} refused `{command}`: backend {backend} uses a static balance algorithm that only accepts weights 0% and 100%; use a dynamic algorithm (roundrobin, leastconn) or a ramp without intermediate weights")]
    StaticAlgorithm { instance: LbEndpoint, command: String, backend: String },
    /// Any other error reply.
    #[error("HAProxy {instance} refused `{command}`: {reply}")]
    Refused { instance: LbEndpoint, command: String, reply: String },
    /// A reply this adapter cannot read.
    #[error("HAProxy {instance} answered `{command}` with something unreadable: {what}")]
    Malformed { instance: LbEndpoint, command: String, what: String },
    /// A name in a reply is outside HAProxy's legal characters (or too long for Vesemir).
    #[error("HAProxy {instance} reported a server name Vesemir refuses to use: {source}")]
    BadName { instance: LbEndpoint, source: NameError },
    /// A name would not render into a safe command line (never happens with validated names).
    #[error("refused to send an unsafe command line to HAProxy {instance}")]
    UnsafeCommand { instance: LbEndpoint },
    /// The backend names no instance at all: nothing would be drained.
    #[error("backend {backend} names no HAProxy instance; list at least one runtime API endpoint")]
    NoInstances { backend: String },
    /// A change failed and putting the already changed instances back failed too.
    #[error("{cause}; putting back the instances already changed failed too: {failures}; fix them by hand with the runtime API")]
    RollbackFailed { cause: Box<HaproxyError>, failures: String },
}

impl HaproxyError {
    /// Whether the command may have been obeyed although this error came back: the line was
    /// sent (or being sent) but the reply was lost.
    pub(crate) fn may_have_applied(&self) -> bool {
        matches!(self, HaproxyError::Io { .. } | HaproxyError::ReadTimeout { .. })
    }

    fn target(instance: &LbEndpoint) -> String {
        format!("HAProxy {instance}")
    }
}

impl From<HaproxyError> for PortError {
    fn from(error: HaproxyError) -> Self {
        use HaproxyError as E;
        match error {
            E::Connect { ref instance, .. } | E::ConnectTimeout { ref instance, .. } => {
                PortError::unreachable(HaproxyError::target(instance), Box::new(error))
            }
            E::SocketPermission { ref instance, .. } | E::PermissionDenied { ref instance, .. } => {
                PortError::Unauthorized { target: HaproxyError::target(instance), reason: error.to_string() }
            }
            E::ReadTimeout { ref command, after, ref instance } => {
                PortError::timeout(format!("`{command}` on HAProxy {instance}"), after)
            }
            E::NoSuchBackend { .. }
            | E::NoSuchServer { .. }
            | E::NoServerAtAddress { .. }
            | E::NoInstances { .. } => PortError::not_found(error.to_string()),
            E::AmbiguousAddress { ref instance, .. }
            | E::Inconsistent { ref instance, .. }
            | E::StaticAlgorithm { ref instance, .. }
            | E::Refused { ref instance, .. } => {
                PortError::rejected(HaproxyError::target(instance), error.to_string())
            }
            E::Io { .. }
            | E::ReplyTooLarge { .. }
            | E::Malformed { .. }
            | E::BadName { .. }
            | E::UnsafeCommand { .. }
            | E::RollbackFailed { .. } => PortError::Adapter { adapter: "haproxy", source: Box::new(error) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> LbEndpoint {
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9999 }
    }

    #[test]
    fn variants_map_to_what_the_rollout_acts_on() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e: PortError = HaproxyError::Connect { instance: instance(), source: refused }.into();
        assert!(e.is_unreachable(), "{e}");
        let e: PortError = HaproxyError::ReadTimeout {
            instance: instance(),
            command: "show stat be 4 -1".into(),
            after: Duration::from_secs(1),
        }
        .into();
        assert!(e.is_timeout(), "{e}");
        let e: PortError =
            HaproxyError::NoSuchServer { instance: instance(), backend: "be".into(), server: "x".into() }
                .into();
        assert!(matches!(e, PortError::NotFound { .. }), "{e}");
        let e: PortError =
            HaproxyError::PermissionDenied { instance: instance(), command: "set".into() }.into();
        assert!(
            matches!(e, PortError::Unauthorized { ref reason, .. } if reason.contains("level admin")),
            "{e}"
        );
        let e: PortError = HaproxyError::StaticAlgorithm {
            instance: instance(),
            command: "set".into(),
            backend: "be".into(),
        }
        .into();
        assert!(matches!(e, PortError::Rejected { ref reason, .. } if reason.contains("static")), "{e}");
    }
}
