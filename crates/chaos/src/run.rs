//! Running schedules against a deployment: inject, recover, check.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::check::{self, Checker, Memory, Violation};
use crate::deploy::{DeployError, Deployment, PRICE_MINOR, PRODUCT};
use crate::proxy::{Action, Plan, request};
use crate::{Fault, Party, Schedule};

/// How long one purchase attempt may take.
const BUY_LIMIT: Duration = Duration::from_secs(30);
/// Most `wallet recover` rounds after a schedule.
const RECOVER_ROUNDS: usize = 40;
/// How many times each captured message is replayed.
const REPLAYS: usize = 2;

/// Counts of one run.
#[derive(Default, Debug, Clone)]
pub struct Tally {
    /// Schedules run.
    pub schedules: usize,
    /// Faults that hit (a message matched, or a crash point was reached), per schedule kind.
    pub injected: BTreeMap<Schedule, u64>,
    /// Faults armed but never reached (e.g. the purchase stopped earlier), per schedule kind.
    pub missed: BTreeMap<Schedule, u64>,
    /// Checks passed per checker.
    pub passed: BTreeMap<Checker, u64>,
    /// Purchases that ended paid / not paid.
    pub paid: u64,
    /// Purchases that ended unpaid (aborted, refused, or never started).
    pub unpaid: u64,
}

/// A schedule that broke a guarantee.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its index in the run (0-based).
    pub index: usize,
    /// The schedule.
    pub schedule: Schedule,
    /// What broke.
    pub violations: Vec<Violation>,
}

/// Runs schedules against one deployment, remembering what the checkers need.
pub struct Runner {
    /// The deployment.
    pub deployment: Deployment,
    memory: Memory,
    /// What has happened so far.
    pub tally: Tally,
    n: usize,
}

/// The proxy plan (and which proxy) for a network or kill fault at a step.
fn plan(step: u8, fault: Fault, party: Party) -> Option<(bool, Plan)> {
    // (via the merchant→billing proxy, method, path prefix, suffix, response)
    let (mn, method, prefix, suffix, response) = match step {
        1 => (false, "POST", "/v2/purchases", "/v2/purchases", false),
        2 => (false, "POST", "/v2/purchases", "/v2/purchases", true),
        3 => (false, "POST", "/v2/pay", "/v2/pay", false),
        4 => (true, "POST", "/v1/endorsements", "", false),
        5 => (true, "POST", "/v1/endorsements", "", true),
        6 => (false, "POST", "/v2/pay", "/v2/pay", true),
        _ => return None,
    };
    let action = match fault {
        Fault::Drop => Action::Drop,
        Fault::Duplicate => Action::Duplicate,
        Fault::Delay => Action::Delay,
        // From the proxy, "the sender dies before sending" is: kill it and lose the message.
        Fault::KillSenderBeforeSend => Action::KillBefore(party),
        Fault::KillSenderAfterSend => Action::KillAfter(party),
        Fault::KillReceiverBeforeReceive => Action::KillBefore(party),
        // …and "the receiver dies after receiving" is: deliver, then kill it.
        Fault::KillReceiverAfterReceive => Action::KillAfter(party),
        Fault::Crash(_) => return None,
    };
    Some((
        mn,
        Plan {
            method,
            prefix,
            suffix,
            response,
            action,
        },
    ))
}

impl Runner {
    /// A runner over a fresh deployment.
    pub fn new(deployment: Deployment) -> Runner {
        Runner {
            deployment,
            memory: Memory::default(),
            tally: Tally::default(),
            n: 0,
        }
    }

    /// Runs one schedule: one purchase with its fault, then recovery, then every checker.
    /// Returns the violations found (empty: all guarantees held).
    pub fn run(&mut self, s: Schedule) -> Result<Vec<Violation>, DeployError> {
        self.n += 1;
        let n = self.n;
        let d = &mut self.deployment;
        let db = check::open_db(&d.ledger_db()).map_err(other)?;
        let before = check::balances(&db).map_err(other)?;
        d.cm.take_seen();
        d.mn.take_seen();
        // Arm the fault.
        let mut crash_wallet = None;
        match s.fault {
            Fault::Crash(point) => match s.party {
                Party::Customer => crash_wallet = Some(point),
                Party::Merchant => d.start_merchant(Some(point))?,
                Party::Billing => d.start_server(Some(point))?,
            },
            f => {
                if let Some((mn, p)) = plan(s.step, f, s.party) {
                    if mn {
                        d.mn.arm(Some(p));
                    } else {
                        d.cm.arm(Some(p));
                    }
                }
            }
        }
        // The purchase.
        let wallet = d.wallet_dir().to_string_lossy().into_owned();
        let out = d.path(&format!("out/{n}.txt"));
        let cm = d.cm.url();
        let (status, _) = d.run(
            &[
                "wallet", "--dir", &wallet, "buy", &cm, PRODUCT, "--out", &out,
            ],
            crash_wallet,
            BUY_LIMIT,
        )?;
        let hit = match s.fault {
            Fault::Crash(_) => match s.party {
                // A crash point reached aborts the process (SIGABRT: no exit code).
                Party::Customer => status.is_some_and(|st| st.code().is_none()),
                p => !d.alive(p),
            },
            _ => d.cm.fired() || d.mn.fired(),
        };
        *if hit {
            self.tally.injected.entry(s).or_default()
        } else {
            self.tally.missed.entry(s).or_default()
        } += 1;
        d.cm.arm(None);
        d.mn.arm(None);
        // Restart: a crashed or killed party comes back; an armed one comes back unarmed.
        let armed = matches!(s.fault, Fault::Crash(_));
        if (armed && s.party == Party::Billing) || !d.alive(Party::Billing) {
            d.start_server(None)?;
        }
        if (armed && s.party == Party::Merchant) || !d.alive(Party::Merchant) {
            d.start_merchant(None)?;
        }
        // Recovery: the wallet drives every unfinished purchase to its outcome.
        let mut recovered = false;
        for _ in 0..RECOVER_ROUNDS {
            let (st, _) = d.run(&["wallet", "--dir", &wallet, "recover"], None, BUY_LIMIT)?;
            if st.is_some_and(|s| s.success()) {
                recovered = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let mut v = Vec::new();
        let records = check::wallet_records(&d.wallet_dir()).map_err(other)?;
        if !recovered {
            v.push(Violation {
                checker: Checker::GoodsAtomicity,
                detail: format!("`wallet recover` did not finish in {RECOVER_ROUNDS} rounds"),
            });
        }
        // 1. Conservation.
        let server = format!("http://{}", d.server_addr);
        let (st, out) = d.run(
            &["admin", "--server", &server, "conservation"],
            None,
            BUY_LIMIT,
        )?;
        self.check(
            &mut v,
            Checker::Conservation,
            (!st.is_some_and(|s| s.success()))
                .then(|| format!("`netbill admin conservation` failed: {}", out.trim())),
        );
        // 2. One outcome per EPOID, acknowledged outcomes kept.
        let outcomes = check::outcomes(&db).map_err(other)?;
        let r = check::one_outcome(&outcomes, &self.memory, &records);
        self.check(&mut v, Checker::OneOutcome, r);
        // 3. Goods atomicity.
        let after = check::balances(&db).map_err(other)?;
        let debited =
            before.get("alice").copied().unwrap_or(0) - after.get("alice").copied().unwrap_or(0);
        let new: Vec<_> = records
            .iter()
            .filter(|(id, _)| !self.memory.records.contains(*id))
            .map(|(_, r)| r)
            .collect();
        let paid = new
            .iter()
            .filter(|r| {
                check::record_epoid(r)
                    .and_then(|e| outcomes.get(&e))
                    .is_some_and(|x| x == "committed")
            })
            .count() as u64;
        let r = check::goods_atomicity(
            &new,
            &outcomes,
            crate::deploy::ARTICLE,
            debited,
            PRICE_MINOR,
        );
        self.check(&mut v, Checker::GoodsAtomicity, r);
        self.tally.paid += paid;
        self.tally.unpaid += u64::from(paid == 0);
        // 4. Idempotence: replay the EPO and the endorsement; nothing may change.
        let r = replay(&self.deployment, &db, &records, &outcomes);
        self.check(&mut v, Checker::Idempotence, r);
        // 5. The journal replays to the account table.
        let r = check::journal_replay(&db).map_err(other)?;
        self.check(&mut v, Checker::JournalReplay, r);
        self.memory.outcomes = check::outcomes(&db).map_err(other)?;
        self.memory.records = records.into_keys().collect();
        self.tally.schedules += 1;
        Ok(v)
    }

    fn check(&mut self, v: &mut Vec<Violation>, c: Checker, found: Option<String>) {
        match found {
            Some(detail) => v.push(Violation { checker: c, detail }),
            None => *self.tally.passed.entry(c).or_default() += 1,
        }
    }
}

fn other(e: String) -> DeployError {
    DeployError::Io(std::io::Error::other(e))
}

type Receipt = netbill_proto::Signed<netbill_proto::messages::Receipt>;

/// The receipt inside a status answer.
fn receipt_of(body: &[u8]) -> Option<Receipt> {
    #[derive(serde::Deserialize)]
    struct Answer {
        receipt: Option<Receipt>,
    }
    serde_json::from_slice::<Answer>(body).ok()?.receipt
}

/// Checker 4: replays every EPO and endorsement of this schedule straight to the merchant
/// and the billing server; balances and outcomes must not move, and every answer carrying a
/// receipt must carry the one the wallet already holds (or, lacking one, the same each time).
fn replay(
    d: &Deployment,
    db: &rusqlite::Connection,
    records: &BTreeMap<String, netbill_wallet::PurchaseRecord>,
    outcomes: &BTreeMap<String, String>,
) -> Option<String> {
    let balances = check::balances(db).ok();
    let held: Vec<&Receipt> = records
        .values()
        .filter_map(|r| r.purchase.receipt.as_ref())
        .collect();
    let mut targets = Vec::new();
    for s in d.cm.take_seen() {
        if s.path.ends_with("/pay") {
            targets.push((d.merchant_addr, s));
        }
    }
    for s in d.mn.take_seen() {
        if s.path.starts_with("/v1/endorsements") {
            targets.push((d.server_addr, s));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (addr, s) in targets {
        let mut first: Option<Receipt> = None;
        for _ in 0..REPLAYS {
            if Instant::now() > deadline {
                return Some("replays took longer than 30 s".into());
            }
            let Ok((status, body)) = request(addr, &s.method, &s.path, &s.body) else {
                continue;
            };
            let Some(r) = receipt_of(&body).filter(|_| status == 200) else {
                continue;
            };
            if let Some(f) = &first
                && *f != r
            {
                return Some(format!(
                    "replaying {} {} gave two different receipts",
                    s.method, s.path
                ));
            }
            let epoid = &r.body_unverified().epoid;
            let mismatch = held
                .iter()
                .any(|h| h.body_unverified().epoid == *epoid && **h != r);
            if mismatch {
                return Some(format!(
                    "replaying {} {} gave a receipt other than the one the customer holds",
                    s.method, s.path
                ));
            }
            first = Some(r);
        }
    }
    if check::balances(db).ok() != balances {
        return Some("replaying messages moved money".into());
    }
    if check::outcomes(db).ok().as_ref() != Some(outcomes) {
        return Some("replaying messages changed the outcomes".into());
    }
    None
}
