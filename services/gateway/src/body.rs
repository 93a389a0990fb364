//! Reading request bodies: size-limited whatever the headers say, JSON whatever
//! the Content-Type says.

use crate::reply::Failure;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use presence_domain::json;
use serde_json::Value;

/// Reads at most `limit` bytes. A declared length above the limit is refused
/// before reading; a chunked or lying body is cut off when it crosses the limit.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Failure> {
    refuse_declared_excess(headers, limit)?;
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(unreadable(&*error, limit)),
    }
}

/// [`read_limited`] for a body too large to hold whole: hands each piece to
/// `each` as it arrives, under the same limit.
pub(crate) async fn stream_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    mut each: impl FnMut(&[u8]),
) -> Result<(), Failure> {
    refuse_declared_excess(headers, limit)?;
    let mut body = Limited::new(body, limit);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| unreadable(&*error, limit))?;
        if let Some(data) = frame.data_ref() {
            each(data);
        }
    }
    Ok(())
}

fn refuse_declared_excess(headers: &HeaderMap, limit: usize) -> Result<(), Failure> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(Failure::payload_too_large(limit));
    }
    Ok(())
}

fn unreadable(error: &(dyn std::error::Error + Send + Sync + 'static), limit: usize) -> Failure {
    if error.is::<LengthLimitError>() {
        return Failure::payload_too_large(limit);
    }
    tracing::debug!(%error, "request body could not be read");
    Failure::bad_request("The body could not be read")
}

/// Parses a body as JSON, as the inventory reads its lines: a byte-order mark
/// opening it is skipped, and a key given twice in one object is refused, naming
/// the key (rather than the last value silently winning).
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, Failure> {
    json::parse_unique_keys(json::strip_bom(bytes))
        .map_err(|error| Failure::bad_request(format!("The body is not valid JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_declared_and_actual_oversize() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        let declared = read_limited(&headers, Body::from("x"), 10).await;
        assert_eq!(declared, Err(Failure::payload_too_large(10)));
        let actual = read_limited(&HeaderMap::new(), Body::from("x".repeat(11)), 10).await;
        assert_eq!(actual, Err(Failure::payload_too_large(10)));
        let fits = read_limited(&HeaderMap::new(), Body::from("x".repeat(10)), 10).await;
        assert_eq!(fits.unwrap().len(), 10);
    }

    #[tokio::test]
    async fn streams_pieces_under_the_same_limit() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        let declared = stream_limited(&headers, Body::from("x"), 10, |_| {}).await;
        assert_eq!(declared, Err(Failure::payload_too_large(10)));
        let mut seen = Vec::new();
        let actual = stream_limited(&HeaderMap::new(), Body::from("x".repeat(11)), 10, |piece| {
            seen.extend_from_slice(piece);
        })
        .await;
        assert_eq!(actual, Err(Failure::payload_too_large(10)));
        assert!(seen.len() <= 10, "nothing beyond the limit is handed on");
        let mut seen = Vec::new();
        let fits = stream_limited(&HeaderMap::new(), Body::from("x".repeat(10)), 10, |piece| {
            seen.extend_from_slice(piece);
        })
        .await;
        assert_eq!((fits, seen), (Ok(()), b"x".repeat(10)));
    }

    #[test]
    fn invalid_json_says_so() {
        let failure = parse_json(b"{nope").unwrap_err();
        assert_eq!(failure.status(), presence_domain::Status::BadRequest);
        assert!(parse_json(b"{\"a\":1}").is_ok());
    }

    #[test]
    fn an_opening_byte_order_mark_is_skipped_and_repeated_keys_are_refused() {
        assert_eq!(
            parse_json(b"\xEF\xBB\xBF{\"a\":1}"),
            parse_json(b"{\"a\":1}")
        );
        let failure = parse_json(b"{\"a\":{\"b\":1,\"b\":2}}").unwrap_err();
        assert_eq!(failure.status(), presence_domain::Status::BadRequest);
        assert!(
            format!("{failure:?}").contains("key b appears more than once"),
            "{failure:?}"
        );
    }
}
