//! Paging through lists: the page-size rule, the keyset position a page continues after, and the
//! opaque cursor text every paged route hands out (`nextCursor`) and takes back (`cursor`).
//!
//! A cursor is base64url (no padding) of `v1:<payload>`: the audit log's payload is a chain
//! position, a list's is `<created_at ms>:<id>` of the last item of the page. Cursors are opaque
//! to clients but not secret: they only say where a page ends, and every list query is scoped to
//! its caller, so a cursor from another user's list positions the caller's own list and shows
//! nothing else.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

use crate::clock::to_unix_ms;
use crate::validation::{FieldError, ValidationErrors};

/// Items per page when the request does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most items a page may hold.
pub const MAX_LIMIT: u32 = 1000;

/// The version prefix inside a cursor.
const VERSION: &str = "v1:";

/// Checks a requested page size (`limit`): 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
pub fn check_limit(limit: Option<i64>) -> Result<u32, FieldError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) => u32::try_from(limit)
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| FieldError::new("limit", format!("must be from 1 to {MAX_LIMIT}"))),
    }
}

/// The opaque text form of `payload`.
pub fn encode_cursor(payload: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}{payload}"))
}

/// The payload of a cursor this service issued.
pub fn decode_cursor(raw: &str) -> Result<String, FieldError> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(VERSION).map(str::to_owned))
        .ok_or_else(invalid_cursor)
}

fn invalid_cursor() -> FieldError {
    FieldError::new("cursor", "not a cursor this service issued")
}

/// Where a list page ends, in the lists' order (newest first: `created_at` descending, then id
/// descending): the next page holds the items strictly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After<Id> {
    /// The last item's creation time (Unix ms, as stored).
    pub created_at_ms: i64,
    /// The last item's id.
    pub id: Id,
}

impl<Id: std::fmt::Display> After<Id> {
    /// The position of an item created at `created_at` with `id`.
    pub fn item(created_at: OffsetDateTime, id: Id) -> Self {
        Self {
            created_at_ms: to_unix_ms(created_at),
            id,
        }
    }

    /// The cursor for the page after this position.
    pub fn to_cursor(&self) -> String {
        encode_cursor(&format!("{}:{}", self.created_at_ms, self.id))
    }

    /// A position from a cursor; `parse_id` checks the id is of the list's kind.
    pub fn from_cursor<E>(
        raw: &str,
        parse_id: impl FnOnce(&str) -> Result<Id, E>,
    ) -> Result<Self, FieldError> {
        let payload = decode_cursor(raw)?;
        let (ms, id) = payload.split_once(':').ok_or_else(invalid_cursor)?;
        Ok(Self {
            created_at_ms: ms.parse().map_err(|_| invalid_cursor())?,
            id: parse_id(id).map_err(|_| invalid_cursor())?,
        })
    }
}

/// Which page of a list to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<Id> {
    /// At most this many items.
    pub limit: u32,
    /// Start after this position (`None`: the first page).
    pub after: Option<After<Id>>,
}

impl<Id> Default for PageRequest<Id> {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl<Id: std::fmt::Display> PageRequest<Id> {
    /// The request from a route's `limit` and `cursor` parameters, naming every bad one.
    pub fn from_params<E>(
        limit: Option<i64>,
        cursor: Option<&str>,
        parse_id: impl FnOnce(&str) -> Result<Id, E>,
    ) -> Result<Self, ValidationErrors> {
        let limit = check_limit(limit);
        let after = cursor
            .map(|raw| After::from_cursor(raw, parse_id))
            .transpose();
        match (limit, after) {
            (Ok(limit), Ok(after)) => Ok(Self { limit, after }),
            (limit, after) => Err(ValidationErrors(
                [limit.err(), after.err()].into_iter().flatten().collect(),
            )),
        }
    }
}

impl<Id: Clone> PageRequest<Id> {
    /// The request a use case sends to the store: one item more than the page, so that whether
    /// another page follows is known without a second query.
    pub fn overfetch(&self) -> Self {
        Self {
            limit: self.limit.saturating_add(1),
            after: self.after.clone(),
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, Id> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<After<Id>>,
}

impl<T, Id> Page<T, Id> {
    /// The page from the `items` an [`PageRequest::overfetch`] returned, cut to `limit`.
    pub fn from_overfetch(
        mut items: Vec<T>,
        limit: u32,
        position: impl Fn(&T) -> After<Id>,
    ) -> Self {
        let limit = limit as usize;
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more {
            items.last().map(position)
        } else {
            None
        };
        Self { items, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CredentialId;

    #[test]
    fn limits_default_to_100_and_stay_within_1_to_1000() {
        assert_eq!(check_limit(None), Ok(100));
        assert_eq!(check_limit(Some(1)), Ok(1));
        assert_eq!(check_limit(Some(1000)), Ok(1000));
        for bad in [0, -1, 1001, i64::MAX] {
            assert!(check_limit(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn positions_round_trip_through_cursors_and_forgeries_are_refused() {
        let id = CredentialId::generate();
        let after = After {
            created_at_ms: 1_790_000_000_123,
            id: id.clone(),
        };
        let cursor = after.to_cursor();
        assert_eq!(After::from_cursor(&cursor, CredentialId::parse), Ok(after));
        for bad in [
            "".to_owned(),
            "!!!".to_owned(),
            encode_cursor("42"),
            encode_cursor(&format!("x:{id}")),
            encode_cursor("1:key_0190000000007000800000000000000a"),
            URL_SAFE_NO_PAD.encode(format!("v2:1:{id}")),
        ] {
            assert!(
                After::from_cursor(&bad, CredentialId::parse).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_overfetched_page_knows_whether_another_follows() {
        let position = |n: &i64| After {
            created_at_ms: *n,
            id: n.to_string(),
        };
        let full = Page::from_overfetch(vec![5, 4, 3], 2, position);
        assert_eq!(full.items, [5, 4]);
        assert_eq!(full.next.map(|a| a.created_at_ms), Some(4));
        let last = Page::from_overfetch(vec![5, 4], 2, position);
        assert_eq!((last.items.len(), last.next), (2, None));
    }
}
