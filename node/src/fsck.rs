//! `rmledger-node fsck`: re-verifies everything stored, from the segment files up, and reports
//! the first problem: every record's framing and hash, every entry's encoding, chain links,
//! signatures and authorisation (membership folded from the registrar's chain), every
//! checkpoint's signature, root and certificate map root, the index's record of every entry
//! (position, leaf hash, id lookup), and the index's trees against roots recomputed from the
//! entries themselves.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use rmledger_schema::certmap::CertMap;
use rmledger_schema::chain::ChainTip;
use rmledger_schema::checkpoint::Checkpoint;
use rmledger_schema::entry::Entry;
use rmledger_schema::federation::{Genesis, Membership};
use rmledger_schema::ids::{OrgId, TreeHash};
use rmledger_schema::merkle::{Frontier, Sha256};

use crate::storage::{RecordType, Store};

/// What a clean check counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsckReport {
    pub entries: u64,
    pub checkpoints: u64,
    pub chains: BTreeMap<OrgId, u64>,
}

/// Checks the whole store; `Err` names the first problem found.
pub fn fsck(store: &Store, genesis: &Genesis) -> Result<FsckReport, String> {
    let mut report = FsckReport::default();
    let mut tips: HashMap<OrgId, ChainTip> = HashMap::new();
    let mut frontiers: HashMap<OrgId, Frontier> = HashMap::new();
    let mut by_chain: BTreeMap<OrgId, Vec<Entry>> = BTreeMap::new();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut problem: Option<String> = None;
    let scanned = store.scan(|record| {
        let at = format!("segment {} offset {}", record.segment, record.offset);
        match record.kind {
            RecordType::Entry => {
                let entry = match Entry::decode(record.bytes) {
                    Ok(e) => e,
                    Err(e) => {
                        problem = Some(format!("{at}: entry does not decode: {e}"));
                        return ControlFlow::Break(());
                    }
                };
                if let Err(e) = store.check_indexed(&record, &entry) {
                    problem = Some(format!("{at}: {e}; run `rmledger-node reindex`"));
                    return ControlFlow::Break(());
                }
                let chain = entry.chain().clone();
                let tip = tips
                    .entry(chain.clone())
                    .or_insert_with(|| ChainTip::new(genesis.id(), chain.clone()));
                if let Err(e) = tip.check_next(&entry, None) {
                    problem = Some(format!("{at}: chain {chain}: {e}"));
                    return ControlFlow::Break(());
                }
                tip.advance(&entry);
                let frontier = frontiers.entry(chain.clone()).or_default();
                if frontier.append::<Sha256>(entry.leaf_hash().0).is_err() {
                    problem = Some(format!("{at}: chain {chain} is full"));
                    return ControlFlow::Break(());
                }
                report.entries += 1;
                by_chain.entry(chain).or_default().push(entry);
            }
            RecordType::Checkpoint => match Checkpoint::decode(record.bytes) {
                Ok(c) => {
                    report.checkpoints += 1;
                    checkpoints.push(c);
                }
                Err(e) => {
                    problem = Some(format!("{at}: checkpoint does not decode: {e}"));
                    return ControlFlow::Break(());
                }
            },
        }
        ControlFlow::Continue(())
    });
    scanned.map_err(|e| e.to_string())?;
    if let Some(problem) = problem {
        return Err(problem);
    }

    // Membership first: the registrar's entries in order, each checked before it applies.
    let mut membership = Membership::new(genesis);
    for entry in by_chain
        .get(genesis.registrar())
        .map_or(&[][..], Vec::as_slice)
    {
        membership
            .verify_entry(entry)
            .map_err(|e| format!("registrar entry {}: {e}", entry.seq()))?;
        membership
            .apply(entry)
            .map_err(|e| format!("registrar entry {}: {e}", entry.seq()))?;
    }
    for (chain, entries) in &by_chain {
        if chain != genesis.registrar() {
            for entry in entries {
                membership
                    .verify_entry(entry)
                    .map_err(|e| format!("chain {chain} entry {}: {e}", entry.seq()))?;
            }
        }
        let frontier = &frontiers[chain];
        let info = store
            .chain(chain)
            .ok_or_else(|| format!("chain {chain} is in the segments but not in the index"))?;
        let recomputed = TreeHash(frontier.root::<Sha256>());
        if info.size != frontier.size() || info.root != recomputed {
            return Err(format!(
                "chain {chain}: the index says size {} root {}, the entries give size {} root {recomputed}; run `rmledger-node reindex`",
                info.size,
                info.root,
                frontier.size()
            ));
        }
        report.chains.insert(chain.clone(), info.size);
    }

    // Roots and certificate map roots at every size a checkpoint signs, recomputed in one pass
    // per chain.
    let mut wanted: BTreeMap<&OrgId, Vec<u64>> = BTreeMap::new();
    for checkpoint in &checkpoints {
        wanted
            .entry(&checkpoint.body().chain)
            .or_default()
            .push(checkpoint.body().size);
    }
    let mut roots: HashMap<(&OrgId, u64), (TreeHash, TreeHash)> = HashMap::new();
    for (chain, sizes) in &mut wanted {
        sizes.sort_unstable();
        sizes.dedup();
        let mut tree = Frontier::new();
        let mut certs = CertMap::new();
        let mut next = sizes.iter().peekable();
        for entry in by_chain.get(*chain).map_or(&[][..], Vec::as_slice) {
            tree.append::<Sha256>(entry.leaf_hash().0)
                .map_err(|e| e.to_string())?;
            certs.record_entry(entry);
            while next.peek().is_some_and(|&&s| s == tree.size()) {
                roots.insert(
                    (*chain, tree.size()),
                    (TreeHash(tree.root::<Sha256>()), certs.root()),
                );
                next.next();
            }
        }
    }
    for checkpoint in &checkpoints {
        let body = checkpoint.body();
        let chain = &body.chain;
        let entries = by_chain.get(chain).map_or(&[][..], Vec::as_slice);
        let Some((root, certs)) = roots.get(&(chain, body.size)) else {
            return Err(format!(
                "checkpoint of {chain} at size {} but only {} entries are stored",
                body.size,
                entries.len()
            ));
        };
        let head = entries[usize::try_from(body.size - 1).unwrap_or(usize::MAX)].id();
        if head != body.head {
            return Err(format!(
                "checkpoint of {chain} at size {} names head {}, the entry there is {head}",
                body.size, body.head
            ));
        }
        if *root != body.root {
            return Err(format!(
                "checkpoint of {chain} at size {} signs root {}, the entries give {root}",
                body.size, body.root
            ));
        }
        if *certs != body.certs {
            return Err(format!(
                "checkpoint of {chain} at size {} signs certificate map root {}, the entries give {certs}",
                body.size, body.certs
            ));
        }
        let (member, key) = membership
            .key(&checkpoint.kid())
            .ok_or_else(|| format!("checkpoint of {chain} at size {}: unknown key", body.size))?;
        if member.org != *chain {
            return Err(format!(
                "checkpoint of {chain} signed by a key of {}",
                member.org
            ));
        }
        checkpoint
            .verify_signature(&key.verifying_key)
            .map_err(|e| format!("checkpoint of {chain} at size {}: {e}", body.size))?;
    }
    Ok(report)
}
