//! `max_cost`: the run's one [`Budget`] (shared by its engines), what it warns about before
//! anything is sent, stopping the run when it is reached, and how such a run ends.
//!
//! The cap counts what every run on the output dir spent (the persisted cost totals), so a
//! rerun with the same cap sends nothing and one with a higher cap goes on from there.

use std::sync::Arc;

use atk_engine::{Budget, CostTotals};
use atk_state::Store;
use tokio_util::sync::CancellationToken;

use crate::error::RunError;
use crate::layout::COST_META_KEY;
use crate::settings::Settings;
use crate::status::{BudgetStatus, StatusSnapshot};

/// The run's budget when `max_cost` is set, counting what earlier runs on this output dir
/// spent; warns when no price is set (the cap could never trigger).
pub(super) fn for_run(
    settings: &Settings,
    store: &dyn Store,
) -> Result<Option<Arc<Budget>>, RunError> {
    let Some(cap) = settings.max_cost else {
        return Ok(None);
    };
    if let Some(warning) = unpriced_warning(settings) {
        crate::out::warn(&warning);
    }
    let saved = store.meta(COST_META_KEY)?.unwrap_or_default();
    let spent: f64 = settings
        .engines
        .iter()
        .filter_map(|e| saved.get(&e.label))
        .filter_map(|v| serde_json::from_value::<CostTotals>(v.clone()).ok())
        .map(|t| t.cost_usd)
        .sum();
    Ok(Some(Budget::new(cap, spent)))
}

/// The warning for a `max_cost` set while every engine the pipeline calls has prices of 0.
pub(crate) fn unpriced_warning(settings: &Settings) -> Option<String> {
    let cap = settings.max_cost?;
    let priced = settings
        .engines
        .iter()
        .filter(|e| e.used)
        .any(|e| e.price_in > 0.0 || e.price_out > 0.0);
    (!priced).then(|| {
        format!(
            "max_cost is ${cap:.4} but every cost_per_million_* price is 0: the cap can never be reached; set the prices to use it"
        )
    })
}

/// Stops the run (no new item, no new request) once the budget is reached; requests in
/// flight finish and are stored.
pub(super) fn watch(
    budget: Option<Arc<Budget>>,
    cancel: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let budget = budget?;
    Some(tokio::spawn(async move {
        budget.reached().await;
        cancel.cancel();
    }))
}

/// The run's outcome once the budget was reached: the run did not finish, whatever the chain
/// returned (an item was held back), and it says how far it got.
pub(super) fn outcome(
    outcome: Result<(), RunError>,
    budget: Option<&Budget>,
    snapshot: &StatusSnapshot,
) -> Result<(), RunError> {
    match budget {
        Some(b) if b.is_reached() => match outcome {
            // A config or input error, or a fatal one, says more than the budget does.
            Err(e @ (RunError::Config(_) | RunError::Input(_) | RunError::Fatal(_))) => Err(e),
            _ => Err(RunError::BudgetReached {
                spent_usd: b.spent_usd(),
                cap_usd: b.cap_usd(),
                pending: pending_items(snapshot),
            }),
        },
        _ => outcome,
    }
}

/// What the status snapshot records of the budget.
pub(super) fn status(budget: Option<&Budget>) -> Option<BudgetStatus> {
    budget.map(|b| BudgetStatus {
        cap_usd: b.cap_usd(),
        spent_usd: b.spent_usd(),
        reached: b.is_reached(),
    })
}

/// Items not through the chain: the most any step still has pending (each step counts the
/// items it sees, so the deepest unfinished step has them all).
fn pending_items(snapshot: &StatusSnapshot) -> u64 {
    snapshot.steps.iter().map(|s| s.pending).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CommonConfig, EnginesUsed};
    use crate::status::StepStatus;

    #[test]
    fn a_cap_without_prices_is_warned_about_and_one_with_prices_is_not() {
        let mut c = CommonConfig::default();
        assert_eq!(
            unpriced_warning(&Settings::new(&c, EnginesUsed::BOTH)),
            None
        );
        c.max_cost = Some(2.0);
        let warning = unpriced_warning(&Settings::new(&c, EnginesUsed::BOTH)).unwrap();
        assert!(warning.contains("never be reached"), "{warning}");
        c.cost_per_million_large_output = 10.0;
        assert_eq!(
            unpriced_warning(&Settings::new(&c, EnginesUsed::BOTH)),
            None
        );
    }

    #[test]
    fn a_reached_budget_ends_the_run_with_what_was_spent_and_what_is_left() {
        let budget = Budget::new(1.0, 1.0);
        let snapshot = StatusSnapshot {
            steps: vec![
                StepStatus {
                    step: "a".into(),
                    pending: 3,
                    ..Default::default()
                },
                StepStatus {
                    step: "b".into(),
                    pending: 7,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let e = outcome(Err(RunError::Interrupted), Some(&budget), &snapshot).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "budget reached: $1.0000 of $1.0000 spent, 7 items pending — raise max_cost and rerun to go on"
        );
        let open = Budget::new(2.0, 1.0);
        assert!(outcome(Ok(()), Some(&open), &snapshot).is_ok());
        assert!(outcome(Ok(()), None, &snapshot).is_ok());
    }
}
