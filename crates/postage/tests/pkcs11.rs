//! Device keys in a PKCS#11 token (SoftHSM2). PKCS#11 initialisation is process-wide, so this
//! file holds a single test that runs the whole scenario serially.
//! Needs `softhsm2`; run `.ci/postage-deps.sh` to install it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{day, letter};
use netbill_postage::Postage;
use netbill_postage::device::{Device, DeviceError, KeySpec};
use netbill_postage::operator::Operator;
use netbill_postage::pkcs11::{TokenConfig, TokenKey};

const PIN: &str = "123456";

/// Locates the SoftHSM2 module, failing with install instructions when it is missing.
pub fn softhsm_module() -> PathBuf {
    for p in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "SoftHSM2 (libsofthsm2.so) is required for this test and was not found; install it with `bash .ci/postage-deps.sh`"
    );
}

fn init_token(conf: &Path, label: &str) {
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", conf)
        .args(["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "654321"])
        .output()
        .unwrap_or_else(|e| panic!("softhsm2-util could not be run ({e}); install softhsm2 with `bash .ci/postage-deps.sh`"));
    assert!(
        out.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn device_key_in_softhsm_token() {
    let module = softhsm_module();
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir_all(&tokens).expect("mkdir");
    let conf = tmp.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .expect("conf");
    // SAFETY: this test binary holds exactly one test, so no other thread reads the environment.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    init_token(&conf, "psd-token");

    let op = Operator::init(&tmp.path().join("op")).expect("operator");
    let id = op.allocate_device_id().expect("id");
    let config = TokenConfig {
        module,
        token_label: "psd-token".into(),
        key_label: format!("netbill-psd-{}", id.0),
    };
    let start = day("2026-01-01");
    let dir = tmp.path().join("psd");
    let mut dev = Device::create(
        &dir,
        id,
        op.public_key(),
        KeySpec::Token {
            config: config.clone(),
            pin: PIN.into(),
        },
        |pk| op.certify(id, pk, start),
    )
    .expect("device with token key");
    assert!(dev.uses_token());
    let credit = op.issue_credit(id, Postage(10_000), start).expect("credit");
    dev.fund(&credit.to_bytes()).expect("fund");
    let ind = dev
        .print(&letter(day("2026-11-23"), 580))
        .expect("print with the token");
    let key = dev.certificate().verifying_key().expect("key");
    assert!(
        ind.verify_signature(&key),
        "token signature verifies as standard Ed25519"
    );
    drop(dev);

    // The sealed state holds no key material: without the PIN the device cannot sign.
    assert!(matches!(
        Device::open(&dir, None),
        Err(DeviceError::PinRequired)
    ));
    assert!(matches!(
        Device::open(&dir, Some("000000")),
        Err(DeviceError::Token(_))
    ));
    let mut dev = Device::open(&dir, Some(PIN)).expect("reopen with PIN");
    let second = dev.print(&letter(day("2026-11-23"), 580)).expect("print");
    assert_eq!(second.sequence, 2);
    assert!(second.verify_signature(&key));

    // Tamper response destroys the key inside the token.
    let e = dev.tamper("test tamper");
    assert!(matches!(e, DeviceError::Tampered { .. }));
    assert!(matches!(
        TokenKey::open(&config, PIN),
        Err(netbill_postage::pkcs11::Pkcs11Error::NoKey(_))
    ));
    assert!(matches!(
        Device::open(&dir, Some(PIN)),
        Err(DeviceError::Tampered { .. })
    ));
}
