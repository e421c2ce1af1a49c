//! Device signing keys held in a PKCS#11 token (tested with SoftHSM2), via `cryptoki`.
//!
//! The private key is generated inside the token as sensitive and non-extractable; the device
//! only ever asks the token to sign. PKCS#11 initialisation is process-wide.

use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

/// DER PrintableString "edwards25519": the curve parameter SoftHSM2 expects for Ed25519.
const ED25519_PARAMS: [u8; 14] = [
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];

/// Where a device key lives in a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenConfig {
    /// Path of the PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token holding the key.
    pub token_label: String,
    /// Label of the key pair in the token.
    pub key_label: String,
}

/// Errors talking to the PKCS#11 token.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    /// The module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {source}; check --pkcs11-module")]
    Module {
        /// Module path.
        module: String,
        /// Cause.
        source: CkError,
    },
    /// No token with the label.
    #[error(
        "no PKCS#11 token labelled {0:?}; create it (softhsm2-util --init-token --free --label ...) or fix --pkcs11-token"
    )]
    NoToken(String),
    /// Login failed.
    #[error("PKCS#11 login to token {0:?} failed: {1}; check the PIN (NETBILL_PKCS11_PIN)")]
    Login(String, CkError),
    /// The key pair was not found.
    #[error("key {0:?} not found in the token; was the device initialised with this token?")]
    NoKey(String),
    /// A key with this label already exists.
    #[error("the token already holds a key labelled {0:?}; use another device id or token")]
    KeyExists(String),
    /// Another token operation failed.
    #[error("PKCS#11 {0} failed: {1}")]
    Op(&'static str, CkError),
    /// The token returned an unexpected public key encoding.
    #[error("the token returned an unexpected Ed25519 public key encoding")]
    PublicKey,
}

/// An open session with a token, logged in, holding a device's key pair.
pub struct TokenKey {
    session: Session,
    private: ObjectHandle,
    public: ObjectHandle,
    public_key: [u8; 32],
}

fn connect(cfg: &TokenConfig, pin: &str) -> Result<Session, Pkcs11Error> {
    let module = cfg.module.display().to_string();
    let ctx = Pkcs11::new(&cfg.module).map_err(|source| Pkcs11Error::Module {
        module: module.clone(),
        source,
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(source) => return Err(Pkcs11Error::Module { module, source }),
    }
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| Pkcs11Error::Op("slot listing", e))?;
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| Pkcs11Error::Op("token info", e))?;
        if info.label().trim_end() == cfg.token_label {
            let session = ctx
                .open_rw_session(slot)
                .map_err(|e| Pkcs11Error::Op("open session", e))?;
            session
                .login(UserType::User, Some(&AuthPin::new(pin.into())))
                .map_err(|e| Pkcs11Error::Login(cfg.token_label.clone(), e))?;
            return Ok(session);
        }
    }
    Err(Pkcs11Error::NoToken(cfg.token_label.clone()))
}

fn find(
    session: &Session,
    label: &str,
    class: ObjectClass,
) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| Pkcs11Error::Op("find objects", e))
}

fn read_public(session: &Session, public: ObjectHandle) -> Result<[u8; 32], Pkcs11Error> {
    let attrs = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(|e| Pkcs11Error::Op("read public key", e))?;
    for a in attrs {
        if let Attribute::EcPoint(p) = a {
            // Either the raw 32 bytes or a DER OCTET STRING (0x04 0x20 || key).
            let raw = match p.as_slice() {
                [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
                raw if raw.len() == 32 => raw,
                _ => return Err(Pkcs11Error::PublicKey),
            };
            let mut k = [0u8; 32];
            k.copy_from_slice(raw);
            return Ok(k);
        }
    }
    Err(Pkcs11Error::PublicKey)
}

impl TokenKey {
    /// Generates a new non-extractable Ed25519 key pair inside the token.
    pub fn generate(cfg: &TokenConfig, pin: &str) -> Result<TokenKey, Pkcs11Error> {
        let session = connect(cfg, pin)?;
        if !find(&session, &cfg.key_label, ObjectClass::PRIVATE_KEY)?.is_empty() {
            return Err(Pkcs11Error::KeyExists(cfg.key_label.clone()));
        }
        let label = cfg.key_label.as_bytes().to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            Attribute::Label(label.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label),
        ];
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(|e| Pkcs11Error::Op("Ed25519 key generation", e))?;
        let public_key = read_public(&session, public)?;
        Ok(TokenKey {
            session,
            private,
            public,
            public_key,
        })
    }

    /// Opens an existing key pair by label.
    pub fn open(cfg: &TokenConfig, pin: &str) -> Result<TokenKey, Pkcs11Error> {
        let session = connect(cfg, pin)?;
        let private = *find(&session, &cfg.key_label, ObjectClass::PRIVATE_KEY)?
            .first()
            .ok_or_else(|| Pkcs11Error::NoKey(cfg.key_label.clone()))?;
        let public = *find(&session, &cfg.key_label, ObjectClass::PUBLIC_KEY)?
            .first()
            .ok_or_else(|| Pkcs11Error::NoKey(cfg.key_label.clone()))?;
        let public_key = read_public(&session, public)?;
        Ok(TokenKey {
            session,
            private,
            public,
            public_key,
        })
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// Signs `msg` with pure Ed25519 inside the token.
    pub fn sign(&self, msg: &[u8]) -> Result<[u8; 64], Pkcs11Error> {
        let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let sig = self
            .session
            .sign(&mech, self.private, msg)
            .map_err(|e| Pkcs11Error::Op("sign", e))?;
        <[u8; 64]>::try_from(sig.as_slice()).map_err(|_| Pkcs11Error::PublicKey)
    }

    /// Destroys the key pair in the token (tamper response).
    pub fn destroy(self) -> Result<(), Pkcs11Error> {
        self.session
            .destroy_object(self.private)
            .map_err(|e| Pkcs11Error::Op("destroy private key", e))?;
        self.session
            .destroy_object(self.public)
            .map_err(|e| Pkcs11Error::Op("destroy public key", e))
    }
}
