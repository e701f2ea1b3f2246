//! Reading what a chain made: the items that went through it, streamed from the store in
//! dataset order. For dataset writers.

use std::collections::HashSet;
use std::sync::Arc;

use atk_state::{ItemRecord, Outcome, Records, Store};

use crate::chain::{Layout, layout};
use crate::drive::{load_children, merge};
use crate::error::StepError;
use crate::step::Step;

/// The items that went through the whole chain, in `order`, each with every step's output
/// merged into its fields under the step's `result_key` (and details under `details_key`).
/// Dropped, failed and unfinished items are left out. A fan-out's children stand in for their
/// parent, unless a fan-in gathers them back: then the parent comes out, with the fan-in's
/// output merged. Streams from the store (memory does not grow with the corpus).
///
/// A chain that does not hold together (see [`Chain`](crate::Chain)) yields one error.
pub fn collect_final<'a>(store: &'a dyn Store, chain: &'a [Arc<dyn Step>]) -> FinalItems<'a> {
    FinalItems {
        store,
        chain,
        layout: layout(chain).map_err(Some),
        roots: store.items(),
        stack: Vec::new(),
    }
}

/// The iterator [`collect_final`] returns.
pub struct FinalItems<'a> {
    store: &'a dyn Store,
    chain: &'a [Arc<dyn Step>],
    /// The chain's layout, or the error it gave (yielded once).
    layout: Result<Layout, Option<StepError>>,
    roots: Records<'a, ItemRecord>,
    /// Children still to walk: (child, first step).
    stack: Vec<(ItemRecord, usize)>,
}

impl FinalItems<'_> {
    /// Some(item) when it went through; pushes children when it fanned out with no fan-in.
    fn walk(
        &mut self,
        mut item: ItemRecord,
        start: usize,
    ) -> Result<Option<ItemRecord>, StepError> {
        let Ok(layout) = &self.layout else {
            return Ok(None);
        };
        let mut k = start;
        while k < self.chain.len() {
            let step = &self.chain[k];
            let Some(record) = self.store.result(step.name(), &item.id)? else {
                return Ok(None);
            };
            match record.outcome {
                Outcome::Dropped { .. } => return Ok(None),
                Outcome::Children { ids } => match layout.closes[k] {
                    // Gathered back: the parent goes on after the fan-in.
                    Some(j) => {
                        let Some(gathered) = self.store.result(self.chain[j].name(), &item.id)?
                        else {
                            return Ok(None);
                        };
                        if !gathered.is_kept() {
                            return Ok(None);
                        }
                        merge(self.chain[j].as_ref(), &mut item, gathered);
                        k = j + 1;
                        continue;
                    }
                    None => {
                        let children = load_children(self.store, &ids)?;
                        for child in children.into_iter().rev() {
                            self.stack.push((child, k + 1));
                        }
                        return Ok(None);
                    }
                },
                Outcome::Kept => merge(step.as_ref(), &mut item, record),
            }
            k += 1;
        }
        Ok(Some(item))
    }
}

/// The ids of the items that reached the end of the chain: the final items, the items they
/// were split from, and the children a fan-in gathered into one of those (the ones kept by
/// every step between the fan-out and the fan-in). Meta datasets take only these items' kept
/// results. Holds one id per such item, never its fields.
pub fn reached_end(
    store: &dyn Store,
    chain: &[Arc<dyn Step>],
) -> Result<HashSet<String>, StepError> {
    let layout = layout(chain)?;
    let mut reached = HashSet::new();
    for item in collect_final(store, chain) {
        let item = item?;
        let mut parent = item.parent.clone();
        reached.insert(item.id);
        // An ancestor already in the set brought its own ancestors with it.
        while let Some(id) = parent {
            if !reached.insert(id.clone()) {
                break;
            }
            parent = store.item(&id)?.and_then(|p| p.parent);
        }
    }
    // Outer fan-outs first: their gathered children are the parents of the inner ones.
    for close in layout.closes.iter().flatten() {
        for child in collect_final(store, &chain[..*close]) {
            let child = child?;
            if child.parent.as_ref().is_some_and(|p| reached.contains(p)) {
                reached.insert(child.id);
            }
        }
    }
    Ok(reached)
}

impl Iterator for FinalItems<'_> {
    type Item = Result<ItemRecord, StepError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = &mut self.layout {
            return e.take().map(Err);
        }
        loop {
            let (item, start) = match self.stack.pop() {
                Some(unit) => unit,
                None => match self.roots.next()? {
                    Err(e) => return Some(Err(e.into())),
                    Ok(item) if item.parent.is_some() => continue,
                    Ok(item) => (item, 0),
                },
            };
            match self.walk(item, start) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
