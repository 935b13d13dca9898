//! The node's audit of its own replica (`GET /v1/audit/findings` and the `/findings` page):
//! one `schema::audit::Auditor` kept fed as the ledger grows, so a request reads only the
//! entries stored since the last one instead of replaying the whole ledger.
//!
//! The auditor must see the registrar's chain first and completely (its feeding contract), so
//! when the registrar's chain has grown since the last feed the auditor is rebuilt from the
//! genesis; registrar entries (membership changes) are rare. Other chains only ever get their
//! new entries. A report is a clone of the fed auditor with each chain's newest checkpoint,
//! finished at the request's time (`finish` consumes), and is reused while nothing was stored
//! and it is younger than [`REPORT_MAX_AGE_MS`] (anchor ages and deadlines depend on the time).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rmledger_schema::audit::{AuditConfig, AuditReport, Auditor};
use rmledger_schema::ids::OrgId;

use crate::ledger::Ledger;
use crate::storage::StorageError;

/// Entries read from the store at a time.
const AUDIT_PAGE: usize = 4096;

/// A report is recomputed after this long even when nothing new was stored.
pub const REPORT_MAX_AGE_MS: u64 = 60_000;

/// The fed auditor and what it has seen.
struct Fed {
    auditor: Auditor,
    /// Entries fed per chain.
    sizes: BTreeMap<OrgId, u64>,
    /// The last report: the sizes it covers, when it was made, the report.
    report: Option<(BTreeMap<OrgId, u64>, u64, Arc<AuditReport>)>,
}

/// The node's incremental audit. Shared by the API and the web pages (in [`crate::api::AppState`]).
pub struct NodeAudit {
    fed: Mutex<Option<Fed>>,
    /// The deadlines (`[audit]` in node.toml) and the clock skew allowed (`[limits]`).
    suspension_deadline_ms: u64,
    anchor_max_age_ms: u64,
    max_clock_skew_ms: u64,
}

impl Default for NodeAudit {
    /// The audit's default deadlines (30 days, 7 days) and clock skew (5 minutes).
    fn default() -> Self {
        let defaults = AuditConfig::at(0);
        Self {
            fed: Mutex::new(None),
            suspension_deadline_ms: defaults.suspension_deadline_ms,
            anchor_max_age_ms: defaults.anchor_max_age_ms,
            max_clock_skew_ms: defaults.max_clock_skew_ms,
        }
    }
}

impl NodeAudit {
    /// With the deadlines of `node.toml`'s `[audit]` and the skew of its `[limits]`.
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            fed: Mutex::new(None),
            suspension_deadline_ms: config.audit.suspension_deadline_ms(),
            anchor_max_age_ms: config.audit.anchor_max_age_ms(),
            max_clock_skew_ms: config.limits.max_clock_skew_ms,
        }
    }

    fn config_at(&self, now_unix_ms: u64) -> AuditConfig {
        AuditConfig {
            suspension_deadline_ms: self.suspension_deadline_ms,
            anchor_max_age_ms: self.anchor_max_age_ms,
            max_clock_skew_ms: self.max_clock_skew_ms,
            ..AuditConfig::at(now_unix_ms)
        }
    }

    /// The audit of everything the node holds, judged at `now_unix_ms`. Blocking (it reads the
    /// store): call it from a blocking task. Concurrent callers wait for one another.
    pub fn report(
        &self,
        ledger: &Ledger,
        now_unix_ms: u64,
    ) -> Result<Arc<AuditReport>, StorageError> {
        let mut guard = lock(&self.fed);
        let store = ledger.store();
        let registrar = ledger.genesis().registrar().clone();
        let sizes: BTreeMap<OrgId, u64> = store
            .chains()
            .into_iter()
            .map(|c| (c.chain, c.size))
            .collect();
        let stale = guard.as_ref().is_none_or(|fed| {
            fed.sizes.get(&registrar).copied().unwrap_or(0)
                != sizes.get(&registrar).copied().unwrap_or(0)
        });
        if stale {
            *guard = Some(Fed {
                auditor: Auditor::new(ledger.genesis(), self.config_at(now_unix_ms)),
                sizes: BTreeMap::new(),
                report: None,
            });
        }
        let fed = guard.as_mut().expect("set above");
        if let Some((covered, made_at, report)) = &fed.report
            && *covered == sizes
            && now_unix_ms.saturating_sub(*made_at) < REPORT_MAX_AGE_MS
        {
            return Ok(report.clone());
        }
        fed.auditor.set_now(now_unix_ms);
        // The registrar's chain first (a rebuild starts from it), then every other chain's news.
        let mut order: Vec<&OrgId> = sizes.keys().collect();
        order.sort_by_key(|chain| **chain != registrar);
        for chain in order {
            let target = sizes[chain];
            let mut from = fed.sizes.get(chain).copied().unwrap_or(0);
            while from < target {
                let limit = AUDIT_PAGE.min((target - from) as usize);
                let page = store.entries(chain, from, limit)?;
                if page.is_empty() {
                    break;
                }
                from += page.len() as u64;
                fed.auditor
                    .chain_entries(chain, &page)
                    .map_err(|e| StorageError::Inconsistent(e.to_string()))?;
            }
            fed.sizes.insert(chain.clone(), from);
        }
        let mut auditor = fed.auditor.clone();
        for chain in sizes.keys() {
            // One stored after the sizes were read may name entries not fed yet: next time.
            if let Some(checkpoint) = store.latest_checkpoint(chain)?
                && checkpoint.body().size <= fed.sizes.get(chain).copied().unwrap_or(0)
            {
                auditor.checkpoint(checkpoint.bytes());
            }
        }
        let report = Arc::new(auditor.finish());
        fed.report = Some((fed.sizes.clone(), now_unix_ms, report.clone()));
        Ok(report)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::storage::{Batch, Store, StoreOptions};
    use rmledger_schema::entry::Entry;
    use rmledger_schema::records::{Record, Role, Shipped};
    use rmledger_schema::testkit::{START_UNIX_MS, TestFederation, org, serials, soil_certificate};

    /// The whole ledger replayed from the genesis, as a fresh auditor sees it.
    fn replay(ledger: &Ledger, now_unix_ms: u64) -> AuditReport {
        let store = ledger.store();
        let registrar = ledger.genesis().registrar().clone();
        let mut chains: Vec<OrgId> = store.chains().into_iter().map(|c| c.chain).collect();
        chains.sort_by_key(|chain| *chain != registrar);
        let mut auditor = Auditor::new(ledger.genesis(), AuditConfig::at(now_unix_ms));
        for chain in &chains {
            let entries = store.entries(chain, 0, usize::MAX).unwrap();
            auditor.chain_entries(chain, &entries).unwrap();
            if let Some(checkpoint) = store.latest_checkpoint(chain).unwrap() {
                auditor.checkpoint(checkpoint.bytes());
            }
        }
        auditor.finish()
    }

    fn store_new(store: &Store, federation: &TestFederation, entries: Vec<Entry>) {
        let chains: BTreeSet<OrgId> = entries.iter().map(|e| e.chain().clone()).collect();
        let checkpoints = chains
            .iter()
            .map(|c| federation.checkpoint(c.as_str()))
            .collect();
        store
            .append(&Batch {
                entries,
                checkpoints,
            })
            .unwrap();
    }

    #[test]
    fn incremental_reports_equal_a_full_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut federation = TestFederation::with_members();
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
        store_new(&store, &federation, federation.chain("jxim").to_vec());
        let ledger = Ledger::open(store.clone(), federation.genesis.clone(), org("jxim")).unwrap();
        let audit = NodeAudit::default();
        let mut now = START_UNIX_MS + 3_600_000;

        // A registration never verified: one finding, incrementally as in a replay.
        let reg = federation.append(
            "acme-rm",
            Record::BatchRegistered(soil_certificate("2025a")),
        );
        let cert = reg.id();
        store_new(&store, &federation, vec![reg]);
        let first = audit.report(&ledger, now).unwrap();
        assert_eq!(*first, replay(&ledger, now));
        assert_eq!(first.findings.len(), 1, "{:?}", first.findings);
        // Nothing stored and within the reuse window: the same report.
        assert!(Arc::ptr_eq(
            &first,
            &audit.report(&ledger, now + 1000).unwrap()
        ));

        // Another chain grows: only its new entries are fed.
        let shipped = federation.append(
            "acme-rm",
            Record::Shipped(Shipped {
                to: org("nclab"),
                cert,
                serials: serials("S-0001..S-0002"),
            }),
        );
        store_new(&store, &federation, vec![shipped]);
        now += 60_000;
        let second = audit.report(&ledger, now).unwrap();
        assert_eq!(*second, replay(&ledger, now));

        // The registrar's chain grows (a new member): the auditor is rebuilt from the genesis.
        federation.enrol("jxqi", Role::Institute);
        let enrolment = federation.chain("jxim").last().unwrap().clone();
        store_new(&store, &federation, vec![enrolment]);
        now += 60_000;
        let third = audit.report(&ledger, now).unwrap();
        assert_eq!(*third, replay(&ledger, now));

        // Time alone moves the deadlines: past the reuse window a new report is made.
        let later = now + REPORT_MAX_AGE_MS + 8 * 86_400_000;
        let fourth = audit.report(&ledger, later).unwrap();
        assert!(!Arc::ptr_eq(&third, &fourth));
        assert_eq!(*fourth, replay(&ledger, later));
        assert!(
            fourth
                .findings
                .iter()
                .any(|f| f.rule == "chain/anchor-overdue"),
            "{:?}",
            fourth.findings
        );
    }
}
