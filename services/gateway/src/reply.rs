//! Turning outcomes into envelopes with the right HTTP status.

use crate::paths::{is_device_path, is_ticket_path};
use crate::wire::{
    DeviceErrorEnvelope, EmptyMessage, ErrorEnvelope, InventoryErrorEnvelope, LineErrorBody,
    LineErrorsMessage, ResultBody, TicketEnvelope, TicketsMessage,
};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use presence_domain::inventory::LineErrors;
use presence_domain::{FieldErrors, Status};
use serde::Serialize;
use std::time::Duration;

/// The HTTP status for a `result.status`.
pub(crate) fn http_status(status: Status) -> StatusCode {
    match status {
        Status::BadRequest => StatusCode::BAD_REQUEST,
        Status::Unauthorized => StatusCode::UNAUTHORIZED,
        Status::Forbidden => StatusCode::FORBIDDEN,
        Status::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Status::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Status::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Status::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Status::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        // NOT_FOUND is a decision about a ticket (200) except where a handler
        // means "no such venue, device or path"; those use `Failure::not_found`.
        Status::Okay
        | Status::Exit
        | Status::InternalScan
        | Status::NotFound
        | Status::AlreadyEntered
        | Status::InvalidTicket
        | Status::StartRestriction
        | Status::EndRestriction
        | Status::SectionRestriction
        | Status::EventRestriction
        | Status::TooEarly
        | Status::TooLate => StatusCode::OK,
    }
}

/// A wait as a `Retry-After` value: whole seconds, rounded up, never 0.
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs();
    let rounded = if wait.subsec_nanos() > 0 {
        seconds.saturating_add(1)
    } else {
        seconds
    };
    rounded.max(1)
}

/// An answer that is not a decision: the request or the service is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    status: Status,
    http: StatusCode,
    message: String,
    /// Seconds, for 503 and 429.
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            http: http_status(status),
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Status::Unauthorized, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Status::Forbidden, message)
    }

    /// 404 NOT_FOUND: an unknown path, venue or device.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            http: StatusCode::NOT_FOUND,
            ..Self::new(Status::NotFound, message)
        }
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(Status::MethodNotAllowed, "Method not allowed on this path")
    }

    pub(crate) fn payload_too_large(limit: usize) -> Self {
        Self::new(
            Status::PayloadTooLarge,
            format!("The body is larger than {limit} bytes"),
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, message)
    }

    pub(crate) fn invalid_fields(errors: &FieldErrors) -> Self {
        Self::bad_request(errors.to_string())
    }

    pub(crate) fn unavailable(message: impl Into<String>, retry_after_seconds: u64) -> Self {
        Self {
            retry_after: Some(retry_after_seconds.max(1)),
            ..Self::new(Status::Unavailable, message)
        }
    }

    /// 429 RATE_LIMITED: the key made more requests than its limit allows.
    pub(crate) fn rate_limited(wait: Duration) -> Self {
        Self {
            retry_after: Some(retry_after_seconds(wait)),
            ..Self::new(
                Status::RateLimited,
                "Too many requests with this API key; please retry later",
            )
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(Status::Internal, message)
    }

    pub(crate) fn status(&self) -> Status {
        self.status
    }

    fn result(&self, scan_id: Option<String>) -> ResultBody {
        ResultBody {
            status: self.status,
            message: self.message.clone(),
            scan_id,
        }
    }

    /// The envelope without `message`.
    pub(crate) fn plain(self) -> Response {
        let body = ErrorEnvelope {
            result: self.result(None),
        };
        self.finish(body)
    }

    /// The ticket endpoints' envelope: `message.tickets` is empty but present.
    pub(crate) fn with_tickets(self, scan_id: Option<String>) -> Response {
        let body = TicketEnvelope {
            result: self.result(scan_id),
            message: TicketsMessage {
                tickets: Vec::new(),
            },
        };
        self.finish(body)
    }

    /// The inventory envelope: `message.errors` lists the bad lines.
    pub(crate) fn with_line_errors(self, errors: &LineErrors) -> Response {
        let body = InventoryErrorEnvelope {
            result: self.result(None),
            message: LineErrorsMessage {
                errors: errors.listed().iter().map(LineErrorBody::from).collect(),
                error_count: u64::try_from(errors.total()).unwrap_or(u64::MAX),
            },
        };
        self.finish(body)
    }

    /// The device calls' envelope: `message` is `{}`.
    pub(crate) fn with_empty_message(self) -> Response {
        let body = DeviceErrorEnvelope {
            result: self.result(None),
            message: EmptyMessage::default(),
        };
        self.finish(body)
    }

    /// The envelope that suits the path, for answers given before a handler runs.
    pub(crate) fn for_path(self, path: &str) -> Response {
        if is_ticket_path(path) {
            self.with_tickets(None)
        } else if is_device_path(path) {
            self.with_empty_message()
        } else {
            self.plain()
        }
    }

    fn finish(self, body: impl Serialize) -> Response {
        let mut response = (self.http, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Handlers outside the ticket and inventory endpoints return `Result<_, Failure>`.
impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        self.plain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_200_except_bad_request() {
        assert_eq!(http_status(Status::AlreadyEntered), StatusCode::OK);
        assert_eq!(http_status(Status::NotFound), StatusCode::OK);
        assert_eq!(http_status(Status::BadRequest), StatusCode::BAD_REQUEST);
        assert_eq!(
            Failure::not_found("x").plain().status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let response = Failure::unavailable("down", 0).plain();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn rate_limited_is_429_with_whole_seconds() {
        let response = Failure::rate_limited(Duration::from_millis(1)).plain();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = Failure::rate_limited(Duration::from_millis(2001)).plain();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }
}
