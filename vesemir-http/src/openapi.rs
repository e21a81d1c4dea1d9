//! The OpenAPI description's frame and finish. The frame: title, the schemas of every wire type
//! (the request's is the catalog's own `UnitRequest`, the very type the server reads, so it
//! cannot drift from it), and the bearer security scheme. The paths come from the
//! handlers' `#[utoipa::path]` attributes as the routes are registered (`routes.rs`), so routes
//! and description have one source. `finish` then adds what holds for every operation alike:
//! problem details as `application/problem+json`, the statuses every `/v1` call can answer
//! (401, 408, 500, 503), `Location` on 202, and the links from a created deployment to every
//! operation on it.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::api::PROBLEM_JSON;
use crate::catalog::{UnitRequest, UnitStrategy};
use crate::wire::{
    Accepted, Deployment, DeploymentList, ErrorBody, Health, HostResult, Links, Problem, RecoveryReport,
    RecoveryResult, ServerRecoveryResult, Timings, Totals,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vesemir",
        description = "Self-service rolling deployments. Every error is RFC 9457 problem details \
        (`application/problem+json`); validation errors list each problem by field in `problems`. \
        A browsable reference of this document is served at `/docs`."
    ),
    components(schemas(
        Accepted, Deployment, DeploymentList, ErrorBody, Health, HostResult, Links, Problem, Timings, Totals,
        UnitRequest, UnitStrategy, crate::store::Status, RecoveryReport, RecoveryResult, ServerRecoveryResult,
        crate::wire::Promotion, crate::store::PromotionStatus, crate::wire::NotificationLog,
        crate::wire::NotificationDelivery,
        crate::vm_wire::VmCreateRequest, crate::vm_wire::VmView, crate::vm_wire::VmFailure,
        crate::vm_wire::VmLinks, crate::vm_wire::VmList, crate::vm_wire::VmFlavorView,
        crate::vm_wire::VmFlavorList, crate::store::vms::VmStatus
    )),
    modifiers(&Bearer)
)]
pub(crate) struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The operations of a path, mutably.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
        ("head", item.head.as_mut()),
        ("options", item.options.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|o| (method, o)))
}

/// `/v1` paths answered from the configuration alone: no database read, no wait, so neither
/// 408 nor 500/503 (issue 19's flavors).
const STORELESS: [&str; 1] = ["/v1/vm-flavors"];

/// A problem-details answer of `description`.
fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, Content::new(Some(Ref::from_schema_name("ProblemDetails"))))
        .into()
}

/// Adds to `document` what every operation shares (see the module's doc). `unbounded` says
/// which paths the request timeout does not bound (no 408 there).
pub(crate) fn finish(document: &mut Document, unbounded: &[String]) {
    let mut on_deployment: Vec<(String, String)> = Vec::new();
    for (path, item) in document.paths.paths.iter_mut() {
        let api = path.starts_with("/v1/");
        for (_, operation) in operations(item) {
            operation.parameters.iter_mut().flatten().for_each(not_null);
            // The examples name the first deployment, so an example call reaches a real one.
            for parameter in operation.parameters.iter_mut().flatten() {
                if parameter.parameter_in == ParameterIn::Path && parameter.name == "id" {
                    if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() {
                        object.examples = vec![serde_json::json!(1)];
                    }
                }
            }
            let responses = &mut operation.responses.responses;
            if api {
                let storeless = STORELESS.contains(&path.as_str());
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                if secured {
                    responses.entry("401".into()).or_insert_with(|| {
                        problem("No token, or an unknown one (`WWW-Authenticate: Bearer`)")
                    });
                }
                if !unbounded.contains(path) && !storeless {
                    responses.entry("408".into()).or_insert_with(|| {
                        problem("The call took longer than the server's request timeout: retry")
                    });
                }
                if !storeless {
                    responses
                        .entry("500".into())
                        .or_insert_with(|| problem("The server's database failed: retry later"));
                    responses.entry("503".into()).or_insert_with(|| {
                        problem(
                            "This server cannot reach its database now (it cannot connect, or the database did not \
                             answer within 5 s), or it is stopping (`Retry-After`): retry later, or through another server",
                        )
                    });
                }
            }
            for (status, response) in responses.iter_mut() {
                let RefOr::T(response) = response else { continue };
                if status.starts_with('4') || status.starts_with('5') {
                    if let Some(json) = response.content.shift_remove("application/json") {
                        if is_problem(&json) {
                            response.content.insert(PROBLEM_JSON.into(), json);
                        } else {
                            response.content.insert("application/json".into(), json);
                        }
                    }
                }
                if status == "201" || status == "202" {
                    response.headers.insert(
                        "Location".into(),
                        HeaderBuilder::new()
                            .schema(
                                utoipa::openapi::schema::ObjectBuilder::new()
                                    .schema_type(SchemaType::Type(Type::String)),
                            )
                            .description(Some("The deployment's URL path, e.g. `/v1/deployments/42`."))
                            .build(),
                    );
                }
            }
            if path.starts_with("/v1/deployments/{id}") {
                if let Some(id) = &operation.operation_id {
                    on_deployment.push((id.clone(), path.clone()));
                }
            }
        }
    }
    if let Some(create) = document.paths.paths.get_mut("/v1/deployments").and_then(|item| item.post.as_mut())
    {
        for status in ["200", "202"] {
            let Some(RefOr::T(response)) = create.responses.responses.get_mut(status) else { continue };
            for (operation_id, path) in &on_deployment {
                let link = LinkBuilder::new()
                    .operation_id(operation_id.as_str())
                    .parameter("id", "$response.body#/id")
                    .description(format!("`{path}` of the deployment this answer names"))
                    .build();
                response.links.insert(operation_id.clone(), RefOr::T(link));
            }
        }
    }
}

/// `document` as served. utoipa 5 writes a link's fields in snake case (`operation_id`);
/// OpenAPI spells them in camel case, so they are renamed here.
pub(crate) fn to_json(document: &Document) -> serde_json::Value {
    let mut json = serde_json::to_value(document).unwrap_or_default();
    let responses = json["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses").and_then(serde_json::Value::as_object_mut))
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(serde_json::Value::as_object_mut) else {
            continue;
        };
        for link in links.values_mut().filter_map(serde_json::Value::as_object_mut) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_owned(), value);
                }
            }
        }
    }
    json
}

/// A header is text or absent, never null: utoipa makes an optional header parameter
/// nullable, which would invite a literal `null` header.
fn not_null(parameter: &mut Parameter) {
    if parameter.parameter_in != ParameterIn::Header {
        return;
    }
    if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() {
        if let SchemaType::Array(types) = &object.schema_type {
            let kept: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
            object.schema_type = match kept.as_slice() {
                [one] => SchemaType::Type(one.clone()),
                _ => SchemaType::Array(kept),
            };
        }
    }
}

/// Whether `content` is a problem-details body.
fn is_problem(content: &Content) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/ProblemDetails"))
}
