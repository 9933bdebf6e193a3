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
