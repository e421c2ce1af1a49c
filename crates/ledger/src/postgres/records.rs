//! The signed records beside the money: evidence, refunds, checkpoints and adjustments.

use netbill_proto::billing::RefundFacts;
use netbill_proto::messages::{Checkpoint, Endorsement};
use netbill_proto::{Amount, EpoId, Signed};
use postgres::{Client, GenericClient};

use super::{ACCOUNT_COLUMNS, account_from_row_at, ms, nonneg};
use crate::rules::{RefundRow, StoredRefund};
use crate::sqlite::{account_id, corrupt, parse_endorsement, parse_result, signed_from};
use crate::{AccountRecord, PurchaseRecord, RefundFilter, RefundRecord, StoreError};

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
pub(super) fn refund_facts(
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

/// The refund stored under an id: its request and receipt.
pub(super) fn refund_by_id(
    tx: &mut impl GenericClient,
    refund_id: &str,
) -> Result<Option<StoredRefund>, StoreError> {
    tx.query_opt(
        "SELECT request, request_sig, receipt, receipt_sig FROM refunds WHERE refund_id = $1",
        &[&refund_id],
    )?
    .map(|r| {
        Ok((
            signed_from(r.try_get(0)?, r.try_get(1)?)?,
            signed_from(r.try_get(2)?, r.try_get(3)?)?,
        ))
    })
    .transpose()
}

/// Inserts a refund; `false` if its id exists.
pub(super) fn insert_refund(
    tx: &mut impl GenericClient,
    row: &RefundRow,
) -> Result<bool, StoreError> {
    let r = &row.record;
    let n = tx.execute(
        "INSERT INTO refunds (refund_id, epoid, merchant, customer, amount_minor, request,
           request_sig, request_digest, receipt, receipt_sig, decided_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (refund_id) DO NOTHING",
        &[
            &r.refund_id,
            &r.epoid.to_string(),
            &r.merchant.as_str(),
            &r.customer.as_str(),
            &r.amount.signed(),
            &r.request.bytes(),
            &r.request.signature().0.as_slice(),
            &row.request_digest.0.as_slice(),
            &r.receipt.bytes(),
            &r.receipt.form().to_bytes(),
            &ms(r.decided_ms),
        ],
    )?;
    Ok(n == 1)
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
