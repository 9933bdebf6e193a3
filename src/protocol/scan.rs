//! A lenient look at payloads the JSON reader refused, without recursion: the top-level
//! fields and the id, how deeply the payload nests, and lone surrogate escapes to replace.
//! Only the slow path (a payload that failed to parse) comes here.

/// The top-level object of a payload: each field's name and where its value lies.
pub(super) struct TopLevel {
    pub id: Option<String>,
    fields: Vec<(String, usize, usize)>,
    line_starts: Vec<usize>,
}

impl TopLevel {
    /// The top-level field whose value holds the (0-based) `column` of 1-based `line`.
    pub fn field_at(&self, column: usize, line: usize) -> Option<String> {
        let offset = self.line_starts.get(line.checked_sub(1)?)? + column;
        self.fields
            .iter()
            .find(|(_, start, end)| (*start..=*end).contains(&offset))
            .map(|(name, _, _)| name.clone())
    }
}

/// Reads the top-level object's keys and skips their values; `None` when the payload does
/// not start as a JSON object. Stops quietly at the first irregularity, keeping what it read.
pub(super) fn top_level(text: &str) -> Option<TopLevel> {
    let bytes = text.as_bytes();
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    let mut top = TopLevel {
        id: None,
        fields: Vec::new(),
        line_starts: std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect(),
    };
    let mut id_seen = false;
    i += 1;
    loop {
        i = skip_ws(bytes, i);
        if bytes.get(i) != Some(&b'"') {
            return Some(top);
        }
        let Some(key_end) = string_end(bytes, i) else {
            return Some(top);
        };
        let key: Option<String> = serde_json::from_str(&text[i..key_end]).ok();
        i = skip_ws(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return Some(top);
        }
        let start = skip_ws(bytes, i + 1);
        let end = value_end(bytes, start);
        if let Some(key) = key {
            if key == "id" {
                // A duplicated id is no id: the requester cannot be told which was read.
                top.id = if id_seen {
                    None
                } else {
                    serde_json::from_str::<String>(&text[start..end.unwrap_or(start)])
                        .ok()
                        .filter(|s| !s.is_empty())
                };
                id_seen = true;
            }
            top.fields.push((key, start, end.unwrap_or(bytes.len())));
        }
        let Some(end) = end else {
            return Some(top);
        };
        i = skip_ws(bytes, end);
        match bytes.get(i) {
            Some(b',') => i += 1,
            _ => return Some(top),
        }
    }
}

/// What kind of JSON value the payload starts with, for "must be a JSON object, not …".
pub(super) fn kind_at(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// The deepest nesting of arrays and objects, outside strings.
pub(super) fn max_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `text` with every `\uD800`–`\uDFFF` escape that is not half of a valid pair replaced by
/// `\uFFFD` (same length); `None` when there is none.
pub(super) fn replace_lone_surrogates(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let (mut i, mut in_string, mut changed) = (0, false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if !in_string {
            in_string = b == b'"';
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = false;
                i += 1;
            }
            b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                let unit = hex4(bytes, i + 2);
                match unit {
                    Some(0xD800..=0xDBFF) => {
                        let pair = bytes.get(i + 6) == Some(&b'\\')
                            && bytes.get(i + 7) == Some(&b'u')
                            && matches!(hex4(bytes, i + 8), Some(0xDC00..=0xDFFF));
                        if pair {
                            i += 12;
                        } else {
                            out[i + 2..i + 6].copy_from_slice(b"FFFD");
                            changed = true;
                            i += 6;
                        }
                    }
                    Some(0xDC00..=0xDFFF) => {
                        out[i + 2..i + 6].copy_from_slice(b"FFFD");
                        changed = true;
                        i += 6;
                    }
                    _ => i += 2,
                }
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    // Only ASCII hex digits were replaced by ASCII, so the text is still UTF-8.
    changed.then(|| String::from_utf8(out).ok()).flatten()
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index just past the string starting at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index just past the value starting at `start`, skipping nested arrays and objects
/// by counting brackets outside strings.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'[' | b'{' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = bytes[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(bytes.len() - start);
            (len > 0).then_some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_read_around_what_fails() {
        let t = top_level(r#"{"meta":{"a":[1,{"b":"}"}]},"id":"j-1","timeoutMs":1e309}"#).unwrap();
        assert_eq!(t.id.as_deref(), Some("j-1"));
        assert_eq!(t.field_at(52, 1).as_deref(), Some("timeoutMs"));
        assert!(top_level("[1]").is_none());
        assert_eq!(top_level(r#"{"id":"a","id":"b"}"#).unwrap().id, None);
    }

    #[test]
    fn depth_counts_outside_strings() {
        assert_eq!(max_depth(r#"{"a":"[[[[","b":[[1]]}"#), 3);
    }

    #[test]
    fn only_lone_surrogates_are_replaced() {
        assert_eq!(
            replace_lone_surrogates(r#"{"t":"a\ud800b\ud83d\ude00\udc00\\ud800"}"#).as_deref(),
            Some(r#"{"t":"a\uFFFDb\ud83d\ude00\uFFFD\\ud800"}"#)
        );
        assert_eq!(replace_lone_surrogates(r#"{"t":"\ud83d\ude00"}"#), None);
    }
}
