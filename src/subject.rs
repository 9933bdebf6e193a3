//! NATS subject rules the worker checks itself, before a job runs, so that an answer is never
//! lost to a subject the client would refuse.

/// Whether `subject` can be published to: non-empty tokens, no whitespace or control
/// characters, no wildcards. Checked before a job runs, so an answer is never lost to it.
pub fn is_publish_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

/// A job id as one subject token: characters that cannot stand in a token (`.`, `*`, `>`,
/// whitespace, controls) become `_`; an empty id becomes `_`.
pub fn subject_token(id: &str) -> String {
    let token: String = id
        .chars()
        .take(256)
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if token.is_empty() {
        "_".to_string()
    } else {
        token
    }
}

/// Why a job's reply subject must not be published to, or `None` when it may be. The requester
/// names the reply subject and the worker publishes there with its own NATS permissions, so a
/// subject under `$` (`$JS.`, `$KV.`, `$O.`, `$SYS.`, `$SRV.`: server and JetStream APIs) would
/// make the worker a confused deputy; `prefixes` (config `replySubjectPrefixes`), when not
/// empty, narrows replies further.
pub fn reply_refusal(subject: &str, prefixes: &[String]) -> Option<&'static str> {
    if subject.starts_with('$') {
        return Some("its reply subject is under $ (a NATS system or JetStream API), which this worker never publishes to");
    }
    if !prefixes.is_empty() && !prefixes.iter().any(|p| subject.starts_with(p.as_str())) {
        return Some("its reply subject is outside this worker's replySubjectPrefixes");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::reply_refusal;

    #[test]
    fn reply_subjects_under_dollar_are_refused_and_prefixes_narrow_the_rest() {
        for s in [
            "$JS.API.STREAM.DELETE.X",
            "$KV.b.k",
            "$O.x",
            "$SYS.REQ.SERVER.PING",
            "$SRV.PING",
            "$G",
        ] {
            assert!(reply_refusal(s, &[]).is_some(), "{s}");
        }
        assert_eq!(reply_refusal("_INBOX.abc", &[]), None);
        let inbox = vec!["_INBOX.".to_string()];
        assert_eq!(reply_refusal("_INBOX.abc", &inbox), None);
        assert!(reply_refusal("results.abc", &inbox).is_some());
        assert!(reply_refusal("$JS.API.X", &inbox).is_some());
    }
}
