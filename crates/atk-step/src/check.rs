//! Pre-flight checks of a chain's prompts that warn instead of failing: a `{name}` that no
//! item field, step argument or run argument provides is sent as written, which is rarely
//! what the prompt's author meant. Returned, never printed: the CLI shows them.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::step::{Step, StepContext};

/// A `{name}` in a prompt that nothing will fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptWarning {
    /// The step whose prompt it is.
    pub step: String,
    /// The prompt file (path, or `built-in:NAME`).
    pub prompt: String,
    /// 1-based line in that file, when found.
    pub line: Option<usize>,
    /// The name between the braces.
    pub name: String,
    /// A provided name close to it, if any.
    pub suggestion: Option<String>,
}

impl fmt::Display for PromptWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "prompt {}", self.prompt)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        write!(
            f,
            ": `{{{}}}` is provided by no item field, step argument or config key (step `{}`), so it is sent as written",
            self.name, self.step
        )?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean `{{{s}}}`?)")?;
        }
        Ok(())
    }
}

/// Checks every prompt of `chain` for `{name}`s nothing provides. `item_fields` are the fields
/// the chain's first step sees (e.g. `text`, `metadata` for chunks); each step adds the fields
/// it declares ([`Step::adds_fields`]) for the steps after it. Once a step cannot say (a
/// fan-out's children carry fields of their own), later prompts are not checked against item
/// fields: no warning is better than a wrong one. Prompts that do not load are skipped (the
/// executor reports them as errors).
pub fn check_prompt_names(
    chain: &[Arc<dyn Step>],
    ctx: &StepContext,
    item_fields: &[String],
) -> Vec<PromptWarning> {
    let mut warnings = Vec::new();
    let mut fields: Option<BTreeSet<String>> = Some(item_fields.iter().cloned().collect());
    for step in chain {
        if let (Some(known), Some(args)) = (&fields, step.template_args()) {
            let provided: Vec<&str> = known
                .iter()
                .map(String::as_str)
                .chain(args.iter().map(String::as_str))
                .chain(ctx.run_args.keys().map(String::as_str))
                .collect();
            for prompt in step.prompt_names() {
                let Ok(template) = ctx.prompts.load(&prompt, ctx.completion_mode) else {
                    continue;
                };
                for (name, line) in template.names() {
                    // `{key.field}` is provided when `key` is.
                    let root = name.split('.').next().unwrap_or_default();
                    if provided.contains(&root) {
                        continue;
                    }
                    warnings.push(PromptWarning {
                        step: step.name().to_string(),
                        prompt: template.source().to_string(),
                        line,
                        suggestion: closest(&name, provided.iter().copied()).map(str::to_string),
                        name,
                    });
                }
            }
        }
        match (&mut fields, step.adds_fields()) {
            (Some(known), Some(added)) => known.extend(added),
            _ => fields = None,
        }
    }
    warnings
}

/// The candidate most like `name` (Jaro-Winkler similarity of at least 0.8), for "did you mean".
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScriptedEngine;
    use crate::{Engines, FanOutStep, PromptLibrary, PromptStep};

    const PROMPTS: &[(&str, &str)] = &[
        (
            "first.yaml",
            "# {comment} is not checked\n- role: user\n  content: |\n    {text} in {poem_stlye}\n    for {audience} {{literal}}\n",
        ),
        (
            "second.yaml",
            "- role: user\n  content: \"{poetry} / {text} / {summary}\"\n",
        ),
        (
            "after_fan_out.yaml",
            "- role: user\n  content: \"{question} {anything}\"\n",
        ),
    ];

    fn ctx() -> StepContext {
        StepContext::new(
            Engines::single(Arc::new(ScriptedEngine::new("small"))),
            Arc::new(PromptLibrary::new(PROMPTS)),
        )
    }

    fn fields() -> Vec<String> {
        vec!["text".into(), "metadata".into()]
    }

    #[test]
    fn unknown_names_are_named_with_prompt_line_and_a_suggestion() {
        let first = PromptStep::new("write")
            .prompt("first")
            .arg("poem_style", "free verse")
            .arg("audience", "all")
            .result_key("poetry");
        let second = PromptStep::new("summarise").prompt("second");
        let chain: Vec<Arc<dyn Step>> = vec![Arc::new(first), Arc::new(second)];
        let w = check_prompt_names(&chain, &ctx(), &fields());
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            (w[0].name.as_str(), w[0].line, w[0].suggestion.as_deref()),
            ("poem_stlye", Some(4), Some("poem_style"))
        );
        assert_eq!(
            w[0].to_string(),
            "prompt built-in:first.yaml, line 4: `{poem_stlye}` is provided by no item field, step argument or config key \
             (step `write`), so it is sent as written (did you mean `{poem_style}`?)"
        );
        // `{poetry}` is the first step's result key: known to the second step.
        assert_eq!(
            (
                w[1].step.as_str(),
                w[1].name.as_str(),
                w[1].suggestion.as_deref()
            ),
            ("summarise", "summary", None)
        );
    }

    #[test]
    fn run_arguments_count_as_provided() {
        let mut ctx = ctx();
        ctx.run_args = Arc::new(
            serde_json::json!({"poem_stlye": "x", "audience": "y"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let chain: Vec<Arc<dyn Step>> = vec![Arc::new(PromptStep::new("write").prompt("first"))];
        assert!(check_prompt_names(&chain, &ctx, &fields()).is_empty());
    }

    #[test]
    fn after_a_fan_out_or_an_input_processor_nothing_is_guessed() {
        let fan_out = FanOutStep::from_fn("split", |_| Ok(vec![]));
        let after = PromptStep::new("ask").prompt("after_fan_out");
        let chain: Vec<Arc<dyn Step>> = vec![Arc::new(fan_out), Arc::new(after)];
        assert!(check_prompt_names(&chain, &ctx(), &fields()).is_empty());
        let processed = PromptStep::new("write")
            .prompt("first")
            .input_processor(|i| i);
        let chain: Vec<Arc<dyn Step>> = vec![Arc::new(processed)];
        assert!(
            check_prompt_names(&chain, &ctx(), &fields()).is_empty(),
            "an input processor may add any field"
        );
    }
}
