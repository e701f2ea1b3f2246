//! Damage check: per-step result counts kept outside sled (in `status.json`) against what the
//! store holds when a run opens it. sled drops every record after a bad checksum without a
//! word (measured: 64 KiB of garbage lost 200 of 200 results), so the runner compares.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use atk_state::SledStore;

use crate::status::{MissingResults, StatusSnapshot};

/// The results a run's store holds: counted once at open, then kept live from the results
/// stored since.
#[derive(Debug)]
pub(crate) struct StoredCounts {
    /// The run's store (`None`: counts nothing, for tests).
    store: Option<Arc<SledStore>>,
    /// Results per step when the store was opened.
    baseline: BTreeMap<String, u64>,
    /// What was found missing at open.
    pub(crate) damage: Vec<MissingResults>,
}

impl StoredCounts {
    /// Counts the store's results (keys only) and compares them with the counts the last run
    /// recorded in `<output_dir>/status.json`; a loss is printed loudly on stderr (whatever
    /// the verbosity) and logged, before anything is sent.
    pub(crate) async fn check(
        store: Arc<SledStore>,
        output_dir: &Path,
    ) -> Result<Self, atk_state::Error> {
        let recorded = StatusSnapshot::read(output_dir)
            .map(|s| s.stored_results)
            .unwrap_or_default();
        let baseline = {
            let store = store.clone();
            let recorded = recorded.clone();
            tokio::task::spawn_blocking(move || store.result_counts_since(&recorded))
                .await
                .map_err(|e| atk_state::Error::Io {
                    path: output_dir.to_path_buf(),
                    message: e.to_string(),
                })??
        };
        let damage = find_missing(&recorded, &baseline);
        if !damage.is_empty() {
            let missing: u64 = damage.iter().map(MissingResults::missing).sum();
            tracing::debug!(missing, store = %store.dir().display(), "the store holds fewer results than recorded");
            // Printed under `-q` too: money is about to be spent again.
            crate::out::always(&render_damage(store.dir(), &damage));
        }
        Ok(Self {
            store: Some(store),
            baseline,
            damage,
        })
    }

    /// Counts of no store: nothing recorded, no damage.
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        Self {
            store: None,
            baseline: BTreeMap::new(),
            damage: Vec::new(),
        }
    }

    /// Results per step now: those found at open plus those stored since.
    pub(crate) fn live(&self) -> BTreeMap<String, u64> {
        let mut counts = self.baseline.clone();
        for (step, n) in self.store.iter().flat_map(|s| s.results_added()) {
            *counts.entry(step).or_default() += n;
        }
        counts
    }
}

/// The steps whose `found` result count is below the `recorded` one.
pub(crate) fn find_missing(
    recorded: &BTreeMap<String, u64>,
    found: &BTreeMap<String, u64>,
) -> Vec<MissingResults> {
    recorded
        .iter()
        .map(|(step, &recorded)| MissingResults {
            step: step.clone(),
            recorded,
            found: found.get(step).copied().unwrap_or(0),
        })
        .filter(|m| m.missing() > 0)
        .collect()
}

/// The loud report of a damaged store: what is missing per step, that it will be requested
/// again, and how to keep a copy of the store first.
pub(crate) fn render_damage(store_dir: &Path, missing: &[MissingResults]) -> String {
    let mut s = String::new();
    let total: u64 = missing.iter().map(MissingResults::missing).sum();
    let _ = writeln!(
        s,
        "STORE DAMAGED: {total} stored results are missing from {}",
        store_dir.display()
    );
    for m in missing {
        let _ = writeln!(s, "  {}", m.line());
    }
    let _ = writeln!(
        s,
        "  The store holds fewer results than the last run recorded (status.json): its files were\n  \
         damaged or replaced. The missing results will be requested (and paid for) again.\n  \
         To keep a copy of the store as it is now, stop the run (Ctrl-C) and copy it first:\n    \
         cp -a {dir} {dir}.damaged",
        dir = store_dir.display()
    );
    s
}
