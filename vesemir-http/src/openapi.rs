//! The OpenAPI description's frame: title, the schemas of every wire type, and the bearer
//! security scheme. Its paths come from the handlers' `#[utoipa::path]` attributes as the routes
//! are registered (`routes.rs`), so routes and description have one source.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::wire::{
    Accepted, Deployment, DeploymentList, DeploymentRequestBody, ErrorBody, Health, HostResult, Links,
    Problem, RecoveryReport, RecoveryResult, ServerRecoveryResult, Timings, Totals,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Vesemir", description = "Self-service rolling deployments."),
    components(schemas(
        Accepted, Deployment, DeploymentList, ErrorBody, Health, HostResult, Links, Problem, Timings, Totals,
        DeploymentRequestBody, crate::store::Status, RecoveryReport, RecoveryResult, ServerRecoveryResult
    )),
    modifiers(&Bearer)
)]
pub(crate) struct ApiDoc;

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
