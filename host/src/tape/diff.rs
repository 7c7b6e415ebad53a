//! How a request differs from the one a tape recorded: the fields that
//! differ and, for the first differing message, where and a short excerpt of
//! both sides. Pure; linear in the requests' sizes.

use super::Request;

/// Characters of context shown on each side of the first difference.
const CONTEXT: usize = 24;
/// Differences listed before the rest are only counted.
const MAX_LISTED: usize = 4;

/// What differs between the recorded request and the new one, in words
/// (empty when they are the same).
pub fn explain(tape: &Request, now: &Request) -> String {
    let mut diffs: Vec<String> = Vec::new();
    if tape.model != now.model {
        diffs.push(format!("model: tape {}, now {}", opt(&tape.model), opt(&now.model)));
    }
    if tape.max_tokens != now.max_tokens {
        diffs.push(format!("max tokens: tape {}, now {}", opt(&tape.max_tokens), opt(&now.max_tokens)));
    }
    if tape.temperature.map(f32::to_bits) != now.temperature.map(f32::to_bits) {
        diffs.push(format!("temperature: tape {}, now {}", opt(&tape.temperature), opt(&now.temperature)));
    }
    if tape.messages.len() != now.messages.len() {
        diffs.push(format!("{} message(s) on the tape, {} now", tape.messages.len(), now.messages.len()));
    }
    if let Some(i) = tape.messages.iter().zip(&now.messages).position(|(a, b)| a != b) {
        let (a, b) = (&tape.messages[i], &now.messages[i]);
        if a.role != b.role {
            diffs.push(format!("message {} role: tape {}, now {}", i + 1, a.role.as_str(), b.role.as_str()));
        }
        if let Some(d) = text(&a.content, &b.content) {
            diffs.push(format!("message {} ({}) {d}", i + 1, a.role.as_str()));
        }
    }
    if diffs.len() > MAX_LISTED {
        let more = diffs.len() - MAX_LISTED;
        diffs.truncate(MAX_LISTED);
        diffs.push(format!("and {more} more"));
    }
    diffs.join("; ")
}

/// Where two texts first differ, with a short excerpt of each (`None`: they are equal).
pub fn text(tape: &str, now: &str) -> Option<String> {
    if tape == now {
        return None;
    }
    let at = first_difference(tape, now);
    let chars = tape[..at].chars().count();
    Some(format!("differs at character {}: tape \"{}\", now \"{}\"", chars + 1, excerpt(tape, at), excerpt(now, at)))
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    match v {
        Some(v) => format!("{v}"),
        None => "(default)".into(),
    }
}

/// The byte offset of the first character where `a` and `b` differ (a char boundary of both).
fn first_difference(a: &str, b: &str) -> usize {
    a.char_indices().zip(b.chars()).find(|((_, x), y)| x != y).map(|((i, _), _)| i).unwrap_or(a.len().min(b.len()))
}

/// Up to [`CONTEXT`] characters each side of byte `at`, escaped for one line.
fn excerpt(s: &str, at: usize) -> String {
    let at = at.min(s.len());
    let start = s[..at].char_indices().rev().nth(CONTEXT - 1).map(|(i, _)| i).unwrap_or(0);
    let end = s[at..].char_indices().nth(CONTEXT).map(|(i, _)| at + i).unwrap_or(s.len());
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.extend(s[start..end].chars().flat_map(char::escape_debug));
    if end < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Role;
    use crate::tape::Message;

    fn req(msgs: &[(Role, &str)], max_tokens: Option<u32>) -> Request {
        Request { messages: msgs.iter().map(|(r, c)| Message { role: *r, content: c.to_string() }).collect(), model: None, max_tokens, temperature: None }
    }

    #[test]
    fn the_same_request_has_no_difference() {
        let a = req(&[(Role::User, "hi")], Some(16));
        assert_eq!(explain(&a, &a.clone()), "");
    }

    #[test]
    fn fields_and_the_first_differing_message_are_named() {
        let a = req(&[(Role::System, "be brief"), (Role::User, "Task: write an essay about AI history.\nWrite one paragraph.")], None);
        let b = req(&[(Role::System, "be brief"), (Role::User, "Task: write an essay about cats.\nWrite one paragraph.")], Some(16));
        let e = explain(&a, &b);
        assert!(e.contains("max tokens: tape (default), now 16"), "{e}");
        assert!(e.contains("message 2 (user) differs at character 28"), "{e}");
        assert!(e.contains("tape \"…k: write an essay about AI history.\\nWrite one pa…\""), "{e}");
        assert!(e.contains("now \"…k: write an essay about cats.\\nWrite one paragrap…\""), "{e}");
    }

    #[test]
    fn counts_roles_and_multibyte_text_are_handled() {
        let a = req(&[(Role::User, "héllo wörld")], None);
        let b = req(&[(Role::Assistant, "héllo world"), (Role::User, "x")], None);
        let e = explain(&a, &b);
        assert!(e.contains("1 message(s) on the tape, 2 now"), "{e}");
        assert!(e.contains("message 1 role: tape user, now assistant"), "{e}");
        assert!(e.contains("differs at character 8"), "{e}");
        // A prefix: the difference is where the shorter one ends.
        let e = explain(&req(&[(Role::User, "abc")], None), &req(&[(Role::User, "abcdef")], None));
        assert!(e.contains("differs at character 4: tape \"abc\", now \"abcdef\""), "{e}");
    }
}
