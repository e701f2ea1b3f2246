//! The provider batches `atk status` lists (and `status.json` carries for the interface):
//! each batch of the run's batch journal (store meta, `layout::batch_state_meta_key`) with its
//! id, provider, state, counts and creation time. Read from the store, no engine involved.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::layout::{
    BatchMeta, BatchState, batch_index_meta_key, batch_meta_key, batch_state_meta_key,
};

/// One provider batch of the run, as `atk status` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchStatus {
    /// The engine that sent it (`small`, `large`).
    pub engine: String,
    /// atk's key of the batch (its metadata tag at OpenAI).
    pub key: String,
    /// The provider's batch id; `None` while it is being created (or when its id was never
    /// stored: a run killed in that moment).
    #[serde(default)]
    pub id: Option<String>,
    /// `openai` or `anthropic` (empty for batches recorded before atk kept it).
    #[serde(default)]
    pub provider: String,
    /// The provider's state as last polled (`planned` before creation, `collected` once its
    /// results are stored).
    pub state: String,
    /// The batch has ended at the provider.
    #[serde(default)]
    pub ended: bool,
    /// Requests answered with a reply.
    pub done: u64,
    /// Requests that errored.
    pub errored: u64,
    /// Requests not answered before the batch expired or was cancelled.
    pub expired: u64,
    /// Requests in the batch.
    pub total: u64,
    /// When it was planned, just before it was created (Unix ms; 0 when not recorded).
    #[serde(default)]
    pub created_at_ms: u64,
    /// `--cancel-batches` cancelled it.
    #[serde(default)]
    pub cancelled: bool,
}

impl BatchStatus {
    /// The listing of a journal record.
    pub(crate) fn of(engine: &str, key: &str, st: &BatchState) -> Self {
        Self {
            engine: engine.to_string(),
            key: key.to_string(),
            id: st.batch_id.clone(),
            provider: st.provider.clone(),
            state: if st.collected {
                "collected".to_string()
            } else if st.state.is_empty() {
                "planned".to_string()
            } else {
                st.state.clone()
            },
            ended: st.ended,
            done: st.done,
            errored: st.errored,
            expired: st.expired,
            total: st.total,
            created_at_ms: st.created_at_ms,
            cancelled: st.cancelled,
        }
    }

    /// Still at the provider: not ended (a later run polls it, `--cancel-batches` cancels it).
    pub fn in_progress(&self) -> bool {
        !self.ended && self.state != "collected"
    }

    /// One line of `atk status`.
    fn line(&self) -> String {
        let id = self.id.as_deref().unwrap_or("(no id stored)");
        let provider = if self.provider.is_empty() {
            String::new()
        } else {
            format!(", {}", self.provider)
        };
        let created = if self.created_at_ms > 0 {
            format!(", created {}", utc_minute(self.created_at_ms))
        } else {
            String::new()
        };
        let cancelled = if self.cancelled && self.state != "cancelled" {
            " (cancel asked)"
        } else {
            ""
        };
        format!(
            "batch {id} ({}{provider}): {}{cancelled}, {} done {} errored {} expired of {}{created}",
            self.engine, self.state, self.done, self.errored, self.expired, self.total
        )
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time in ms.
fn utc_minute(ms: u64) -> String {
    let minutes = (ms / 60_000) % 1440;
    format!(
        "{} {:02}:{:02} UTC",
        crate::card::civil_date(ms),
        minutes / 60,
        minutes % 60
    )
}

/// Every batch the journals of `engines` list, oldest first per engine. A batch recorded
/// before its state was kept apart is described from its record (id and request count).
pub(crate) fn read_batches(
    store: &dyn atk_state::Store,
    engines: &[&str],
) -> Result<Vec<BatchStatus>, atk_state::Error> {
    let mut out = Vec::new();
    for engine in engines {
        let index: Vec<String> = store
            .meta(&batch_index_meta_key(engine))?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        for key in index {
            let state = match store
                .meta(&batch_state_meta_key(engine, &key))?
                .and_then(|v| serde_json::from_value::<BatchState>(v).ok())
            {
                Some(st) => st,
                None => match store
                    .meta(&batch_meta_key(engine, &key))?
                    .and_then(|v| serde_json::from_value::<BatchMeta>(v).ok())
                {
                    Some(meta) => meta.legacy_state(),
                    None => continue,
                },
            };
            out.push(BatchStatus::of(engine, &key, &state));
        }
    }
    Ok(out)
}

/// The batch lines of `atk status`: those still at the provider, then how many were collected.
pub(crate) fn render_batches(batches: &[BatchStatus], s: &mut String) {
    if batches.is_empty() {
        return;
    }
    let open: Vec<&BatchStatus> = batches.iter().filter(|b| b.state != "collected").collect();
    let collected = batches.len() - open.len();
    let waiting = open.iter().filter(|b| b.in_progress()).count();
    let _ = writeln!(
        s,
        "  batches: {waiting} at the provider, {} ended, {collected} collected",
        open.len() - waiting
    );
    for b in open {
        let _ = writeln!(s, "    {}", b.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_line_names_its_id_provider_state_counts_and_creation() {
        let b = BatchStatus::of(
            "small",
            "k1",
            &BatchState {
                batch_id: Some("batch_000001".into()),
                provider: "openai".into(),
                created_at_ms: 1_796_083_200_000 + 13 * 3_600_000 + 5 * 60_000,
                state: "in_progress".into(),
                done: 3,
                errored: 1,
                total: 10,
                ..BatchState::default()
            },
        );
        assert_eq!(
            b.line(),
            "batch batch_000001 (small, openai): in_progress, 3 done 1 errored 0 expired of 10, created 2026-12-01 13:05 UTC"
        );
        assert!(b.in_progress());
        let mut s = String::new();
        let collected = BatchStatus {
            state: "collected".into(),
            ended: true,
            ..b.clone()
        };
        render_batches(&[b, collected], &mut s);
        assert!(
            s.starts_with(
                "  batches: 1 at the provider, 0 ended, 1 collected\n    batch batch_000001"
            ),
            "{s}"
        );
        assert_eq!(s.lines().count(), 2, "{s}");
    }
}
