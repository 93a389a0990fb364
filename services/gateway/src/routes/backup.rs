//! `GET /admin/v1/backup`: a consistent copy of the embedded store, streamed
//! while the server goes on serving. `presence backup` is its client.

use crate::keys::Caller;
use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::ErrorEnvelope;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use presence_ports::TransportError;
use tokio_util::io::ReaderStream;

/// The headers that say what a backup holds, for `presence backup` to check.
pub(crate) const BACKUP_TABLES_HEADER: &str = "x-presence-backup-tables";
pub(crate) const BACKUP_ROWS_HEADER: &str = "x-presence-backup-rows";

#[utoipa::path(
    get,
    path = "/admin/v1/backup",
    tag = "admin",
    summary = "Back up the embedded store",
    description = "A consistent copy of the whole store (a redb file): every scan decided before the request and nothing of any later one, taken while scans go on. `presence backup` saves it and `presence restore` puts it in place. Embedded mode only: a distributed deployment backs up Redis.",
    responses(
        (status = 200, description = "The copy, as a redb database file", content_type = "application/octet-stream",
            headers(
                ("x-presence-backup-tables" = u64, description = "Tables in the copy"),
                ("x-presence-backup-rows" = u64, description = "Rows in the copy, over every table"),
            )),
        (status = 400, description = "BAD_REQUEST: the query names the API key twice", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key is not an admin key", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: this deployment has no embedded store (distributed mode)", body = ErrorEnvelope),
        (status = 503, description = "UNAVAILABLE: the copy could not be made (the store failed, or no room for the copy in the data directory)", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn backup(
    State(state): State<GatewayState>,
    // Authentication refused non-admin keys already.
    _admin: Caller,
) -> Response {
    let Some(snapshots) = state.snapshots() else {
        return Failure::not_found(
            "This deployment has no embedded store to back up; back up its Redis instead",
        )
        .plain();
    };
    let snapshot = match state.settle(
        snapshots
            .snapshot()
            .await
            .map_err(|error| TransportError::Unavailable(error.to_string())),
    ) {
        Ok(snapshot) => snapshot,
        Err(failure) => return failure.plain(),
    };
    tracing::info!(
        bytes = snapshot.bytes,
        tables = snapshot.tables,
        rows = snapshot.rows,
        "backup taken"
    );
    let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(snapshot.file)));
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, snapshot.bytes.to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"presence-backup.redb\"".to_owned(),
            ),
        ],
        [
            (BACKUP_TABLES_HEADER, snapshot.tables.to_string()),
            (BACKUP_ROWS_HEADER, snapshot.rows.to_string()),
        ],
        body,
    )
        .into_response()
}
