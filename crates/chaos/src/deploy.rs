//! A fresh local deployment of real `netbill` processes behind fault-injecting proxies:
//! wallet → merchant and merchant → billing go through proxies that can inject faults; the
//! wallet's own calls to the billing server go through a plain one (so restarts are seen).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::Party;
use crate::proxy::{Killer, Proxy};

/// The admin token of a chaos deployment (loopback only, thrown away with it).
pub const TOKEN: &str = "chaos-admin-token-0123456789";
/// The goods the chaos merchant sells.
pub const ARTICLE: &str = "On atomicity: money, goods and proof move together, or not at all.\n";
/// The product bought in every schedule.
pub const PRODUCT: &str = "article";
/// Its price in minor units (USD:0.02).
pub const PRICE_MINOR: i64 = 2_000;
/// What the customer starts with.
pub const DEPOSIT: &str = "USD:100";
/// How long a process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What went wrong setting up or driving the deployment.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("running {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`netbill {what}` failed: {output}; see the logs in {logs}")]
    Command {
        what: String,
        output: String,
        logs: String,
    },
    #[error("{0} did not start listening in time; see the logs in {1}")]
    NoListen(String, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Default)]
struct Procs {
    server: Option<Child>,
    merchant: Option<Child>,
    wallet: Option<Child>,
}

fn lock(m: &Mutex<Procs>) -> MutexGuard<'_, Procs> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill_child(c: Option<Child>) {
    if let Some(mut c) = c {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A running deployment. Every process is SIGKILLed when it is dropped.
pub struct Deployment {
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    exe: PathBuf,
    bugs: Vec<String>,
    procs: Arc<Mutex<Procs>>,
    /// Wallet → merchant (faults).
    pub cm: Proxy,
    /// Merchant → billing (faults).
    pub mn: Proxy,
    /// Wallet → billing (plain).
    pub cn: Proxy,
    /// The billing server's real address.
    pub server_addr: SocketAddr,
    /// The merchant's real address.
    pub merchant_addr: SocketAddr,
}

fn placeholder() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

impl Deployment {
    /// Sets up a fresh deployment in `dir` (a temporary directory if `None`), running `exe`
    /// for every party, with the test-only bug switches `bugs` (usually none).
    pub fn start(
        exe: &Path,
        dir: Option<PathBuf>,
        bugs: &[&str],
    ) -> Result<Deployment, DeployError> {
        let (root, tmp) = match dir {
            Some(d) => {
                std::fs::create_dir_all(&d)?;
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("netbill-chaos-")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let procs = Arc::new(Mutex::new(Procs::default()));
        let p2 = procs.clone();
        let killer: Killer = Arc::new(move |party| {
            let mut p = lock(&p2);
            let c = match party {
                Party::Customer => p.wallet.take(),
                Party::Merchant => p.merchant.take(),
                Party::Billing => p.server.take(),
            };
            drop(p);
            kill_child(c);
        });
        let mut d = Deployment {
            cm: Proxy::start(placeholder(), killer.clone())?,
            mn: Proxy::start(placeholder(), killer.clone())?,
            cn: Proxy::start(placeholder(), killer)?,
            root,
            _tmp: tmp,
            exe: exe.to_path_buf(),
            bugs: bugs.iter().map(|s| s.to_string()).collect(),
            procs,
            server_addr: placeholder(),
            merchant_addr: placeholder(),
        };
        std::fs::create_dir_all(d.root.join("out"))?;
        d.run_ok(&["server", "init", "--dir", &d.path("billing")])?;
        d.start_server(None)?;
        let mn = d.mn.url();
        let out = d.run_ok(&[
            "merchant",
            "init",
            "--dir",
            &d.path("merchant"),
            "--id",
            "acme",
            "--billing",
            &mn,
        ])?;
        let mkey = key_from(&out);
        d.admin(&[
            "create-account",
            "acme",
            "--kind",
            "merchant",
            "--key",
            &mkey,
        ])?;
        std::fs::create_dir_all(d.root.join("catalog"))?;
        std::fs::write(d.root.join("catalog/article.txt"), ARTICLE)?;
        std::fs::write(
            d.root.join("catalog/catalog.toml"),
            "merchant = \"acme\"\n\n[[product]]\ncode = \"article\"\n\
             description = \"Tygar: Atomicity in Electronic Commerce\"\n\
             price = \"USD:0.02\"\nfile = \"article.txt\"\n",
        )?;
        d.start_merchant(None)?;
        let cn = d.cn.url();
        let out = d.run_ok(&[
            "wallet",
            "--dir",
            &d.path("wallet"),
            "init",
            "--account",
            "alice",
            "--billing",
            &cn,
        ])?;
        let ckey = key_from(&out);
        d.admin(&[
            "create-account",
            "alice",
            "--kind",
            "customer",
            "--key",
            &ckey,
        ])?;
        d.admin(&["deposit", "alice", DEPOSIT])?;
        Ok(d)
    }

    /// The deployment's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the deployment, as a string.
    pub fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_string_lossy().into_owned()
    }

    /// The ledger file.
    pub fn ledger_db(&self) -> PathBuf {
        self.root.join("billing/ledger.db")
    }

    /// The wallet directory.
    pub fn wallet_dir(&self) -> PathBuf {
        self.root.join("wallet")
    }

    fn log_file(&self, name: &str) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("{name}.log")))
    }

    fn command(&self, crash: Option<&str>) -> Command {
        let mut c = Command::new(&self.exe);
        c.env("NETBILL_ADMIN_TOKEN", TOKEN)
            .env_remove("NETBILL_WALLET")
            .env_remove(netbill_crash_env())
            .stdin(Stdio::null());
        if let Some(p) = crash {
            c.env(netbill_crash_env(), p);
        }
        if self.bugs.is_empty() {
            c.env_remove("NETBILL_BUG");
        } else {
            c.env("NETBILL_BUG", self.bugs.join(","));
        }
        c
    }

    /// Runs `netbill args…` to completion; its stdout if it succeeded.
    pub fn run_ok(&self, args: &[&str]) -> Result<String, DeployError> {
        let (status, out) = self.run(args, None, Duration::from_secs(30))?;
        if !status.is_some_and(|s| s.success()) {
            return Err(DeployError::Command {
                what: args.join(" "),
                output: out.trim().to_string(),
                logs: self.root.display().to_string(),
            });
        }
        Ok(out)
    }

    /// Runs `netbill args…` with a time limit (killed past it: status `None`); returns the
    /// exit status and stdout.
    pub fn run(
        &self,
        args: &[&str],
        crash: Option<&str>,
        limit: Duration,
    ) -> Result<(Option<ExitStatus>, String), DeployError> {
        let mut c = self.command(crash);
        let out_path = self.root.join(format!("cmd-{}.out", std::process::id()));
        let out_file = std::fs::File::create(&out_path)?;
        c.args(args)
            .stdout(out_file)
            .stderr(self.log_file("commands")?);
        let child = c.spawn().map_err(|source| DeployError::Spawn {
            what: args.join(" "),
            source,
        })?;
        let status = self.wait_registered(child, args.first() == Some(&"wallet"), limit);
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        Ok((status, out))
    }

    /// Waits for a child with a time limit. A wallet child is registered so that the
    /// proxies can SIGKILL it; then `None` means it was killed (or timed out).
    fn wait_registered(&self, child: Child, wallet: bool, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let mut local = None;
        if wallet {
            lock(&self.procs).wallet = Some(child);
        } else {
            local = Some(child);
        }
        loop {
            let st = if wallet {
                let mut p = lock(&self.procs);
                match p.wallet.as_mut() {
                    None => return None,
                    Some(c) => match c.try_wait() {
                        Ok(Some(s)) => {
                            p.wallet = None;
                            Some(s)
                        }
                        Ok(None) => None,
                        Err(_) => {
                            p.wallet = None;
                            return None;
                        }
                    },
                }
            } else {
                match local.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(s))) => Some(s),
                    Some(Ok(None)) => None,
                    _ => return None,
                }
            };
            if st.is_some() {
                return st;
            }
            if Instant::now() >= deadline {
                if wallet {
                    let c = lock(&self.procs).wallet.take();
                    kill_child(c);
                } else {
                    kill_child(local.take());
                }
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `netbill admin --server <N> args…`, which must succeed.
    pub fn admin(&self, args: &[&str]) -> Result<String, DeployError> {
        let server = format!("http://{}", self.server_addr);
        let mut all = vec!["admin", "--server", &server];
        all.extend(args);
        self.run_ok(&all)
    }

    /// Starts a long-running process and waits for its "listening on http://…" line.
    fn spawn_listening(
        &self,
        name: &str,
        args: &[&str],
        crash: Option<&str>,
    ) -> Result<(Child, SocketAddr), DeployError> {
        let mut c = self.command(crash);
        c.args(args)
            .stdout(Stdio::piped())
            .stderr(self.log_file(name)?);
        let mut child = c.spawn().map_err(|source| DeployError::Spawn {
            what: name.to_string(),
            source,
        })?;
        match crate::process::wait_listening(&mut child, START_TIMEOUT) {
            Some(addr) => Ok((child, addr)),
            None => {
                kill_child(Some(child));
                Err(DeployError::NoListen(
                    name.into(),
                    self.root.display().to_string(),
                ))
            }
        }
    }

    /// (Re)starts the billing server, armed with a crash point if given.
    pub fn start_server(&mut self, crash: Option<&str>) -> Result<(), DeployError> {
        let old = lock(&self.procs).server.take();
        kill_child(old);
        let dir = self.path("billing");
        let (child, addr) = self.spawn_listening(
            "server",
            &["server", "run", "--dir", &dir, "--listen", "127.0.0.1:0"],
            crash,
        )?;
        lock(&self.procs).server = Some(child);
        self.server_addr = addr;
        self.mn.set_upstream(addr);
        self.cn.set_upstream(addr);
        Ok(())
    }

    /// (Re)starts the merchant, armed with a crash point if given. Its start-up recovery
    /// settles every endorsed purchase it holds.
    pub fn start_merchant(&mut self, crash: Option<&str>) -> Result<(), DeployError> {
        let old = lock(&self.procs).merchant.take();
        kill_child(old);
        let dir = self.path("merchant");
        let catalog = self.path("catalog/catalog.toml");
        let (child, addr) = self.spawn_listening(
            "merchant",
            &[
                "merchant",
                "run",
                "--dir",
                &dir,
                "--catalog",
                &catalog,
                "--listen",
                "127.0.0.1:0",
            ],
            crash,
        )?;
        lock(&self.procs).merchant = Some(child);
        self.merchant_addr = addr;
        self.cm.set_upstream(addr);
        Ok(())
    }

    /// Whether a party's long-running process is alive.
    pub fn alive(&self, party: Party) -> bool {
        let mut p = lock(&self.procs);
        let c = match party {
            Party::Customer => &mut p.wallet,
            Party::Merchant => &mut p.merchant,
            Party::Billing => &mut p.server,
        };
        match c.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                *c = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILLs a party's process.
    pub fn kill(&self, party: Party) {
        let mut p = lock(&self.procs);
        let c = match party {
            Party::Customer => p.wallet.take(),
            Party::Merchant => p.merchant.take(),
            Party::Billing => p.server.take(),
        };
        drop(p);
        kill_child(c);
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for party in [Party::Customer, Party::Merchant, Party::Billing] {
            self.kill(party);
        }
    }
}

fn netbill_crash_env() -> &'static str {
    "NETBILL_CRASH_AT"
}

/// The hex key after "public key: " in a command's output.
fn key_from(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .map(|k| k.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_default()
}
