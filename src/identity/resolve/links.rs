//! The links a run changed: found, explained and sent to be written.

use super::*;
use crate::identity::explain::explain_all;
use crate::identity::load::keys_hash;
use crate::schema::row::{BatchBuilder, Cell};

/// The records whose link changed, and each one's match keys, in parts
/// (one per thread that found them, in record order).
pub(super) struct ChangedLinks {
    /// The rules' fingerprint, which heads the `match_keys` text.
    fingerprint: u64,
    parts: Vec<Changed>,
}

impl ChangedLinks {
    pub(super) fn len(&self) -> usize {
        self.parts.iter().map(|p| p.records.len()).sum()
    }
}

/// Some records whose link changed, and their match keys.
#[derive(Default)]
struct Changed {
    records: Vec<usize>,
    /// Record `k` of `records` has `keys[offsets[k]..offsets[k + 1]]`.
    offsets: Vec<u32>,
    keys: Vec<u64>,
}

impl Change<'_> {
    /// The records whose link changed, with their match keys: the
    /// records in `threads` runs at once (at 10 million customers
    /// 26 million records' keys are made and compared).
    pub(super) fn changed_links(&self, threads: usize) -> ChangedLinks {
        let n = self.loaded.data.len();
        let fingerprint = self.rules.fingerprint();
        let size = n.div_ceil(threads.max(1)).max(1);
        let parts = std::thread::scope(|s| {
            let runs: Vec<_> = (0..n)
                .step_by(size)
                .map(|lo| s.spawn(move || self.changed_in(lo..(lo + size).min(n), fingerprint)))
                .collect();
            runs.into_iter()
                .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        ChangedLinks { fingerprint, parts }
    }

    /// [`Self::changed_links`] among the records `range`.
    fn changed_in(&self, range: std::ops::Range<usize>, fingerprint: u64) -> Changed {
        let loaded = self.loaded;
        let mut out = Changed {
            offsets: vec![0],
            ..Changed::default()
        };
        let (mut keys, mut text) = (Vec::new(), String::new());
        for i in range {
            engine::match_keys(self.rules, &loaded.data, i, &mut keys);
            crate::identity::scope::write_keys(fingerprint, &keys, &mut text);
            let (rule, by) = self.rule_and_actor(i);
            if loaded.old_id.get(i) != Some(self.id_of(i))
                || loaded.old_rule.get(i) != Some(rule.as_str())
                || loaded.old_by.get(i) != Some(by.as_str())
                || loaded.old_ingested.get(i) != loaded.ingested.get(i)
                || loaded.old_keys(i) != keys_hash(&text)
            {
                out.records.push(i);
                out.keys.extend_from_slice(&keys);
                out.offsets.push(out.keys.len() as u32);
            }
        }
        out
    }

    /// The changed links as `customer_xref` rows, with scores and per-field
    /// similarities, explained and sent a chunk at a time. An error is
    /// sent too (it aborts the write) and returned.
    pub(super) async fn send_links(
        &self,
        catalog: &Catalog,
        threads: usize,
        changed: &ChangedLinks,
        tx: crate::identity::BatchSender,
    ) -> Result<(), IdentityError> {
        let result = self.link_chunks(catalog, threads, changed, &tx).await;
        if let Err(e) = &result {
            crate::identity::abort(&tx, "links", e).await;
        }
        result
    }

    async fn link_chunks(
        &self,
        catalog: &Catalog,
        threads: usize,
        changed: &ChangedLinks,
        tx: &crate::identity::BatchSender,
    ) -> Result<(), IdentityError> {
        let loaded = self.loaded;
        let xref_def = catalog.table("customer_xref")?;
        let mut b = BatchBuilder::new(xref_def, false);
        // (part, its first record's place in the part) of every chunk.
        let chunks: Vec<(usize, usize)> = (changed.parts.iter().enumerate())
            .flat_map(|(p, part)| {
                (0..part.records.len())
                    .step_by(crate::identity::survive::CHUNK)
                    .map(move |first| (p, first))
            })
            .collect();
        for (p, first) in chunks {
            let part = &changed.parts[p];
            let chunk = &part.records
                [first..(first + crate::identity::survive::CHUNK).min(part.records.len())];
            let explained: Vec<(f64, Option<String>)> = tokio::task::spawn_blocking({
                let rules = self.rules.clone();
                let loaded = loaded.clone();
                let partners: Vec<(Option<u32>, Option<u8>)> = chunk
                    .iter()
                    .map(|&i| (self.outcome.link[i].partner, self.outcome.profile[i]))
                    .collect();
                let chunk = chunk.to_vec();
                move || explain_all(&rules, &loaded.data, &chunk, &partners, threads)
            })
            .await?;
            for (k, (&i, (score, detail))) in chunk.iter().zip(explained).enumerate() {
                let (rule, by) = self.rule_and_actor(i);
                let keys = &part.keys
                    [part.offsets[first + k] as usize..part.offsets[first + k + 1] as usize];
                b.push(
                    &[
                        Cell::Str(loaded.system(i).to_string()),
                        Cell::Str(loaded.source_id(i).to_string()),
                        Cell::Str(self.id_of(i).to_string()),
                        Cell::Str(rule),
                        if score.is_nan() {
                            Cell::Null
                        } else {
                            Cell::F64(score)
                        },
                        Cell::Ts(self.now),
                        Cell::Str(by),
                        detail.map_or(Cell::Null, Cell::Str),
                        loaded.ingested.get(i).map_or(Cell::Null, Cell::Ts),
                        Cell::Str(crate::identity::scope::format_keys(
                            changed.fingerprint,
                            keys,
                        )),
                        Cell::I64(crate::domain::source_key(
                            loaded.system(i),
                            loaded.source_id(i),
                        )),
                    ],
                    None,
                );
            }
            if tx.send(Ok(b.finish()?)).await.is_err() {
                // The write stopped; it says why.
                break;
            }
        }
        Ok(())
    }
}
