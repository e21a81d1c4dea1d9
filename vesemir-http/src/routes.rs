//! The route table: every path with its handler and, from the handler's `#[utoipa::path]`, its
//! OpenAPI operation. Registering a route here is what documents it.

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{self, AppState};
use crate::config::Limits;
use crate::openapi::ApiDoc;
use crate::vms::handlers as vms;

/// Routes bounded by the request timeout: all but the event stream.
fn bounded() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::create, api::list))
        .routes(routes!(api::get_one))
        .routes(routes!(api::cancel))
        .routes(routes!(api::confirm))
        .routes(routes!(api::pause))
        .routes(routes!(api::resume))
        .routes(routes!(api::retry))
        .routes(routes!(api::history))
        .routes(routes!(api::rollback))
        .routes(routes!(api::confirm_promotion))
        .routes(routes!(api::decline_promotion))
        .routes(routes!(api::notifications))
        .routes(routes!(crate::hooks::receive))
        .routes(routes!(vms::create, vms::list))
        .routes(routes!(vms::flavors))
        .routes(routes!(vms::get_one, vms::destroy))
        .routes(routes!(vms::cancel))
        .routes(routes!(api::healthz))
        .routes(routes!(api::readyz))
        .routes(routes!(api::metrics))
        .routes(routes!(api::openapi))
        .routes(routes!(crate::docs::docs))
}

/// Routes the request timeout does not bound: the event stream, open as long as its
/// deployment runs, and recovery, which waits for each server's health gate.
fn streams() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(api::events))
        .routes(routes!(vms::events))
        .routes(routes!(api::recover))
        .routes(routes!(api::restore))
}

/// The OpenAPI description of every route, served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let unbounded: Vec<String> = streams().into_openapi().paths.paths.into_keys().collect();
    let mut document = bounded().merge(streams()).into_openapi();
    crate::openapi::finish(&mut document, &unbounded);
    document
}

/// Every route over `state`. `limits.request_timeout` applies to every route but the event
/// stream; `limits.max_body_bytes` to every body.
pub fn router(state: AppState, limits: &Limits) -> Router {
    let (bounded, _) = bounded()
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(axum::middleware::map_response(api::timeout_body))
        .split_for_parts();
    let (streams, _) = streams().split_for_parts();
    bounded
        .merge(streams)
        .fallback(api::fallback)
        .layer(axum::middleware::from_fn(api::problem_instance))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
