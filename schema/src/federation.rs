//! The federation: its genesis (the one trust anchor), membership folded from the registrar's
//! chain, and the authorisation of every entry.
//!
//! An entry is authorised when the key that signed it belonged to its chain's organisation at
//! the entry's time (added no later, not yet revoked), the organisation was not suspended then,
//! and the record kind is allowed for one of its roles. Membership is a pure fold: the same
//! registrar entries give the same members on every node.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::cbor::{self, CborError};
use crate::cose::{self, CoseError, ProtectedHeader, Sign1};
use crate::entry::{Entry, Recorded};
use crate::ids::{FederationId, KeyId, OrgId, PublicKey};
use crate::records::{Enrol, Record, RecordKind, Role};

/// The largest genesis document accepted.
pub const MAX_GENESIS_BYTES: usize = 16 * 1024;

/// What the genesis states. Field order is canonical key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisBody {
    #[serde(rename = "v")]
    pub version: u64,
    /// The federation's name, e.g. "Jiangxi reference material federation".
    pub name: String,
    #[serde(rename = "time")]
    pub time_unix_ms: u64,
    /// The registrar, enrolled by the genesis itself.
    pub registrar: Enrol,
    /// The offset of the federation's civil time zone (480 for China Standard Time): certificate
    /// dates such as an expiry date are read in it.
    pub utc_offset_minutes: i32,
}

/// Why a genesis, a membership record or an entry's authorisation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    #[error("genesis envelope: {0}")]
    Cose(#[from] CoseError),
    #[error("genesis payload: {0}")]
    Payload(CborError),
    #[error("genesis: {0}")]
    Genesis(&'static str),
    #[error("entry belongs to federation {found}, not {expected}")]
    WrongFederation {
        expected: FederationId,
        found: FederationId,
    },
    #[error("unknown signing key {kid}")]
    UnknownKey { kid: KeyId },
    #[error("key {kid} belongs to {owner}, but the entry is on {chain}'s chain")]
    KeyNotChainOwner {
        kid: KeyId,
        owner: OrgId,
        chain: OrgId,
    },
    #[error(
        "key {kid} of {org} was not valid yet at {time_unix_ms} (valid from {valid_from_unix_ms})"
    )]
    KeyNotYetValid {
        kid: KeyId,
        org: OrgId,
        time_unix_ms: u64,
        valid_from_unix_ms: u64,
    },
    #[error(
        "key {kid} of {org} was revoked from {revoked_from_unix_ms}; the entry is at {time_unix_ms}"
    )]
    KeyRevoked {
        kid: KeyId,
        org: OrgId,
        time_unix_ms: u64,
        revoked_from_unix_ms: u64,
    },
    #[error("{org} was suspended at {time_unix_ms}")]
    MemberSuspended { org: OrgId, time_unix_ms: u64 },
    #[error("{org} is not a member of this federation")]
    NotAMember { org: OrgId },
    #[error("{kind} is not allowed for {org} (roles: {roles}); allowed for: {allowed}")]
    RoleNotAllowed {
        kind: RecordKind,
        org: OrgId,
        roles: String,
        allowed: String,
    },
    #[error("signature: {0}")]
    Signature(CoseError),
    #[error("membership: {0}")]
    Membership(String),
}

/// The genesis document: a COSE_Sign1 by the registrar's first key.
#[derive(Debug, Clone)]
pub struct Genesis {
    bytes: Vec<u8>,
    id: FederationId,
    body: GenesisBody,
}

impl Genesis {
    pub fn create(key: &SigningKey, body: GenesisBody) -> Result<Self, FederationError> {
        check_genesis_body(&body)?;
        if body.registrar.keys.first() != Some(&PublicKey(key.verifying_key().to_bytes())) {
            return Err(FederationError::Genesis(
                "must be signed by the registrar's first key",
            ));
        }
        let payload = cbor::to_canonical(&body).map_err(FederationError::Payload)?;
        let header = ProtectedHeader {
            content_type: cose::content_type::GENESIS.into(),
            kid: cose::key_id(&key.verifying_key()),
            issuer: body.registrar.org.as_str().into(),
            issued_at_s: body.time_unix_ms / 1000,
            vds: None,
        };
        let bytes = cose::sign(key, &header, &payload);
        Ok(Self {
            id: FederationId::of(&bytes),
            bytes,
            body,
        })
    }

    /// Decodes a genesis and checks its self-signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, FederationError> {
        let sign1 = Sign1::parse(bytes, MAX_GENESIS_BYTES, cose::content_type::GENESIS)?;
        sign1.require_empty_unprotected()?;
        if sign1.header.vds.is_some() {
            return Err(FederationError::Genesis(
                "vds (395) is only for checkpoints",
            ));
        }
        let body: GenesisBody = cbor::from_canonical(sign1.payload, MAX_GENESIS_BYTES)
            .map_err(FederationError::Payload)?;
        check_genesis_body(&body)?;
        let first = body.registrar.keys[0];
        let key = verifying_key(&first).map_err(|_| {
            FederationError::Genesis("the registrar key is not a valid Ed25519 key")
        })?;
        if sign1.header.kid != KeyId::of(&first.0)
            || sign1.header.issuer != body.registrar.org.as_str()
        {
            return Err(FederationError::Genesis(
                "must be signed by the registrar's first key",
            ));
        }
        sign1.verify(&key).map_err(FederationError::Signature)?;
        Ok(Self {
            bytes: bytes.to_vec(),
            id: FederationId::of(bytes),
            body,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn id(&self) -> FederationId {
        self.id
    }

    pub fn body(&self) -> &GenesisBody {
        &self.body
    }

    pub fn registrar(&self) -> &OrgId {
        &self.body.registrar.org
    }
}

fn check_genesis_body(body: &GenesisBody) -> Result<(), FederationError> {
    if body.version != 1 {
        return Err(FederationError::Genesis("unknown version"));
    }
    if body.name.trim().is_empty() || body.name.len() > 200 {
        return Err(FederationError::Genesis("name must be 1 to 200 bytes"));
    }
    if !body.registrar.roles.contains(&Role::Registrar) {
        return Err(FederationError::Genesis(
            "the registrar must hold the registrar role",
        ));
    }
    if body.registrar.keys.is_empty() {
        return Err(FederationError::Genesis("the registrar needs a key"));
    }
    // Every key, not only the signing one: Membership::new enrols them all and must not fail.
    for (i, key) in body.registrar.keys.iter().enumerate() {
        if verifying_key(key).is_err() {
            return Err(FederationError::Genesis(
                "registrar keys must be valid, non-weak Ed25519 keys",
            ));
        }
        if body.registrar.keys[..i].contains(key) {
            return Err(FederationError::Genesis("registrar keys must be distinct"));
        }
    }
    if !(-14 * 60..=14 * 60).contains(&body.utc_offset_minutes) {
        return Err(FederationError::Genesis(
            "utc_offset_minutes must be within ±14 h",
        ));
    }
    Ok(())
}

/// Parses a public key, refusing weak (small-order) keys.
pub fn verifying_key(key: &PublicKey) -> Result<VerifyingKey, FederationError> {
    let vk = VerifyingKey::from_bytes(&key.0).map_err(|_| {
        FederationError::Membership(format!("public key {key} is not a valid Ed25519 point"))
    })?;
    if vk.is_weak() {
        return Err(FederationError::Membership(format!(
            "public key {key} is weak (small order)"
        )));
    }
    Ok(vk)
}

/// One key of a member, with its validity window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberKey {
    pub kid: KeyId,
    pub public_key: PublicKey,
    #[serde(skip)]
    pub verifying_key: VerifyingKey,
    pub valid_from: u64,
    pub revoked_from: Option<u64>,
}

/// A member as folded from the registrar's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub org: OrgId,
    pub name: String,
    pub roles: Vec<Role>,
    pub keys: Vec<MemberKey>,
    /// Suspension intervals `[from, until)`; `until` is `None` while suspended.
    pub suspensions: Vec<(u64, Option<u64>)>,
}

impl Member {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn suspended_at(&self, time_unix_ms: u64) -> bool {
        self.suspensions
            .iter()
            .any(|&(from, until)| from <= time_unix_ms && until.is_none_or(|u| time_unix_ms < u))
    }
}

/// The federation's members, folded from the genesis and the registrar's chain.
#[derive(Debug, Clone)]
pub struct Membership {
    federation: FederationId,
    registrar: OrgId,
    utc_offset_minutes: i32,
    members: BTreeMap<OrgId, Member>,
    by_kid: HashMap<KeyId, OrgId>,
    /// How many registrar entries have been applied.
    applied: u64,
}

impl Membership {
    pub fn new(genesis: &Genesis) -> Self {
        let mut membership = Self {
            federation: genesis.id(),
            registrar: genesis.registrar().clone(),
            utc_offset_minutes: genesis.body().utc_offset_minutes,
            members: BTreeMap::new(),
            by_kid: HashMap::new(),
            applied: 0,
        };
        membership
            .enrol(&genesis.body().registrar, genesis.body().time_unix_ms)
            .expect("a decoded genesis enrols its registrar");
        membership
    }

    pub fn federation(&self) -> FederationId {
        self.federation
    }

    pub fn registrar(&self) -> &OrgId {
        &self.registrar
    }

    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
    }

    /// How many registrar-chain entries have been applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member(&self, org: &OrgId) -> Option<&Member> {
        self.members.get(org)
    }

    /// The member and key for a key id.
    pub fn key(&self, kid: &KeyId) -> Option<(&Member, &MemberKey)> {
        let member = self.members.get(self.by_kid.get(kid)?)?;
        Some((member, member.keys.iter().find(|k| k.kid == *kid)?))
    }

    /// Authorises an entry (key valid for its chain's org at its time, org not suspended,
    /// record kind allowed for a role) and checks its signature with `verify_strict`.
    pub fn verify_entry(&self, entry: &Entry) -> Result<(), FederationError> {
        let key = self.authorise(entry)?;
        entry
            .verify_signature(&key.verifying_key)
            .map_err(FederationError::Signature)
    }

    /// The authorisation half of [`Membership::verify_entry`]; returns the key to verify with.
    pub fn authorise(&self, entry: &Entry) -> Result<&MemberKey, FederationError> {
        let payload = entry.payload();
        if payload.federation != self.federation {
            return Err(FederationError::WrongFederation {
                expected: self.federation,
                found: payload.federation,
            });
        }
        let kid = entry.kid();
        let (member, key) = self.key(&kid).ok_or(FederationError::UnknownKey { kid })?;
        if member.org != payload.chain {
            return Err(FederationError::KeyNotChainOwner {
                kid,
                owner: member.org.clone(),
                chain: payload.chain.clone(),
            });
        }
        let time = payload.time_unix_ms;
        if time < key.valid_from {
            return Err(FederationError::KeyNotYetValid {
                kid,
                org: member.org.clone(),
                time_unix_ms: time,
                valid_from_unix_ms: key.valid_from,
            });
        }
        if let Some(revoked) = key.revoked_from.filter(|&r| time >= r) {
            return Err(FederationError::KeyRevoked {
                kid,
                org: member.org.clone(),
                time_unix_ms: time,
                revoked_from_unix_ms: revoked,
            });
        }
        if member.suspended_at(time) {
            return Err(FederationError::MemberSuspended {
                org: member.org.clone(),
                time_unix_ms: time,
            });
        }
        self.check_role(&member.org, payload.record.kind())?;
        Ok(key)
    }

    /// Whether `org` may write `kind`.
    pub fn check_role(&self, org: &OrgId, kind: RecordKind) -> Result<(), FederationError> {
        let member = self
            .members
            .get(org)
            .ok_or_else(|| FederationError::NotAMember { org: org.clone() })?;
        let allowed = kind.allowed_roles();
        if member.roles.iter().any(|r| allowed.contains(r)) {
            return Ok(());
        }
        let names = |roles: &[Role]| {
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(FederationError::RoleNotAllowed {
            kind,
            org: org.clone(),
            roles: names(&member.roles),
            allowed: names(allowed),
        })
    }

    /// Checks that a registrar-chain record written at `time_unix_ms` can be applied, without
    /// applying it (a suspension, say, is judged at the time it would take effect).
    pub fn check_record(&self, record: &Record, time_unix_ms: u64) -> Result<(), FederationError> {
        self.clone().apply_record(record, time_unix_ms)
    }

    /// Applies the next entry of the registrar's chain (already authorised and verified).
    /// Non-membership records are counted and otherwise ignored.
    pub fn apply(&mut self, entry: &impl Recorded) -> Result<(), FederationError> {
        if entry.chain() != &self.registrar {
            return Err(FederationError::Membership(format!(
                "{} is not the registrar's chain",
                entry.chain()
            )));
        }
        if entry.seq() != self.applied {
            return Err(FederationError::Membership(format!(
                "expected registrar entry {}, got {}",
                self.applied,
                entry.seq()
            )));
        }
        self.apply_record(entry.record(), entry.time_unix_ms())?;
        self.applied += 1;
        Ok(())
    }

    /// Applies a membership entry of the registrar's chain (already authorised and verified)
    /// when the entries between it and the last one applied are left out, as in a proof bundle
    /// (they change nothing: the receipts prove the positions). Its seq must be past the last
    /// one applied and its record must change the membership.
    pub fn apply_membership_entry(&mut self, entry: &Entry) -> Result<(), FederationError> {
        if entry.chain() != &self.registrar {
            return Err(FederationError::Membership(format!(
                "{} is not the registrar's chain",
                entry.chain()
            )));
        }
        if entry.seq() < self.applied {
            return Err(FederationError::Membership(format!(
                "registrar entry {} comes after entry {}: out of order or repeated",
                entry.seq(),
                self.applied - 1
            )));
        }
        if !entry.record().changes_membership() {
            return Err(FederationError::Membership(format!(
                "{} is not a membership record",
                entry.record().kind()
            )));
        }
        self.apply_record(entry.record(), entry.time_unix_ms())?;
        self.applied = entry.seq() + 1;
        Ok(())
    }

    /// Applies a registrar-chain record at `time_unix_ms` without the sequence check of
    /// [`Membership::apply`]: for an audit that goes on past a gap or a fork in the registrar's
    /// chain (which it reports) instead of stopping there.
    pub fn apply_record_at(
        &mut self,
        record: &Record,
        time_unix_ms: u64,
    ) -> Result<(), FederationError> {
        self.apply_record(record, time_unix_ms)?;
        self.applied += 1;
        Ok(())
    }

    fn apply_record(&mut self, record: &Record, time: u64) -> Result<(), FederationError> {
        let err = |msg: String| Err(FederationError::Membership(msg));
        match record {
            Record::Enrol(enrol) => self.enrol(enrol, time),
            Record::KeyAdded(added) => {
                let kid = KeyId::of(&added.key.0);
                if self.by_kid.contains_key(&kid) {
                    return err(format!("key {kid} is already enrolled"));
                }
                let verifying_key = verifying_key(&added.key)?;
                let Some(member) = self.members.get_mut(&added.org) else {
                    return err(format!("{} is not a member", added.org));
                };
                member.keys.push(MemberKey {
                    kid,
                    public_key: added.key,
                    verifying_key,
                    valid_from: time,
                    revoked_from: None,
                });
                self.by_kid.insert(kid, added.org.clone());
                Ok(())
            }
            Record::KeyRevoked(revoked) => {
                let Some(member) = self.members.get_mut(&revoked.org) else {
                    return err(format!("{} is not a member", revoked.org));
                };
                let Some(key) = member.keys.iter_mut().find(|k| k.kid == revoked.kid) else {
                    return err(format!("{} has no key {}", revoked.org, revoked.kid));
                };
                if key.revoked_from.is_some() {
                    return err(format!("key {} is already revoked", revoked.kid));
                }
                key.revoked_from = Some(revoked.revoked_from_unix_ms);
                Ok(())
            }
            Record::MemberSuspended(status) => {
                let Some(member) = self.members.get_mut(&status.org) else {
                    return err(format!("{} is not a member", status.org));
                };
                if member.suspended_at(time) {
                    return err(format!("{} is already suspended", status.org));
                }
                if status.org == self.registrar {
                    return err("the registrar cannot suspend itself".into());
                }
                member.suspensions.push((time, None));
                Ok(())
            }
            Record::MemberReinstated(status) => {
                let Some(member) = self.members.get_mut(&status.org) else {
                    return err(format!("{} is not a member", status.org));
                };
                match member.suspensions.last_mut() {
                    Some((_, until @ None)) => {
                        *until = Some(time);
                        Ok(())
                    }
                    _ => err(format!("{} is not suspended", status.org)),
                }
            }
            _ => Ok(()),
        }
    }

    fn enrol(&mut self, enrol: &Enrol, time: u64) -> Result<(), FederationError> {
        if self.members.contains_key(&enrol.org) {
            return Err(FederationError::Membership(format!(
                "{} is already a member",
                enrol.org
            )));
        }
        let mut keys = Vec::with_capacity(enrol.keys.len());
        for key in &enrol.keys {
            let kid = KeyId::of(&key.0);
            if self.by_kid.contains_key(&kid) || keys.iter().any(|k: &MemberKey| k.kid == kid) {
                return Err(FederationError::Membership(format!(
                    "key {kid} is already enrolled"
                )));
            }
            keys.push(MemberKey {
                kid,
                public_key: *key,
                verifying_key: verifying_key(key)?,
                valid_from: time,
                revoked_from: None,
            });
        }
        let mut roles = enrol.roles.clone();
        roles.sort();
        roles.dedup();
        for key in &keys {
            self.by_kid.insert(key.kid, enrol.org.clone());
        }
        self.members.insert(
            enrol.org.clone(),
            Member {
                org: enrol.org.clone(),
                name: enrol.name.clone(),
                roles,
                keys,
                suspensions: Vec::new(),
            },
        );
        Ok(())
    }
}
