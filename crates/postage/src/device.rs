//! The postal security device (PSD): registers, atomic printing, single-use funding, sealed
//! state, and tamper response.
//!
//! On disk a device is a directory holding `seal.key` (the device's storage key, mode 0600;
//! it models key storage inside the tamper boundary) and `state.bin`, sealed with
//! ChaCha20-Poly1305: the registers are authenticated (associated data) and the signing key
//! is encrypted. Every change is written to a temp file, fsynced and renamed over the old
//! state, so a crash leaves the old or the new state. Any integrity failure erases the keys
//! and leaves the device in a terminal state, whose registers remain readable for audit.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::{Zeroize, Zeroizing};

use crate::cert::{CERT_LEN, DeviceCertificate};
use crate::codec::{DecodeError, Reader, Writer};
use crate::credit::FundingCredit;
use crate::fsutil;
use crate::indicium::{
    DeliveryPoint, FLAG_REISSUE, INDICIUM_LEN, Indicium, POSTAGE_MAX, REGISTER_MAX, RateCategory,
    Zip,
};
use crate::pkcs11::{Pkcs11Error, TokenConfig, TokenKey};
use crate::{DeviceId, MailDate, Postage};

/// File holding the sealed device state.
pub const STATE_FILE: &str = "state.bin";
/// File holding the device storage key (models key storage inside the tamper boundary).
pub const SEAL_KEY_FILE: &str = "seal.key";
/// Marker file written when the device enters the terminal tampered state.
pub const TAMPER_FILE: &str = "TAMPERED";
const LOCK_FILE: &str = "lock";
const STATE_MAGIC: &[u8; 8] = b"NBPSD\0\0\x01";
const STATE_MAX: u64 = 64 * 1024;
const PATH_MAX: usize = 4096;
const LABEL_MAX: usize = 64;

/// Points inside `print` and `fund` where a test can simulate a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Print: registers computed, nothing signed yet.
    PrintBeforeSign,
    /// Print: indicium signed, state not yet written.
    PrintAfterSign,
    /// Print: new state written to the temp file, not yet renamed.
    PrintTempWritten,
    /// Print: new state committed, indicium not yet handed out.
    PrintCommitted,
    /// Fund: credit verified, state not yet written.
    FundVerified,
    /// Fund: new state written to the temp file, not yet renamed.
    FundTempWritten,
    /// Fund: new state committed, result not yet returned.
    FundCommitted,
}

impl CrashPoint {
    /// All crash points of `print`.
    pub const PRINT: [CrashPoint; 4] = [
        CrashPoint::PrintBeforeSign,
        CrashPoint::PrintAfterSign,
        CrashPoint::PrintTempWritten,
        CrashPoint::PrintCommitted,
    ];
    /// All crash points of `fund`.
    pub const FUND: [CrashPoint; 3] = [
        CrashPoint::FundVerified,
        CrashPoint::FundTempWritten,
        CrashPoint::FundCommitted,
    ];
}

/// Everything that can go wrong with a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The directory does not hold a device.
    #[error(
        "{0} is not a postage device (no {STATE_FILE}); create one with `netbill postage device init`"
    )]
    NotADevice(PathBuf),
    /// A device already exists there.
    #[error("{0} already holds a postage device; choose another --device directory")]
    AlreadyExists(PathBuf),
    /// The device is in the terminal tampered state: keys erased.
    #[error(
        "device is TAMPERED and permanently disabled ({reason}); its keys are erased; return it to the operator for audit (`netbill postage device report`)"
    )]
    Tampered {
        /// Why the device was disabled.
        reason: String,
    },
    /// Not enough postage in the descending register.
    #[error(
        "insufficient postage: this piece needs {needed} but the device holds {available}; fund it with `netbill postage fund`"
    )]
    InsufficientFunds {
        /// Requested postage.
        needed: Postage,
        /// Descending register.
        available: Postage,
    },
    /// Postage zero or above the per-piece maximum.
    #[error("invalid postage {0}: must be more than USD:0.00 and at most USD:16777.215 per piece")]
    InvalidPostage(Postage),
    /// The credit is not well-formed.
    #[error("funding credit is malformed ({0}); ask the operator for a new credit file")]
    CreditMalformed(DecodeError),
    /// The operator signature on the credit is wrong.
    #[error("funding credit signature is invalid: not issued by this device's operator")]
    CreditBadSignature,
    /// The credit is bound to another device.
    #[error(
        "funding credit is for device {credit_device}, this is device {this_device}: a credit can only fund the device it names"
    )]
    CreditForeign {
        /// Device named in the credit.
        credit_device: DeviceId,
        /// This device.
        this_device: DeviceId,
    },
    /// The credit was already accepted.
    #[error(
        "funding credit #{number} was already used (this device has accepted {accepted} credits); credits are single-use"
    )]
    CreditReplayed {
        /// Number in the credit.
        number: u32,
        /// Credits accepted so far.
        accepted: u32,
    },
    /// The credit skips a number.
    #[error(
        "funding credit #{number} is out of order: the device expects credit #{expected} first"
    )]
    CreditOutOfOrder {
        /// Number in the credit.
        number: u32,
        /// Next number the device accepts.
        expected: u32,
    },
    /// The credit amount is zero.
    #[error("funding credit amount must be positive")]
    CreditZero,
    /// A register or counter would overflow its field.
    #[error(
        "register limit reached: the device cannot hold more than USD:1099511627.775 or print more pieces"
    )]
    RegisterOverflow,
    /// Ascending + descending ≠ total funded.
    #[error(
        "register invariant violated: ascending {ascending} + descending {descending} != total funded {total}"
    )]
    InvariantViolated {
        /// Ascending register.
        ascending: Postage,
        /// Descending register.
        descending: Postage,
        /// Control total.
        total: Postage,
    },
    /// Nothing was printed yet.
    #[error("this device has not printed an indicium yet: nothing to re-issue")]
    NothingToReissue,
    /// The certificate does not match the device key or id.
    #[error("the operator's certificate does not match this device's key or id")]
    CertificateMismatch,
    /// The device key lives in a token but no PIN was given.
    #[error(
        "this device's key is in a PKCS#11 token: give the PIN with --pkcs11-pin or NETBILL_PKCS11_PIN"
    )]
    PinRequired,
    /// Token failure.
    #[error(transparent)]
    Token(#[from] Pkcs11Error),
    /// Another process uses the device.
    #[error("device {0} is in use by another process; try again")]
    Busy(PathBuf),
    /// File system failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Test hook: a simulated crash at the given point.
    #[error("simulated crash at {0:?}")]
    SimulatedCrash(CrashPoint),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DeviceError {
    let context = context.into();
    move |source| DeviceError::Io { context, source }
}

/// Where a new device keeps its signing key.
pub enum KeySpec {
    /// Generated in software and stored encrypted in the sealed state.
    SealedFile,
    /// Generated inside a PKCS#11 token (non-extractable).
    Token {
        /// Token and key label.
        config: TokenConfig,
        /// User PIN.
        pin: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyLocation {
    SealedFile,
    Token(TokenConfig),
}

/// The device registers, as shown in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    /// Total postage printed.
    pub ascending: Postage,
    /// Postage left to print.
    pub descending: Postage,
    /// Control total: all postage ever loaded.
    pub total_funded: Postage,
    /// Pieces printed (last sequence number used).
    pub sequence: u32,
    /// Funding credits accepted.
    pub credits_accepted: u32,
    /// Re-issued indicia.
    pub reissues: u32,
}

impl Registers {
    /// Checks `ascending + descending == total_funded`.
    pub fn check_invariant(&self) -> Result<(), DeviceError> {
        match self.ascending.0.checked_add(self.descending.0) {
            Some(sum) if sum == self.total_funded.0 => Ok(()),
            _ => Err(DeviceError::InvariantViolated {
                ascending: self.ascending,
                descending: self.descending,
                total: self.total_funded,
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PublicState {
    device_id: DeviceId,
    cert: DeviceCertificate,
    operator_key: [u8; 32],
    key_location: KeyLocation,
    registers: Registers,
    last_indicium: Option<[u8; INDICIUM_LEN]>,
}

impl PublicState {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.device_id.0);
        w.raw(&self.cert.to_bytes());
        w.raw(&self.operator_key);
        match &self.key_location {
            KeyLocation::SealedFile => w.u8(0),
            KeyLocation::Token(c) => {
                w.u8(1);
                w.bytes(c.module.to_string_lossy().as_bytes());
                w.bytes(c.token_label.as_bytes());
                w.bytes(c.key_label.as_bytes());
            }
        }
        let r = &self.registers;
        w.u64(r.ascending.0);
        w.u64(r.descending.0);
        w.u64(r.total_funded.0);
        w.u32(r.sequence);
        w.u32(r.credits_accepted);
        w.u32(r.reissues);
        match &self.last_indicium {
            None => w.u8(0),
            Some(b) => {
                w.u8(1);
                w.raw(b);
            }
        }
        w.0
    }

    fn decode(bytes: &[u8]) -> Result<PublicState, DecodeError> {
        let mut r = Reader::new(bytes);
        let device_id = DeviceId(r.u64("device id")?);
        let cert = DeviceCertificate::from_bytes(r.take(CERT_LEN, "certificate")?)?;
        let operator_key = r.array("operator key")?;
        let key_location = match r.u8("key location")? {
            0 => KeyLocation::SealedFile,
            1 => KeyLocation::Token(TokenConfig {
                module: PathBuf::from(r.string(PATH_MAX, "module path")?),
                token_label: r.string(LABEL_MAX, "token label")?,
                key_label: r.string(LABEL_MAX, "key label")?,
            }),
            _ => return Err(DecodeError::Invalid("key location")),
        };
        let registers = Registers {
            ascending: Postage(r.u64("ascending")?),
            descending: Postage(r.u64("descending")?),
            total_funded: Postage(r.u64("total funded")?),
            sequence: r.u32("sequence")?,
            credits_accepted: r.u32("credits")?,
            reissues: r.u32("reissues")?,
        };
        let last_indicium = match r.u8("last indicium flag")? {
            0 => None,
            1 => Some(r.array::<INDICIUM_LEN>("last indicium")?),
            _ => return Err(DecodeError::Invalid("last indicium flag")),
        };
        r.finish()?;
        Ok(PublicState {
            device_id,
            cert,
            operator_key,
            key_location,
            registers,
            last_indicium,
        })
    }
}

enum Backend {
    Software(SigningKey),
    Token(TokenKey),
}

/// What a terminal (tampered) device still shows: the reason and its last registers.
#[derive(Clone, Debug)]
pub struct TamperInfo {
    /// Why the device was disabled.
    pub reason: String,
    /// Device id, if the state file is still readable.
    pub device_id: Option<DeviceId>,
    /// Last registers found on disk (no longer integrity-protected).
    pub registers: Option<Registers>,
}

/// Postage to print on one piece.
#[derive(Clone, Debug)]
pub struct PrintRequest {
    /// Postage for this piece.
    pub postage: Postage,
    /// Date of mailing.
    pub date: MailDate,
    /// Originating ZIP.
    pub origin: Zip,
    /// Destination delivery point.
    pub destination: DeliveryPoint,
    /// Rate category.
    pub rate: RateCategory,
}

/// Domain-separation tag of a device report.
pub const REPORT_TAG: &[u8] = b"NETBILL-POSTAGE-DEVICE-REPORT\0";
/// Device report format version.
pub const REPORT_VERSION: u8 = 1;
/// Length of an encoded device report.
pub const REPORT_LEN: usize = 1 + 8 + 4 + 8 + 8 + 8 + 4 + 4 + 4 + 2 + 64;

/// A device-signed statement of its registers for the operator's audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReport {
    /// Reporting device.
    pub device_id: DeviceId,
    /// Serial of the certificate whose key signed the report.
    pub cert_serial: u32,
    /// Register values.
    pub registers: Registers,
    /// Date of the report.
    pub date: MailDate,
    /// Device signature over `REPORT_TAG || body`.
    pub signature: [u8; 64],
}

impl DeviceReport {
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(REPORT_VERSION);
        w.u64(self.device_id.0);
        w.u32(self.cert_serial);
        w.u64(self.registers.ascending.0);
        w.u64(self.registers.descending.0);
        w.u64(self.registers.total_funded.0);
        w.u32(self.registers.sequence);
        w.u32(self.registers.credits_accepted);
        w.u32(self.registers.reissues);
        w.u16(self.date.0);
        w.0
    }
    /// The signed bytes: tag and body.
    pub fn signed_bytes(&self) -> Vec<u8> {
        [REPORT_TAG, &self.body()].concat()
    }
    /// Encodes to the fixed layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        [self.body().as_slice(), &self.signature].concat()
    }
    /// Decodes the fixed layout (does not verify the signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<DeviceReport, DecodeError> {
        if bytes.len() != REPORT_LEN {
            return Err(DecodeError::Invalid("report length"));
        }
        let mut r = Reader::new(bytes);
        if r.u8("report version")? != REPORT_VERSION {
            return Err(DecodeError::Invalid("report version"));
        }
        let rep = DeviceReport {
            device_id: DeviceId(r.u64("device id")?),
            cert_serial: r.u32("cert serial")?,
            registers: Registers {
                ascending: Postage(r.u64("ascending")?),
                descending: Postage(r.u64("descending")?),
                total_funded: Postage(r.u64("total funded")?),
                sequence: r.u32("sequence")?,
                credits_accepted: r.u32("credits")?,
                reissues: r.u32("reissues")?,
            },
            date: MailDate(r.u16("date")?),
            signature: r.array("signature")?,
        };
        r.finish()?;
        Ok(rep)
    }
    /// Verifies the device signature.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(
            &self.signed_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .is_ok()
    }
}

/// An open, integrity-checked postal security device.
pub struct Device {
    dir: PathBuf,
    seal_key: Zeroizing<[u8; 32]>,
    state: PublicState,
    backend: Backend,
    crash_at: Option<CrashPoint>,
    _lock: File,
}

fn seal(seal_key: &[u8; 32], public: &[u8], secret: &[u8]) -> Result<Vec<u8>, DeviceError> {
    let mut out = Vec::with_capacity(public.len() + secret.len() + 64);
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&(public.len() as u32).to_be_bytes());
    out.extend_from_slice(public);
    let mut nonce = [0u8; 12];
    rand::fill(&mut nonce);
    let cipher = ChaCha20Poly1305::new_from_slice(seal_key).map_err(|_| DeviceError::Tampered {
        reason: "storage key has the wrong length".into(),
    })?;
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: secret,
                aad: &out,
            },
        )
        .map_err(|_| DeviceError::Tampered {
            reason: "sealing failed".into(),
        })?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The parts of a sealed state file, not yet checked.
struct Sealed<'a> {
    aad: &'a [u8],
    public: &'a [u8],
    nonce: [u8; 12],
    ciphertext: &'a [u8],
}

/// Splits a sealed file into its parts without checking it.
fn split_sealed(bytes: &[u8]) -> Option<Sealed<'_>> {
    let rest = bytes.strip_prefix(STATE_MAGIC.as_slice())?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let public = rest.get(4..4usize.checked_add(len)?)?;
    let aad = bytes.get(..STATE_MAGIC.len() + 4 + len)?;
    let after = rest.get(4 + len..)?;
    let nonce: [u8; 12] = after.get(..12)?.try_into().ok()?;
    Some(Sealed {
        aad,
        public,
        nonce,
        ciphertext: after.get(12..)?,
    })
}

fn unseal(seal_key: &[u8; 32], bytes: &[u8]) -> Option<(PublicState, Zeroizing<Vec<u8>>)> {
    let parts = split_sealed(bytes)?;
    let cipher = ChaCha20Poly1305::new_from_slice(seal_key).ok()?;
    let secret = cipher
        .decrypt(
            &Nonce::from(parts.nonce),
            Payload {
                msg: parts.ciphertext,
                aad: parts.aad,
            },
        )
        .ok()?;
    let state = PublicState::decode(parts.public).ok()?;
    Some((state, Zeroizing::new(secret)))
}

fn lock_dir(dir: &Path) -> Result<File, DeviceError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(io_err(format!(
            "cannot open the lock file in {}",
            dir.display()
        )))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(DeviceError::Busy(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(io_err("cannot lock the device")(e)),
    }
}

/// Reads what a tampered device still shows, or `None` if it is not tampered.
pub fn tamper_info(dir: &Path) -> Option<TamperInfo> {
    let reason = fsutil::read_limited(&dir.join(TAMPER_FILE), 64 * 1024).ok()?;
    let reason = String::from_utf8_lossy(&reason);
    let state = fsutil::read_limited(&dir.join(STATE_FILE), STATE_MAX)
        .ok()
        .and_then(|b| split_sealed(&b).and_then(|p| PublicState::decode(p.public).ok()));
    Some(TamperInfo {
        reason: reason.trim().chars().take(500).collect(),
        device_id: state.as_ref().map(|s| s.device_id),
        registers: state.map(|s| s.registers),
    })
}

/// Tamper response: destroy the storage key (and token key), mark the device terminal.
fn erase(dir: &Path, reason: &str, token: Option<TokenKey>) -> DeviceError {
    let seal_path = dir.join(SEAL_KEY_FILE);
    if seal_path.exists() {
        // Overwrite before unlinking so the key does not linger in the file's blocks.
        let _ = fsutil::write_file(&seal_path, &[0u8; 32], true);
        let _ = fs::remove_file(&seal_path);
    }
    let mut reason = reason.to_string();
    if let Some(t) = token
        && let Err(e) = t.destroy()
    {
        reason.push_str(&format!("; destroying the token key failed: {e}"));
    }
    let _ = fsutil::write_file(&dir.join(TAMPER_FILE), reason.as_bytes(), false);
    let _ = fsutil::sync_dir(dir);
    DeviceError::Tampered { reason }
}

impl Device {
    /// Creates a device: generates its key (in software or in a token), has the operator
    /// certify the public key via `certify`, and writes the sealed initial state.
    pub fn create<E: From<DeviceError>>(
        dir: &Path,
        device_id: DeviceId,
        operator_key: [u8; 32],
        key: KeySpec,
        certify: impl FnOnce([u8; 32]) -> Result<DeviceCertificate, E>,
    ) -> Result<Device, E> {
        if dir.join(STATE_FILE).exists() || dir.join(TAMPER_FILE).exists() {
            return Err(DeviceError::AlreadyExists(dir.to_path_buf()).into());
        }
        fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let lock = lock_dir(dir)?;
        let (backend, location, public_key) = match key {
            KeySpec::SealedFile => {
                let mut seed = Zeroizing::new([0u8; 32]);
                rand::fill(&mut seed[..]);
                let sk = SigningKey::from_bytes(&seed);
                let pk = sk.verifying_key().to_bytes();
                (Backend::Software(sk), KeyLocation::SealedFile, pk)
            }
            KeySpec::Token { config, pin } => {
                let t = TokenKey::generate(&config, &pin).map_err(DeviceError::from)?;
                let pk = t.public_key();
                (Backend::Token(t), KeyLocation::Token(config), pk)
            }
        };
        let cert = match certify(public_key) {
            Ok(c) => c,
            Err(e) => {
                if let Backend::Token(t) = backend {
                    let _ = t.destroy();
                }
                return Err(e);
            }
        };
        if cert.device_id != device_id || cert.public_key != public_key {
            return Err(DeviceError::CertificateMismatch.into());
        }
        let mut seal_key = Zeroizing::new([0u8; 32]);
        rand::fill(&mut seal_key[..]);
        fsutil::write_file(&dir.join(SEAL_KEY_FILE), &seal_key[..], true)
            .map_err(io_err("cannot write the device storage key"))?;
        let registers = Registers {
            ascending: Postage::ZERO,
            descending: Postage::ZERO,
            total_funded: Postage::ZERO,
            sequence: 0,
            credits_accepted: 0,
            reissues: 0,
        };
        let state = PublicState {
            device_id,
            cert,
            operator_key,
            key_location: location,
            registers,
            last_indicium: None,
        };
        let mut dev = Device {
            dir: dir.to_path_buf(),
            seal_key,
            state,
            backend,
            crash_at: None,
            _lock: lock,
        };
        let state = dev.state.clone();
        dev.commit(state, None, None)?;
        Ok(dev)
    }

    /// Opens a device, checking its integrity; any failure triggers the tamper response.
    /// `pin` is required when the key lives in a PKCS#11 token.
    pub fn open(dir: &Path, pin: Option<&str>) -> Result<Device, DeviceError> {
        if let Some(info) = tamper_info(dir) {
            return Err(DeviceError::Tampered {
                reason: info.reason,
            });
        }
        let state_path = dir.join(STATE_FILE);
        let seal_path = dir.join(SEAL_KEY_FILE);
        if !state_path.exists() && !seal_path.exists() {
            return Err(DeviceError::NotADevice(dir.to_path_buf()));
        }
        let lock = lock_dir(dir)?;
        // A crash between writing and renaming the temp file leaves it behind: the old state stands.
        let _ = fs::remove_file(fsutil::temp_path(&state_path));
        let bytes = match fsutil::read_limited(&state_path, STATE_MAX) {
            Ok(b) => b,
            Err(e) => return Err(erase(dir, &format!("state file unreadable: {e}"), None)),
        };
        let seal_key: Zeroizing<[u8; 32]> = match fsutil::read_limited(&seal_path, 64) {
            Ok(k) if k.len() == 32 => {
                let mut a = Zeroizing::new([0u8; 32]);
                a.copy_from_slice(&k);
                let mut k = k;
                k.zeroize();
                a
            }
            _ => return Err(erase(dir, "device storage key missing or damaged", None)),
        };
        let Some((state, secret)) = unseal(&seal_key, &bytes) else {
            return Err(erase(
                dir,
                "state file failed its integrity check (altered or corrupted)",
                None,
            ));
        };
        if let Err(e) = state.registers.check_invariant() {
            return Err(erase(
                dir,
                &format!("sealed state is inconsistent: {e}"),
                None,
            ));
        }
        let backend = match (&state.key_location, secret.as_slice()) {
            (KeyLocation::SealedFile, [0, seed @ ..]) if seed.len() == 32 => {
                let mut s = Zeroizing::new([0u8; 32]);
                s.copy_from_slice(seed);
                Backend::Software(SigningKey::from_bytes(&s))
            }
            (KeyLocation::Token(cfg), [1]) => {
                let pin = pin.ok_or(DeviceError::PinRequired)?;
                Backend::Token(TokenKey::open(cfg, pin)?)
            }
            _ => {
                return Err(erase(
                    dir,
                    "sealed secret does not match the key location",
                    None,
                ));
            }
        };
        let public_key = match &backend {
            Backend::Software(sk) => sk.verifying_key().to_bytes(),
            Backend::Token(t) => t.public_key(),
        };
        if public_key != state.cert.public_key || state.cert.device_id != state.device_id {
            let token = match backend {
                Backend::Token(t) => Some(t),
                Backend::Software(_) => None,
            };
            return Err(erase(
                dir,
                "device key does not match its certificate",
                token,
            ));
        }
        Ok(Device {
            dir: dir.to_path_buf(),
            seal_key,
            state,
            backend,
            crash_at: None,
            _lock: lock,
        })
    }

    /// Arms a simulated crash (test hook): the operation stops at `point` and returns
    /// [`DeviceError::SimulatedCrash`]; the caller must then drop the device and reopen it.
    #[cfg(test)]
    pub fn crash_at(&mut self, point: CrashPoint) {
        self.crash_at = Some(point);
    }

    fn crash(&self, point: CrashPoint) -> Result<(), DeviceError> {
        if self.crash_at == Some(point) {
            return Err(DeviceError::SimulatedCrash(point));
        }
        Ok(())
    }

    /// Device id.
    pub fn id(&self) -> DeviceId {
        self.state.device_id
    }

    /// The operator certificate of this device.
    pub fn certificate(&self) -> &DeviceCertificate {
        &self.state.cert
    }

    /// Current registers.
    pub fn registers(&self) -> Registers {
        self.state.registers
    }

    /// Whether the key lives in a PKCS#11 token.
    pub fn uses_token(&self) -> bool {
        matches!(self.state.key_location, KeyLocation::Token(_))
    }

    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], DeviceError> {
        match &self.backend {
            Backend::Software(sk) => Ok(sk.sign(msg).to_bytes()),
            Backend::Token(t) => Ok(t.sign(msg)?),
        }
    }

    fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        match &self.backend {
            Backend::Software(sk) => {
                let mut v = Zeroizing::new(vec![0u8]);
                v.extend_from_slice(&sk.to_bytes());
                v
            }
            Backend::Token(_) => Zeroizing::new(vec![1u8]),
        }
    }

    /// Writes `next` durably (temp file, fsync, rename, fsync dir), with optional crash points.
    fn commit(
        &mut self,
        next: PublicState,
        temp_point: Option<CrashPoint>,
        done_point: Option<CrashPoint>,
    ) -> Result<(), DeviceError> {
        next.registers.check_invariant()?;
        let sealed = seal(&self.seal_key, &next.encode(), &self.secret_bytes())?;
        let path = self.dir.join(STATE_FILE);
        fsutil::write_file(&fsutil::temp_path(&path), &sealed, true)
            .map_err(io_err("cannot write the device state"))?;
        if let Some(p) = temp_point {
            self.crash(p)?;
        }
        fsutil::commit_temp(&path).map_err(io_err("cannot commit the device state"))?;
        self.state = next;
        if let Some(p) = done_point {
            self.crash(p)?;
        }
        Ok(())
    }

    /// Prints one indicium: checks funds, signs, and commits the decremented registers together
    /// with the indicium (so it can be re-issued if lost) before returning it.
    pub fn print(&mut self, req: &PrintRequest) -> Result<Indicium, DeviceError> {
        let p = req.postage;
        if p.0 == 0 || p.0 > POSTAGE_MAX {
            return Err(DeviceError::InvalidPostage(p));
        }
        let regs = self.state.registers;
        regs.check_invariant()?;
        if regs.descending < p {
            return Err(DeviceError::InsufficientFunds {
                needed: p,
                available: regs.descending,
            });
        }
        let mut next = self.state.clone();
        next.registers.ascending = Postage(regs.ascending.0 + p.0);
        next.registers.descending = Postage(regs.descending.0 - p.0);
        next.registers.sequence = regs
            .sequence
            .checked_add(1)
            .ok_or(DeviceError::RegisterOverflow)?;
        next.registers.check_invariant()?;
        if next.registers.ascending.0 > REGISTER_MAX {
            return Err(DeviceError::RegisterOverflow);
        }
        let mut ind = Indicium {
            flags: 0,
            device_id: self.state.device_id,
            cert_serial: self.state.cert.serial,
            sequence: next.registers.sequence,
            ascending: next.registers.ascending,
            descending: next.registers.descending,
            postage: p,
            date: req.date,
            origin: req.origin,
            destination: req.destination,
            rate: req.rate,
            signature: [0; 64],
        };
        self.crash(CrashPoint::PrintBeforeSign)?;
        ind.signature = self.sign(&ind.signed_bytes())?;
        self.crash(CrashPoint::PrintAfterSign)?;
        next.last_indicium = Some(ind.to_bytes());
        self.commit(
            next,
            Some(CrashPoint::PrintTempWritten),
            Some(CrashPoint::PrintCommitted),
        )?;
        Ok(ind)
    }

    /// Re-issues the last indicium (same data and sequence, flagged as a re-issue, signed again);
    /// registers do not change, the re-issue counter does.
    pub fn reissue_last(&mut self) -> Result<Indicium, DeviceError> {
        let bytes = self
            .state
            .last_indicium
            .ok_or(DeviceError::NothingToReissue)?;
        let mut ind = Indicium::from_bytes(&bytes).map_err(|_| DeviceError::NothingToReissue)?;
        ind.flags |= FLAG_REISSUE;
        ind.signature = self.sign(&ind.signed_bytes())?;
        let mut next = self.state.clone();
        next.registers.reissues = next.registers.reissues.saturating_add(1);
        self.commit(next, None, None)?;
        Ok(ind)
    }

    /// Accepts an operator-signed funding credit once, adding its amount to the registers.
    pub fn fund(&mut self, credit_bytes: &[u8]) -> Result<Registers, DeviceError> {
        let credit =
            FundingCredit::from_bytes(credit_bytes).map_err(DeviceError::CreditMalformed)?;
        let operator = VerifyingKey::from_bytes(&self.state.operator_key)
            .map_err(|_| DeviceError::CreditBadSignature)?;
        if !credit.verify(&operator) {
            return Err(DeviceError::CreditBadSignature);
        }
        if credit.device_id != self.state.device_id {
            return Err(DeviceError::CreditForeign {
                credit_device: credit.device_id,
                this_device: self.state.device_id,
            });
        }
        let regs = self.state.registers;
        if credit.number <= regs.credits_accepted {
            return Err(DeviceError::CreditReplayed {
                number: credit.number,
                accepted: regs.credits_accepted,
            });
        }
        let expected = regs
            .credits_accepted
            .checked_add(1)
            .ok_or(DeviceError::RegisterOverflow)?;
        if credit.number != expected {
            return Err(DeviceError::CreditOutOfOrder {
                number: credit.number,
                expected,
            });
        }
        if credit.amount.0 == 0 {
            return Err(DeviceError::CreditZero);
        }
        let mut next = self.state.clone();
        let total = regs
            .total_funded
            .0
            .checked_add(credit.amount.0)
            .ok_or(DeviceError::RegisterOverflow)?;
        if total > REGISTER_MAX {
            return Err(DeviceError::RegisterOverflow);
        }
        next.registers.total_funded = Postage(total);
        next.registers.descending = Postage(regs.descending.0 + credit.amount.0);
        next.registers.credits_accepted = expected;
        next.registers.check_invariant()?;
        self.crash(CrashPoint::FundVerified)?;
        self.commit(
            next,
            Some(CrashPoint::FundTempWritten),
            Some(CrashPoint::FundCommitted),
        )?;
        Ok(self.state.registers)
    }

    /// A device-signed report of its registers for the operator's audit.
    pub fn report(&self, date: MailDate) -> Result<DeviceReport, DeviceError> {
        let mut rep = DeviceReport {
            device_id: self.state.device_id,
            cert_serial: self.state.cert.serial,
            registers: self.state.registers,
            date,
            signature: [0; 64],
        };
        rep.signature = self.sign(&rep.signed_bytes())?;
        Ok(rep)
    }

    /// Explicit tamper trigger: erases the keys and puts the device in its terminal state.
    pub fn tamper(self, reason: &str) -> DeviceError {
        let Device {
            dir,
            mut seal_key,
            backend,
            ..
        } = self;
        seal_key.zeroize();
        let token = match backend {
            Backend::Token(t) => Some(t),
            Backend::Software(_) => None,
        };
        erase(&dir, reason, token)
    }
}

/// Explicit tamper trigger on a device directory, even when it cannot be opened normally.
pub fn tamper_dir(dir: &Path, reason: &str, pin: Option<&str>) -> DeviceError {
    match Device::open(dir, pin) {
        Ok(dev) => dev.tamper(reason),
        Err(DeviceError::NotADevice(p)) => DeviceError::NotADevice(p),
        Err(DeviceError::Tampered { reason }) => DeviceError::Tampered { reason },
        Err(DeviceError::PinRequired) => erase(
            dir,
            &format!(
                "{reason}; the token key was NOT destroyed (no PIN given): delete it in the token"
            ),
            None,
        ),
        Err(_) => erase(dir, reason, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Operator;

    fn today() -> MailDate {
        "2026-11-23".parse().expect("date")
    }

    fn request(postage: u64) -> PrintRequest {
        PrintRequest {
            postage: Postage(postage),
            date: today(),
            origin: Zip(15213),
            destination: DeliveryPoint::new(Zip(10001), "3890-01").expect("dp"),
            rate: RateCategory::Letter,
        }
    }

    /// Operator plus a device funded with `funds` mills.
    fn setup(root: &Path, funds: u64) -> (Operator, Device) {
        let op = Operator::init(&root.join("op")).expect("operator");
        let id = op.allocate_device_id().expect("id");
        let mut dev = Device::create(
            &root.join("psd"),
            id,
            op.public_key(),
            KeySpec::SealedFile,
            |pk| op.certify(id, pk, today()),
        )
        .expect("device");
        if funds > 0 {
            let c = op
                .issue_credit(id, Postage(funds), today())
                .expect("credit");
            dev.fund(&c.to_bytes()).expect("fund");
        }
        (op, dev)
    }

    fn reopen(root: &Path) -> Device {
        Device::open(&root.join("psd"), None).expect("reopen")
    }

    #[test]
    fn print_decrements_and_signs_verifiably() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (_op, mut dev) = setup(tmp.path(), 10_000);
        let ind = dev.print(&request(580)).expect("print");
        assert_eq!(ind.sequence, 1);
        assert_eq!(ind.ascending, Postage(580));
        assert_eq!(ind.descending, Postage(9_420));
        let key = dev.certificate().verifying_key().expect("key");
        assert!(ind.verify_signature(&key));
        drop(dev);
        let dev = reopen(tmp.path());
        let r = dev.registers();
        assert_eq!(
            (r.ascending, r.descending, r.total_funded, r.sequence),
            (Postage(580), Postage(9_420), Postage(10_000), 1)
        );
    }

    #[test]
    fn crash_at_every_print_step_keeps_the_invariant() {
        for point in CrashPoint::PRINT {
            let tmp = tempfile::tempdir().expect("tmp");
            let (_op, mut dev) = setup(tmp.path(), 10_000);
            dev.print(&request(100)).expect("first print");
            let before = dev.registers();
            dev.crash_at(point);
            match dev.print(&request(580)) {
                Err(DeviceError::SimulatedCrash(p)) => assert_eq!(p, point),
                other => panic!("expected a simulated crash at {point:?}, got {other:?}"),
            }
            drop(dev);
            let mut dev = reopen(tmp.path());
            let after = dev.registers();
            after.check_invariant().expect("invariant after crash");
            assert!(!fsutil::temp_path(&tmp.path().join("psd").join(STATE_FILE)).exists());
            if point == CrashPoint::PrintCommitted {
                // The decrement happened: the indicium must be recoverable by re-issue.
                assert_eq!(after.descending.0, before.descending.0 - 580, "{point:?}");
                assert_eq!(after.sequence, before.sequence + 1);
                let again = dev.reissue_last().expect("reissue");
                assert_eq!(again.sequence, after.sequence);
                assert_eq!(again.postage, Postage(580));
                assert!(again.is_reissue());
                assert!(again.verify_signature(&dev.certificate().verifying_key().expect("key")));
            } else {
                // No decrement, and no signed indicium ever left the device.
                assert_eq!(after, before, "{point:?}");
                assert_eq!(dev.reissue_last().expect("reissue").postage, Postage(100));
            }
            let next = dev.print(&request(580)).expect("print after recovery");
            assert_eq!(next.sequence, dev.registers().sequence);
            dev.registers().check_invariant().expect("invariant");
        }
    }

    #[test]
    fn crash_at_every_fund_step_keeps_the_invariant_and_credit_single_use() {
        for point in CrashPoint::FUND {
            let tmp = tempfile::tempdir().expect("tmp");
            let (op, mut dev) = setup(tmp.path(), 1_000);
            let before = dev.registers();
            let credit = op
                .issue_credit(dev.id(), Postage(5_000), today())
                .expect("credit");
            dev.crash_at(point);
            assert!(
                matches!(dev.fund(&credit.to_bytes()), Err(DeviceError::SimulatedCrash(p)) if p == point)
            );
            drop(dev);
            let mut dev = reopen(tmp.path());
            let after = dev.registers();
            after.check_invariant().expect("invariant after crash");
            if point == CrashPoint::FundCommitted {
                assert_eq!(after.total_funded, Postage(6_000));
                assert_eq!(after.credits_accepted, 2);
                let err = dev
                    .fund(&credit.to_bytes())
                    .expect_err("replay after crash");
                assert!(matches!(
                    err,
                    DeviceError::CreditReplayed {
                        number: 2,
                        accepted: 2
                    }
                ));
            } else {
                assert_eq!(after, before, "{point:?}");
                let r = dev
                    .fund(&credit.to_bytes())
                    .expect("credit still usable once");
                assert_eq!(r.total_funded, Postage(6_000));
            }
            assert_eq!(dev.registers().total_funded, Postage(6_000));
        }
    }

    #[test]
    fn bad_credits_are_refused_without_register_change() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (op, mut dev) = setup(tmp.path(), 1_000);
        let used = op
            .issue_credit(dev.id(), Postage(2_000), today())
            .expect("credit");
        dev.fund(&used.to_bytes()).expect("fund");
        let before = dev.registers();

        assert!(matches!(
            dev.fund(&used.to_bytes()),
            Err(DeviceError::CreditReplayed { .. })
        ));

        let other_id = op.allocate_device_id().expect("id");
        let _other = Device::create(
            &tmp.path().join("psd2"),
            other_id,
            op.public_key(),
            KeySpec::SealedFile,
            |pk| op.certify(other_id, pk, today()),
        )
        .expect("second device");
        let foreign = op
            .issue_credit(other_id, Postage(9_000), today())
            .expect("credit");
        assert!(matches!(
            dev.fund(&foreign.to_bytes()),
            Err(DeviceError::CreditForeign { .. })
        ));

        let rogue = Operator::init(&tmp.path().join("rogue")).expect("rogue");
        let forged = FundingCredit::issue(
            &SigningKey::from_bytes(&[3; 32]),
            dev.id(),
            3,
            Postage(1_000_000),
            today(),
        );
        assert!(matches!(
            dev.fund(&forged.to_bytes()),
            Err(DeviceError::CreditBadSignature)
        ));
        drop(rogue);

        let skipped = op
            .issue_credit(dev.id(), Postage(1), today())
            .expect("credit 3");
        let skipped2 = op
            .issue_credit(dev.id(), Postage(1), today())
            .expect("credit 4");
        assert!(matches!(
            dev.fund(&skipped2.to_bytes()),
            Err(DeviceError::CreditOutOfOrder {
                number: 4,
                expected: 3
            })
        ));
        let mut flipped = skipped.to_bytes();
        flipped[20] ^= 0x01;
        assert!(matches!(
            dev.fund(&flipped),
            Err(DeviceError::CreditBadSignature)
        ));
        assert!(matches!(
            dev.fund(&flipped[..10]),
            Err(DeviceError::CreditMalformed(_))
        ));

        assert_eq!(dev.registers(), before);
        drop(dev);
        assert_eq!(reopen(tmp.path()).registers(), before);
    }

    #[test]
    fn lost_credit_can_be_resent_and_is_still_single_use() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (op, mut dev) = setup(tmp.path(), 1_000);
        let _lost = op
            .issue_credit(dev.id(), Postage(2_500), today())
            .expect("credit");
        let again = op.resend_credit(dev.id(), 2, today()).expect("resend");
        assert_eq!(again.amount, Postage(2_500));
        assert_eq!(
            dev.fund(&again.to_bytes()).expect("fund").total_funded,
            Postage(3_500)
        );
        let twice = op.resend_credit(dev.id(), 2, today()).expect("resend");
        assert!(matches!(
            dev.fund(&twice.to_bytes()),
            Err(DeviceError::CreditReplayed { number: 2, .. })
        ));
        assert!(op.resend_credit(dev.id(), 9, today()).is_err());
        assert_eq!(dev.registers().total_funded, Postage(3_500));
    }

    #[test]
    fn insufficient_or_invalid_postage_changes_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (_op, mut dev) = setup(tmp.path(), 1_000);
        let before = dev.registers();
        assert!(matches!(
            dev.print(&request(1_001)),
            Err(DeviceError::InsufficientFunds {
                needed: Postage(1_001),
                available: Postage(1_000)
            })
        ));
        assert!(matches!(
            dev.print(&request(0)),
            Err(DeviceError::InvalidPostage(_))
        ));
        assert!(matches!(
            dev.print(&request(POSTAGE_MAX + 1)),
            Err(DeviceError::InvalidPostage(_))
        ));
        assert!(matches!(
            dev.reissue_last(),
            Err(DeviceError::NothingToReissue)
        ));
        assert_eq!(dev.registers(), before);
        dev.print(&request(1_000)).expect("exactly the balance");
        assert_eq!(dev.registers().descending, Postage::ZERO);
    }

    #[test]
    fn altered_state_file_erases_keys_and_is_terminal() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (_op, mut dev) = setup(tmp.path(), 5_000);
        dev.print(&request(580)).expect("print");
        let regs = dev.registers();
        drop(dev);
        let state = tmp.path().join("psd").join(STATE_FILE);
        let mut bytes = fs::read(&state).expect("state");
        // Flip one bit inside the (authenticated, plaintext) registers.
        let pos = bytes.len() / 2;
        bytes[pos] ^= 0x04;
        fs::write(&state, &bytes).expect("write");
        assert!(matches!(
            Device::open(&tmp.path().join("psd"), None),
            Err(DeviceError::Tampered { .. })
        ));
        assert!(
            !tmp.path().join("psd").join(SEAL_KEY_FILE).exists(),
            "storage key must be erased"
        );
        // Restoring the original bytes does not help: the keys are gone for good.
        bytes[pos] ^= 0x04;
        fs::write(&state, &bytes).expect("write");
        assert!(matches!(
            Device::open(&tmp.path().join("psd"), None),
            Err(DeviceError::Tampered { .. })
        ));
        let info = tamper_info(&tmp.path().join("psd")).expect("tamper info");
        assert!(info.reason.contains("integrity"), "{}", info.reason);
        assert_eq!(info.registers, Some(regs));
    }

    #[test]
    fn explicit_tamper_and_missing_storage_key_are_terminal() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (_op, dev) = setup(tmp.path(), 5_000);
        let e = dev.tamper("case opened");
        assert!(matches!(e, DeviceError::Tampered { ref reason } if reason == "case opened"));
        assert!(matches!(
            reopen_err(tmp.path()),
            DeviceError::Tampered { .. }
        ));

        let tmp = tempfile::tempdir().expect("tmp");
        let (_op, dev) = setup(tmp.path(), 5_000);
        drop(dev);
        fs::remove_file(tmp.path().join("psd").join(SEAL_KEY_FILE)).expect("rm");
        assert!(
            matches!(reopen_err(tmp.path()), DeviceError::Tampered { ref reason } if reason.contains("storage key"))
        );
    }

    fn reopen_err(root: &Path) -> DeviceError {
        match Device::open(&root.join("psd"), None) {
            Ok(_) => panic!("device should not open"),
            Err(e) => e,
        }
    }

    #[test]
    fn report_is_signed_and_audits_clean() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (op, mut dev) = setup(tmp.path(), 5_000);
        dev.print(&request(580)).expect("print");
        let report = dev.report(today()).expect("report");
        let parsed = DeviceReport::from_bytes(&report.to_bytes()).expect("parse");
        assert_eq!(parsed, report);
        let audit = op.audit(&report.to_bytes()).expect("audit");
        assert!(audit.findings.is_empty(), "{:?}", audit.findings);
        let mut forged = report.clone();
        forged.registers.descending = Postage(1_000_000);
        forged.registers.total_funded = Postage(1_000_580);
        let audit = op.audit(&forged.to_bytes()).expect("audit");
        assert!(audit.findings.iter().any(|f| f.contains("signature")));
        assert!(audit.findings.iter().any(|f| f.contains("control total")));
    }

    #[test]
    fn second_open_is_refused_while_in_use() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (_op, _dev) = setup(tmp.path(), 0);
        assert!(matches!(reopen_err(tmp.path()), DeviceError::Busy(_)));
    }
}
