//! Chat templates: the Jinja template a chat model's `tokenizer_config.json` (or GGUF
//! metadata) carries, rendered for one user message.

use minijinja::{context, Environment};
use serde_json::Value as Json;

use crate::error::{ModelError, Result};

/// A chat template and the special-token strings it may refer to.
///
/// ```
/// use latentevo_model::ChatTemplate;
/// let config = serde_json::json!({
///     "chat_template": "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
///     "eos_token": "</s>",
/// });
/// let template = ChatTemplate::from_tokenizer_config(&config).unwrap();
/// assert_eq!(template.render_user("Hi")?, "<|user|>Hi\n<|assistant|>");
/// # Ok::<(), latentevo_model::ModelError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// The template of a `tokenizer_config.json` value: `chat_template` as a string, or the
    /// entry named `default` of a list of `{name, template}`; `None` when there is none.
    pub fn from_tokenizer_config(config: &Json) -> Option<ChatTemplate> {
        let source = match config.get("chat_template")? {
            Json::String(s) => s.clone(),
            Json::Array(entries) => entries
                .iter()
                .find(|e| e.get("name").and_then(Json::as_str) == Some("default"))?
                .get("template")?
                .as_str()?
                .to_string(),
            _ => return None,
        };
        let token = |key: &str| match config.get(key) {
            Some(Json::String(s)) => s.clone(),
            Some(Json::Object(o)) => o.get("content").and_then(Json::as_str).unwrap_or("").to_string(),
            _ => String::new(),
        };
        Some(ChatTemplate {
            source,
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
        })
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation of one user message, ending with the assistant's turn opened
    /// (`add_generation_prompt = true`), as the text to tokenize.
    pub fn render_user(&self, message: &str) -> Result<String> {
        let mut env = Environment::new();
        env.add_template("chat", &self.source)
            .map_err(|e| ModelError::InvalidRequest(format!("the chat template does not parse: {e}")))?;
        env.get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => vec![context! { role => "user", content => message }],
                    add_generation_prompt => true,
                    bos_token => self.bos_token.as_str(),
                    eos_token => self.eos_token.as_str(),
                })
            })
            .map_err(|e| ModelError::InvalidRequest(format!("the chat template failed to render: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_smollm2_style_chatml() {
        let config = serde_json::json!({
            "chat_template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
            "bos_token": "<|im_start|>",
            "eos_token": {"content": "<|im_end|>"},
        });
        let t = ChatTemplate::from_tokenizer_config(&config).unwrap();
        assert_eq!(
            t.render_user("Give me an idea.").unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nGive me an idea.<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(t.eos_token, "<|im_end|>");
    }

    #[test]
    fn missing_and_broken_templates() {
        assert!(ChatTemplate::from_tokenizer_config(&serde_json::json!({})).is_none());
        let broken =
            ChatTemplate::from_tokenizer_config(&serde_json::json!({"chat_template": "{% for %}"})).unwrap();
        let err = broken.render_user("x").unwrap_err().to_string();
        assert!(err.contains("chat template"), "{err}");
    }
}
