//! A small HTTP-aware TCP proxy that can drop, duplicate or delay the request or the
//! response of one endpoint, or have a party SIGKILLed around it. One request per
//! connection (it forces `connection: close` both ways), which keeps it simple and exact.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::Party;

/// Largest request or response the proxy relays (the goods of a test catalog are small).
const MESSAGE_LEN_MAX: usize = 16 << 20;
/// How long the proxy waits for either side.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a delayed message is held.
pub const DELAY: Duration = Duration::from_millis(800);

/// What to do to the matched message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Lose it: the connection closes.
    Drop,
    /// Deliver it twice (for a response: the request is sent twice, the second answer kept).
    Duplicate,
    /// Hold it for [`DELAY`].
    Delay,
    /// SIGKILL this party right after the message is delivered.
    KillAfter(Party),
    /// SIGKILL this party, then lose the message.
    KillBefore(Party),
}

/// Which message a plan hits: the request or the response of `method path…`.
#[derive(Clone, Debug)]
pub struct Plan {
    /// HTTP method.
    pub method: &'static str,
    /// The path starts with this…
    pub prefix: &'static str,
    /// …and ends with this (equal to `prefix`: the path is exactly that).
    pub suffix: &'static str,
    /// The response (else the request).
    pub response: bool,
    /// The fault.
    pub action: Action,
}

impl Plan {
    fn matches(&self, method: &str, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or(path);
        let path_matches = if self.prefix == self.suffix {
            path == self.prefix
        } else {
            path.starts_with(self.prefix)
                && path.ends_with(self.suffix)
                && path.len() >= self.prefix.len() + self.suffix.len()
        };
        method == self.method && path_matches
    }
}

/// A request the proxy saw, kept for replays.
#[derive(Clone, Debug)]
pub struct Seen {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
}

/// Kills a party (the deployment's process table).
pub type Killer = Arc<dyn Fn(Party) + Send + Sync>;

struct Shared {
    upstream: Mutex<SocketAddr>,
    plan: Mutex<Option<Plan>>,
    fired: AtomicBool,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
    killer: Killer,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and relays to `upstream`.
    pub fn start(upstream: SocketAddr, killer: Killer) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            plan: Mutex::new(None),
            fired: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            killer,
        });
        let s = shared.clone();
        thread::Builder::new()
            .name(format!("chaos-proxy-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let s = s.clone();
                        let _ = thread::Builder::new()
                            .name("chaos-proxy-conn".into())
                            .spawn(move || relay(&s, conn));
                    }
                }
            })?;
        Ok(Proxy { addr, shared })
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Points the proxy at a restarted process.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// Arms a fault for the next matching message (or disarms with `None`).
    pub fn arm(&self, plan: Option<Plan>) {
        self.shared.fired.store(false, Ordering::SeqCst);
        *lock(&self.shared.plan) = plan;
    }

    /// Whether the armed fault hit a message.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Takes the requests seen since the last call.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *lock(&self.shared.seen))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// One HTTP message: its head (without the blank line) and its body.
struct Message {
    head: String,
    body: Vec<u8>,
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Reads a request: head, then a `content-length` body.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Message> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside a request head"));
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
        if head.len() > 64 * 1024 {
            return Err(bad("request head too large"));
        }
    }
    let len = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if len > MESSAGE_LEN_MAX {
        return Err(bad("request body too large"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Message { head, body })
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The head with any `connection` header replaced by `connection: close`.
fn close_head(head: &str) -> String {
    let mut out = String::new();
    for l in head.lines() {
        if l.split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    out
}

/// Sends `req` upstream and reads the whole response (the upstream closes after it).
fn forward(upstream: SocketAddr, req: &Message) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(2))?;
    up.set_read_timeout(Some(IO_TIMEOUT))?;
    up.set_write_timeout(Some(IO_TIMEOUT))?;
    up.write_all(close_head(&req.head).as_bytes())?;
    up.write_all(&req.body)?;
    up.flush()?;
    let mut resp = Vec::new();
    up.take(MESSAGE_LEN_MAX as u64).read_to_end(&mut resp)?;
    if resp.is_empty() {
        return Err(bad("the upstream closed without answering"));
    }
    Ok(resp)
}

/// The response with `connection: close`.
fn close_response(resp: &[u8]) -> Vec<u8> {
    match resp.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => {
            let head = String::from_utf8_lossy(&resp[..i]);
            let mut out = close_head(&head).into_bytes();
            out.extend_from_slice(&resp[i + 4..]);
            out
        }
        None => resp.to_vec(),
    }
}

fn relay(s: &Shared, client: TcpStream) {
    let _ = client.set_read_timeout(Some(IO_TIMEOUT));
    let _ = client.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let Ok(req) = read_request(&mut reader) else {
        return;
    };
    let mut words = req.head.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("").to_string();
    if method == "POST" {
        lock(&s.seen).push(Seen {
            method: method.clone(),
            path: path.clone(),
            body: req.body.clone(),
        });
    }
    let plan = {
        let p = lock(&s.plan);
        match &*p {
            Some(plan) if plan.matches(&method, &path) && !s.fired.load(Ordering::SeqCst) => {
                s.fired.store(true, Ordering::SeqCst);
                Some(plan.clone())
            }
            _ => None,
        }
    };
    let upstream = *lock(&s.upstream);
    let (on_req, on_resp) = match &plan {
        Some(p) if p.response => (None, Some(p.action)),
        Some(p) => (Some(p.action), None),
        None => (None, None),
    };
    match on_req {
        Some(Action::Drop) => return close(client),
        Some(Action::KillBefore(party)) => {
            (s.killer)(party);
            return close(client);
        }
        Some(Action::Delay) => thread::sleep(DELAY),
        _ => {}
    }
    let first = forward(upstream, &req);
    if let Some(Action::KillAfter(party)) = on_req {
        (s.killer)(party);
    }
    let resp = if on_req == Some(Action::Duplicate) || on_resp == Some(Action::Duplicate) {
        forward(upstream, &req)
    } else {
        first
    };
    let Ok(resp) = resp else {
        return close(client);
    };
    match on_resp {
        Some(Action::Drop) => return close(client),
        Some(Action::KillBefore(party)) => {
            (s.killer)(party);
            return close(client);
        }
        Some(Action::Delay) => thread::sleep(DELAY),
        _ => {}
    }
    let mut client = client;
    let _ = client.write_all(&close_response(&resp));
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Both);
    if let Some(Action::KillAfter(party)) = on_resp {
        (s.killer)(party);
    }
}

fn close(client: TcpStream) {
    let _ = client.shutdown(Shutdown::Both);
}

/// A plain HTTP request straight to a process (for replays): returns status and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}",
        body.len()
    );
    let resp = forward(
        addr,
        &Message {
            head,
            body: body.to_vec(),
        },
    )?;
    let i = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no response head"))?;
    let head = String::from_utf8_lossy(&resp[..i]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let mut body = resp[i + 4..].to_vec();
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    Ok((status, body))
}

/// Decodes a chunked body (best effort: stops at the first malformed chunk).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..i])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else { break };
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[(i + 4 + size).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(prefix: &'static str, suffix: &'static str) -> Plan {
        Plan {
            method: "POST",
            prefix,
            suffix,
            response: false,
            action: Action::Drop,
        }
    }

    #[test]
    fn plans_match_exactly_their_endpoint() {
        let start = plan("/v1/purchases", "/v1/purchases");
        assert!(start.matches("POST", "/v1/purchases"));
        assert!(!start.matches("POST", "/v1/purchases/ab/pay"));
        assert!(!start.matches("GET", "/v1/purchases"));
        let pay = plan("/v1/purchases/", "/pay");
        assert!(pay.matches("POST", "/v1/purchases/0123/pay"));
        assert!(!pay.matches("POST", "/v1/purchases/0123/delivered"));
        let quote = Plan {
            method: "GET",
            ..plan("/goods/", "")
        };
        assert!(quote.matches("GET", "/goods/article?customer_key=ab&identity=alice"));
    }

    #[test]
    fn the_proxy_forces_connection_close_and_decodes_chunks() {
        let h = close_head("GET / HTTP/1.1\r\nConnection: keep-alive\r\nhost: x");
        assert_eq!(h, "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
