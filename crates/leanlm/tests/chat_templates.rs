//! Chat templates rendered by minijinja against Python jinja2's renderings
//! (`bench/make-chat-fixtures.py`), and the token ids `generate --chat` sends.

mod common;

use leanlm::run::chat::{self, Message};

fn fixture() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(common::fixture("chat/rendered.json")).unwrap())
        .unwrap()
}

fn template<'a>(fx: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    fx["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no template {name} in the fixture"))
}

fn messages(case: &serde_json::Value) -> Vec<Message> {
    serde_json::from_value(case["messages"].clone()).unwrap()
}

#[test]
fn chatml_gemma_and_llama3_templates_render_as_jinja2_does() {
    let fx = fixture();
    let templates = fx["templates"].as_array().unwrap();
    let names: Vec<&str> = templates
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["smollm2", "qwen2.5-coder", "gemma3", "llama3"]);
    for t in templates {
        let text = t["template"].as_str().unwrap();
        let (bos, eos) = (
            t["bos_token"].as_str().unwrap(),
            t["eos_token"].as_str().unwrap(),
        );
        for case in t["cases"].as_array().unwrap() {
            let gen = case["add_generation_prompt"].as_bool().unwrap();
            let got = chat::render(text, &messages(case), gen, bos, eos).unwrap();
            assert_eq!(
                got,
                case["rendered"].as_str().unwrap(),
                "{}: {case}",
                t["name"]
            );
        }
    }
}

#[test]
fn the_gemma_default_is_the_template_the_fixture_rendered() {
    let fx = fixture();
    let family = leanlm::model::Arch::Gemma3.family();
    assert_eq!(
        family.chat_template,
        template(&fx, "gemma3")["template"].as_str(),
        "re-record with bench/make-chat-fixtures.py"
    );
}

/// `generate --chat` on SmolLM2 sends the ids of jinja2's rendering of the model's own
/// template, with the system message the template adds, and no second BOS.
#[test]
fn smollm2_chat_prompt_is_the_jinja2_rendering_of_its_own_template() {
    let fx = fixture();
    let t = template(&fx, "smollm2");
    let tok = &common::default_model().tokenizer;
    let family = common::default_model().model.config.family();
    let own = chat::template_of(tok, family).unwrap();
    assert_eq!(
        own,
        t["template"].as_str().unwrap(),
        "the fixture holds the model's template"
    );
    let case = &t["cases"][0];
    let rendered = case["rendered"].as_str().unwrap();
    assert!(rendered.contains("You are a helpful AI assistant named SmolLM"));
    let ids = chat::prompt_ids(tok, own, &messages(case)).unwrap();
    assert_eq!(ids, tok.encode(rendered, false, true).unwrap());
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert_eq!(
        ids.iter().filter(|&&i| i == im_start).count(),
        3,
        "system, user, assistant"
    );
    assert!(tok
        .end_of_generation()
        .contains(&tok.token_id("<|im_end|>").unwrap()));
}

/// Gemma's GGUF carries no template: its family's default applies, and the ids are
/// llama.cpp's for the same markup (`llama-tokenize` on the rendered text).
#[test]
fn gemma3_chat_prompt_uses_the_family_default() {
    let fx = fixture();
    let case = &template(&fx, "gemma3")["cases"][0];
    let path = common::fetched_model("gemma3-270m");
    let tok = leanlm::model::load_tokenizer(&path).unwrap();
    assert!(tok.chat_template.is_none());
    let own = chat::template_of(&tok, leanlm::model::Arch::Gemma3.family()).unwrap();
    let ids = chat::prompt_ids(&tok, own, &messages(case)).unwrap();
    // <bos> <start_of_turn> user \n Hello ! <end_of_turn> \n <start_of_turn> model \n
    assert_eq!(
        ids,
        [2, 105, 2364, 107, 9259, 236888, 106, 107, 105, 4368, 107]
    );
    let eog = tok.end_of_generation();
    assert!(eog.contains(&106) && eog.contains(&1), "{eog:?}");
}
