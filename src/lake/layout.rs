//! What a table is at a moment: not there, one Delta table, or a tiered
//! table whose rows have started to move (read tier by tier, each within
//! its watermarks). This is decided here and nowhere else; `query`
//! registers what it is given.

use deltalake::DeltaTable;

use super::{AsOf, Lake, LakeError, Tier, delta_err};
use crate::schema::TableDef;

/// A table as it is (or was) at one moment.
#[derive(Debug, Clone)]
pub enum Layout {
    /// Not created (or not yet, at the time asked for).
    Missing,
    /// One Delta table: untiered, or tiered with every row still hot.
    Single(DeltaTable),
    /// A tiered table whose rows have started to move. Every load creates
    /// the hot part first, so it is there and gives the schema; readers
    /// open the other tiers and read the watermarks as their scans need.
    Tiered {
        hot: DeltaTable,
        as_of: Option<AsOf>,
    },
}

impl Layout {
    pub fn exists(&self) -> bool {
        !matches!(self, Self::Missing)
    }

    /// The version a reader of this layout sees, while it stays the same
    /// (`None` for a tiered table: its scans read each tier as they run).
    pub fn version(&self) -> Option<i64> {
        match self {
            Self::Missing => Some(-1),
            Self::Single(t) => t.version().map(|v| v as i64),
            Self::Tiered { .. } => None,
        }
    }
}

impl Lake {
    /// What `def`'s table is now, or at `as_of`.
    pub async fn layout(&self, def: &TableDef, as_of: Option<&AsOf>) -> Result<Layout, LakeError> {
        let moved = self.has_moved(def, as_of.and_then(AsOf::time)).await?;
        let Some(hot) = self.open_at(def, Tier::Hot, as_of).await? else {
            return Ok(Layout::Missing);
        };
        Ok(if moved {
            Layout::Tiered {
                hot,
                as_of: as_of.cloned(),
            }
        } else {
            Layout::Single(hot)
        })
    }

    /// Bring a current layout read earlier up to date, reading as little as
    /// it can: a single table applies the commits made since; a table that
    /// appeared, went or started to move is read afresh. Returns whether
    /// anything changed (a tiered layout is unchanged: its scans read the
    /// tiers' new commits themselves).
    pub async fn refresh(&self, def: &TableDef, layout: &mut Layout) -> Result<bool, LakeError> {
        let moved = self.has_moved(def, None).await?;
        match layout {
            Layout::Tiered { as_of: None, .. } if moved => return Ok(false),
            Layout::Single(table) if !moved => {
                let loaded = table.version();
                match table.get_latest_version().await {
                    Ok(latest) if Some(latest) == loaded => return Ok(false),
                    Ok(latest) if loaded.is_some_and(|v| latest > v) => {
                        table
                            .update_incremental(None)
                            .await
                            .map_err(|e| delta_err(&def.name, e))?;
                        return Ok(true);
                    }
                    // Gone, or replaced by an older log: read afresh.
                    _ => {}
                }
            }
            _ => {}
        }
        *layout = self.layout(def, None).await?;
        Ok(true)
    }

    /// Whether a tiered table's rows have started to move (as of `at`):
    /// until then its hot part is the whole table.
    pub async fn has_moved(
        &self,
        def: &TableDef,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<bool, LakeError> {
        Ok(def.tiered
            && def.partition.is_some()
            && !super::catalog::watermarks(self, &def.name, at)
                .await?
                .value
                .all_hot())
    }
}
