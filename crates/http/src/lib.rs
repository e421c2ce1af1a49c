//! What NetBill's HTTP shells share: RFC 9457 problem documents, the JSON extractor that
//! turns every malformed body into one, the signed-request header, and the loopback rule.

pub mod client;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use netbill_proto::crypto::{Crypto, PublicKey, Signature};
use netbill_proto::messages::RequestAuth;
use netbill_proto::{AccountId, Signed};
use serde::{Deserialize, Serialize};

/// Largest JSON body any NetBill endpoint accepts.
pub const BODY_LEN_MAX: usize = 256 * 1024;
/// The header carrying a [`RequestAuth`].
pub const AUTH_HEADER: &str = "netbill-auth";
/// How far a signed request's time may be from the server's clock.
pub const AUTH_WINDOW_MS: u64 = 5 * 60 * 1000;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Servers listen on loopback only (127.0.0.0/8 or ::1).
pub fn ensure_loopback(addr: &SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "refusing to listen on {addr}: only loopback addresses (127.0.0.0/8, ::1) are allowed; put a TLS-terminating proxy in front for anything else"
        ))
    }
}

/// An RFC 9457 problem document. `type` is `urn:netbill:problem:<code>`, stable across
/// versions; `title` is the code's meaning; `detail` says what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:netbill:problem:{code}"),
            title: code.replace('-', " "),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
    /// The `<code>` of `urn:netbill:problem:<code>`.
    pub fn code(&self) -> &str {
        self.kind
            .strip_prefix("urn:netbill:problem:")
            .unwrap_or(&self.kind)
    }
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn not_found(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }
    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn unprocessable(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the operation may be retried with the same request",
        )
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code(), self.status, self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response()
    }
}

/// A JSON body whose every failure (syntax, type, unknown field, size, content type) is a
/// `400 malformed-json` problem.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    format!("request body rejected: {e}; the limit is {BODY_LEN_MAX} bytes"),
                )
            })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            Problem::bad_request("malformed-json", format!("malformed JSON body: {e}"))
        })
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Encodes a signed request for the [`AUTH_HEADER`]: `base64url(bytes).base64url(sig)`.
pub fn encode_auth(auth: &Signed<RequestAuth>) -> String {
    format!(
        "{}.{}",
        B64.encode(auth.bytes()),
        B64.encode(auth.signature().0)
    )
}

/// The header carrying an [`netbill_proto::messages::EvidenceGrant`].
pub const GRANT_HEADER: &str = "netbill-grant";

/// Encodes any signed object as a header value: `base64url(bytes).base64url(signature)`.
pub fn encode_signed<T: netbill_proto::signed::SignedBody>(s: &Signed<T>) -> String {
    format!("{}.{}", B64.encode(s.bytes()), B64.encode(s.signature().0))
}

/// Decodes a header value made by [`encode_signed`] (not yet verified); `None` if malformed.
pub fn decode_signed<T: netbill_proto::signed::SignedBody>(value: &str) -> Option<Signed<T>> {
    let (body, sig) = value.split_once('.')?;
    if body.len() > 4096 {
        return None;
    }
    let bytes = B64.decode(body).ok()?;
    let sig: [u8; 64] = B64.decode(sig).ok()?.try_into().ok()?;
    Signed::from_parts(bytes, Signature(sig)).ok()
}

/// Decodes an [`AUTH_HEADER`] value (not yet verified).
pub fn decode_auth(value: &str) -> Result<Signed<RequestAuth>, Problem> {
    let bad = || Problem::unauthorized(format!("malformed {AUTH_HEADER} header"));
    let (body, sig) = value.split_once('.').ok_or_else(bad)?;
    if body.len() > 4096 {
        return Err(bad());
    }
    let bytes = B64.decode(body).map_err(|_| bad())?;
    let sig: [u8; 64] = B64
        .decode(sig)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(bad)?;
    Signed::from_parts(bytes, Signature(sig)).map_err(|_| bad())
}

/// The digest of a request body that a [`RequestAuth`] covers.
pub fn body_digest(crypto: &dyn Crypto, body: &[u8]) -> netbill_proto::crypto::Digest {
    crypto.digest(&[b"netbill/v1/request-body", body])
}

/// Checks a signed request against the request it came with. `key_of` looks up the
/// account's current, unrevoked key.
pub fn check_auth(
    crypto: &dyn Crypto,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
    key_of: impl FnOnce(&AccountId) -> Option<PublicKey>,
) -> Result<AccountId, Problem> {
    let value = headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::unauthorized(format!("missing {AUTH_HEADER} header")))?;
    let auth = decode_auth(value)?;
    let claimed = auth.body_unverified().account.clone();
    let key = key_of(&claimed).ok_or_else(|| {
        Problem::unauthorized(format!("no account {claimed} with an unrevoked key"))
    })?;
    let a = auth
        .verify(crypto, &key)
        .map_err(|_| Problem::unauthorized("request signature does not verify"))?;
    if a.method != method || a.path != path {
        return Err(Problem::unauthorized(
            "signed request is for another method or path",
        ));
    }
    if a.body_digest != body_digest(crypto, body) {
        return Err(Problem::unauthorized("signed request is for another body"));
    }
    if a.time_ms.abs_diff(now_ms) > AUTH_WINDOW_MS {
        return Err(Problem::unauthorized(
            "signed request is too old or from the future: check the clock",
        ));
    }
    Ok(claimed)
}

/// Makes the [`AUTH_HEADER`] value for a request (client side).
pub fn sign_request(
    crypto: &dyn Crypto,
    signer: &dyn netbill_proto::crypto::Signer,
    account: &AccountId,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
) -> String {
    encode_auth(&Signed::sign(
        RequestAuth {
            account: account.clone(),
            method: method.to_string(),
            path: path.to_string(),
            body_digest: body_digest(crypto, body),
            time_ms: now_ms,
        },
        signer,
    ))
}

/// Test-only: the environment variable naming the one crash point at which a process aborts.
#[cfg(feature = "test-support")]
pub const CRASH_ENV: &str = "NETBILL_CRASH_AT";
/// Test-only: the environment variable naming deliberately broken behaviours (comma-separated).
#[cfg(feature = "test-support")]
pub const BUG_ENV: &str = "NETBILL_BUG";

/// Test-only fault injection: aborts the process (a crash: no cleanup, no flush) when
/// `NETBILL_CRASH_AT` names `point`. The points are listed in docs/reliability.md.
#[cfg(feature = "test-support")]
pub fn crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_ENV).ok().filter(|s| !s.is_empty()));
    if at.as_deref() == Some(point) {
        eprintln!("netbill: crash point {point} reached ({CRASH_ENV}): aborting");
        std::process::abort();
    }
}

/// Test-only: whether `NETBILL_BUG` switches on the deliberately broken behaviour `name`
/// (used to show that the chaos checkers catch the bug they exist for). Never set it in
/// production; the names are listed in docs/reliability.md.
#[cfg(feature = "test-support")]
pub fn bug(name: &str) -> bool {
    static BUGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    BUGS.get_or_init(|| {
        std::env::var(BUG_ENV)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    })
    .iter()
    .any(|b| b == name)
}

/// Without the `test-support` feature there are no crash points: nothing to read, nothing left
/// in the binary.
#[cfg(not(feature = "test-support"))]
#[inline(always)]
pub fn crash_point(_point: &str) {}

/// Without the `test-support` feature every bug switch is off.
#[cfg(not(feature = "test-support"))]
#[inline(always)]
pub fn bug(_name: &str) -> bool {
    false
}
