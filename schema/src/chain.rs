//! Chain validation: each organisation's entries form one hash chain.
//!
//! The rules: `seq` counts from 0 without gaps, `prev` is the id of the entry before (null at
//! 0), `time` never goes backwards, and `fed` and `chain` never change. Two different entries at
//! one position are a fork, the signer's own proof of equivocation: both are returned as
//! evidence, never resolved.

use crate::entry::Entry;
use crate::ids::{EntryId, FederationId, OrgId};

/// Why an entry cannot follow the chain so far.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("entry is for federation {found}, the chain is in {expected}")]
    WrongFederation {
        expected: FederationId,
        found: FederationId,
    },
    #[error("entry is on chain {found}, expected {expected}")]
    WrongChain { expected: OrgId, found: OrgId },
    #[error("gap: expected seq {expected}, got {found}")]
    Gap { expected: u64, found: u64 },
    #[error("broken link at seq {seq}: prev is {found:?}, the entry before is {expected:?}")]
    BrokenLink {
        seq: u64,
        expected: Option<EntryId>,
        found: Option<EntryId>,
    },
    #[error("time goes backwards at seq {seq}: {time_unix_ms} < {previous_unix_ms}")]
    TimeBackwards {
        seq: u64,
        time_unix_ms: u64,
        previous_unix_ms: u64,
    },
    #[error("time {time_unix_ms} at seq {seq} is beyond the allowed future bound {max_unix_ms}")]
    TimeInFuture {
        seq: u64,
        time_unix_ms: u64,
        max_unix_ms: u64,
    },
    #[error("fork at seq {}: two different entries {} and {}", .0.seq(), .0.first.id(), .0.second.id())]
    Fork(Box<Fork>),
}

/// Two different entries at one (chain, seq): the evidence of a fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    pub first: Entry,
    pub second: Entry,
}

impl Fork {
    /// The evidence if `a` and `b` are different entries at the same position of the same chain.
    pub fn between(a: &Entry, b: &Entry) -> Option<Self> {
        let same_place = a.chain() == b.chain()
            && a.seq() == b.seq()
            && a.payload().federation == b.payload().federation;
        (same_place && a.bytes() != b.bytes()).then(|| Self {
            first: a.clone(),
            second: b.clone(),
        })
    }

    pub fn seq(&self) -> u64 {
        self.first.seq()
    }

    pub fn chain(&self) -> &OrgId {
        self.first.chain()
    }
}

/// The tip of a chain: enough to check the next entry in O(1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTip {
    pub federation: FederationId,
    pub chain: OrgId,
    /// Number of entries so far; the next seq.
    pub size: u64,
    pub head: Option<EntryId>,
    pub last_time_unix_ms: u64,
}

impl ChainTip {
    pub fn new(federation: FederationId, chain: OrgId) -> Self {
        Self {
            federation,
            chain,
            size: 0,
            head: None,
            last_time_unix_ms: 0,
        }
    }

    /// Checks that `entry` can be the next entry. `max_time_unix_ms` bounds how far in the
    /// future its time may be (the caller's clock plus allowed skew); `None` skips that check.
    pub fn check_next(
        &self,
        entry: &Entry,
        max_time_unix_ms: Option<u64>,
    ) -> Result<(), ChainError> {
        let p = entry.payload();
        if p.federation != self.federation {
            return Err(ChainError::WrongFederation {
                expected: self.federation,
                found: p.federation,
            });
        }
        if p.chain != self.chain {
            return Err(ChainError::WrongChain {
                expected: self.chain.clone(),
                found: p.chain.clone(),
            });
        }
        if p.seq != self.size {
            return Err(ChainError::Gap {
                expected: self.size,
                found: p.seq,
            });
        }
        if p.prev != self.head {
            return Err(ChainError::BrokenLink {
                seq: p.seq,
                expected: self.head,
                found: p.prev,
            });
        }
        if p.time_unix_ms < self.last_time_unix_ms {
            return Err(ChainError::TimeBackwards {
                seq: p.seq,
                time_unix_ms: p.time_unix_ms,
                previous_unix_ms: self.last_time_unix_ms,
            });
        }
        if let Some(max) = max_time_unix_ms.filter(|&max| p.time_unix_ms > max) {
            return Err(ChainError::TimeInFuture {
                seq: p.seq,
                time_unix_ms: p.time_unix_ms,
                max_unix_ms: max,
            });
        }
        Ok(())
    }

    /// Moves the tip past `entry`, which [`ChainTip::check_next`] accepted.
    pub fn advance(&mut self, entry: &Entry) {
        debug_assert_eq!(
            entry.seq(),
            self.size,
            "advance past an entry that was not checked"
        );
        self.size += 1;
        self.head = Some(entry.id());
        self.last_time_unix_ms = entry.time_unix_ms();
    }
}

/// Validates a whole chain from seq 0. An entry repeating an earlier position with different
/// bytes is reported as a fork; an identical repeat is ignored.
pub fn validate_chain(
    federation: FederationId,
    chain: &OrgId,
    entries: &[Entry],
) -> Result<ChainTip, ChainError> {
    let mut tip = ChainTip::new(federation, chain.clone());
    let mut accepted: Vec<&Entry> = Vec::with_capacity(entries.len());
    for entry in entries {
        // Only an entry of this chain and federation can repeat or fork an earlier position;
        // anything else goes on to `check_next`, which names what is wrong with it.
        if entry.seq() < tip.size
            && entry.chain() == chain
            && entry.payload().federation == federation
        {
            let earlier = accepted[entry.seq() as usize];
            if let Some(fork) = Fork::between(earlier, entry) {
                return Err(ChainError::Fork(Box::new(fork)));
            }
            continue;
        }
        tip.check_next(entry, None)?;
        tip.advance(entry);
        accepted.push(entry);
    }
    Ok(tip)
}
