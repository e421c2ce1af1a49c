//! The sorting station: decode, verify, and accept each indicium once.
//!
//! Seen-set design: one SQLite table per month of mailing (`seen_YYYYMM`, primary key
//! `(device, sequence)`, `WITHOUT ROWID`), so a duplicate check is a handful of B-tree point
//! lookups (one per live month, at most seven) whatever the total size, and purging six-month-old
//! entries is `DROP TABLE` of whole months: no row-by-row delete, no index rebuild.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::barcode::BarcodeError;
use crate::codec::DecodeError;
use crate::indicium::{DeliveryPoint, Indicium};
use crate::operator::TrustStore;
use crate::{DeviceId, MailDate};

/// Devices that `SeenStore::preload` spreads synthetic entries over.
pub const PRELOAD_DEVICES: u32 = 1000;

/// Months an indicium stays valid after its date of mailing.
pub const VALIDITY_MONTHS: u32 = 6;

/// Why a station refuses an indicium.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The image holds no readable barcode.
    #[error("{0}")]
    Unreadable(BarcodeError),
    /// The bytes are not a well-formed indicium (altered or not ours).
    #[error("malformed indicium data ({0})")]
    Malformed(DecodeError),
    /// No published certificate with this serial.
    #[error("unknown device certificate serial {0}: not issued by this operator")]
    UnknownCertificate(u32),
    /// The certificate names another device.
    #[error("certificate {serial} belongs to device {cert_device}, not to device {device}")]
    CertificateMismatch {
        /// Serial.
        serial: u32,
        /// Device in the certificate.
        cert_device: DeviceId,
        /// Device in the indicium.
        device: DeviceId,
    },
    /// The certificate was revoked.
    #[error("device certificate {0} is revoked")]
    Revoked(u32),
    /// The signature does not verify: forged, or data altered after signing.
    #[error("signature invalid: the indicium was forged or altered")]
    BadSignature,
    /// The date of mailing is outside the certificate's validity.
    #[error("date of mailing {date} is outside certificate {serial}'s validity")]
    CertificateExpired {
        /// Serial.
        serial: u32,
        /// Date of mailing.
        date: MailDate,
    },
    /// Date of mailing after today.
    #[error("future-dated: date of mailing {date} is after today {today}")]
    FutureDated {
        /// Date of mailing.
        date: MailDate,
        /// Station's today.
        today: MailDate,
    },
    /// More than six months old.
    #[error("expired: mailed {date}, valid until {valid_until} (six months)")]
    Expired {
        /// Date of mailing.
        date: MailDate,
        /// Last valid day.
        valid_until: MailDate,
    },
    /// Addressed to another delivery area.
    #[error("wrong destination: addressed to {destination}, this station sorts for {station}")]
    WrongDestination {
        /// Destination in the indicium.
        destination: DeliveryPoint,
        /// Station's delivery area.
        station: String,
    },
    /// `(device, sequence)` was already accepted.
    #[error(
        "copied indicium: device {device} sequence {sequence} was already accepted on {first_seen}"
    )]
    Duplicate {
        /// Device.
        device: DeviceId,
        /// Sequence.
        sequence: u32,
        /// When it was first accepted.
        first_seen: MailDate,
    },
}

impl Rejection {
    /// A short stable code for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Unreadable(_) => "unreadable",
            Rejection::Malformed(_) => "malformed",
            Rejection::UnknownCertificate(_) => "unknown-certificate",
            Rejection::CertificateMismatch { .. } => "certificate-mismatch",
            Rejection::Revoked(_) => "revoked",
            Rejection::BadSignature => "bad-signature",
            Rejection::CertificateExpired { .. } => "certificate-expired",
            Rejection::FutureDated { .. } => "future-dated",
            Rejection::Expired { .. } => "expired",
            Rejection::WrongDestination { .. } => "wrong-destination",
            Rejection::Duplicate { .. } => "duplicate",
        }
    }
}

/// Station failures (as opposed to verdicts on indicia).
#[derive(Debug, thiserror::Error)]
pub enum StationError {
    /// The delivery area is not 3 or 5 digits.
    #[error(
        "invalid station delivery area {0:?}: give a 5-digit ZIP (e.g. 10001) or a 3-digit ZIP prefix (e.g. 100)"
    )]
    InvalidArea(String),
    /// Database failure.
    #[error("station store {context}: {source}")]
    Db {
        /// What was being done.
        context: &'static str,
        /// Cause.
        source: rusqlite::Error,
    },
}

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StationError {
    move |source| StationError::Db { context, source }
}

/// Checks everything that needs no seen-set: signature, certificate, destination, dates.
pub fn verify_indicium(
    trust: &TrustStore,
    area: &str,
    bytes: &[u8],
    today: MailDate,
) -> Result<Indicium, Rejection> {
    let ind = Indicium::from_bytes(bytes).map_err(Rejection::Malformed)?;
    let (cert, key) = trust
        .certs
        .get(&ind.cert_serial)
        .ok_or(Rejection::UnknownCertificate(ind.cert_serial))?;
    if cert.device_id != ind.device_id {
        return Err(Rejection::CertificateMismatch {
            serial: cert.serial,
            cert_device: cert.device_id,
            device: ind.device_id,
        });
    }
    if trust.revoked.contains(&cert.serial) {
        return Err(Rejection::Revoked(cert.serial));
    }
    if !ind.verify_signature(key) {
        return Err(Rejection::BadSignature);
    }
    if ind.date < cert.valid_from || ind.date > cert.valid_until {
        return Err(Rejection::CertificateExpired {
            serial: cert.serial,
            date: ind.date,
        });
    }
    if ind.date > today {
        return Err(Rejection::FutureDated {
            date: ind.date,
            today,
        });
    }
    let valid_until = ind.date.add_months(VALIDITY_MONTHS);
    if today > valid_until {
        return Err(Rejection::Expired {
            date: ind.date,
            valid_until,
        });
    }
    if !ind.destination.zip().to_string().starts_with(area) {
        return Err(Rejection::WrongDestination {
            destination: ind.destination,
            station: area.to_string(),
        });
    }
    Ok(ind)
}

/// The station's seen-set: `(device, sequence)` of accepted indicia, one table per month.
pub struct SeenStore {
    conn: Connection,
    partitions: Vec<u32>,
}

/// A sorting station: trust store, delivery area and seen-set.
pub struct Station {
    store: SeenStore,
    trust: TrustStore,
    area: String,
}

fn table(month: u32) -> String {
    format!("seen_{month}")
}

impl SeenStore {
    /// Opens (creating if needed) the seen-set database at `path`.
    pub fn open(path: &Path) -> Result<SeenStore, StationError> {
        let conn = Connection::open(path).map_err(db("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db("configure"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("configure"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db("configure"))?;
        let mut st = SeenStore {
            conn,
            partitions: Vec::new(),
        };
        st.refresh_partitions()?;
        Ok(st)
    }

    fn refresh_partitions(&mut self) -> Result<(), StationError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'seen\\_%' ESCAPE '\\'")
            .map_err(db("list partitions"))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db("list partitions"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("list partitions"))?;
        drop(stmt);
        self.partitions = names
            .iter()
            .filter_map(|n| n.strip_prefix("seen_")?.parse().ok())
            .collect();
        self.partitions.sort_unstable();
        Ok(())
    }

    /// Month partitions currently in the store (`YYYYMM`).
    pub fn partitions(&self) -> &[u32] {
        &self.partitions
    }

    fn ensure_partition(&mut self, month: u32) -> Result<(), StationError> {
        if self.partitions.binary_search(&month).is_err() {
            self.conn
                .execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (device INTEGER NOT NULL, sequence INTEGER NOT NULL, \
                     seen_on INTEGER NOT NULL, reissue INTEGER NOT NULL, PRIMARY KEY (device, sequence)) WITHOUT ROWID",
                    table(month)
                ))
                .map_err(db("create partition"))?;
            self.refresh_partitions()?;
        }
        Ok(())
    }

    fn seen(&self, device: DeviceId, sequence: u32) -> Result<Option<MailDate>, StationError> {
        // A device never reuses a sequence number, so look in every live month: this also
        // catches a device whose state was rolled back and reprints old sequence numbers.
        for month in self.partitions.iter().rev() {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT seen_on FROM {} WHERE device = ?1 AND sequence = ?2",
                    table(*month)
                ))
                .map_err(db("look up"))?;
            let hit: Option<i64> = stmt
                .query_row(params![device.0 as i64, i64::from(sequence)], |r| r.get(0))
                .optional()
                .map_err(db("look up"))?;
            if let Some(d) = hit {
                return Ok(Some(MailDate(u16::try_from(d).unwrap_or(0))));
            }
        }
        Ok(None)
    }

    fn record(&mut self, ind: &Indicium, today: MailDate) -> Result<(), StationError> {
        let month = ind.date.month_key();
        self.ensure_partition(month)?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "INSERT INTO {} (device, sequence, seen_on, reissue) VALUES (?1, ?2, ?3, ?4)",
                table(month)
            ))
            .map_err(db("record"))?;
        stmt.execute(params![
            ind.device_id.0 as i64,
            i64::from(ind.sequence),
            i64::from(today.0),
            ind.is_reissue()
        ])
        .map_err(db("record"))?;
        Ok(())
    }

    /// Drops every month partition all of whose entries are more than six months old.
    /// Returns the months dropped (`YYYYMM`).
    pub fn purge(&mut self, today: MailDate) -> Result<Vec<u32>, StationError> {
        let mut dropped = Vec::new();
        for month in self.partitions.clone() {
            let (y, m) = (i64::from(month / 100), month % 100);
            let Some(first) = MailDate::from_ymd(y, m, 1) else {
                continue;
            };
            // The latest date of mailing in this month expires last.
            if first.end_of_month().add_months(VALIDITY_MONTHS) < today {
                self.conn
                    .execute_batch(&format!("DROP TABLE IF EXISTS {}", table(month)))
                    .map_err(db("drop partition"))?;
                dropped.push(month);
            }
        }
        self.refresh_partitions()?;
        Ok(dropped)
    }

    /// Records about `count` synthetic entries in the partition of `date`, spread over 1000
    /// devices with ids from `first_device`, in one transaction: used by `bench --preload` to
    /// measure against a large store. Returns the number of sequences per device.
    pub fn preload(
        &mut self,
        date: MailDate,
        first_device: DeviceId,
        count: u32,
    ) -> Result<u32, StationError> {
        let month = date.month_key();
        self.ensure_partition(month)?;
        let per_device = count.div_ceil(PRELOAD_DEVICES).max(1);
        let tx = self.conn.transaction().map_err(db("begin"))?;
        {
            let mut stmt = tx
                .prepare(&format!(
                    "INSERT OR IGNORE INTO {} (device, sequence, seen_on, reissue) VALUES (?1, ?2, ?3, 0)",
                    table(month)
                ))
                .map_err(db("preload"))?;
            for d in 0..u64::from(PRELOAD_DEVICES) {
                let device = first_device.0.saturating_add(d) as i64;
                for seq in 1..=per_device {
                    stmt.execute(params![device, i64::from(seq), i64::from(date.0)])
                        .map_err(db("preload"))?;
                }
            }
        }
        tx.commit().map_err(db("commit"))?;
        Ok(per_device)
    }

    /// When `(device, sequence)` was accepted, if ever (looks in every live month).
    pub fn lookup(
        &self,
        device: DeviceId,
        sequence: u32,
    ) -> Result<Option<MailDate>, StationError> {
        self.seen(device, sequence)
    }

    /// Number of recorded entries per partition.
    pub fn counts(&self) -> Result<Vec<(u32, u64)>, StationError> {
        self.partitions
            .iter()
            .map(|m| {
                self.conn
                    .query_row(&format!("SELECT count(*) FROM {}", table(*m)), [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map(|n| (*m, n as u64))
                    .map_err(db("count"))
            })
            .collect()
    }
}

impl Station {
    /// Opens a station for a delivery area (5-digit ZIP or 3-digit prefix) with its seen-set at `path`.
    pub fn open(path: &Path, trust: TrustStore, area: &str) -> Result<Station, StationError> {
        let area = area.trim();
        if !(area.len() == 3 || area.len() == 5) || !area.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StationError::InvalidArea(area.to_string()));
        }
        Ok(Station {
            store: SeenStore::open(path)?,
            trust,
            area: area.to_string(),
        })
    }

    /// The seen-set.
    pub fn store(&mut self) -> &mut SeenStore {
        &mut self.store
    }

    /// Verifies a batch of decoded payloads (or decode failures) in one transaction, recording
    /// each accepted `(device, sequence)`. Returns one verdict per item.
    pub fn check_batch(
        &mut self,
        items: &[Result<Vec<u8>, BarcodeError>],
        today: MailDate,
    ) -> Result<Vec<Result<Indicium, Rejection>>, StationError> {
        self.store
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(db("begin"))?;
        let result = self.check_items(items, today);
        match result {
            Ok(v) => {
                self.store
                    .conn
                    .execute_batch("COMMIT")
                    .map_err(db("commit"))?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.store.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn check_items(
        &mut self,
        items: &[Result<Vec<u8>, BarcodeError>],
        today: MailDate,
    ) -> Result<Vec<Result<Indicium, Rejection>>, StationError> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let verdict = match item {
                Err(e) => Err(Rejection::Unreadable(e.clone())),
                Ok(bytes) => match verify_indicium(&self.trust, &self.area, bytes, today) {
                    Err(r) => Err(r),
                    Ok(ind) => match self.store.seen(ind.device_id, ind.sequence)? {
                        Some(first_seen) => Err(Rejection::Duplicate {
                            device: ind.device_id,
                            sequence: ind.sequence,
                            first_seen,
                        }),
                        None => {
                            self.store.record(&ind, today)?;
                            Ok(ind)
                        }
                    },
                },
            };
            out.push(verdict);
        }
        Ok(out)
    }

    /// Verifies one payload and records it if accepted.
    pub fn check(
        &mut self,
        bytes: &[u8],
        today: MailDate,
    ) -> Result<Result<Indicium, Rejection>, StationError> {
        let mut v = self.check_batch(&[Ok(bytes.to_vec())], today)?;
        Ok(v.pop()
            .unwrap_or(Err(Rejection::Unreadable(BarcodeError::NotFound))))
    }
}
