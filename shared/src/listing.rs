//! Listings: one page shape for every listing (subscriptions, archived events, dead
//! letters) and its JSON form, and the keys of the newest-first listings by time (a
//! workspace's archived events, its dead letters): each item's sort key is
//! `{epoch ms, 13 digits}#{id}`, which orders by time and then id, doubles as the opaque
//! cursor after that item, and turns a time window into one key range.

/// Items a listing returns when the caller names no `limit`.
pub const DEFAULT_PAGE: usize = 50;
/// The largest `limit` a listing takes.
pub const MAX_PAGE: usize = 200;

/// One page of a listing: its items, and the cursor after the last one when more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            next_cursor: None,
        }
    }
}

impl<T> Page<T> {
    /// The page as every listing answers it: `{"items": [...], "nextCursor": "..."}`
    /// (no `nextCursor` on the last page).
    pub fn to_json(&self, view: impl Fn(&T) -> serde_json::Value) -> serde_json::Value {
        let mut body =
            serde_json::json!({ "items": self.items.iter().map(view).collect::<Vec<_>>() });
        if let Some(cursor) = &self.next_cursor {
            body["nextCursor"] = cursor.as_str().into();
        }
        body
    }
}

/// The largest instant a key holds (13 digits of epoch ms).
pub const LAST_MS: i64 = 9_999_999_999_999;

/// The sort key (and cursor) of the item `id` at `at_ms`.
pub fn key(at_ms: i64, id: &str) -> String {
    format!("{:013}#{id}", at_ms.clamp(0, LAST_MS))
}

/// The id a cursor continues after, when it is a key this service handed out.
pub fn cursor_id(cursor: &str) -> Option<&str> {
    let (at, id) = cursor.split_once('#')?;
    let well_formed = at.len() == 13 && at.bytes().all(|b| b.is_ascii_digit());
    well_formed.then_some(id)
}

/// The inclusive key range of the items at or after `since_ms` and before `until_ms`.
/// An empty window (`until <= since`) is the range of the bare `since` prefix, which no
/// key equals: a valid query that finds nothing (DynamoDB refuses a reversed range).
pub fn range(since_ms: Option<i64>, until_ms: Option<i64>) -> (String, String) {
    let since = since_ms.unwrap_or(0).clamp(0, LAST_MS);
    let until = until_ms.map_or(LAST_MS, |u| u.saturating_sub(1));
    let lo = format!("{since:013}");
    if until < since {
        return (lo.clone(), lo);
    }
    (lo, format!("{:013}#~", until.clamp(0, LAST_MS)))
}

/// Where a newest-first page starts in a window, given the cursor it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start<'a> {
    /// From the newest item (no cursor, or one newer than the window).
    Top,
    /// After this key.
    After(&'a str),
    /// Nothing is left (the cursor is at or before the window's oldest key).
    Nothing,
}

/// Fits a cursor to a window, so the store is never asked to start outside its key
/// range (DynamoDB refuses such a start key).
pub fn start(cursor: Option<&str>, since_ms: Option<i64>, until_ms: Option<i64>) -> Start<'_> {
    let (lo, hi) = range(since_ms, until_ms);
    match cursor {
        None => Start::Top,
        Some(c) if c > hi.as_str() => Start::Top,
        Some(c) if c <= lo.as_str() => Start::Nothing,
        Some(c) => Start::After(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_outside_the_window_starts_at_the_top_or_finds_nothing() {
        let (since, until) = (Some(1_000), Some(2_000));
        assert_eq!(start(None, since, until), Start::Top);
        let newer = key(5_000, "a");
        assert_eq!(start(Some(&newer), since, until), Start::Top);
        let older = key(500, "a");
        assert_eq!(start(Some(&older), since, until), Start::Nothing);
        let inside = key(1_500, "a");
        assert_eq!(
            start(Some(&inside), since, until),
            Start::After(inside.as_str())
        );
        // An empty window: nothing, whatever the cursor.
        let zero = key(0, "0");
        assert_ne!(
            start(Some(&zero), Some(0), Some(0)),
            Start::After(zero.as_str())
        );
    }

    #[test]
    fn keys_order_by_time_and_read_back_as_cursors() {
        assert!(key(5, "b") < key(10, "a"));
        assert_eq!(cursor_id(&key(1_700_000_000_000, "evt#1")), Some("evt#1"));
        assert_eq!(cursor_id("12#abc"), None);
        assert_eq!(cursor_id("not a cursor"), None);
    }

    #[test]
    fn a_window_covers_its_start_and_stops_before_its_end() {
        let (lo, hi) = range(Some(10), Some(20));
        assert!(lo.as_str() <= key(10, "x").as_str() && key(10, "x") <= hi);
        assert!(key(19, "~").as_str() <= hi.as_str());
        assert!(key(20, "a") > hi);
        let (lo, hi) = range(None, None);
        assert!(lo.as_str() <= key(0, "a").as_str() && key(LAST_MS, "z") <= hi);
    }

    #[test]
    fn an_empty_or_reversed_window_is_a_valid_range_holding_nothing() {
        for (since, until) in [(10, 10), (10, 5), (0, 0), (-5, i64::MIN)] {
            let (lo, hi) = range(Some(since), Some(until));
            assert!(lo <= hi, "DynamoDB needs lo <= hi ({since}, {until})");
            for at in [since.max(0), until.max(0), since.max(0) + 1] {
                let k = key(at, "a");
                assert!(!(lo <= k && k <= hi), "{k} is outside ({since}, {until})");
            }
        }
    }
}
