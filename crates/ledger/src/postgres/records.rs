//! The signed records beside the money: evidence, refunds, checkpoints and adjustments.

use netbill_proto::billing::{self, RefundError, RefundFacts};
use netbill_proto::crypto::Digest;
use netbill_proto::messages::{Checkpoint, Endorsement, RefundReceipt, RefundRequest};
use netbill_proto::{AccountId, Amount, EpoId, Signed};
use postgres::{Client, GenericClient};

use super::{ACCOUNT_COLUMNS, PendingEntry, PgTx, account_from_row_at, ms, nonneg, totals_row};
use crate::sqlite::{account_id, corrupt, parse_endorsement, parse_result, signed_from};
use crate::{AccountRecord, Adjustment, PurchaseRecord, RefundFilter, RefundRecord, StoreError};

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn amount(v: i64, what: &str) -> Result<Amount, StoreError> {
    Amount::from_minor(nonneg(v, what)?).map_err(|_| corrupt(what.to_string()))
}

pub(super) fn endorsement(
    c: &mut Client,
    epoid: &EpoId,
) -> Result<Option<Signed<Endorsement>>, StoreError> {
    let row = c.query_opt(
        "SELECT endorsement FROM outcomes WHERE epoid = $1",
        &[&epoid.to_string()],
    )?;
    row.and_then(|r| r.try_get::<_, Option<String>>(0).transpose())
        .transpose()?
        .map(|j| parse_endorsement(&j))
        .transpose()
}

pub(super) fn purchases(
    c: &mut Client,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<PurchaseRecord>, StoreError> {
    let rows = c.query(
        "SELECT epoid, customer, merchant, price_minor, endorsement, receipt, receipt_sig
         FROM outcomes WHERE result = 'committed' AND epoid > $1 ORDER BY epoid LIMIT $2",
        &[&after.unwrap_or(""), &limit_i64(limit)],
    )?;
    rows.iter()
        .map(|r| {
            let customer: Option<String> = r.try_get(1)?;
            Ok(PurchaseRecord {
                epoid: r
                    .try_get::<_, &str>(0)?
                    .parse()
                    .map_err(|_| corrupt("epoid"))?,
                customer: account_id(
                    customer.ok_or_else(|| corrupt("purchase with no customer"))?,
                )?,
                merchant: account_id(r.try_get(2)?)?,
                price: amount(r.try_get(3)?, "price")?,
                endorsement: r
                    .try_get::<_, Option<String>>(4)?
                    .map(|j| parse_endorsement(&j))
                    .transpose()?,
                receipt: signed_from(r.try_get(5)?, r.try_get(6)?)?,
            })
        })
        .collect()
}

pub(super) fn accounts(
    c: &mut Client,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<AccountRecord>, StoreError> {
    let rows = c.query(
        &format!("SELECT id, {ACCOUNT_COLUMNS} FROM accounts WHERE id > $1 ORDER BY id LIMIT $2"),
        &[&after.unwrap_or(""), &limit_i64(limit)],
    )?;
    rows.iter()
        .map(|r| account_from_row_at(&account_id(r.try_get(0)?)?, r, 1))
        .collect()
}

/// The purchase a refund names, locked so that refunds of one purchase run one at a time.
fn refund_facts(
    tx: &mut impl GenericClient,
    epoid: &EpoId,
) -> Result<Option<RefundFacts>, StoreError> {
    let Some(r) = tx.query_opt(
        "SELECT result, merchant, customer, price_minor FROM outcomes WHERE epoid = $1 FOR UPDATE",
        &[&epoid.to_string()],
    )?
    else {
        return Ok(None);
    };
    let refunded: i64 = tx
        .query_one(
            "SELECT COALESCE(SUM(amount_minor), 0)::BIGINT FROM refunds WHERE epoid = $1",
            &[&epoid.to_string()],
        )?
        .try_get(0)?;
    Ok(Some(RefundFacts {
        result: parse_result(r.try_get(0)?)?,
        merchant: account_id(r.try_get(1)?)?,
        customer: r
            .try_get::<_, Option<String>>(2)?
            .map(account_id)
            .transpose()?,
        price: amount(r.try_get(3)?, "price")?,
        refunded: amount(refunded, "refunded")?,
    }))
}

pub(super) fn refund(
    t: &mut PgTx<'_>,
    request: &Signed<RefundRequest>,
    request_digest: Digest,
    sign: &mut dyn FnMut(Amount, Amount) -> Signed<RefundReceipt>,
    now_ms: u64,
) -> Result<Signed<RefundReceipt>, StoreError> {
    let req = request.body_unverified();
    let facts = refund_facts(t.tx.get_mut(), &req.epoid)?;
    // Under the purchase's lock: an earlier refund with this id has committed or not begun.
    if let Some(r) = t.tx.get_mut().query_opt(
        "SELECT request, request_sig, receipt, receipt_sig FROM refunds WHERE refund_id = $1",
        &[&req.refund_id],
    )? {
        let earlier: Signed<RefundRequest> = signed_from(r.try_get(0)?, r.try_get(1)?)?;
        return if crate::same_refund(earlier.body_unverified(), req) {
            signed_from(r.try_get(2)?, r.try_get(3)?)
        } else {
            Err(RefundError::IdConflict(req.refund_id.clone()).into())
        };
    }
    let (customer, total) = billing::decide_refund(req, facts.as_ref())?;
    let price = facts.map_or(Amount::ZERO, |f| f.price);
    crate::LedgerTx::lock_accounts(t, &[req.merchant.clone(), customer.clone()])?;
    let balance = t.touch(&req.merchant)?;
    t.touch(&customer)?;
    let limit = t
        .accounts
        .get_mut()
        .get(&req.merchant)
        .map_or(0, |a| a.rec.credit_limit_minor);
    if balance
        .checked_sub(req.amount.signed())
        .is_none_or(|after| after < -limit)
    {
        return Err(RefundError::MerchantFunds {
            merchant: req.merchant.clone(),
            balance: netbill_proto::money::format_minor(balance),
            amount: req.amount,
        }
        .into());
    }
    t.add(&req.merchant, -req.amount.signed())?;
    t.add(&customer, req.amount.signed())?;
    let receipt = sign(total, price);
    let inserted = t.tx.get_mut().execute(
        "INSERT INTO refunds (refund_id, epoid, merchant, customer, amount_minor, request,
           request_sig, request_digest, receipt, receipt_sig, decided_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (refund_id) DO NOTHING",
        &[
            &req.refund_id,
            &req.epoid.to_string(),
            &req.merchant.as_str(),
            &customer.as_str(),
            &req.amount.signed(),
            &request.bytes(),
            &request.signature().0.as_slice(),
            &request_digest.0.as_slice(),
            &receipt.bytes(),
            &receipt.form().to_bytes(),
            &ms(now_ms),
        ],
    )?;
    if inserted != 1 {
        // Another server used this id for a refund of another purchase meanwhile: run
        // again, and answer from what it stored.
        t.raced = true;
        return Err(RefundError::IdConflict(req.refund_id.clone()).into());
    }
    t.journal.push(PendingEntry {
        kind: "refund",
        debit: Some(req.merchant.clone()),
        credit: Some(customer),
        amount: req.amount,
        epoid: Some(req.epoid.clone()),
        memo: req.refund_id.clone(),
        at_ms: now_ms,
    });
    Ok(receipt)
}

pub(super) fn refunds(
    c: &mut Client,
    filter: RefundFilter<'_>,
    limit: usize,
) -> Result<Vec<RefundRecord>, StoreError> {
    const COLUMNS: &str = "refund_id, epoid, merchant, customer, amount_minor, request,
        request_sig, receipt, receipt_sig, decided_ms";
    let limit = limit_i64(limit);
    let rows = match filter {
        RefundFilter::All { after } => c.query(
            &format!(
                "SELECT {COLUMNS} FROM refunds WHERE refund_id > $1 ORDER BY refund_id LIMIT $2"
            ),
            &[&after.unwrap_or(""), &limit],
        )?,
        RefundFilter::Purchase(epoid) => c.query(
            &format!(
                "SELECT {COLUMNS} FROM refunds WHERE epoid = $1
                 ORDER BY decided_ms, refund_id LIMIT $2"
            ),
            &[&epoid.to_string(), &limit],
        )?,
        RefundFilter::Account { id, from_ms, to_ms } => c.query(
            &format!(
                "SELECT {COLUMNS} FROM refunds WHERE (customer = $1 OR merchant = $1)
                 AND decided_ms >= $2 AND decided_ms < $3
                 ORDER BY decided_ms DESC, refund_id DESC LIMIT $4"
            ),
            &[&id.as_str(), &ms(from_ms), &ms(to_ms), &limit],
        )?,
    };
    rows.iter()
        .map(|r| {
            Ok(RefundRecord {
                refund_id: r.try_get(0)?,
                epoid: r
                    .try_get::<_, &str>(1)?
                    .parse()
                    .map_err(|_| corrupt("epoid"))?,
                merchant: account_id(r.try_get(2)?)?,
                customer: account_id(r.try_get(3)?)?,
                amount: amount(r.try_get(4)?, "amount")?,
                request: signed_from(r.try_get(5)?, r.try_get(6)?)?,
                receipt: signed_from(r.try_get(7)?, r.try_get(8)?)?,
                decided_ms: nonneg(r.try_get(9)?, "time")?,
            })
        })
        .collect()
}

pub(super) fn add_checkpoint(c: &mut Client, cp: &Signed<Checkpoint>) -> Result<bool, StoreError> {
    let n = c.execute(
        "INSERT INTO checkpoints (seq, body, sig) VALUES ($1, $2, $3) ON CONFLICT (seq) DO NOTHING",
        &[
            &ms(cp.body_unverified().seq),
            &cp.bytes(),
            &cp.signature().0.as_slice(),
        ],
    )?;
    Ok(n == 1)
}

pub(super) fn checkpoints(
    c: &mut Client,
    after: u64,
    limit: usize,
) -> Result<Vec<Signed<Checkpoint>>, StoreError> {
    let rows = c.query(
        "SELECT body, sig FROM checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2",
        &[&ms(after), &limit_i64(limit)],
    )?;
    rows.iter()
        .map(|r| signed_from(r.try_get(0)?, r.try_get(1)?))
        .collect()
}

pub(super) fn adjust(
    t: &mut PgTx<'_>,
    adjustments: &[Adjustment],
    now_ms: u64,
) -> Result<(), StoreError> {
    t.check_all = true;
    let ids: Vec<AccountId> = adjustments.iter().map(|a| a.account.clone()).collect();
    crate::LedgerTx::lock_accounts(t, &ids)?;
    for a in adjustments {
        t.touch(&a.account)?;
        t.add(&a.account, a.delta_minor)?;
        let (debit, credit) = crate::adjustment_sides(a);
        t.journal.push(PendingEntry {
            kind: "adjustment",
            debit: debit.cloned(),
            credit: credit.cloned(),
            amount: crate::adjustment_amount(a)?,
            epoid: None,
            memo: a.memo.clone(),
            at_ms: now_ms,
        });
    }
    Ok(())
}

/// Conservation over all accounts, for a transaction that may restore it.
pub(super) fn check_all(tx: &mut impl GenericClient) -> Result<(), StoreError> {
    let balances: i64 = tx
        .query_one(
            "SELECT COALESCE(SUM(balance_minor), 0)::BIGINT FROM accounts",
            &[],
        )?
        .try_get(0)?;
    let (d, p) = totals_row(tx, "")?;
    if i128::from(balances) != i128::from(d) - i128::from(p) {
        return Err(StoreError::BadAdjustment(format!(
            "afterwards balances would sum to {} but deposits - payouts = {}: an adjustment may restore conservation, never break it",
            netbill_proto::money::format_minor(balances),
            netbill_proto::money::format_minor(d - p)
        )));
    }
    Ok(())
}
