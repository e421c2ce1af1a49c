//! A small JSON-over-HTTP client that turns problem documents back into [`Problem`]s and
//! unreachable servers into errors that say so.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Problem;

/// Why a call to a NetBill server failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server could not be reached (down, wrong URL, timeout).
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with a problem document.
    #[error("{0}")]
    Problem(Problem),
    /// The server answered something that is not what the protocol says.
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer { url: String, reason: String },
}

impl CallError {
    /// The problem's code, if the server answered with one.
    pub fn problem_code(&self) -> Option<&str> {
        match self {
            CallError::Problem(p) => Some(p.code()),
            _ => None,
        }
    }
}

/// Largest answer we read into memory (goods are streamed separately).
pub const ANSWER_LEN_MAX: usize = 8 * 1024 * 1024;

/// A client for one server.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8400`).
    pub fn new(base: &str) -> Result<Self, CallError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CallError::Unreachable {
                url: base,
                reason: "the URL must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CallError::Unreachable {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(Client { base, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional JSON body and headers; decodes the JSON answer.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, String)],
    ) -> Result<T, CallError> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        self.call_raw(method, path, body, headers).await
    }

    /// Like [`Client::call`] with an already-encoded body (so it can be signed first).
    pub async fn call_raw<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> Result<T, CallError> {
        let url = self.url(path);
        let mut req = self.http.request(method, &url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.map_err(|e| CallError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        let bytes = read_limited(resp, &url).await?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer {
                url,
                reason: format!("{e}"),
            })
        } else {
            match serde_json::from_slice::<Problem>(&bytes) {
                Ok(p) => Err(CallError::Problem(p)),
                Err(_) => Err(CallError::BadAnswer {
                    url,
                    reason: format!("HTTP {status} without a problem document"),
                }),
            }
        }
    }

    /// `GET`s a priced resource, whose expected answer is `402 Payment Required` with an
    /// offer in the body.
    pub async fn get_payment_required<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, CallError> {
        let url = self.url(path);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| CallError::Unreachable {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        let status = resp.status();
        let bytes = read_limited(resp, &url).await?;
        if status == reqwest::StatusCode::PAYMENT_REQUIRED {
            serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer {
                url,
                reason: e.to_string(),
            })
        } else {
            Err(serde_json::from_slice::<Problem>(&bytes)
                .map(CallError::Problem)
                .unwrap_or(CallError::BadAnswer {
                    url,
                    reason: format!("HTTP {status}, expected 402 Payment Required"),
                }))
        }
    }

    /// Starts a GET whose body the caller streams (e.g. encrypted goods).
    pub async fn get_stream(&self, path: &str) -> Result<reqwest::Response, CallError> {
        self.stream::<()>(reqwest::Method::GET, path, None, None)
            .await
    }

    /// Sends a request with an optional JSON body and hands back the answer for the caller
    /// to stream, if its status is `expect` (default: any success); any other answer
    /// becomes the server's problem.
    pub async fn stream<B: Serialize + ?Sized>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        expect: Option<reqwest::StatusCode>,
    ) -> Result<reqwest::Response, CallError> {
        let url = self.url(path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        let resp = req.send().await.map_err(|e| CallError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        if expect.map_or(status.is_success(), |x| x == status) {
            Ok(resp)
        } else {
            let bytes = read_limited(resp, &url).await?;
            Err(serde_json::from_slice::<Problem>(&bytes)
                .map(CallError::Problem)
                .unwrap_or(CallError::BadAnswer {
                    url,
                    reason: format!("HTTP {status}"),
                }))
        }
    }
}

async fn read_limited(mut resp: reqwest::Response, url: &str) -> Result<Vec<u8>, CallError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| CallError::Unreachable {
        url: url.to_string(),
        reason: error_chain(&e),
    })? {
        if out.len() + chunk.len() > ANSWER_LEN_MAX {
            return Err(CallError::BadAnswer {
                url: url.to_string(),
                reason: format!("answer over {ANSWER_LEN_MAX} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
