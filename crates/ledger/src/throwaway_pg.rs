//! A throwaway PostgreSQL 15 for tests and benchmarks: `initdb` on a temp dir, `pg_ctl
//! start` on a free loopback port, stopped and removed when dropped. Never a shared or system
//! server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where Debian's postgresql-15 package puts the server binaries (outside PATH).
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running PostgreSQL server, stopped and removed on drop (and, should the test process
/// die first, by a watchdog shell that outlives it).
pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_postgres: bool,
    pub port: u16,
    next_db: AtomicU32,
}

/// The one server of this process, started on first use (tests share it).
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start(false).unwrap_or_else(|e| panic!("{e}")))
}

/// A fresh, empty database on the shared server; returns its URL.
pub fn fresh_database() -> String {
    shared().create_database().unwrap_or_else(|e| panic!("{e}"))
}

fn bin_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("NETBILL_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PG_BIN));
    for tool in ["initdb", "pg_ctl", "postgres"] {
        if !dir.join(tool).is_file() {
            return Err(format!(
                "PostgreSQL 15 server binaries are missing ({} not found): install them with \
                 `apt-get install -y postgresql-15` (or run .ci/postgres-deps.sh), or point \
                 NETBILL_PG_BIN at a directory holding initdb and pg_ctl",
                dir.join(tool).display()
            ));
        }
    }
    Ok(dir)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free loopback port: {e}"))
}

impl PgServer {
    /// Starts a new server (initdb + pg_ctl start). `durable` keeps `fsync` on (for
    /// benchmarks); tests run with it off, for speed.
    pub fn start(durable: bool) -> Result<PgServer, String> {
        let bin = bin_dir()?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("netbill-pg-")
            .tempdir()
            .map_err(|e| format!("creating a temp dir for PostgreSQL: {e}"))?;
        if as_postgres {
            // initdb refuses to run as root: the postgres user must own the directory.
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| format!("running chown: {e}"))?;
            if !st.success() {
                return Err(format!("chown postgres {} failed", dir.path().display()));
            }
        }
        let mut server = PgServer {
            bin,
            dir,
            as_postgres,
            port: free_port()?,
            next_db: AtomicU32::new(0),
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        let log = server.dir.path().join("log");
        server.watchdog();
        // The free port can be taken by another process between choosing it and the
        // server binding it (tests start servers in parallel): then choose again.
        let mut attempts = 0;
        loop {
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=300",
                server.port,
                server.dir.path().display(),
                if durable { "on" } else { "off" }
            );
            let started = server.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-o".as_ref(),
                    opts.as_ref(),
                    "start".as_ref(),
                ],
            );
            match started {
                Err(e) if e.contains("Address already in use") && attempts < 5 => {
                    attempts += 1;
                    server.port = free_port()?;
                }
                other => break other?,
            }
        }
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Runs a PostgreSQL tool, which must succeed.
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {tool}: {e}"))?;
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        if !out.status.success() {
            return Err(format!(
                "{tool} {args:?} failed ({}):\n{}{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// A shell that stops the server and removes its files once this process is gone,
    /// for the shared server (a static is never dropped) and for a test that panics hard.
    fn watchdog(&self) {
        let stop_cmd = format!(
            "{}'{}' -D '{}' stop -m immediate",
            if self.as_postgres {
                "runuser -u postgres -- "
            } else {
                ""
            },
            self.bin.join("pg_ctl").display(),
            self.data().display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop_cmd} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.path().display(),
        );
        // Not waited for: it outlives this process on purpose.
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database; returns its URL.
    pub fn create_database(&self) -> Result<String, String> {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        let mut last = String::new();
        // CREATE DATABASE copies template1 and fails if another copy holds it: retry.
        for _ in 0..20 {
            match postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
                .and_then(|mut c| c.batch_execute(&format!("CREATE DATABASE {name}")))
            {
                Ok(()) => return Ok(self.url(&name)),
                Err(e) => last = format!("{e:?}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(format!(
            "creating database {name} on the throwaway PostgreSQL failed: {last}"
        ))
    }

    /// The server's directory (data, socket and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["stop", "-m", "fast"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
