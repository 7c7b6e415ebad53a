//! The GGUF's chat template, recognised rather than interpreted.
//!
//! A full Jinja engine is not needed for the models this crate runs: it recognises the
//! ChatML family (with or without a default system prompt injected when the first
//! message is not a system message) by comparing the template, whitespace inside tags
//! removed, with the known shapes, and renders exactly what Jinja would. Any other
//! template is refused at load time with the template text in the error, so a new
//! model cannot silently get a wrong prompt.

use crate::{ChatMessage, Role};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
    /// `<|im_start|>assistant\n`; `default_system` is rendered first when the first
    /// message is not a system message.
    ChatMl { default_system: Option<String> },
}

/// ChatML as written in SmolLM2's GGUF, canonicalised (see [`canonical`]); `{SYS}` is the
/// default system prompt's string literal.
const CHATML_DEFAULT_SYSTEM: &str = "{%formessageinmessages%}{%ifloop.firstandmessages[0]['role']!='system'%}{{'<|im_start|>system\\n{SYS}<|im_end|>\\n'}}{%endif%}{{'<|im_start|>'+message['role']+'\\n'+message['content']+'<|im_end|>'+'\\n'}}{%endfor%}{%ifadd_generation_prompt%}{{'<|im_start|>assistant\\n'}}{%endif%}";
/// Plain ChatML (no default system prompt).
const CHATML: &str = "{%formessageinmessages%}{{'<|im_start|>'+message['role']+'\\n'+message['content']+'<|im_end|>'+'\\n'}}{%endfor%}{%ifadd_generation_prompt%}{{'<|im_start|>assistant\\n'}}{%endif%}";

impl ChatTemplate {
    /// Recognises `template`; `Err` carries a short reason.
    pub fn parse(template: &str) -> Result<Self, String> {
        let canon = canonical(template);
        if canon == CHATML {
            return Ok(Self::ChatMl {
                default_system: None,
            });
        }
        let (head, tail) = CHATML_DEFAULT_SYSTEM
            .split_once("{SYS}")
            .expect("pattern has a placeholder");
        if let Some(middle) = canon
            .strip_prefix(head)
            .and_then(|rest| rest.strip_suffix(tail))
        {
            // The literal must be plain text: no quote that would end it early.
            if !middle.contains('\'') {
                return Ok(Self::ChatMl {
                    default_system: Some(unescape(middle)),
                });
            }
        }
        Err("only ChatML templates are supported (a full Jinja engine is not built in)".into())
    }

    /// Renders the prompt with the generation prompt (`add_generation_prompt = true`).
    pub fn render(&self, messages: &[ChatMessage]) -> String {
        let Self::ChatMl { default_system } = self;
        let mut out = String::new();
        if let (Some(sys), Some(first)) = (default_system, messages.first()) {
            if first.role != Role::System {
                out.push_str("<|im_start|>system\n");
                out.push_str(sys);
                out.push_str("<|im_end|>\n");
            }
        }
        for m in messages {
            out.push_str("<|im_start|>");
            out.push_str(m.role.as_str());
            out.push('\n');
            out.push_str(&m.content);
            out.push_str("<|im_end|>\n");
        }
        out.push_str("<|im_start|>assistant\n");
        out
    }
}

/// Removes whitespace inside `{% %}` and `{{ }}` tags, outside string literals, and
/// writes newlines, tabs and carriage returns inside literals as escapes; text between
/// tags is output and stays as it is.
fn canonical(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    let mut in_tag = false;
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            // Literal control characters and their escapes mean the same string.
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if !in_tag {
            out.push(c);
            if c == '{' && matches!(chars.peek(), Some('%') | Some('{')) {
                out.push(chars.next().unwrap());
                in_tag = true;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '%' | '}' if chars.peek() == Some(&'}') => {
                out.push(c);
                out.push(chars.next().unwrap());
                in_tag = false;
            }
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Decodes the escapes of a Jinja single-quoted literal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim from SmolLM2-135M-Instruct.Q4_1.gguf's `tokenizer.chat_template`.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn smollm2_template_injects_default_system() {
        // The GGUF stores real newlines inside the literals, as this constant does.
        let t = ChatTemplate::parse(SMOLLM2).unwrap();
        let sys = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
        assert_eq!(
            t,
            ChatTemplate::ChatMl {
                default_system: Some(sys.into())
            }
        );
        assert_eq!(
            t.render(&[msg(Role::User, "Hi")]),
            format!("<|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        );
    }

    #[test]
    fn escaped_newlines_are_decoded_too() {
        let t = ChatTemplate::parse(&SMOLLM2.replace('\n', "\\n")).unwrap();
        assert_eq!(t, ChatTemplate::parse(SMOLLM2).unwrap());
        let ChatTemplate::ChatMl { default_system } = t;
        assert!(!default_system.unwrap().contains('\\'));
    }

    #[test]
    fn explicit_system_and_turns_render_in_order() {
        let t = ChatTemplate::parse(SMOLLM2).unwrap();
        let out = t.render(&[
            msg(Role::System, "S"),
            msg(Role::User, "U"),
            msg(Role::Assistant, "A"),
            msg(Role::User, "U2"),
        ]);
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n"
        );
        // Only the first message decides: a later system message adds no default.
        let out = t.render(&[msg(Role::User, "U"), msg(Role::System, "S")]);
        assert_eq!(out.matches("<|im_start|>system").count(), 2);
    }

    #[test]
    fn plain_chatml_has_no_default_system() {
        let plain = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let t = ChatTemplate::parse(plain).unwrap();
        assert_eq!(
            t.render(&[msg(Role::User, "x")]),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn other_templates_are_refused() {
        let llama3 = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}";
        assert!(ChatTemplate::parse(llama3).is_err());
        // Same shape but with output text between tags is not ChatML either.
        assert!(ChatTemplate::parse(&format!("x{SMOLLM2}")).is_err());
    }
}
