//! Waiting for a `netbill` server process to listen: the one way the tests, `netbill bench`
//! and the chaos deployment start a server and learn its address.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

/// Reads `child`'s standard output (which must be piped) until it prints its
/// "listening on http://ADDR" line; its address, or `None` if it exits or stays silent for
/// `timeout`. The rest of its output is drained in the background, so the child never
/// blocks on a full pipe.
pub fn wait_listening(child: &mut Child, timeout: Duration) -> Option<SocketAddr> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(i) = line.find("http://") {
                let _ = tx.send(line[i + 7..].trim().to_string());
                sent = true;
            }
        }
    });
    rx.recv_timeout(timeout).ok()?.parse().ok()
}
