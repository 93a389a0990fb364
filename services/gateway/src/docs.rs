//! The OpenAPI 3 document, generated from the handlers and the wire types.

use crate::middleware::API_KEY_QUERY;
use crate::paths::ALIASES;
use crate::routes::{
    annul, backup, board, devices, inventory, lookup, offline, ops, revoke, stats, tickets,
};
use crate::wire;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{AllOfBuilder, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Presence API",
        description = "Validates tickets at venue gates and manages the scanning devices there. \
Every response under `/presence/v1/` and `/admin/v1/` is an envelope \
`{\"result\":{\"status\":…,\"message\":…},\"message\":{…}}`. \
Unknown paths under these prefixes answer 404 NOT_FOUND and other methods 405 METHOD_NOT_ALLOWED, \
both as envelopes and both after the API key is checked (401 UNAUTHORIZED first).",
    ),
    paths(
        tickets::ticket_enter,
        tickets::ticket_exit,
        tickets::ticket_validate,
        offline::ticket_offline,
        annul::ticket_annul,
        lookup::ticket_lookup,
        devices::device_init,
        devices::device_lookup,
        stats::venue_stats,
        board::venue_live,
        board::page,
        inventory::upload,
        inventory::limits,
        backup::backup,
        revoke::revoke,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi_json,
    ),
    modifiers(&ApiKeySchemes, &DeviceGateRequired),
    tags(
        (name = "tickets", description = "Enter, exit and secondary scans, offline uploads, annulments and ticket lookup"),
        (name = "devices", description = "Scanning devices"),
        (name = "stats", description = "The live view of a venue and its board"),
        (name = "admin", description = "Inventory upload, backups and device revocation (admin key)"),
        (name = "operations", description = "Health, readiness, metrics and this document (no key)"),
    ),
)]
struct ApiDoc;

/// The two ways to send a key; an operation lists both as alternatives.
struct ApiKeySchemes;

impl Modify for ApiKeySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                API_KEY_QUERY,
                "The API key as a query parameter, as in the original API",
            ))),
        );
        // Spelled as the SPEC and README spell it. Header names are case-insensitive,
        // but clients (schemathesis among them) match the documented name exactly
        // against the headers they were told to send.
        components.add_security_scheme(
            "X-Api-Key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "The API key in a header; wins over the query parameter when both are sent",
            ))),
        );
    }
}

/// device/init needs `gateName` or `gateId`: the body's schema becomes all of
/// (its fields, [`wire::device_gate_required`]).
struct DeviceGateRequired;

impl Modify for DeviceGateRequired {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(schema) = openapi
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("DeviceInitBody"))
        else {
            return;
        };
        let fields = std::mem::replace(schema, RefOr::T(Schema::default()));
        *schema = RefOr::T(Schema::AllOf(
            AllOfBuilder::new()
                .item(fields)
                .item(wire::device_gate_required())
                .build(),
        ));
    }
}

/// The OpenAPI document served at `/openapi.json`, aliases (`.json`, trailing
/// slash) included as paths of their own.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for (canonical, alias) in ALIASES {
        let Some(item) = doc.paths.paths.get(canonical).cloned() else {
            continue;
        };
        let suffix = if alias.ends_with('/') {
            "slash"
        } else {
            "json"
        };
        doc.paths
            .paths
            .insert(alias.to_owned(), with_operation_suffix(item, suffix));
    }
    doc
}

/// Operation ids must be unique in a document, so an alias gets its own.
fn with_operation_suffix(mut item: PathItem, suffix: &str) -> PathItem {
    let operations: [&mut Option<Operation>; 8] = [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ];
    for operation in operations.into_iter().flatten() {
        if let Some(id) = operation.operation_id.as_mut() {
            id.push('_');
            id.push_str(suffix);
        }
    }
    item
}
