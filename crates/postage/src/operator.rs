//! The postal operator: its signing key, device certificates, funding credits, revocation,
//! audit of device reports, and the published trust store that sorting stations load.
//!
//! Layout of an operator directory:
//! `operator.key` (0600, hex seed), `public/operator.pub`, `public/certs/<serial>.cert`,
//! `public/revoked` (one serial per line), `registry/` (counters and credits issued per device).
//! Stations need only `public/`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::cert::{CERT_LEN, DeviceCertificate};
use crate::credit::FundingCredit;
use crate::device::{DeviceError, DeviceReport};
use crate::fsutil;
use crate::{DeviceId, MailDate, Postage};

const KEY_FILE: &str = "operator.key";
const PUB_FILE: &str = "operator.pub";
const SMALL_FILE_MAX: u64 = 4096;
const REVOKED_MAX: u64 = 16 * 1024 * 1024;
/// Months a device certificate is valid for.
pub const CERT_VALIDITY_MONTHS: u32 = 60;

/// Operator-side failures.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No operator in the directory.
    #[error("{0} holds no operator key; create one with `netbill postage operator init --dir {0}`")]
    NotInitialised(PathBuf),
    /// An operator already exists.
    #[error("{0} already holds an operator key; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// A key or counter file is damaged.
    #[error("{0} is damaged: {1}")]
    Damaged(PathBuf, String),
    /// The device is not registered with this operator.
    #[error(
        "device {0} has no certificate from this operator; initialise it with `netbill postage device init`"
    )]
    UnknownDevice(DeviceId),
    /// The certificate serial is unknown.
    #[error("no certificate with serial {0}")]
    UnknownSerial(u32),
    /// No such credit was issued.
    #[error("credit #{number} was never issued to device {device}")]
    UnknownCredit {
        /// Device.
        device: DeviceId,
        /// Credit number.
        number: u32,
    },
    /// Credit amount must be positive.
    #[error("credit amount must be positive")]
    ZeroCredit,
    /// File system failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Device-side failure during device creation.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> OperatorError {
    let context = context.into();
    move |source| OperatorError::Io { context, source }
}

/// Reads a small text file of this directory, refusing anything larger than `max` bytes.
fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    let bytes = fsutil::read_limited(path, max)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn read_hex32(path: &Path) -> Result<Zeroizing<[u8; 32]>, OperatorError> {
    let text = Zeroizing::new(
        read_text(path, SMALL_FILE_MAX)
            .map_err(io_err(format!("cannot read {}", path.display())))?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut out[..])
        .map_err(|_| OperatorError::Damaged(path.to_path_buf(), "expected 64 hex digits".into()))?;
    Ok(out)
}

fn read_counter(path: &Path) -> Result<u64, OperatorError> {
    match read_text(path, SMALL_FILE_MAX) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| OperatorError::Damaged(path.to_path_buf(), "expected a number".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(format!("cannot read {}", path.display()))(e)),
    }
}

/// Result of auditing a device report against the operator's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    /// The report's content.
    pub report: DeviceReport,
    /// Sum of the credits the operator issued that the device says it accepted.
    pub credited: Postage,
    /// Problems found; empty when the report is consistent.
    pub findings: Vec<String>,
}

/// An operator directory with its signing key loaded.
pub struct Operator {
    dir: PathBuf,
    key: SigningKey,
}

impl Operator {
    /// Creates a new operator key pair in `dir`.
    pub fn init(dir: &Path) -> Result<Operator, OperatorError> {
        if dir.join(KEY_FILE).exists() {
            return Err(OperatorError::AlreadyExists(dir.to_path_buf()));
        }
        for sub in ["public/certs", "registry"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(io_err(format!("cannot create {}", dir.display())))?;
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::fill(&mut seed[..]);
        let key = SigningKey::from_bytes(&seed);
        let hex_seed = Zeroizing::new(hex::encode(&seed[..]));
        fsutil::write_file(&dir.join(KEY_FILE), hex_seed.as_bytes(), true)
            .map_err(io_err("cannot write the operator key"))?;
        let public = format!("{}\n", hex::encode(key.verifying_key().to_bytes()));
        fsutil::write_file(&dir.join("public").join(PUB_FILE), public.as_bytes(), false)
            .map_err(io_err("cannot write the operator public key"))?;
        fsutil::write_file(&dir.join("public/revoked"), b"", false)
            .map_err(io_err("cannot write the revocation list"))?;
        Ok(Operator {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// Opens an existing operator directory.
    pub fn open(dir: &Path) -> Result<Operator, OperatorError> {
        if !dir.join(KEY_FILE).exists() {
            return Err(OperatorError::NotInitialised(dir.to_path_buf()));
        }
        let seed = read_hex32(&dir.join(KEY_FILE))?;
        Ok(Operator {
            dir: dir.to_path_buf(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The operator's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The directory stations load as their trust store.
    pub fn public_dir(&self) -> PathBuf {
        self.dir.join("public")
    }

    fn next_counter(&self, name: &str) -> Result<u64, OperatorError> {
        let path = self.dir.join("registry").join(name);
        let n = read_counter(&path)? + 1;
        fsutil::replace_atomically(&path, n.to_string().as_bytes(), false)
            .map_err(io_err(format!("cannot update {}", path.display())))?;
        Ok(n)
    }

    /// Allocates a fresh device id.
    pub fn allocate_device_id(&self) -> Result<DeviceId, OperatorError> {
        Ok(DeviceId(self.next_counter("next_device")?))
    }

    /// Issues and publishes a certificate for a device public key.
    pub fn certify(
        &self,
        device_id: DeviceId,
        public_key: [u8; 32],
        today: MailDate,
    ) -> Result<DeviceCertificate, OperatorError> {
        let serial = u32::try_from(self.next_counter("next_serial")?).map_err(|_| {
            OperatorError::Damaged(
                self.dir.join("registry/next_serial"),
                "serials exhausted".into(),
            )
        })?;
        let cert = DeviceCertificate::issue(
            &self.key,
            serial,
            device_id,
            public_key,
            today,
            today.add_months(CERT_VALIDITY_MONTHS),
        );
        let path = self
            .public_dir()
            .join("certs")
            .join(format!("{serial:010}.cert"));
        fsutil::write_file(&path, &cert.to_bytes(), false)
            .map_err(io_err("cannot publish the certificate"))?;
        fsutil::write_file(
            &self
                .dir
                .join("registry")
                .join(format!("device-{}.cert", device_id.0)),
            serial.to_string().as_bytes(),
            false,
        )
        .map_err(io_err("cannot record the device"))?;
        Ok(cert)
    }

    fn credits_path(&self, device_id: DeviceId) -> PathBuf {
        self.dir
            .join("registry")
            .join(format!("device-{}.credits", device_id.0))
    }

    /// Credits issued to a device so far: `(number, amount)` in order.
    pub fn credits_issued(
        &self,
        device_id: DeviceId,
    ) -> Result<Vec<(u32, Postage)>, OperatorError> {
        let path = self.credits_path(device_id);
        let text = match read_text(&path, REVOKED_MAX) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("cannot read {}", path.display()))(e)),
        };
        let damaged =
            || OperatorError::Damaged(path.clone(), "expected lines `number mills`".into());
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (n, a) = l.trim().split_once(' ').ok_or_else(damaged)?;
                Ok((
                    n.parse().map_err(|_| damaged())?,
                    Postage(a.parse().map_err(|_| damaged())?),
                ))
            })
            .collect()
    }

    /// Issues the next single-use funding credit for a registered device.
    pub fn issue_credit(
        &self,
        device_id: DeviceId,
        amount: Postage,
        today: MailDate,
    ) -> Result<FundingCredit, OperatorError> {
        if amount.0 == 0 {
            return Err(OperatorError::ZeroCredit);
        }
        if !self
            .dir
            .join("registry")
            .join(format!("device-{}.cert", device_id.0))
            .exists()
        {
            return Err(OperatorError::UnknownDevice(device_id));
        }
        let mut issued = self.credits_issued(device_id)?;
        let number = issued.len() as u32 + 1;
        let credit = FundingCredit::issue(&self.key, device_id, number, amount, today);
        issued.push((number, amount));
        let text: String = issued
            .iter()
            .map(|(n, a)| format!("{n} {}\n", a.0))
            .collect();
        fsutil::replace_atomically(&self.credits_path(device_id), text.as_bytes(), false)
            .map_err(io_err("cannot record the credit"))?;
        Ok(credit)
    }

    /// Signs credit `number` of a device again, with the amount recorded when it was first
    /// issued (for a credit lost before the device accepted it; the device still accepts each
    /// number once).
    pub fn resend_credit(
        &self,
        device_id: DeviceId,
        number: u32,
        today: MailDate,
    ) -> Result<FundingCredit, OperatorError> {
        let issued = self.credits_issued(device_id)?;
        let (_, amount) =
            issued
                .iter()
                .find(|(n, _)| *n == number)
                .ok_or(OperatorError::UnknownCredit {
                    device: device_id,
                    number,
                })?;
        Ok(FundingCredit::issue(
            &self.key, device_id, number, *amount, today,
        ))
    }

    /// Adds a certificate serial to the published revocation list.
    pub fn revoke(&self, serial: u32) -> Result<(), OperatorError> {
        let path = self
            .public_dir()
            .join("certs")
            .join(format!("{serial:010}.cert"));
        if !path.exists() {
            return Err(OperatorError::UnknownSerial(serial));
        }
        let list = self.public_dir().join("revoked");
        let mut text = match read_text(&list, REVOKED_MAX) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(format!("cannot read {}", list.display()))(e)),
        };
        text.push_str(&format!("{serial}\n"));
        fsutil::replace_atomically(&list, text.as_bytes(), false)
            .map_err(io_err("cannot update the revocation list"))
    }

    /// Checks a device report: signature by the certified key, register invariant, and control
    /// total against the credits this operator issued.
    pub fn audit(&self, report_bytes: &[u8]) -> Result<Audit, OperatorError> {
        let trust = TrustStore::load(&self.public_dir())?;
        let report = DeviceReport::from_bytes(report_bytes)
            .map_err(|e| OperatorError::Damaged(PathBuf::from("report"), e.to_string()))?;
        let mut findings = Vec::new();
        match trust.certs.get(&report.cert_serial) {
            None => findings.push(format!("unknown certificate serial {}", report.cert_serial)),
            Some((cert, key)) => {
                if cert.device_id != report.device_id {
                    findings.push("certificate belongs to another device".into());
                }
                if !report.verify(key) {
                    findings.push("device signature on the report is invalid".into());
                }
            }
        }
        if let Err(e) = report.registers.check_invariant() {
            findings.push(e.to_string());
        }
        let issued = self.credits_issued(report.device_id)?;
        let accepted = report.registers.credits_accepted as usize;
        if accepted > issued.len() {
            findings.push(format!(
                "device claims {accepted} credits but only {} were issued",
                issued.len()
            ));
        }
        let credited = Postage(issued.iter().take(accepted).map(|(_, a)| a.0).sum());
        if credited != report.registers.total_funded {
            findings.push(format!(
                "control total {} differs from credits accepted {}",
                report.registers.total_funded, credited
            ));
        }
        Ok(Audit {
            report,
            credited,
            findings,
        })
    }
}

/// What a sorting station trusts: the operator key, the published device certificates and
/// the revocation list.
pub struct TrustStore {
    /// Operator public key.
    pub operator: VerifyingKey,
    /// Valid certificates by serial, with the parsed device key.
    pub certs: HashMap<u32, (DeviceCertificate, VerifyingKey)>,
    /// Revoked certificate serials.
    pub revoked: HashSet<u32>,
}

impl TrustStore {
    /// Loads an operator's `public/` directory; certificates that do not verify are ignored.
    pub fn load(public: &Path) -> Result<TrustStore, OperatorError> {
        let pub_path = public.join(PUB_FILE);
        if !pub_path.exists() {
            return Err(OperatorError::NotInitialised(public.to_path_buf()));
        }
        let operator = VerifyingKey::from_bytes(&*read_hex32(&pub_path)?).map_err(|_| {
            OperatorError::Damaged(pub_path.clone(), "not an Ed25519 public key".into())
        })?;
        let mut certs = HashMap::new();
        let dir = public.join("certs");
        let entries =
            fs::read_dir(&dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
        for entry in entries.flatten() {
            let Ok(bytes) = fsutil::read_limited(&entry.path(), SMALL_FILE_MAX) else {
                continue;
            };
            if bytes.len() != CERT_LEN {
                continue;
            }
            let Ok(cert) = DeviceCertificate::from_bytes(&bytes) else {
                continue;
            };
            if !cert.verify(&operator) {
                continue;
            }
            let Some(key) = cert.verifying_key() else {
                continue;
            };
            certs.insert(cert.serial, (cert, key));
        }
        let revoked_path = public.join("revoked");
        let revoked = match fsutil::read_limited(&revoked_path, REVOKED_MAX) {
            Ok(b) => String::from_utf8_lossy(&b)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect(),
            Err(_) => HashSet::new(),
        };
        Ok(TrustStore {
            operator,
            certs,
            revoked,
        })
    }
}
