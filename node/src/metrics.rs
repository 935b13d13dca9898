//! Prometheus metrics, exposed at `/metrics` in the text format: appends, commits and their
//! flush latency, HTTP responses by status, chain sizes (read from the store when scraped), and
//! replication: entries replicated, lag per peer and chain, refusals and failures by peer and
//! kind, forks detected, frozen chains and anchors written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::storage::Store;

/// Upper bounds of the commit latency histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// The node's counters.
#[derive(Default)]
pub struct Metrics {
    appended: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    latency: Mutex<Histogram>,
    /// Responses by status code (HTTP's 100–999) at index `status - 100`: one atomic add per
    /// response instead of a lock and a map update on every request.
    http: HttpCounts,
    replicated: AtomicU64,
    forks: AtomicU64,
    anchors: AtomicU64,
    /// (peer, kind) → count.
    replication_errors: Mutex<BTreeMap<(String, String), u64>>,
    /// (peer, chain) → entries the peer holds that this node does not.
    lag: Mutex<BTreeMap<(String, String), u64>>,
    frozen: Mutex<BTreeSet<String>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct HttpCounts([AtomicU64; 900]);

impl Default for HttpCounts {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Metrics {
    /// Records one group commit: how long from the first request taken to durable, how many
    /// entries it held, and whether it succeeded.
    pub fn observe_commit(&self, elapsed: Duration, entries: usize, ok: bool) {
        if !ok {
            self.commit_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.appended.fetch_add(entries as u64, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let mut h = self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum_seconds += seconds;
    }

    /// Counts one HTTP response.
    pub fn observe_http(&self, status: u16) {
        // `http::StatusCode` is always 100..=999, so every status has its counter.
        if let Some(count) = status
            .checked_sub(100)
            .and_then(|index| self.http.0.get(usize::from(index)))
        {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts entries replicated from peers and stored.
    pub fn observe_replicated(&self, entries: usize) {
        self.replicated.fetch_add(entries as u64, Ordering::Relaxed);
    }

    /// Counts one refusal or failure while replicating from `peer`.
    pub fn observe_replication_error(&self, peer: &str, kind: &str) {
        *locked(&self.replication_errors)
            .entry((peer.to_owned(), kind.to_owned()))
            .or_default() += 1;
    }

    /// Sets how many entries of `chain` `peer` holds beyond this node's copy.
    pub fn set_lag(&self, peer: &str, chain: &str, entries: u64) {
        locked(&self.lag).insert((peer.to_owned(), chain.to_owned()), entries);
    }

    /// Counts one fork or equivocation detected and marks its chain frozen.
    pub fn observe_fork(&self, frozen_chain: Option<&str>) {
        self.forks.fetch_add(1, Ordering::Relaxed);
        if let Some(chain) = frozen_chain {
            self.set_frozen(chain);
        }
    }

    /// Marks a chain as frozen (not replicated past its fork).
    pub fn set_frozen(&self, chain: &str) {
        locked(&self.frozen).insert(chain.to_owned());
    }

    /// Counts one anchor this node wrote.
    pub fn observe_anchor(&self) {
        self.anchors.fetch_add(1, Ordering::Relaxed);
    }

    /// The value of a replication error counter (for tests and logs).
    pub fn replication_errors(&self, peer: &str, kind: &str) -> u64 {
        locked(&self.replication_errors)
            .get(&(peer.to_owned(), kind.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "rmledger_appended_entries_total",
            "Entries this node signed and made durable.",
            self.appended.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "rmledger_commits_total",
            "Group commits (one fsync each).",
            self.commits.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "rmledger_commit_failures_total",
            "Group commits that failed.",
            self.commit_failures.load(Ordering::Relaxed),
        );
        {
            let h = self
                .latency
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let name = "rmledger_commit_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Time from taking a batch to its fsync completing.\n# TYPE {name} histogram"
            );
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
                h.count, h.sum_seconds, h.count
            );
        }
        let name = "rmledger_http_responses_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP responses by status code.\n# TYPE {name} counter"
        );
        for (index, count) in self.http.0.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let status = index + 100;
                let _ = writeln!(out, "{name}{{status=\"{status}\"}} {count}");
            }
        }
        counter(
            &mut out,
            "rmledger_replicated_entries_total",
            "Entries received from peers, verified and stored.",
            self.replicated.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "rmledger_forks_total",
            "Forks and equivocations detected (two signed objects that cannot both be true).",
            self.forks.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "rmledger_anchors_total",
            "Anchor entries this node wrote.",
            self.anchors.load(Ordering::Relaxed),
        );
        let name = "rmledger_replication_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Refused input and failed requests while replicating, by peer and kind.\n# TYPE {name} counter"
        );
        for ((peer, kind), count) in locked(&self.replication_errors).iter() {
            let _ = writeln!(
                out,
                "{name}{{peer=\"{}\",kind=\"{}\"}} {count}",
                label(peer),
                label(kind)
            );
        }
        let name = "rmledger_replication_lag_entries";
        let _ = writeln!(
            out,
            "# HELP {name} Entries a peer holds that this node does not yet, by peer and chain.\n# TYPE {name} gauge"
        );
        for ((peer, chain), lag) in locked(&self.lag).iter() {
            let _ = writeln!(
                out,
                "{name}{{peer=\"{}\",chain=\"{}\"}} {lag}",
                label(peer),
                label(chain)
            );
        }
        let name = "rmledger_chain_frozen";
        let _ = writeln!(
            out,
            "# HELP {name} Chains frozen past a fork (1): no longer replicated.\n# TYPE {name} gauge"
        );
        for chain in locked(&self.frozen).iter() {
            let _ = writeln!(out, "{name}{{chain=\"{}\"}} 1", label(chain));
        }
        let name = "rmledger_chain_size";
        let _ = writeln!(
            out,
            "# HELP {name} Entries stored per chain.\n# TYPE {name} gauge"
        );
        for chain in store.chains() {
            let _ = writeln!(out, "{name}{{chain=\"{}\"}} {}", chain.chain, chain.size);
        }
        out
    }
}
