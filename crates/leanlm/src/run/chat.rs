//! Chat prompts. We do not run Jinja: we recognise the ChatML layout (`<|im_start|>role`),
//! which SmolLM, Qwen and many others use, and take a default system message from the
//! template when it hard-codes one.

use crate::error::{Error, Result};

/// The text of one user turn followed by the assistant's opening, per the template.
pub fn user_turn(template: Option<&str>, user: &str) -> Result<String> {
    let t = template.ok_or_else(|| {
        Error::InvalidInput("this model has no chat template; drop --chat".into())
    })?;
    if !t.contains("<|im_start|>") {
        return Err(Error::InvalidInput(
            "only ChatML chat templates (<|im_start|>…<|im_end|>) are supported; drop --chat and format the prompt yourself".into(),
        ));
    }
    let mut out = String::new();
    if let Some(system) = default_system(t) {
        out.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
    }
    out.push_str(&format!(
        "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    ));
    Ok(out)
}

/// A literal system message written into the template, e.g.
/// `'<|im_start|>system\nYou are …<|im_end|>\n'`.
fn default_system(template: &str) -> Option<String> {
    let start = "<|im_start|>system\\n";
    let i = template.find(start)? + start.len();
    let rest = &template[i..];
    let end = rest.find("<|im_end|>")?;
    let msg = &rest[..end];
    // A Jinja expression means the system text comes from the messages, not the template.
    (!msg.contains("{{") && !msg.contains('+')).then(|| msg.replace("\\n", "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_with_default_system() {
        let t = r"{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}<|im_start|>";
        assert_eq!(
            user_turn(Some(t), "Hi").unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn no_template_is_an_error() {
        assert!(user_turn(None, "Hi").is_err());
        assert!(user_turn(Some("[INST]"), "Hi").is_err());
    }
}
