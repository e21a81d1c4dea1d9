//! Who chooses the ports: the server asks a [`PortsFactory`] for each deployment, so it never
//! hard-codes adapters. The real composition (Chef, HAProxy, SSH) is configured by the front end.

use vesemir_core::request::DeploymentRequest;
use vesemir_core::Ports;

/// Why no ports could be made for a request. The message is shown to the requester.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PortsError {
    /// The request needs something these ports do not offer, e.g. a host search where no
    /// inventory is configured, or discovered load balancers where only listed ones work.
    #[error("{reason}")]
    Unsupported {
        /// What is missing, and what the requester can do instead.
        reason: String,
    },
    /// The server's own adapter configuration is not usable (a Chef key that does not load, an
    /// inventory file that does not parse): the operator has to fix it.
    #[error("{reason}")]
    Configuration {
        /// What is wrong, naming the file and setting.
        reason: String,
    },
}

/// Makes the ports a deployment runs over.
pub trait PortsFactory: Send + Sync {
    /// The ports for `request`.
    fn ports(&self, request: &DeploymentRequest) -> Result<Ports, PortsError>;
}

/// The same ports for every request (tests, and servers with one fleet).
#[derive(Debug, Clone)]
pub struct FixedPorts(pub Ports);

impl PortsFactory for FixedPorts {
    fn ports(&self, _request: &DeploymentRequest) -> Result<Ports, PortsError> {
        Ok(self.0.clone())
    }
}
