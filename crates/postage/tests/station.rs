//! Sorting-station verdicts for good and bad indicia, and the month-partitioned seen-set.

mod common;

use common::{day, letter, operator_and_device, trust};
use ed25519_dalek::{Signer, SigningKey};
use netbill_postage::barcode;
use netbill_postage::station::{Rejection, Station};

#[test]
fn accepts_once_then_rejects_the_copy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (op, mut dev) = operator_and_device(tmp.path(), "psd", 10_000);
    let today = day("2026-11-23");
    let ind = dev.print(&letter(today, 580)).expect("print");
    let mut st =
        Station::open(&tmp.path().join("station.db"), trust(&op), "10001").expect("station");
    let png = barcode::render_png(&ind.to_bytes()).expect("png");
    let decoded = barcode::decode_image(&png);
    assert_eq!(decoded.as_deref(), Ok(&ind.to_bytes()[..]));
    let first = st
        .check_batch(std::slice::from_ref(&decoded), today)
        .expect("check")
        .remove(0);
    assert_eq!(first.expect("accepted").sequence, ind.sequence);
    let again = st.check_batch(&[decoded], today).expect("check").remove(0);
    assert!(
        matches!(again, Err(Rejection::Duplicate { sequence: 1, first_seen, .. }) if first_seen == today),
        "{again:?}"
    );
    // A station opened later on the same store still remembers.
    drop(st);
    let mut st = Station::open(&tmp.path().join("station.db"), trust(&op), "100").expect("station");
    let v = st.check(&ind.to_bytes(), day("2026-12-01")).expect("check");
    assert!(matches!(v, Err(Rejection::Duplicate { .. })), "{v:?}");
}

#[test]
fn each_bad_input_gets_its_own_verdict_and_is_not_recorded() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (op, mut dev) = operator_and_device(tmp.path(), "psd", 100_000);
    let today = day("2026-11-23");
    let mut st =
        Station::open(&tmp.path().join("station.db"), trust(&op), "10001").expect("station");
    let check = |bytes: &[u8], st: &mut Station| st.check(bytes, today).expect("station works");

    // Wrong destination: a station for another area.
    let good = dev.print(&letter(today, 580)).expect("print");
    let mut other =
        Station::open(&tmp.path().join("other.db"), trust(&op), "15213").expect("station");
    assert!(matches!(
        check(&good.to_bytes(), &mut other),
        Err(Rejection::WrongDestination { .. })
    ));

    // Expired: mailed more than six months ago; the last valid day is still accepted.
    let old = dev.print(&letter(day("2026-05-22"), 580)).expect("print");
    assert!(matches!(
        check(&old.to_bytes(), &mut st),
        Err(Rejection::Expired { .. })
    ));
    let edge = dev.print(&letter(day("2026-05-23"), 580)).expect("print");
    assert!(
        check(&edge.to_bytes(), &mut st).is_ok(),
        "exactly six months old is still valid"
    );

    // Future-dated.
    let future = dev.print(&letter(day("2026-11-24"), 580)).expect("print");
    assert!(matches!(
        check(&future.to_bytes(), &mut st),
        Err(Rejection::FutureDated { .. })
    ));

    // Flipped bits in the data: postage byte (signature fails), version byte (malformed).
    let fresh = dev.print(&letter(today, 580)).expect("print");
    let mut flipped = fresh.to_bytes();
    flipped[31] ^= 0x01;
    assert_eq!(check(&flipped, &mut st), Err(Rejection::BadSignature));
    let mut flipped = fresh.to_bytes();
    flipped[0] ^= 0x80;
    assert!(matches!(
        check(&flipped, &mut st),
        Err(Rejection::Malformed(_))
    ));
    let mut flipped = fresh.to_bytes();
    flipped[100] ^= 0x10;
    assert_eq!(check(&flipped, &mut st), Err(Rejection::BadSignature));

    // Forged signature: right fields, signed by a key the operator never certified.
    let mut forged = fresh.clone();
    forged.sequence += 1000;
    forged.signature = SigningKey::from_bytes(&[5; 32])
        .sign(&forged.signed_bytes())
        .to_bytes();
    assert_eq!(
        check(&forged.to_bytes(), &mut st),
        Err(Rejection::BadSignature)
    );

    // Unknown certificate: a device certified by a different operator.
    let rogue_root = tmp.path().join("rogue");
    let (_rogue, mut rogue_dev) = operator_and_device(&rogue_root, "psd", 10_000);
    let mut rogue_ind = rogue_dev.print(&letter(today, 580)).expect("print");
    rogue_ind.cert_serial = 77;
    let rogue_ind_bytes = rogue_ind.to_bytes();
    assert_eq!(
        check(&rogue_ind_bytes, &mut st),
        Err(Rejection::UnknownCertificate(77))
    );

    // Unreadable image.
    let v = st
        .check_batch(
            &[barcode::decode_image(b"\x89PNG\r\n\x1a\n garbage")],
            today,
        )
        .expect("check");
    assert!(matches!(v[0], Err(Rejection::Unreadable(_))));

    // None of the rejected ones was recorded; the fresh one is still acceptable once.
    assert_eq!(
        st.store()
            .counts()
            .expect("counts")
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>(),
        1
    );
    assert!(check(&fresh.to_bytes(), &mut st).is_ok());

    // Revoked certificate: every indicium of the device is refused afterwards.
    op.revoke(dev.certificate().serial).expect("revoke");
    let mut st =
        Station::open(&tmp.path().join("station.db"), trust(&op), "10001").expect("station");
    let late = dev.print(&letter(today, 580)).expect("print");
    assert_eq!(
        check(&late.to_bytes(), &mut st),
        Err(Rejection::Revoked(dev.certificate().serial))
    );
}

#[test]
fn purge_drops_whole_months_older_than_six_months() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (op, mut dev) = operator_and_device(tmp.path(), "psd", 100_000);
    let path = tmp.path().join("station.db");
    let mut st = Station::open(&path, trust(&op), "10001").expect("station");
    let may = dev.print(&letter(day("2026-05-31"), 580)).expect("print");
    let june = dev.print(&letter(day("2026-06-01"), 580)).expect("print");
    let nov = dev.print(&letter(day("2026-11-20"), 580)).expect("print");
    for i in [&may, &june, &nov] {
        assert!(
            st.check(&i.to_bytes(), day("2026-11-23"))
                .expect("check")
                .is_ok()
        );
    }
    assert_eq!(st.store().partitions(), &[202_605, 202_606, 202_611]);

    // On 2026-11-30 May's last day (2026-05-31) is still valid: nothing to drop.
    assert!(
        st.store()
            .purge(day("2026-11-30"))
            .expect("purge")
            .is_empty()
    );
    // On 2026-12-01 every May entry has expired: drop the May table only.
    assert_eq!(
        st.store().purge(day("2026-12-01")).expect("purge"),
        vec![202_605]
    );
    assert_eq!(st.store().partitions(), &[202_606, 202_611]);
    // A copy of the purged May indicium is still refused, as expired.
    let v = st.check(&may.to_bytes(), day("2026-12-01")).expect("check");
    assert!(matches!(v, Err(Rejection::Expired { .. })), "{v:?}");
    // The June copy is still caught as a duplicate.
    let v = st
        .check(&june.to_bytes(), day("2026-12-01"))
        .expect("check");
    assert!(matches!(v, Err(Rejection::Duplicate { .. })), "{v:?}");
}

#[test]
fn invalid_station_area_is_an_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (op, _dev) = operator_and_device(tmp.path(), "psd", 1_000);
    for area in ["", "1234", "abcde", "100011"] {
        assert!(
            Station::open(&tmp.path().join("s.db"), trust(&op), area).is_err(),
            "{area:?}"
        );
    }
}
