//! Prometheus metrics, exposed at `/metrics` in the text format: appends, commits and their
//! flush latency, HTTP responses by status, and chain sizes (read from the store when scraped).

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
    http: Mutex<std::collections::BTreeMap<u16, u64>>,
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
        *self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(status)
            .or_default() += 1;
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
        for (status, count) in self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "{name}{{status=\"{status}\"}} {count}");
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
