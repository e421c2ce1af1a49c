//! Filler rows for benchmarks: a ledger that already holds many accounts and outcomes, loaded
//! in bulk by the database itself (a generated series), not over the API.
//!
//! The rows fit the schema but are not real purchases: the accounts hold nothing and the
//! outcomes are aborts with random bytes where receipts would be. They exist so that
//! `netbill bench --preload-accounts … --preload-outcomes …` can show whether a purchase costs
//! more when the tables and indexes are large. Never load them into a ledger that matters:
//! its audit would (rightly) reject every one of them.

use crate::{StoreError, open_store};

/// Adds `accounts` customer accounts (`preload-1`, …, zero balances) and `outcomes` aborted
/// outcomes (EPOIDs `preload:T:I`) to the ledger at `url` (`sqlite://…` or `postgres://…`),
/// creating its schema first. `progress` is told how many rows are in after each chunk.
pub fn preload(
    url: &str,
    accounts: u64,
    outcomes: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    // Creates the schema (and applies migrations) through the normal path.
    drop(open_store(url)?);
    const CHUNK: u64 = 500_000;
    let mut done = 0;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        let mut run = |sql: &str, total: u64, done: &mut u64| -> Result<(), StoreError> {
            let mut from = 1;
            while from <= total {
                let to = (from + CHUNK - 1).min(total);
                client.execute(sql, &[&(from as i64), &(to as i64)])?;
                *done += to + 1 - from;
                progress(*done);
                from = to + 1;
            }
            Ok(())
        };
        run(
            "INSERT INTO accounts (id, kind, public_key, balance_minor, created_ms)
             SELECT 'preload-' || i, 'customer',
                    decode(md5(i::text) || md5((-i)::text), 'hex'), 0, 0
             FROM generate_series($1::bigint, $2::bigint) AS i",
            accounts,
            &mut done,
        )?;
        run(
            "INSERT INTO outcomes (epoid, result, customer, merchant, description, price_minor,
                                   receipt, receipt_sig, decided_ms)
             SELECT 'preload:' || (1700000000000 + i) || ':' || i, 'aborted', NULL, 'preload',
                    '', 0, decode(repeat(md5(i::text), 5), 'hex'),
                    decode(repeat(md5((-i)::text), 4), 'hex'), 1700000000000 + i
             FROM generate_series($1::bigint, $2::bigint) AS i",
            outcomes,
            &mut done,
        )?;
        client.execute("ANALYZE", &[])?;
        return Ok(());
    }
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    let mut conn = rusqlite::Connection::open(path)?;
    let mut run = |sql: &str, total: u64, done: &mut u64| -> Result<(), StoreError> {
        let mut from = 1;
        while from <= total {
            let to = (from + CHUNK - 1).min(total);
            let tx = conn.transaction()?;
            tx.execute(sql, rusqlite::params![from as i64, to as i64])?;
            tx.commit()?;
            *done += to + 1 - from;
            progress(*done);
            from = to + 1;
        }
        Ok(())
    };
    run(
        "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i < ?2)
         INSERT INTO accounts (id, kind, public_key, balance_minor, created_ms)
         SELECT 'preload-' || i, 'customer', randomblob(32), 0, 0 FROM s",
        accounts,
        &mut done,
    )?;
    run(
        "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i < ?2)
         INSERT INTO outcomes (epoid, result, customer, merchant, description, price_minor,
                               receipt, receipt_sig, decided_ms)
         SELECT 'preload:' || (1700000000000 + i) || ':' || i, 'aborted', NULL, 'preload', '',
                0, randomblob(80), randomblob(64), 1700000000000 + i FROM s",
        outcomes,
        &mut done,
    )?;
    conn.execute_batch("ANALYZE")?;
    Ok(())
}
