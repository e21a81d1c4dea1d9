//! The OpenAPI description of the API, served at `/openapi.json`.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::wire::{
    Accepted, Deployment, DeploymentList, ErrorBody, Health, HostResult, Links, Problem, Timings, Totals,
};

/// The body of `POST /v1/deployments` (documentation of the core's request format; the server
/// parses it with `vesemir_core::request::spec::RequestSpec`, refusing unknown fields).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct DeploymentRequestBody {
    /// The application.
    pub application: String,
    /// The environment.
    pub environment: String,
    /// The team owning the application: must be the token's team.
    pub team: String,
    /// The version.
    pub version: String,
    /// Which hosts: `tags`, `roles`, `recipes` (escaped), optionally `chef_environment`; or `hosts`.
    #[schema(value_type = Object)]
    pub targets: serde_json::Value,
    /// The load balancer: `backend`, `instances` or `discover`, `server_name`, `drain_timeout`, `ramp`...
    #[schema(value_type = Object)]
    pub load_balancer: serde_json::Value,
    /// `concurrency`, `max_failures`, `pause_between_batches`, `canary`.
    #[schema(value_type = Option<Object>)]
    pub strategy: Option<serde_json::Value>,
    /// A playbook configured on the server.
    pub playbook: String,
    /// Values of the playbook's `{variables}`.
    pub variables: Option<BTreeMap<String, String>>,
    /// Set by the server from the token's name: leave it out.
    pub requested_by: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Vesemir", description = "Self-service rolling deployments."),
    paths(
        crate::api::create,
        crate::api::list,
        crate::api::get_one,
        crate::api::events,
        crate::api::cancel,
        crate::api::confirm,
        crate::api::healthz,
        crate::api::readyz,
        crate::api::metrics,
        crate::api::openapi,
    ),
    components(schemas(
        Accepted, Deployment, DeploymentList, ErrorBody, Health, HostResult, Links, Problem, Timings, Totals,
        DeploymentRequestBody, crate::store::Status
    )),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
