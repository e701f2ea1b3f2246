//! Tests of `prompt_step.rs`.

use super::*;
use crate::prompt::PromptLibrary;
use crate::step::Engines;
use crate::testing::{ScriptedEngine, reply};
use serde_json::json;

const PROMPTS: &[(&str, &str)] = &[
    (
        "write_poem.yaml",
        "- role: system\n  content: |\n    You write poems in the style of {style}. Answer as JSON like {\"poem\": \"...\"}.\n    Use {{braces}} only in examples; {unknown} stays.\n- role: user\n  content: |\n    Text: {text}\n    Lines wanted: {lines}\n    Tags: {tags}\n",
    ),
    ("write_poem.txt", "Style: {style}\nText: {text}\nPoem:\n"),
];

fn item(text: &str) -> ItemRecord {
    let mut fields = atk_state::Fields::new();
    fields.insert("text".into(), json!(text));
    fields.insert("lines".into(), json!(4));
    fields.insert("tags".into(), json!(["sea", "ünïcode"]));
    ItemRecord {
        v: RECORD_VERSION,
        id: "i1".into(),
        parent: None,
        order: vec![0],
        fields,
    }
}

fn ctx(engine: Arc<ScriptedEngine>) -> StepContext {
    let mut ctx = StepContext::new(
        Engines::single(engine),
        Arc::new(PromptLibrary::new(PROMPTS)),
    );
    let mut run_args = Map::new();
    run_args.insert(
        "style".into(),
        json!("run-arg style (loses to the step arg)"),
    );
    run_args.insert("only_run".into(), json!("r"));
    ctx.run_args = Arc::new(run_args);
    ctx
}

fn step() -> PromptStep {
    PromptStep::new("poem")
        .prompt("write_poem")
        .arg("style", "Basho")
        .param("temperature", 0.7)
        .param("stop", json!(["</poem>"]))
}

const HOSTILE: &str = "A chunk with {text}, {{text}}, {style}, a lone { and JSON {\"k\": [1, {\"n\": 2}]} — 日本語 🎉";

#[test]
fn rendered_chat_prompt_snapshot() {
    let c = ctx(Arc::new(ScriptedEngine::new("e")));
    let request = step().request(&item(HOSTILE), &c).unwrap();
    insta::assert_yaml_snapshot!("chat_prompt", request.prompt);
}

#[test]
fn rendered_completion_prompt_snapshot() {
    let mut c = ctx(Arc::new(ScriptedEngine::new("e")));
    c.completion_mode = true;
    let request = step().request(&item("plain {{text}} ünïcode"), &c).unwrap();
    insta::assert_snapshot!(
        "completion_prompt",
        match request.prompt {
            Prompt::Completion(text) => text,
            Prompt::Chat(_) => panic!("completion mode must send a completion prompt"),
        }
    );
}

#[test]
fn hostile_chunk_text_is_sent_verbatim() {
    let c = ctx(Arc::new(ScriptedEngine::new("e")));
    let request = step().request(&item(HOSTILE), &c).unwrap();
    let Prompt::Chat(messages) = request.prompt else {
        panic!("chat expected")
    };
    assert!(
        messages[1].content.contains(HOSTILE),
        "{}",
        messages[1].content
    );
    assert!(messages[0].content.contains("style of Basho"));
    assert!(
        messages[0].content.contains("{\"poem\": \"...\"}")
            && messages[0].content.contains("{unknown}")
    );
    assert!(
        messages[1]
            .content
            .contains("Lines wanted: 4\nTags: [\"sea\",\"ünïcode\"]")
    );
}

#[test]
fn use_stop_false_removes_stop_and_mock_reply_is_passed() {
    let mut c = ctx(Arc::new(ScriptedEngine::new("e")));
    let with_stop = step()
        .mock_reply("<poem>{lines}</poem>")
        .request(&item("x"), &c)
        .unwrap();
    assert!(with_stop.params.contains_key("stop"));
    assert_eq!(
        with_stop.mock_reply.as_deref(),
        Some("<poem>{lines}</poem>")
    );
    c.use_stop = false;
    let without = step().request(&item("x"), &c).unwrap();
    assert!(!without.params.contains_key("stop"));
    assert_eq!(without.params["temperature"], json!(0.7));
}

fn rejecting_bad() -> PromptStep {
    step().max_retries(2).validator(|out, _| {
        if out.as_str() == Some("good") {
            Ok(())
        } else {
            Err(format!("not good: {out}"))
        }
    })
}

#[tokio::test]
async fn validation_failures_are_retried_and_then_accepted() {
    let engine = Arc::new(ScriptedEngine::new("e"));
    engine
        .push(Ok(reply("bad")))
        .push(Ok(reply("bad")))
        .push(Ok(reply("good")));
    let StepOutput::Result(record) = rejecting_bad()
        .run(&item("x"), &ctx(engine.clone()))
        .await
        .unwrap()
    else {
        panic!("a result expected")
    };
    assert_eq!(
        (record.output, record.attempts, record.prompt_tokens),
        (json!("good"), 3, 30)
    );
    assert_eq!(engine.calls(), 3);
    assert!(record.details.is_none());
}

#[tokio::test]
async fn exhausted_retries_fail_with_the_last_reason_and_output() {
    let engine = Arc::new(ScriptedEngine::new("e").with_fallback(|_| Ok(reply("bad"))));
    let err = rejecting_bad()
        .run(&item("x"), &ctx(engine.clone()))
        .await
        .unwrap_err();
    let StepError::Failed(f) = err else {
        panic!("item failure expected, got {err:?}")
    };
    assert_eq!(
        (f.kind.as_str(), f.reason.as_str(), f.attempts),
        ("validation", "not good: \"bad\"", 3)
    );
    assert_eq!(f.last_output.as_deref(), Some("bad"));
    assert_eq!(engine.calls(), 3, "max_retries(2) means 3 calls");
}

#[tokio::test]
async fn output_processor_rejections_are_retried() {
    let engine = Arc::new(ScriptedEngine::new("e"));
    engine
        .push(Ok(reply("no tags")))
        .push(Ok(reply("<poem>roses</poem>")));
    let s = step().output_processor(|raw| {
        raw.split_once("<poem>")
            .and_then(|(_, rest)| rest.split_once("</poem>"))
            .map(|(poem, _)| json!(poem))
            .ok_or_else(|| "no <poem> tags".to_string())
    });
    let StepOutput::Result(record) = s.run(&item("x"), &ctx(engine)).await.unwrap() else {
        panic!()
    };
    assert_eq!((record.output, record.attempts), (json!("roses"), 2));
}

#[tokio::test]
async fn length_cut_is_rejected_unless_accepted() {
    let cut = || {
        let mut r = reply("half a po");
        r.finish_reason = Some("length".into());
        Ok(r)
    };
    let engine = Arc::new(ScriptedEngine::new("e").with_fallback(move |_| cut()));
    let err = step()
        .max_retries(0)
        .run(&item("x"), &ctx(engine.clone()))
        .await
        .unwrap_err();
    let StepError::Failed(f) = err else { panic!() };
    assert_eq!(
        (f.kind.as_str(), f.reason.as_str()),
        ("length", LENGTH_CUT_REASON)
    );
    let ok = step()
        .max_retries(0)
        .accept_length_cut(true)
        .run(&item("x"), &ctx(engine))
        .await
        .unwrap();
    assert!(matches!(ok, StepOutput::Result(r) if r.output == json!("half a po")));
}

#[tokio::test]
async fn rejected_requests_fail_the_item_without_validation_retries() {
    let engine = Arc::new(ScriptedEngine::new("e"));
    engine.push(Err(atk_engine::Error::Rejected {
        engine: "e".into(),
        status: 400,
        message: "bad param".into(),
    }));
    let err = step()
        .run(&item("x"), &ctx(engine.clone()))
        .await
        .unwrap_err();
    let StepError::Failed(f) = err else { panic!() };
    assert_eq!(f.kind, "rejected");
    assert!(f.reason.contains("bad param"));
    assert_eq!(engine.calls(), 1);
    // An over-long prompt is its own kind, with the server's reason.
    let message =
        "This model's maximum context length is 2048 tokens. However, you requested 3419 tokens";
    engine.push(Err(atk_engine::Error::Rejected {
        engine: "e".into(),
        status: 400,
        message: message.into(),
    }));
    let err = step()
        .run(&item("y"), &ctx(engine.clone()))
        .await
        .unwrap_err();
    let StepError::Failed(f) = err else { panic!() };
    assert_eq!(f.kind, OVER_CONTEXT);
    assert!(
        f.reason.contains("maximum context length is 2048"),
        "{}",
        f.reason
    );
    assert_eq!(engine.calls(), 2);
}

#[tokio::test]
async fn fatal_engine_errors_are_returned_as_engine_errors() {
    let engine = Arc::new(ScriptedEngine::new("e"));
    engine.push(Err(atk_engine::Error::AuthRefused {
        engine: "e".into(),
        status: 401,
        message: "bad key".into(),
    }));
    let err = step().run(&item("x"), &ctx(engine)).await.unwrap_err();
    assert!(
        matches!(err, StepError::Engine(ref e) if e.is_fatal()),
        "{err:?}"
    );
    assert!(!err.is_config_error());
}

#[tokio::test]
async fn a_call_the_engine_cancelled_leaves_the_item_not_done() {
    // After a Ctrl-C the engine ends queued calls with `Cancelled`: no failure is recorded,
    // the item runs again on resume.
    let engine = Arc::new(ScriptedEngine::new("e"));
    engine.push(Err(atk_engine::Error::Cancelled { engine: "e".into() }));
    let err = step()
        .run(&item("x"), &ctx(engine.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, StepError::Cancelled), "{err:?}");
    assert_eq!(
        engine.calls(),
        1,
        "no validation retry after a cancelled call"
    );
}

#[tokio::test]
async fn include_details_keeps_messages_and_raw_reply() {
    let engine = Arc::new(ScriptedEngine::new("e"));
    engine.push(Ok(reply("raw reply")));
    let mut c = ctx(engine);
    c.include_details = true;
    let StepOutput::Result(record) = step()
        .output_processor(|r| Ok(json!(r.len())))
        .run(&item("x"), &c)
        .await
        .unwrap()
    else {
        panic!()
    };
    let details = record.details.expect("details kept");
    assert_eq!(details.reply, "raw reply");
    assert_eq!(details.messages.len(), 2);
    assert_eq!(details.messages[1]["role"], "user");
    assert_eq!(record.output, json!(9));
}

#[tokio::test]
async fn input_processor_changes_what_is_rendered() {
    let engine = Arc::new(ScriptedEngine::new("e"));
    let s = step().input_processor(|mut item| {
        let upper = item.text("text").unwrap_or_default().to_uppercase();
        item.set("text", upper);
        item
    });
    s.run(&item("quiet"), &ctx(engine.clone())).await.unwrap();
    assert!(crate::testing::last_text(&engine.requests()[0]).contains("Text: QUIET"));
}

/// With the real mock engine.
mod mock_engine {
    use super::*;
    use crate::prompt::PromptLibrary;
    use crate::step::Engines;
    use atk_engine::{MockConfig, MockEngine};

    #[tokio::test]
    async fn the_mock_engine_answers_with_the_steps_mock_reply() {
        const PROMPTS: &[(&str, &str)] = &[(
            "p.yaml",
            "- role: user\n  content: \"Write about {text}\"\n",
        )];
        let engine = Arc::new(MockEngine::new("small", "mock", MockConfig::default()));
        let ctx = StepContext::new(
            Engines::single(engine),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let step = PromptStep::new("poem")
            .prompt("p")
            .mock_reply("<poem>{hash}</poem>")
            .output_processor(|raw| {
                raw.strip_prefix("<poem>")
                    .and_then(|r| r.strip_suffix("</poem>"))
                    .map(Value::from)
                    .ok_or("no tags".to_string())
            });
        let mut fields = atk_state::Fields::new();
        fields.insert("text".into(), "the sea".into());
        let item = ItemRecord {
            v: RECORD_VERSION,
            id: "a".into(),
            parent: None,
            order: vec![0],
            fields,
        };
        let StepOutput::Result(first) = step.run(&item, &ctx).await.unwrap() else {
            panic!()
        };
        let StepOutput::Result(second) = step.run(&item, &ctx).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            first.output.as_str().map(str::len),
            Some(16),
            "{{hash}} is 16 hex digits: {}",
            first.output
        );
        assert_eq!(
            first.output, second.output,
            "mock replies are deterministic"
        );
    }

    #[tokio::test]
    async fn a_validation_retry_asks_the_mock_choice_again() {
        const PROMPTS: &[(&str, &str)] = &[("p.yaml", "- role: user\n  content: \"{text}\"\n")];
        let engine = Arc::new(MockEngine::new("small", "mock", MockConfig::default()));
        let ctx = StepContext::new(
            Engines::single(engine),
            Arc::new(PromptLibrary::new(PROMPTS)),
        );
        let step = PromptStep::new("s")
            .prompt("p")
            .mock_reply_with(|_, call| format!("call {call}"))
            .validator(|out, _| match out.as_str() {
                Some("call 2000") => Ok(()),
                other => Err(format!("not yet: {other:?}")),
            });
        let item = ItemRecord {
            v: RECORD_VERSION,
            id: "a".into(),
            parent: None,
            order: vec![0],
            fields: atk_state::Fields::new(),
        };
        let StepOutput::Result(record) = step.run(&item, &ctx).await.unwrap() else {
            panic!()
        };
        assert_eq!((record.attempts, record.output), (3, "call 2000".into()));
    }
}

mod schema {
    use super::*;

    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Verdict {
        Yes,
        No,
    }

    /// A vote with its reason.
    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    struct Vote {
        verdict: Verdict,
        reason: String,
    }

    /// The same vote with one more field: another schema.
    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)] // read by deserializing only
    struct ScoredVote {
        verdict: Verdict,
        reason: String,
        score: u32,
    }

    #[tokio::test]
    async fn a_broken_json_reply_is_repaired_in_one_turn_and_stored_as_json() {
        let engine = Arc::new(ScriptedEngine::new("e"));
        engine
            .push(Ok(reply(r#"{"verdict": "yes", "rea"#)))
            .push(Ok(reply(
                "```json\n{\"verdict\": \"no\", \"reason\": \"r\"}\n```",
            )));
        let s = step().json::<Vote>();
        let StepOutput::Result(record) = s.run(&item("x"), &ctx(engine.clone())).await.unwrap()
        else {
            panic!("a result expected")
        };
        assert_eq!(record.output, json!({"verdict": "no", "reason": "r"}));
        assert_eq!(record.attempts, 2);
        let sent = engine.requests();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].schema.as_ref().unwrap().name, "poem");
        let (Prompt::Chat(first), Prompt::Chat(repair)) = (&sent[0].prompt, &sent[1].prompt) else {
            panic!("chat prompts")
        };
        assert_eq!(
            repair.len(),
            first.len() + 2,
            "the reply and the repair turn"
        );
        assert_eq!(repair[..first.len()], first[..]);
        assert_eq!(repair[first.len()].role, "assistant");
        assert_eq!(repair[first.len()].content, r#"{"verdict": "yes", "rea"#);
        let ask = &repair[first.len() + 1].content;
        assert!(
            ask.contains("not JSON (EOF") && ask.contains("only the corrected JSON"),
            "{ask}"
        );
        assert!(
            sent[1].schema.is_some(),
            "the repair carries the schema too"
        );
        // Pipeline code reads the stored value typed.
        let view = Item::new("i").with("check", record.output.clone());
        let vote: Vote = view.get("check").unwrap();
        assert!(matches!(vote.verdict, Verdict::No) && vote.reason == "r");
    }

    #[tokio::test]
    async fn a_reply_that_never_reads_fails_with_the_schema_error() {
        let engine = Arc::new(
            ScriptedEngine::new("e")
                .with_fallback(|_| Ok(reply(r#"{"verdict": "maybe", "reason": "?"}"#))),
        );
        let err = step()
            .json::<Vote>()
            .max_retries(1)
            .run(&item("x"), &ctx(engine.clone()))
            .await
            .unwrap_err();
        let StepError::Failed(f) = err else {
            panic!("item failure expected, got {err:?}")
        };
        assert!(f.reason.contains("does not match the schema") && f.reason.contains("maybe"));
        assert_eq!((f.attempts, engine.calls()), (2, 2));
    }

    #[test]
    fn the_schema_is_a_part_of_the_fingerprint_only_of_schema_steps() {
        let c = ctx(Arc::new(ScriptedEngine::new("e")));
        let plain = step().fingerprint_of(&c).unwrap().text();
        assert_eq!(plain.split(';').count(), 4, "{plain}");
        assert!(
            !plain.contains("j="),
            "a step without schema keeps its fingerprint"
        );
        let vote = step().json::<Vote>().fingerprint_of(&c).unwrap().text();
        let scored = step()
            .json::<ScoredVote>()
            .fingerprint_of(&c)
            .unwrap()
            .text();
        assert_eq!(crate::changed_parts(&plain, &vote), [crate::Part::Schema]);
        assert_eq!(crate::changed_parts(&vote, &scored), [crate::Part::Schema]);
        assert_eq!(crate::Part::Schema.phrase(), "another output schema");
    }

    #[test]
    fn a_legacy_reader_reprocesses_only_replies_stored_without_a_schema() {
        let c = ctx(Arc::new(ScriptedEngine::new("e")));
        let s = step()
            .json::<Vote>()
            .legacy_reader(|text| Ok(json!({"verdict": text.trim(), "reason": "from text"})));
        let mut stored = ResultRecord::new(json!("yes"));
        stored.raw = Some("yes".into());
        stored.fingerprint = Some("p=1;s=2;m=3;v=4".into());
        let Some(Ok(StepOutput::Result(r))) = Step::reprocess(&s, &item("x"), &stored, &c) else {
            panic!("a text reply stored without a schema reads with the legacy reader")
        };
        assert_eq!(r.output, json!({"verdict": "yes", "reason": "from text"}));
        stored.fingerprint = Some("p=1;s=2;m=3;v=4;j=5".into());
        let again = Step::reprocess(&s, &item("x"), &stored, &c);
        assert!(
            matches!(again, Some(Err(ref e)) if e.contains("not JSON")),
            "a schema step's own replies are read as JSON: {:?}",
            again.map(|r| r.map(|_| ()))
        );
    }
}
