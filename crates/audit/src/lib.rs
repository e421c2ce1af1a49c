//! The auditor: checks a NetBill ledger from its own records and the public keys alone.
//!
//! An audit reads a [`Snapshot`] of the ledger (from the database, or over the admin API
//! with [`Snapshot::from_server`]) and [`audit`]s it:
//! 1. the journal's hash chain, entry by entry, and N's signed checkpoints against it;
//! 2. every journal entry against the signatures it needs — a purchase against the
//!    customer-signed EPO, the merchant-signed endorsement and N's receipt; a refund against
//!    the merchant-signed request and N's refund receipt;
//! 3. the balances the signed records imply (deposits and payouts from the journal,
//!    purchases and refunds from their signed records) against the account table, and
//!    conservation.
//!
//! What the records imply is what the balances should be, so the unwind plan is the
//! adjustment of each account that differs, to that value. It is refused when the journal's
//! deposits or payouts disagree with the totals: then a deposit or payout entry itself was
//! lost or forged, and only a backup can tell which figure is right.

use std::collections::{BTreeMap, HashMap, HashSet};

use netbill_crypto::RealCrypto;
use netbill_ledger::{
    AccountRecord, Adjustment, JournalEntry, PurchaseRecord, RefundRecord, Store, StoreError,
    Totals,
};
use netbill_proto::crypto::{Crypto, PublicKey};
use netbill_proto::messages::{Checkpoint, MEMO_LEN_MAX, ResultCode};
use netbill_proto::money::format_minor;
use netbill_proto::{AccountId, EpoId, Signed};
use netbill_server::AdminClient;
use serde::{Deserialize, Serialize};

/// Everything an audit reads.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub journal: Vec<JournalEntry>,
    pub checkpoints: Vec<Signed<Checkpoint>>,
    /// Account id → (public key, balance in the account table).
    pub accounts: BTreeMap<AccountId, (PublicKey, i64)>,
    pub purchases: Vec<PurchaseRecord>,
    pub refunds: Vec<RefundRecord>,
    pub totals: Totals,
}

const PAGE: usize = 1000;

/// Told, after each page read, what is being read and how many items so far.
pub type Progress<'a> = &'a (dyn Fn(&str, usize) + Sync);

fn no_progress(_: &str, _: usize) {}

/// Reads a listing page by page, oldest first: `page(after)` returns up to [`PAGE`] items
/// after the key `after` (`None`: from the start). A page that does not move past `after`
/// ends the listing (a misbehaving server must not keep the auditor reading forever).
fn read_all<T, K: Ord + Clone, E>(
    what: &str,
    progress: Progress<'_>,
    key: impl Fn(&T) -> K,
    mut page: impl FnMut(Option<K>) -> Result<Vec<T>, E>,
) -> Result<Vec<T>, E> {
    let mut out: Vec<T> = Vec::new();
    loop {
        let after = out.last().map(&key);
        let items = page(after.clone())?;
        let done = items.len() < PAGE || items.last().map(&key) <= after;
        out.extend(items);
        progress(what, out.len());
        if done {
            return Ok(out);
        }
    }
}

/// [`read_all`] over an asynchronous source.
async fn read_all_async<T, K: Ord + Clone, E>(
    what: &str,
    progress: Progress<'_>,
    key: impl Fn(&T) -> K,
    mut page: impl AsyncFnMut(Option<K>) -> Result<Vec<T>, E>,
) -> Result<Vec<T>, E> {
    let mut out: Vec<T> = Vec::new();
    loop {
        let after = out.last().map(&key);
        let items = page(after.clone()).await?;
        let done = items.len() < PAGE || items.last().map(&key) <= after;
        out.extend(items);
        progress(what, out.len());
        if done {
            return Ok(out);
        }
    }
}

fn seq_of(c: &Signed<Checkpoint>) -> u64 {
    c.body_unverified().seq
}

impl Snapshot {
    /// Reads a ledger straight from its store (SQLite file or PostgreSQL database).
    pub fn from_store(store: &mut dyn Store) -> Result<Snapshot, StoreError> {
        Self::from_store_with(store, &no_progress)
    }

    /// [`Snapshot::from_store`], reporting progress.
    pub fn from_store_with(
        store: &mut dyn Store,
        progress: Progress<'_>,
    ) -> Result<Snapshot, StoreError> {
        let totals = store.totals()?;
        let journal = read_all(
            "journal entries",
            progress,
            |e: &JournalEntry| e.seq,
            |after| store.journal(after.unwrap_or(0), PAGE),
        )?;
        let checkpoints = read_all("checkpoints", progress, seq_of, |after| {
            store.checkpoints(after.unwrap_or(0), PAGE)
        })?;
        let accounts = read_all(
            "accounts",
            progress,
            |a: &AccountRecord| a.id.to_string(),
            |after| store.accounts(after.as_deref(), PAGE),
        )?;
        let purchases = read_all(
            "purchases",
            progress,
            |p: &PurchaseRecord| p.epoid.to_string(),
            |after| store.purchases(after.as_deref(), PAGE),
        )?;
        let refunds = read_all(
            "refunds",
            progress,
            |r: &RefundRecord| r.refund_id.clone(),
            |after| {
                store.refunds(
                    netbill_ledger::RefundFilter::All {
                        after: after.as_deref(),
                    },
                    PAGE,
                )
            },
        )?;
        Ok(Snapshot {
            journal,
            checkpoints,
            accounts: accounts
                .into_iter()
                .map(|a| (a.id, (a.key, a.balance_minor)))
                .collect(),
            purchases,
            refunds,
            totals,
        })
    }

    /// Reads a ledger over a running billing server's admin API.
    pub async fn from_server(
        admin: &AdminClient,
    ) -> Result<Snapshot, netbill_http::client::CallError> {
        Self::from_server_with(admin, &no_progress).await
    }

    /// [`Snapshot::from_server`], reporting progress.
    pub async fn from_server_with(
        admin: &AdminClient,
        progress: Progress<'_>,
    ) -> Result<Snapshot, netbill_http::client::CallError> {
        let totals = admin.totals().await?;
        let journal = read_all_async(
            "journal entries",
            progress,
            |e: &JournalEntry| e.seq,
            async |after| Ok(admin.journal(after.unwrap_or(0)).await?.entries),
        )
        .await?;
        let checkpoints = read_all_async("checkpoints", progress, seq_of, async |after| {
            admin.checkpoints(after.unwrap_or(0)).await
        })
        .await?;
        let accounts = read_all_async(
            "accounts",
            progress,
            |a: &netbill_server::records::AuditAccount| a.id.to_string(),
            async |after| admin.audit_accounts(after.as_deref()).await,
        )
        .await?;
        let purchases = read_all_async(
            "purchases",
            progress,
            |p: &PurchaseRecord| p.epoid.to_string(),
            async |after| admin.audit_purchases(after.as_deref()).await,
        )
        .await?;
        let refunds = read_all_async(
            "refunds",
            progress,
            |r: &RefundRecord| r.refund_id.clone(),
            async |after| admin.audit_refunds(after.as_deref()).await,
        )
        .await?;
        Ok(Snapshot {
            journal,
            checkpoints,
            accounts: accounts
                .into_iter()
                .map(|a| (a.id, (a.public_key, a.balance_minor)))
                .collect(),
            purchases,
            refunds,
            totals,
        })
    }
}

/// What kind of problem a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An entry does not follow or chain to the one before it: entries were deleted,
    /// altered, inserted or reordered.
    ChainBreak,
    /// A checkpoint is not signed by N's key.
    BadCheckpointSignature,
    /// The journal no longer matches a checkpoint N signed.
    CheckpointMismatch,
    /// A money movement without the signatures it needs.
    UnbackedEntry,
    /// A signed purchase or refund with no journal entry.
    MissingEntry,
    /// An account's balance differs from what the signed records imply.
    BalanceMismatch,
    /// The journal's deposits or payouts differ from the totals table.
    TotalsMismatch,
    /// Σ balances ≠ deposits − payouts.
    ConservationViolated,
}

impl FindingKind {
    /// Whether the finding means money is wrong now (as opposed to evidence of tampering).
    pub fn money(self) -> bool {
        matches!(
            self,
            FindingKind::BalanceMismatch
                | FindingKind::TotalsMismatch
                | FindingKind::ConservationViolated
        )
    }
}

/// One problem the audit found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoid: Option<EpoId>,
    pub detail: String,
}

/// The result of an audit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub entries: u64,
    pub checkpoints: u64,
    pub purchases: u64,
    pub refunds: u64,
    pub accounts: u64,
    /// Adjustment entries already in the journal (earlier unwinds).
    pub adjustments: u64,
    pub findings: Vec<Finding>,
    /// The adjustments that restore every balance to what the signed records imply.
    pub unwind: Vec<Adjustment>,
    /// Why no unwind plan can be computed, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwind_refused: Option<String>,
}

impl Report {
    /// Whether money is wrong now (balances, totals or conservation).
    pub fn money_wrong(&self) -> bool {
        self.findings.iter().any(|f| f.kind.money())
    }
}

fn finding(kind: FindingKind, detail: impl Into<String>) -> Finding {
    Finding {
        kind,
        seq: None,
        account: None,
        epoid: None,
        detail: detail.into(),
    }
}

/// Every key each account ever had: journaled `key` entries and the account table's.
type KeyHistory = HashMap<AccountId, HashSet<PublicKey>>;

fn key_history(snap: &Snapshot) -> KeyHistory {
    let mut keys: KeyHistory = HashMap::new();
    for (id, (key, _)) in &snap.accounts {
        keys.entry(id.clone()).or_default().insert(*key);
    }
    for e in &snap.journal {
        if let ("key", Some(id), Ok(k)) = (e.kind.as_str(), &e.credit, PublicKey::from_hex(&e.memo))
        {
            keys.entry(id.clone()).or_default().insert(k);
        }
    }
    keys
}

fn had_key(keys: &KeyHistory, id: &AccountId, key: &PublicKey) -> bool {
    keys.get(id).is_some_and(|k| k.contains(key))
}

/// A sum of minor units for people (clamped to what an `i64` holds).
fn minor(v: i128) -> String {
    format_minor(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// Why a purchase's journal entry is not backed, if it is not.
fn purchase_unbacked(
    crypto: &dyn Crypto,
    billing_key: &PublicKey,
    p: &PurchaseRecord,
    keys: &KeyHistory,
) -> Option<String> {
    let Some(en) = &p.endorsement else {
        return Some("no endorsement (and so no customer-signed EPO) is recorded".into());
    };
    let e = en.body_unverified();
    let epo_signed = &e.epo;
    let epo = epo_signed.body_unverified();
    if epo_signed.verify(crypto, &epo.customer_key).is_err() {
        return Some("the EPO's customer signature does not verify".into());
    }
    if !had_key(keys, &p.customer, &epo.customer_key) {
        return Some(format!(
            "the EPO is signed by a key that {} never had",
            p.customer
        ));
    }
    if !had_key(keys, &p.merchant, &e.merchant_key) || en.verify(crypto, &e.merchant_key).is_err() {
        return Some(format!(
            "the endorsement is not signed by a key of merchant {}",
            p.merchant
        ));
    }
    if epo.epoid != p.epoid || epo.merchant != p.merchant || epo.price != p.price {
        return Some("the signed EPO names another EPOID, merchant or price".into());
    }
    match p.receipt.verify(crypto, billing_key) {
        Ok(r)
            if r.result == ResultCode::Committed
                && r.epoid == p.epoid
                && r.epo_digest == epo_signed.digest(crypto)
                && r.price == p.price => {}
        Ok(_) => return Some("N's receipt does not name this EPO as committed".into()),
        Err(_) => return Some("the receipt is not signed by N's key".into()),
    }
    None
}

/// [`purchase_unbacked`] for every purchase, split over the machine's cores.
fn purchase_backing<'a>(
    billing_key: &PublicKey,
    purchases: &'a [PurchaseRecord],
    keys: &KeyHistory,
) -> HashMap<&'a EpoId, Option<String>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = purchases.len().div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = purchases
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|p| {
                            (
                                &p.epoid,
                                purchase_unbacked(&RealCrypto, billing_key, p, keys),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join().unwrap_or_else(|_| {
                    // A worker can only fail by panicking, which checking signatures does
                    // not do; treat its purchases as unchecked rather than pass them.
                    Vec::new()
                })
            })
            .collect()
    })
}

/// Why a purchase is not backed, from [`purchase_backing`]; one it could not check is not.
fn unbacked_why(backing: &HashMap<&EpoId, Option<String>>, epoid: &EpoId) -> Option<String> {
    match backing.get(epoid) {
        Some(why) => why.clone(),
        None => Some("its signatures could not be checked".to_string()),
    }
}

/// Why a refund's journal entry is not backed, if it is not.
fn refund_unbacked(
    crypto: &dyn Crypto,
    billing_key: &PublicKey,
    r: &RefundRecord,
    keys: &KeyHistory,
) -> Option<String> {
    let signed_by_merchant = keys
        .get(&r.merchant)
        .is_some_and(|ks| ks.iter().any(|k| r.request.verify(crypto, k).is_ok()));
    if !signed_by_merchant {
        return Some(format!(
            "the refund request is not signed by merchant {}'s key",
            r.merchant
        ));
    }
    let q = r.request.body_unverified();
    if q.refund_id != r.refund_id || q.epoid != r.epoid || q.amount != r.amount {
        return Some("the signed request names another refund, purchase or amount".into());
    }
    match r.receipt.verify(crypto, billing_key) {
        Ok(rr) if rr.refund_id == r.refund_id && rr.amount == r.amount => None,
        Ok(_) => Some("N's refund receipt names another refund".into()),
        Err(_) => Some("the refund receipt is not signed by N's key".into()),
    }
}

/// Audits a snapshot against N's public signing key.
pub fn audit(snap: &Snapshot, billing_key: &PublicKey) -> Report {
    let crypto = &RealCrypto;
    let mut findings = Vec::new();

    // 1. The chain, as stored and as recomputed from the first entry; at each checkpointed
    // seq, the recomputed hash and the money in and out so far (what N signed).
    let signed_seqs: HashSet<u64> = snap
        .checkpoints
        .iter()
        .map(|c| c.body_unverified().seq)
        .collect();
    let mut at_checkpoint: HashMap<u64, (Vec<u8>, (u64, u64))> = HashMap::new();
    let mut stored_prev = vec![0u8; 32];
    let mut recomputed_prev = vec![0u8; 32];
    let (mut dep, mut pay) = (0u64, 0u64);
    let mut expected_seq = 1u64;
    for e in &snap.journal {
        let recomputed = e.expected_hash(&recomputed_prev);
        // While the chain is intact both are the same hash: compute it once.
        let here = if stored_prev == recomputed_prev {
            recomputed.clone()
        } else {
            e.expected_hash(&stored_prev)
        };
        if e.seq != expected_seq {
            findings.push(Finding {
                seq: Some(e.seq),
                ..finding(
                    FindingKind::ChainBreak,
                    format!(
                        "entry {} follows entry {}: entries were deleted or reordered",
                        e.seq,
                        expected_seq - 1
                    ),
                )
            });
        } else if hex::encode(&here) != e.hash {
            findings.push(Finding {
                seq: Some(e.seq),
                ..finding(
                    FindingKind::ChainBreak,
                    format!(
                        "entry {} does not chain to the entry before it: it was altered, inserted or moved",
                        e.seq
                    ),
                )
            });
        }
        match e.kind.as_str() {
            "deposit" => dep = dep.saturating_add(e.amount.minor()),
            "payout" => pay = pay.saturating_add(e.amount.minor()),
            _ => {}
        }
        if signed_seqs.contains(&e.seq) {
            at_checkpoint.insert(e.seq, (recomputed.clone(), (dep, pay)));
        }
        recomputed_prev = recomputed;
        stored_prev = hex::decode(&e.hash).unwrap_or_default();
        expected_seq = e.seq + 1;
    }

    // 2. Checkpoints: signed by N, and matching the chain recomputed from the start (a
    // rewritten chain has valid links but other hashes) and the money in and out so far.
    for c in &snap.checkpoints {
        let Ok(cp) = c.verify(crypto, billing_key) else {
            findings.push(finding(
                FindingKind::BadCheckpointSignature,
                format!(
                    "the checkpoint of entry {} is not signed by N's key",
                    c.body_unverified().seq
                ),
            ));
            continue;
        };
        let at = |f: FindingKind, d: String| Finding {
            seq: Some(cp.seq),
            ..finding(f, d)
        };
        match at_checkpoint.get(&cp.seq) {
            None => findings.push(at(
                FindingKind::CheckpointMismatch,
                format!(
                    "N signed a checkpoint of entry {}, which the journal no longer holds",
                    cp.seq
                ),
            )),
            Some((h, _)) if h.as_slice() != cp.hash.0 => findings.push(at(
                FindingKind::CheckpointMismatch,
                format!(
                    "the journal up to entry {} is not the one N signed: an entry at or before it was changed",
                    cp.seq
                ),
            )),
            Some((_, in_out)) if *in_out != (cp.deposits_minor, cp.payouts_minor) => {
                findings.push(at(
                    FindingKind::CheckpointMismatch,
                    format!(
                        "deposits and payouts up to entry {} differ from the ones N signed",
                        cp.seq
                    ),
                ))
            }
            Some(_) => {}
        }
    }

    // 3. Every entry against its signatures; the balances the backed records imply.
    let keys = key_history(snap);
    // The signature checks of every purchase, on every core (the expensive part).
    let backing = purchase_backing(billing_key, &snap.purchases, &keys);
    let purchases: HashMap<&EpoId, &PurchaseRecord> =
        snap.purchases.iter().map(|p| (&p.epoid, p)).collect();
    let refunds: HashMap<&str, &RefundRecord> = snap
        .refunds
        .iter()
        .map(|r| (r.refund_id.as_str(), r))
        .collect();
    // i128: sums of hostile amounts cannot overflow.
    let mut expected: BTreeMap<AccountId, i128> =
        snap.accounts.keys().map(|a| (a.clone(), 0)).collect();
    let mut reasons: BTreeMap<AccountId, Vec<String>> = BTreeMap::new();
    let mut journaled_purchases: HashSet<&EpoId> = HashSet::new();
    let mut journaled_refunds: HashSet<&str> = HashSet::new();
    let mut refunded: HashMap<&EpoId, u64> = HashMap::new();
    let mut adjustments = 0u64;
    let credit = |m: &mut BTreeMap<AccountId, i128>, a: &AccountId, x: i64| {
        *m.entry(a.clone()).or_default() += i128::from(x);
    };
    for e in &snap.journal {
        let unbacked = |why: String| Finding {
            seq: Some(e.seq),
            epoid: e.epoid.clone(),
            ..finding(
                FindingKind::UnbackedEntry,
                format!("entry {} ({} of {}): {why}", e.seq, e.kind, e.amount),
            )
        };
        let amount = e.amount.signed();
        // A two-sided movement (purchase, refund) is checked against its signed records;
        // `Some(why)` if they do not back it.
        let moved = match (e.kind.as_str(), &e.debit, &e.credit) {
            ("deposit", None, Some(c)) => {
                credit(&mut expected, c, amount);
                None
            }
            ("payout", Some(d), None) => {
                credit(&mut expected, d, -amount);
                None
            }
            ("adjustment", _, _) => {
                adjustments += 1;
                None
            }
            ("key", None, Some(_))
                if e.amount.is_zero() && PublicKey::from_hex(&e.memo).is_ok() =>
            {
                None
            }
            ("purchase", Some(d), Some(c)) => {
                let record = e.epoid.as_ref().and_then(|id| purchases.get(id));
                let why = match record {
                    None => Some("no committed purchase is recorded for it".to_string()),
                    Some(p) if p.customer != *d || p.merchant != *c || p.price != e.amount => {
                        Some("it disagrees with the signed purchase".to_string())
                    }
                    Some(p) if !journaled_purchases.insert(&p.epoid) => {
                        Some("the purchase is journaled twice".to_string())
                    }
                    Some(p) => unbacked_why(&backing, &p.epoid),
                };
                Some((d, c, why))
            }
            ("refund", Some(d), Some(c)) => {
                let record = refunds.get(e.memo.as_str());
                let why = match record {
                    None => Some("no refund is recorded for it".to_string()),
                    Some(r)
                        if r.merchant != *d
                            || r.customer != *c
                            || r.amount != e.amount
                            || Some(&r.epoid) != e.epoid.as_ref() =>
                    {
                        Some("it disagrees with the signed refund".to_string())
                    }
                    Some(r) if !journaled_refunds.insert(r.refund_id.as_str()) => {
                        Some("the refund is journaled twice".to_string())
                    }
                    Some(r) => refund_unbacked(crypto, billing_key, r, &keys).or_else(|| {
                        let total = refunded.entry(&r.epoid).or_default();
                        *total = total.saturating_add(r.amount.minor());
                        let paid = purchases.get(&r.epoid).map(|p| p.price.minor());
                        (paid.is_none_or(|p| *total > p)).then(|| {
                            format!(
                                "refunds of {} exceed what it paid ({})",
                                r.epoid,
                                paid.map_or("nothing".into(), |p| minor(i128::from(p)))
                            )
                        })
                    }),
                };
                Some((d, c, why))
            }
            _ => {
                findings.push(unbacked(
                    "an entry of this shape moves no money legitimately".into(),
                ));
                None
            }
        };
        match moved {
            Some((d, c, None)) => {
                credit(&mut expected, d, -amount);
                credit(&mut expected, c, amount);
            }
            Some((d, c, Some(why))) => {
                for a in [d, c] {
                    reasons
                        .entry(a.clone())
                        .or_default()
                        .push(format!("unbacked {} entry {}", e.kind, e.seq));
                }
                findings.push(unbacked(why));
            }
            None => {}
        }
    }

    // Signed records with no journal entry: money moved unjournaled (or the entry was
    // deleted). The signatures prove the movement, so the balances should include it.
    for p in &snap.purchases {
        if journaled_purchases.contains(&p.epoid) {
            continue;
        }
        if let Some(why) = unbacked_why(&backing, &p.epoid) {
            findings.push(Finding {
                epoid: Some(p.epoid.clone()),
                ..finding(
                    FindingKind::UnbackedEntry,
                    format!(
                        "committed purchase {} with no journal entry and no valid signatures: {why}",
                        p.epoid
                    ),
                )
            });
            for a in [&p.customer, &p.merchant] {
                reasons
                    .entry(a.clone())
                    .or_default()
                    .push(format!("unbacked purchase {}", p.epoid));
            }
            continue;
        }
        findings.push(Finding {
            epoid: Some(p.epoid.clone()),
            ..finding(
                FindingKind::MissingEntry,
                format!(
                    "purchase {} ({}) is signed by customer and merchant but has no journal entry",
                    p.epoid, p.price
                ),
            )
        });
        credit(&mut expected, &p.customer, -p.price.signed());
        credit(&mut expected, &p.merchant, p.price.signed());
    }
    for r in &snap.refunds {
        if journaled_refunds.contains(r.refund_id.as_str()) {
            continue;
        }
        let valid = refund_unbacked(crypto, billing_key, r, &keys).is_none();
        findings.push(Finding {
            epoid: Some(r.epoid.clone()),
            ..finding(
                if valid {
                    FindingKind::MissingEntry
                } else {
                    FindingKind::UnbackedEntry
                },
                format!(
                    "refund {:?} of {} has no journal entry",
                    r.refund_id, r.amount
                ),
            )
        });
        if valid {
            credit(&mut expected, &r.merchant, -r.amount.signed());
            credit(&mut expected, &r.customer, r.amount.signed());
        }
    }

    // 4. Balances, totals, conservation.
    let mut unwind = Vec::new();
    let mut unrepresentable = false;
    for (id, want) in &expected {
        let have = snap.accounts.get(id).map(|(_, b)| i128::from(*b));
        match have {
            None => findings.push(Finding {
                account: Some(id.clone()),
                ..finding(
                    FindingKind::BalanceMismatch,
                    format!("the journal moves money of {id}, which has no account"),
                )
            }),
            Some(have) if have != *want => {
                findings.push(Finding {
                    account: Some(id.clone()),
                    ..finding(
                        FindingKind::BalanceMismatch,
                        format!(
                            "{id} holds {} but its signed records imply {}",
                            minor(have),
                            minor(*want)
                        ),
                    )
                });
                let why = reasons.get(id).map_or_else(
                    || "balance changed outside the journal".to_string(),
                    |r| r.join(", "),
                );
                let mut memo = format!("audit unwind: {why}");
                if memo.len() > MEMO_LEN_MAX {
                    let mut cut = MEMO_LEN_MAX - 3;
                    while !memo.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    memo.truncate(cut);
                    memo.push_str("...");
                }
                match i64::try_from(want - have) {
                    Ok(delta_minor) => unwind.push(Adjustment {
                        account: id.clone(),
                        delta_minor,
                        memo,
                    }),
                    Err(_) => unrepresentable = true,
                }
            }
            Some(_) => {}
        }
    }
    let t = &snap.totals;
    let totals_ok = i64::try_from(dep).ok() == Some(t.deposits_minor)
        && i64::try_from(pay).ok() == Some(t.payouts_minor);
    if !totals_ok {
        findings.push(finding(
            FindingKind::TotalsMismatch,
            format!(
                "the journal's deposits {} and payouts {} differ from the totals table's {} and {}",
                minor(i128::from(dep)),
                minor(i128::from(pay)),
                format_minor(t.deposits_minor),
                format_minor(t.payouts_minor)
            ),
        ));
    }
    let balances: i128 = snap.accounts.values().map(|(_, b)| i128::from(*b)).sum();
    let in_minus_out = i128::from(t.deposits_minor) - i128::from(t.payouts_minor);
    if balances != in_minus_out {
        findings.push(finding(
            FindingKind::ConservationViolated,
            format!(
                "balances sum to {} but deposits - payouts = {}",
                minor(balances),
                minor(in_minus_out)
            ),
        ));
    }
    let unwind_refused = if unrepresentable {
        unwind.clear();
        Some("a balance differs by more than an amount can hold: the ledger is beyond repair by adjustment".to_string())
    } else if !totals_ok {
        unwind.clear();
        Some(
            "the journal's deposits or payouts disagree with the totals table: a deposit or payout entry was deleted, altered or forged, and only a backup can tell which figure is right"
                .to_string(),
        )
    } else if findings.iter().any(|f| {
        f.kind == FindingKind::BalanceMismatch
            && f.account
                .as_ref()
                .is_some_and(|a| !snap.accounts.contains_key(a))
    }) {
        unwind.clear();
        Some("the journal moves money of an account that does not exist".to_string())
    } else {
        None
    };
    Report {
        entries: snap.journal.len() as u64,
        checkpoints: snap.checkpoints.len() as u64,
        purchases: snap.purchases.len() as u64,
        refunds: snap.refunds.len() as u64,
        accounts: snap.accounts.len() as u64,
        adjustments,
        findings,
        unwind,
        unwind_refused,
    }
}
