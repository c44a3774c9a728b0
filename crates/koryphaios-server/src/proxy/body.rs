//! The two bodies of a proxied call, streamed chunk by chunk: the caller's towards the provider
//! (counted, cut at the limit, peeked for `model`) and the provider's back (counted, redacted when
//! it is an error, cut when the provider falls silent or the call's time is up). Neither is ever
//! held whole.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream;
use http_body_util::BodyExt as _;

use super::call::{Call, RequestTally};
use super::redact::Redactor;

/// The caller's body as the upstream request's body.
pub fn upstream_request(
    body: Body,
    limit: u64,
    idle: Duration,
    tally: Arc<RequestTally>,
) -> reqwest::Body {
    let chunks = stream::unfold(Some(body), move |state| {
        let tally = Arc::clone(&tally);
        async move {
            let mut body = state?;
            loop {
                let frame = match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => {
                        tally.idle.store(true, Ordering::Relaxed);
                        return Some((Err(io::Error::other("request body idle")), None));
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(error))) => return Some((Err(io::Error::other(error)), None)),
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not forwarded
                };
                let total =
                    tally.bytes.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                if total > limit {
                    tally.over_limit.store(true, Ordering::Relaxed);
                    return Some((Err(io::Error::other("request body over the limit")), None));
                }
                if let Some(peek) = &tally.peek
                    && let Ok(mut peek) = peek.lock()
                {
                    peek.push(&data);
                }
                return Some((Ok::<Bytes, io::Error>(data), Some(body)));
            }
        }
    });
    reqwest::Body::wrap_stream(chunks)
}

/// When the provider's body is cut.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The longest silence between two chunks.
    pub idle: Duration,
    /// The end of the whole call (`KORYPHAIOS_PROXY_MAX_DURATION_SECS` after it started).
    pub deadline: tokio::time::Instant,
}

struct Downstream {
    upstream: reqwest::Response,
    redactor: Option<Redactor>,
    call: Call,
    timing: Timing,
}

/// The provider's body as the caller's response body. `redactor` is set for error answers. The
/// call is finished when this body is dropped (after its end, an error, or the caller leaving).
pub fn downstream_response(
    upstream: reqwest::Response,
    redactor: Option<Redactor>,
    call: Call,
    timing: Timing,
) -> Body {
    let state = Downstream {
        upstream,
        redactor,
        call,
        timing,
    };
    let chunks = stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        let idle_by = tokio::time::Instant::now() + state.timing.idle;
        let by = idle_by.min(state.timing.deadline);
        match tokio::time::timeout_at(by, state.upstream.chunk()).await {
            // An error ends the stream unfinished: the caller sees a cut, never a clean end.
            Err(_) if by == state.timing.deadline => {
                state.call.failed("max_duration");
                Some((
                    Err(io::Error::other("the call's maximum duration is over")),
                    None,
                ))
            }
            Err(_) => {
                state.call.failed("upstream_timeout");
                Some((Err(io::Error::other("upstream idle")), None))
            }
            Ok(Err(error)) => {
                state.call.failed("upstream_unavailable");
                Some((Err(io::Error::other(error)), None))
            }
            Ok(Ok(None)) => {
                // The end: what the redactor still holds is too short to be the key.
                let rest = state.redactor.as_mut().map(Redactor::finish)?;
                state.call.received(rest.len());
                Some((Ok(rest), None))
            }
            Ok(Ok(Some(chunk))) => {
                let chunk = match state.redactor.as_mut() {
                    Some(redactor) => redactor.push(&chunk),
                    None => chunk,
                };
                state.call.received(chunk.len());
                Some((Ok::<Bytes, io::Error>(chunk), Some(state)))
            }
        }
    });
    Body::from_stream(chunks)
}
