//! Cursor pagination: keyset on a row's id, the cursor an opaque base64url
//! token of the last id seen. Offsets are never used (they skip or repeat
//! rows when the table changes between pages).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

/// Most rows a page may hold.
pub const MAX_LIMIT: i64 = 500;
/// Rows per page when the client does not say.
pub const DEFAULT_LIMIT: i64 = 100;

/// One page of rows and the cursor of the next page, if there is one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A decoded request for a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows strictly after this id (text form), or from the start.
    pub after: Option<String>,
    /// How many rows, 1–[`MAX_LIMIT`].
    pub limit: i64,
}

/// Why a page request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The cursor was not made by this server.
    #[error("cursor is not valid")]
    BadCursor,
    /// The limit is out of range.
    #[error("limit must be between 1 and {MAX_LIMIT}")]
    BadLimit,
}

impl PageRequest {
    /// Decodes the query parameters `cursor` and `limit`.
    pub fn parse(cursor: Option<&str>, limit: Option<i64>) -> Result<PageRequest, PageError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(PageError::BadLimit);
        }
        let after = match cursor {
            None | Some("") => None,
            Some(c) => {
                let bytes = URL_SAFE_NO_PAD
                    .decode(c)
                    .map_err(|_| PageError::BadCursor)?;
                let text = String::from_utf8(bytes).map_err(|_| PageError::BadCursor)?;
                let id = text.strip_prefix("v1:").ok_or(PageError::BadCursor)?;
                if id.chars().any(char::is_control) {
                    return Err(PageError::BadCursor);
                }
                Some(id.to_owned())
            }
        };
        Ok(PageRequest { after, limit })
    }

    /// `after` as an integer id (for tables keyed by numbers); a text cursor
    /// on such a table is refused.
    pub fn after_i64(&self) -> Result<i64, PageError> {
        match &self.after {
            None => Ok(0),
            Some(id) => id.parse().map_err(|_| PageError::BadCursor),
        }
    }

    /// Builds the page from `rows` fetched with `LIMIT limit + 1`.
    pub fn page<T>(&self, mut rows: Vec<T>, id_of: impl Fn(&T) -> String) -> Page<T> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(usize::try_from(self.limit).unwrap_or(0));
        let next_cursor = more
            .then(|| rows.last().map(|r| encode(&id_of(r))))
            .flatten();
        Page {
            items: rows,
            next_cursor,
        }
    }
}

fn encode(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let req = PageRequest::parse(None, Some(2)).unwrap();
        let page = req.page(vec![1, 2, 3], |n| n.to_string());
        assert_eq!(page.items, vec![1, 2]);
        let next = PageRequest::parse(page.next_cursor.as_deref(), Some(2)).unwrap();
        assert_eq!(next.after_i64(), Ok(2));
        let last = next.page(vec![3], |n| n.to_string());
        assert_eq!(last.next_cursor, None);
        assert_eq!(
            PageRequest::parse(Some("!!"), None),
            Err(PageError::BadCursor)
        );
        assert_eq!(
            PageRequest::parse(Some("eHl6"), None),
            Err(PageError::BadCursor)
        );
        assert_eq!(PageRequest::parse(None, Some(0)), Err(PageError::BadLimit));
        assert_eq!(
            PageRequest::parse(None, Some(501)),
            Err(PageError::BadLimit)
        );
    }
}
