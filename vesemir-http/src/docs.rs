//! `/docs`: a browsable reference of the OpenAPI document, one self-contained HTML page (its
//! script and style inline, no other asset, nothing fetched from another origin) that reads
//! `/openapi.json` and renders each operation: parameters, body, every answer with its schema,
//! headers and links, then every schema.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

/// The page, vendored in the binary.
const PAGE: &str = include_str!("docs/index.html");

/// The page may run its own inline script and read this origin, nothing else.
const POLICY: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";

/// This API's reference, rendered from `/openapi.json` in the browser.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "An HTML page rendering /openapi.json (no external assets)", content_type = "text/html", body = String)))]
pub async fn docs() -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
        .into_response()
}
