//! Shared fixtures for the postage library tests.
#![allow(dead_code)]

use std::path::Path;

use netbill_postage::device::{Device, KeySpec, PrintRequest};
use netbill_postage::indicium::{DeliveryPoint, RateCategory, Zip};
use netbill_postage::operator::{Operator, TrustStore};
use netbill_postage::{MailDate, Postage};

/// A fixed "today" for deterministic tests.
pub fn day(s: &str) -> MailDate {
    s.parse().expect("valid test date")
}

/// A print request for a letter from 15213 to 10001-3890-01.
pub fn letter(date: MailDate, postage: u64) -> PrintRequest {
    PrintRequest {
        postage: Postage(postage),
        date,
        origin: Zip(15213),
        destination: DeliveryPoint::new(Zip(10001), "3890-01").expect("delivery point"),
        rate: RateCategory::Letter,
    }
}

/// An operator in `root/op` and a device in `root/<name>` funded with `funds` mills.
pub fn operator_and_device(root: &Path, name: &str, funds: u64) -> (Operator, Device) {
    let op = match Operator::open(&root.join("op")) {
        Ok(op) => op,
        Err(_) => Operator::init(&root.join("op")).expect("operator init"),
    };
    let id = op.allocate_device_id().expect("device id");
    let start = day("2025-01-01");
    let mut dev = Device::create(
        &root.join(name),
        id,
        op.public_key(),
        KeySpec::SealedFile,
        |pk| op.certify(id, pk, start),
    )
    .expect("device init");
    let credit = op.issue_credit(id, Postage(funds), start).expect("credit");
    dev.fund(&credit.to_bytes()).expect("fund");
    (op, dev)
}

/// The operator's published trust store.
pub fn trust(op: &Operator) -> TrustStore {
    TrustStore::load(&op.public_dir()).expect("trust store")
}
