//! The reply reader, the validator and the row shapes, without running the pipeline.

use atk_cli::prelude::Item;
use rephrase::{InputFormat, RephraseConfig, conversation, validate, with_transcript};
use serde_json::json;

fn rewrites(reply: &str) -> Result<Vec<(String, String)>, String> {
    atk_cli::prelude::tagged_turns(reply, "reasoning", "answer")
}

fn item(row: serde_json::Value) -> Item {
    let turns = conversation(&row, &RephraseConfig::default()).unwrap();
    with_transcript(Item::new("x").with("conversation", json!(turns)))
}

#[test]
fn rows_become_conversations_by_their_shape_or_the_configured_format() {
    let cfg = RephraseConfig::default();
    let text_row = json!({"question": "Why?", "text": "Because.", "conversations_seen": 1});
    let turns = conversation(&text_row, &cfg).unwrap();
    assert_eq!(
        (turns[0].from.as_str(), turns[0].value.as_str()),
        ("human", "Why?")
    );
    assert_eq!(
        (turns[1].from.as_str(), turns[1].value.as_str()),
        ("gpt", "Because.")
    );
    let no_question = conversation(&json!({"text": "Mulch."}), &cfg).unwrap();
    assert_eq!(
        no_question.len(),
        1,
        "a text row without a question has one turn"
    );
    let custom = RephraseConfig {
        text_field: "body".into(),
        ..RephraseConfig::default()
    };
    assert!(conversation(&json!({"body": "Hi."}), &custom).is_ok());
    let chat =
        json!({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]});
    assert_eq!(conversation(&chat, &cfg).unwrap().len(), 2);
    let jsonl_only = RephraseConfig {
        input_format: InputFormat::Jsonl,
        ..RephraseConfig::default()
    };
    let err = conversation(&chat, &jsonl_only).unwrap_err();
    assert!(err.contains("no text in field `text`"), "{err}");
    let sharegpt_only = RephraseConfig {
        input_format: InputFormat::Sharegpt,
        ..RephraseConfig::default()
    };
    assert!(conversation(&text_row, &sharegpt_only).is_err());
    let empty_answer =
        json!({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": " "}]});
    assert!(conversation(&empty_answer, &cfg).is_err());
}

#[test]
fn replies_need_one_reasoning_and_answer_pair_per_answer_with_its_content_kept() {
    let it = item(
        json!({"question": "Why do leaves curl?", "text": "Heat and water stress: they curl to lose less water."}),
    );
    assert!(
        it.fields()["transcript"]
            .as_str()
            .unwrap()
            .contains("[gpt, answer 1]")
    );
    let good = rewrites("<reasoning>Asks for a cause.</reasoning>\n<answer>Heat and water stress: they curl to lose less water.</answer>").unwrap();
    assert_eq!(good[0].0, "Asks for a cause.");
    assert_eq!(validate(&json!(good), &it, 0.8), Ok(()));

    let short = rewrites("<reasoning>Cause.</reasoning><answer>Heat.</answer>").unwrap();
    let err = validate(&json!(short), &it, 0.8).unwrap_err();
    assert!(err.contains("answer 1: 5 characters of 52 kept"), "{err}");
    let rambling =
        rewrites("<reasoning>One.\nTwo.</reasoning><answer>Heat and water stress: they curl to lose less water.</answer>")
            .unwrap();
    assert!(validate(&json!(rambling), &it, 0.8).is_err());
    let two = rewrites(
        "<reasoning>a</reasoning><answer>b</answer><reasoning>c</reasoning><answer>d</answer>",
    )
    .unwrap();
    assert!(
        validate(&json!(two), &it, 0.8)
            .unwrap_err()
            .contains("2 answers rewritten, the conversation has 1")
    );

    for bad in [
        "no tags at all",
        "<answer>only an answer</answer>",
        "<reasoning>never closed<answer>x</answer>",
    ] {
        assert!(rewrites(bad).is_err(), "{bad}");
    }
}
