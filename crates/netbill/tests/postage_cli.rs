//! End-to-end tests of `netbill postage …`, run as a user would run the binary.
//! Needs `zxing-cpp-tools` and `softhsm2`: run `.ci/postage-deps.sh` to install them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tmp"),
        }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).display().to_string()
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_netbill"))
            .arg("postage")
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("NETBILL_PKCS11_PIN")
            .output()
            .expect("run netbill")
    }
    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "netbill postage {args:?} failed: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }
    /// Runs and requires a one-line error with exit code 1; returns stderr.
    fn err(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "netbill postage {args:?}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        let e = text(&o.stderr);
        assert!(e.starts_with("error: "), "{e}");
        assert_eq!(
            e.trim_end().lines().count(),
            1,
            "error must be one line: {e}"
        );
        e
    }
    /// Runs and requires a rejecting verdict (exit code 3); returns stdout.
    fn rejected(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(3),
            "netbill postage {args:?}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }
    fn setup_device(&self, funds: &str) {
        self.ok(&["operator", "init", "--dir", "op"]);
        self.ok(&[
            "device",
            "init",
            "--device",
            "psd",
            "--operator",
            "op",
            "--date",
            "2026-01-01",
        ]);
        self.ok(&[
            "fund",
            "--device",
            "psd",
            "--operator",
            "op",
            "--amount",
            funds,
            "--save-credit",
            "credit1.bin",
        ]);
    }
    fn print(&self, out: &str, extra: &[&str]) -> Output {
        let mut args = vec!["print", "--device", "psd", "--out", out];
        let defaults = [
            ("--from", "15213"),
            ("--to", "10001"),
            ("--delivery-point", "3890-01"),
            ("--postage", "USD:0.58"),
            ("--date", "2026-11-23"),
        ];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend_from_slice(&[flag, value]);
            }
        }
        args.extend_from_slice(extra);
        self.run(&args)
    }
    fn verify(&self, input: &str, station: &str, today: &str) -> Output {
        self.run(&[
            "verify",
            input,
            "--station",
            station,
            "--trust",
            "op/public",
            "--store",
            "station.db",
            "--today",
            today,
        ])
    }
    fn registers(&self) -> String {
        self.ok(&["device", "report", "--device", "psd"])
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn zxing_bytes(path: &Path) -> Vec<u8> {
    let o = Command::new("ZXingReader")
        .args(["-bytes", "-format", "PDF417"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("ZXingReader (zxing-cpp-tools) is required ({e}); install it with `bash .ci/postage-deps.sh`"));
    assert!(o.status.success(), "ZXingReader: {}", text(&o.stderr));
    o.stdout
}

#[test]
fn print_verify_copy_and_independent_decode() {
    let env = Env::new();
    env.setup_device("USD:10.00");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["op/operator.key", "psd/seal.key", "credit1.bin"] {
            let mode = std::fs::metadata(env.p(key))
                .expect("key file")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{key} must be private");
        }
    }
    let o = env.print("label.png", &["--data-out", "label.hex"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("descending register now USD:9.42"),
        "{}",
        text(&o.stdout)
    );

    // The independent decoder reads exactly the bytes we signed.
    let hex_line = std::fs::read_to_string(env.p("label.hex")).expect("hex");
    let expected = hex::decode(hex_line.trim()).expect("hex decodes");
    assert_eq!(expected.len(), 107);
    assert_eq!(zxing_bytes(&env.p("label.png")), expected);

    let out = text(&env.verify("label.png", "10001", "2026-11-23").stdout);
    assert!(
        out.starts_with("ACCEPT device 1 seq 1 USD:0.58 mailed 2026-11-23 to 10001-3890-01"),
        "{out}"
    );
    // A copy of the same label is refused, as is the same data typed in.
    let o = env.verify("label.png", "10001", "2026-11-24");
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o.stdout).starts_with("REJECT duplicate: copied indicium"),
        "{}",
        text(&o.stdout)
    );
    let o = env.run(&[
        "verify",
        "--data",
        hex_line.trim(),
        "--station",
        "100",
        "--trust",
        "op/public",
        "--store",
        "station.db",
        "--today",
        "2026-11-24",
    ]);
    assert_eq!(o.status.code(), Some(3));

    // Re-issue of the last indicium: marked, decodes, and is still the same piece (duplicate).
    let out = env.ok(&["reissue", "--device", "psd", "--out", "again.png"]);
    assert!(out.contains("re-issued indicium #1"), "{out}");
    let out = env.rejected(&[
        "verify",
        "again.png",
        "--station",
        "10001",
        "--trust",
        "op/public",
        "--store",
        "station.db",
        "--today",
        "2026-11-24",
    ]);
    assert!(out.contains("REJECT duplicate"), "{out}");

    // SVG label with human-readable caption.
    let o = env.print("label.svg", &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let svg = std::fs::read_to_string(env.p("label.svg")).expect("svg");
    assert!(svg.contains("<svg") && svg.contains("USD:0.58") && svg.contains("10001-3890-01"));

    // Audit: the device-signed report matches the operator's records.
    env.ok(&[
        "device",
        "report",
        "--device",
        "psd",
        "--out",
        "report.bin",
        "--date",
        "2026-11-23",
    ]);
    let out = env.ok(&["operator", "audit", "--dir", "op", "--report", "report.bin"]);
    assert!(out.contains("AUDIT OK"), "{out}");
}

#[test]
fn sheet_of_many_verifies_each_once() {
    let env = Env::new();
    env.setup_device("USD:10.00");
    let o = env.print("sheet.png", &["--count", "6", "--per-row", "3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines = std::fs::read_to_string(env.p("sheet.png.hex")).expect("sheet data");
    assert_eq!(lines.lines().count(), 6);
    let out = text(&env.verify("sheet.png.hex", "10001", "2026-11-23").stdout);
    assert!(out.contains("6 accepted, 0 rejected"), "{out}");
    env.ok(&["render", "--data", "sheet.png.hex", "--out", "again.svg"]);
    assert!(env.registers().contains("pieces printed:      6"));
}

#[test]
fn bad_inputs_get_clear_verdicts_and_errors() {
    let env = Env::new();
    env.setup_device("USD:1.00");
    assert!(env.print("a.png", &[]).status.success());
    let before = env.registers();

    // Wrong destination, expired, future-dated: each with its own verdict; none recorded.
    let out = text(&env.verify("a.png", "15213", "2026-11-23").stdout);
    assert!(out.starts_with("REJECT wrong-destination"), "{out}");
    let out = text(&env.verify("a.png", "10001", "2027-05-24").stdout);
    assert!(out.starts_with("REJECT expired"), "{out}");
    let out = text(&env.verify("a.png", "10001", "2026-11-22").stdout);
    assert!(out.starts_with("REJECT future-dated"), "{out}");

    // Flipped bit in the data, unreadable image.
    let hex_data = {
        let mut b = zxing_bytes(&env.p("a.png"));
        b[30] ^= 0x02;
        hex::encode(b)
    };
    let out = env.rejected(&[
        "verify",
        "--data",
        &hex_data,
        "--station",
        "10001",
        "--trust",
        "op/public",
        "--store",
        "station.db",
        "--today",
        "2026-11-23",
    ]);
    assert!(out.starts_with("REJECT bad-signature"), "{out}");
    std::fs::write(env.p("junk.png"), b"\x89PNG\r\n\x1a\nnot really").expect("write");
    let out = env.rejected(&[
        "verify",
        "junk.png",
        "--station",
        "10001",
        "--trust",
        "op/public",
        "--store",
        "station.db",
        "--today",
        "2026-11-23",
    ]);
    assert!(out.starts_with("REJECT unreadable"), "{out}");
    // After all these rejections the genuine piece is still accepted once.
    let out = env.ok(&[
        "verify",
        "a.png",
        "--station",
        "10001",
        "--trust",
        "op/public",
        "--store",
        "station.db",
        "--today",
        "2026-11-23",
    ]);
    assert!(out.starts_with("ACCEPT"), "{out}");

    // Funding: replayed credit, foreign credit; printing with insufficient postage.
    let e = env.err(&["fund", "--device", "psd", "--credit", "credit1.bin"]);
    assert!(e.contains("already used"), "{e}");
    env.ok(&[
        "device",
        "init",
        "--device",
        "psd2",
        "--operator",
        "op",
        "--date",
        "2026-01-01",
    ]);
    env.ok(&[
        "operator",
        "credit",
        "--dir",
        "op",
        "--device-id",
        "2",
        "--amount",
        "USD:5",
        "--out",
        "foreign.bin",
    ]);
    let e = env.err(&["fund", "--device", "psd", "--credit", "foreign.bin"]);
    assert!(e.contains("is for device 2, this is device 1"), "{e}");
    let o = env.print("b.png", &["--postage", "USD:0.40"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = env.err(&[
        "print",
        "--device",
        "psd",
        "--from",
        "15213",
        "--to",
        "10001",
        "--delivery-point",
        "3890-01",
        "--postage",
        "USD:5.00",
        "--date",
        "2026-11-23",
        "--out",
        "c.png",
    ]);
    assert!(e.contains("insufficient postage"), "{e}");
    assert!(!env.p("c.png").exists());
    // Malformed arguments are usage errors (exit 2) that say what to write.
    let o = env.print("d.png", &["--from", "1521"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("expected 5 digits, like 15213"),
        "{}",
        text(&o.stderr)
    );
    let o = env.print("d.png", &["--postage", "0.5811"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("write amounts like USD:0.58"),
        "{}",
        text(&o.stderr)
    );
    let after = env.registers();
    assert!(after.contains("pieces printed:      2"), "{after}");
    assert_ne!(before, after);

    // Revoked certificate.
    env.ok(&["operator", "revoke", "--dir", "op", "--serial", "1"]);
    let out = text(&env.verify("b.png", "10001", "2026-11-23").stdout);
    assert!(out.starts_with("REJECT revoked"), "{out}");

    // Tampered device state: altered file → keys erased, terminal, registers kept for audit.
    let state = env.p("psd/state.bin");
    let mut bytes = std::fs::read(&state).expect("state");
    let n = bytes.len();
    bytes[n - 20] ^= 0x01;
    std::fs::write(&state, bytes).expect("write");
    let e = env.err(&[
        "fund",
        "--device",
        "psd",
        "--operator",
        "op",
        "--amount",
        "USD:1",
    ]);
    assert!(e.contains("TAMPERED"), "{e}");
    assert!(!env.p("psd/seal.key").exists());
    let out = env.rejected(&["device", "report", "--device", "psd"]);
    assert!(
        out.contains("device TAMPERED") && out.contains("pieces printed:      2"),
        "{out}"
    );

    // Explicit tamper trigger on the other device.
    env.ok(&["device", "tamper", "--device", "psd2"]);
    let e = env.err(&["fund", "--device", "psd2", "--credit", "foreign.bin"]);
    assert!(e.contains("TAMPERED"), "{e}");
}

#[test]
fn purge_help_and_bench() {
    let env = Env::new();
    env.setup_device("USD:10.00");
    assert!(
        env.print("old.png", &["--date", "2026-03-10"])
            .status
            .success()
    );
    assert!(env.print("new.png", &[]).status.success());
    assert!(
        env.verify("old.png", "10001", "2026-04-01")
            .status
            .success()
    );
    assert!(
        env.verify("new.png", "10001", "2026-11-23")
            .status
            .success()
    );
    let out = env.ok(&["purge", "--store", "station.db", "--today", "2026-11-23"]);
    assert!(
        out.contains("dropped partition 202603")
            && out.contains("kept partition 202611: 1 entries"),
        "{out}"
    );

    for cmd in [
        vec!["--help"],
        vec!["operator", "--help"],
        vec!["operator", "init", "--help"],
        vec!["device", "init", "--help"],
        vec!["fund", "--help"],
        vec!["print", "--help"],
        vec!["verify", "--help"],
        vec!["purge", "--help"],
        vec!["device", "report", "--help"],
        vec!["bench", "--help"],
    ] {
        let out = env.ok(&cmd);
        assert!(out.contains("Usage:"), "{cmd:?}: {out}");
    }
    let e = env.err(&[
        "print",
        "--device",
        "nowhere",
        "--from",
        "15213",
        "--to",
        "10001",
        "--delivery-point",
        "3890-01",
        "--postage",
        "USD:0.58",
        "--out",
        "x.png",
    ]);
    assert!(e.contains("not a postage device"), "{e}");

    let out = env.ok(&["bench", "--count", "20"]);
    assert!(
        out.contains("printed:")
            && out.contains("verified:")
            && out.contains("raw Ed25519 verify:"),
        "{out}"
    );
}

#[test]
fn device_key_in_softhsm_via_cli() {
    let module = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or_else(|| {
        panic!("SoftHSM2 is required for this test; install it with `bash .ci/postage-deps.sh`")
    });
    let env = Env::new();
    std::fs::create_dir_all(env.p("tokens")).expect("mkdir");
    std::fs::write(
        env.p("softhsm2.conf"),
        format!("directories.tokendir = {}\n", env.s("tokens")),
    )
    .expect("conf");
    let init = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", env.p("softhsm2.conf"))
        .args([
            "--init-token",
            "--free",
            "--label",
            "cli-psd",
            "--pin",
            "4321",
            "--so-pin",
            "8765",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("softhsm2-util is required ({e}); install it with `bash .ci/postage-deps.sh`")
        });
    assert!(init.status.success(), "{}", text(&init.stderr));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_netbill"))
            .arg("postage")
            .args(args)
            .current_dir(env.dir.path())
            .env("SOFTHSM2_CONF", env.p("softhsm2.conf"))
            .env("NETBILL_PKCS11_PIN", "4321")
            .output()
            .expect("run")
    };
    assert!(
        env.run(&["operator", "init", "--dir", "op"])
            .status
            .success()
    );
    let o = run(&[
        "device",
        "init",
        "--device",
        "psd",
        "--operator",
        "op",
        "--date",
        "2026-01-01",
        "--pkcs11-module",
        module,
        "--pkcs11-token",
        "cli-psd",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("PKCS#11 token"));
    assert!(
        run(&[
            "fund",
            "--device",
            "psd",
            "--operator",
            "op",
            "--amount",
            "USD:2"
        ])
        .status
        .success()
    );
    let o = run(&[
        "print",
        "--device",
        "psd",
        "--from",
        "15213",
        "--to",
        "10001",
        "--delivery-point",
        "3890-01",
        "--postage",
        "USD:0.58",
        "--date",
        "2026-11-23",
        "--out",
        "t.png",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Without the PIN the device cannot be used.
    let e = env.err(&[
        "fund",
        "--device",
        "psd",
        "--operator",
        "op",
        "--amount",
        "USD:1",
    ]);
    assert!(e.contains("PIN"), "{e}");
    let out = text(&env.verify("t.png", "10001", "2026-11-23").stdout);
    assert!(out.starts_with("ACCEPT"), "{out}");
}
