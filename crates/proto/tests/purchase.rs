//! The whole purchase through the sans-IO core, with the symbolic crypto: every step, every
//! failure outcome, replays, conflicts, and tampering with every byte of every signed object.

use netbill_proto::billing::{
    self, AccountKind, BillingPolicy, Decision, EndorsementError, MemoryLedger,
};
use netbill_proto::codec::Codec;
use netbill_proto::crypto::symbolic::{SymbolicCrypto, SymbolicSigner, seal_secret};
use netbill_proto::crypto::{Crypto, Digest, GoodsKey, SealSecret, Signer};
use netbill_proto::customer::{
    self, CustomerEffect, CustomerError, CustomerPurchase, CustomerState, Payer, QuoteExpectation,
    Settlement,
};
use netbill_proto::merchant::{
    self, MerchantEffect, MerchantError, MerchantPurchase, MerchantState, Offer,
};
use netbill_proto::messages::{
    DeliveryNote, Endorsement, Epo, GoodsOffer, GroupCredential, PriceRequest, Quote, Receipt,
    ResultCode, StatusAnswer,
};
use netbill_proto::signed::{Signed, SignedBody};
use netbill_proto::{AccountId, Amount, GroupName, ProductCode};

const NOW: u64 = 1_700_000_000_000;
const C: SymbolicCrypto = SymbolicCrypto;

struct World {
    customer: SymbolicSigner,
    merchant: SymbolicSigner,
    billing: SymbolicSigner,
    billing_secret: SealSecret,
    authority: SymbolicSigner,
    ledger: MemoryLedger,
    policy: BillingPolicy,
}

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}
fn usd(s: &str) -> Amount {
    s.parse().unwrap()
}

impl World {
    fn new(customer_funds: &str) -> Self {
        let mut w = World {
            customer: SymbolicSigner::new("alice"),
            merchant: SymbolicSigner::new("acme"),
            billing: SymbolicSigner::new("netbill"),
            billing_secret: seal_secret("netbill"),
            authority: SymbolicSigner::new("acm"),
            ledger: MemoryLedger::default(),
            policy: BillingPolicy::default(),
        };
        w.ledger
            .open(id("alice"), AccountKind::Customer, w.customer.public_key());
        w.ledger
            .open(id("acme"), AccountKind::Merchant, w.merchant.public_key());
        w.ledger.deposit(&id("alice"), usd(customer_funds));
        w
    }

    fn offer(&self) -> Offer {
        Offer {
            product: ProductCode::new("article-1").unwrap(),
            description: "On Atomicity, Tygar 1996".into(),
            price: usd("USD:0.02"),
            group_prices: vec![(GroupName::new("acm-student").unwrap(), usd("USD:0.01"))],
            goods_digest: C.digest(&[b"the article"]),
            goods_len: 11,
        }
    }

    fn request(&self) -> PriceRequest {
        PriceRequest {
            identity: "alice".into(),
            customer_key: self.customer.public_key(),
            product: ProductCode::new("article-1").unwrap(),
            prd_hex: "00ff".into(),
            bid: None,
            credentials: vec![],
        }
    }

    fn quote(&self, req: &PriceRequest) -> Result<Signed<Quote>, MerchantError> {
        let authority = self.authority.public_key();
        merchant::make_quote(
            &C,
            &self.merchant,
            &id("acme"),
            req,
            &self.offer(),
            &|g: &GroupName| (g.as_str() == "acm-student").then_some(authority),
            1,
            NOW,
            60_000,
        )
    }

    /// Steps 1–5: returns both parties' purchase records with the EPO signed.
    fn through_epo(&self) -> (CustomerPurchase, MerchantPurchase, Signed<Epo>) {
        let (mut c, m, note, checksum) = until_goods(self);
        customer::check_quote(
            &C,
            &c.quote,
            &QuoteExpectation {
                merchant_key: &self.merchant.public_key(),
                customer_key: &self.customer.public_key(),
                product: &ProductCode::new("article-1").unwrap(),
                max_price: Some(usd("USD:1")),
            },
            NOW,
        )
        .unwrap();
        merchant::check_goods_request(&C, &self.merchant.public_key(), &c.quote, NOW).unwrap();
        c.delivered(checksum, 10, note, NOW + 6).unwrap();
        let epo = c
            .sign_epo(
                &C,
                &self.customer,
                &C.seal_key(&self.billing_secret),
                &id("alice"),
                [1; 16],
                "memo",
                NOW + 7,
                [0; 32],
            )
            .unwrap();
        (c, m, epo)
    }

    fn endorse(&self, m: &mut MerchantPurchase, epo: Signed<Epo>) -> Signed<Endorsement> {
        m.endorse(
            &C,
            &self.merchant,
            &seal_secret("acme-seal"),
            &C.seal_key(&self.billing_secret),
            epo,
            "",
            NOW + 8,
        )
        .unwrap()
    }

    /// Steps 6–7 at N: verify, decide, apply, sign.
    fn bill(
        &mut self,
        e: Signed<Endorsement>,
        now: u64,
    ) -> Result<(Decision, Signed<Receipt>), EndorsementError> {
        let v = billing::verify_endorsement(&C, &self.billing_secret, &self.policy, e)?;
        let d = billing::decide(&v, &self.ledger, now);
        let receipt = match &d {
            Decision::Settled(r) => (**r).clone(),
            Decision::Conflict => {
                return Ok((
                    d,
                    billing::make_abort_receipt(&self.billing, &v.epo().epoid, now),
                ));
            }
            Decision::Commit {
                customer_balance_minor,
                low_balance,
                ..
            } => billing::make_receipt(
                &C,
                &self.billing,
                &self.billing_secret,
                &v,
                ResultCode::Committed,
                *customer_balance_minor,
                *low_balance,
                now,
                [0; 32],
            ),
            Decision::Fail {
                code,
                customer_balance_minor,
                low_balance,
            } => billing::make_receipt(
                &C,
                &self.billing,
                &self.billing_secret,
                &v,
                *code,
                *customer_balance_minor,
                *low_balance,
                now,
                [0; 32],
            ),
        };
        self.ledger.apply(&v, &d, &receipt);
        assert!(self.ledger.conserved());
        Ok((d, receipt))
    }

    fn balance(&self, who: &str) -> i64 {
        self.ledger.accounts[&id(who)].balance_minor
    }
}

#[test]
fn a_purchase_moves_money_and_releases_k() {
    let mut w = World::new("USD:1");
    let (mut c, mut m, epo) = w.through_epo();
    let e = w.endorse(&mut m, epo);
    let (d, receipt) = w.bill(e, NOW + 9).unwrap();
    assert!(matches!(d, Decision::Commit { .. }));
    assert_eq!(
        m.settle(&C, &w.billing.public_key(), receipt.clone()),
        Ok(ResultCode::Committed)
    );
    match c
        .settle(
            &C,
            &w.billing.public_key(),
            &C.seal_key(&w.billing_secret),
            receipt,
        )
        .unwrap()
    {
        Settlement::Paid {
            goods_key,
            balance_minor,
            ..
        } => {
            assert_eq!(goods_key, GoodsKey([7; 32]));
            assert_eq!(balance_minor, 100_000 - 2_000);
        }
        other => panic!("expected paid, got {other:?}"),
    }
    assert_eq!(w.balance("alice"), 98_000);
    assert_eq!(w.balance("acme"), 2_000);
}

#[test]
fn a_group_credential_lowers_the_price_only_for_its_holder() {
    let w = World::new("USD:1");
    let cred = |holder| {
        Signed::sign(
            GroupCredential {
                group: GroupName::new("acm-student").unwrap(),
                detail: "member 42".into(),
                holder_key: holder,
                expires_at_ms: NOW + 1_000,
            },
            &w.authority,
        )
    };
    let mut req = w.request();
    req.credentials = vec![cred(w.customer.public_key())];
    let q = w.quote(&req).unwrap();
    assert_eq!(q.body_unverified().price, usd("USD:0.01"));
    assert_eq!(
        q.body_unverified().group.as_ref().map(|g| g.as_str()),
        Some("acm-student")
    );

    req.credentials = vec![cred(SymbolicSigner::new("mallory").public_key())];
    assert!(matches!(
        w.quote(&req),
        Err(MerchantError::CredentialNotForYou(_))
    ));

    let forged = Signed::sign(
        cred(w.customer.public_key()).body_unverified().clone(),
        &w.customer,
    );
    req.credentials = vec![forged];
    assert!(matches!(
        w.quote(&req),
        Err(MerchantError::UntrustedCredential(_))
    ));
}

#[test]
fn insufficient_funds_gets_a_signed_failure_receipt_and_moves_nothing() {
    let mut w = World::new("USD:0.01");
    let (mut c, mut m, epo) = w.through_epo();
    let e = w.endorse(&mut m, epo);
    let (_, receipt) = w.bill(e, NOW + 9).unwrap();
    assert_eq!(
        receipt.verify(&C, &w.billing.public_key()).unwrap().result,
        ResultCode::InsufficientFunds
    );
    assert_eq!(
        c.settle(
            &C,
            &w.billing.public_key(),
            &C.seal_key(&w.billing_secret),
            receipt
        )
        .unwrap(),
        Settlement::NotPaid {
            result: ResultCode::InsufficientFunds,
            balance_minor: Some(1_000)
        }
    );
    assert_eq!((w.balance("alice"), w.balance("acme")), (1_000, 0));
}

#[test]
fn each_failure_outcome() {
    type Setup = fn(&mut World);
    let cases: [(Setup, u64, ResultCode); 5] = [
        (|_| {}, NOW + 700_000, ResultCode::Expired),
        (
            |w| w.ledger.accounts.get_mut(&id("alice")).unwrap().key_revoked = true,
            NOW + 9,
            ResultCode::KeyRevoked,
        ),
        (
            |w| w.ledger.accounts.get_mut(&id("acme")).unwrap().frozen = true,
            NOW + 9,
            ResultCode::AccountFrozen,
        ),
        (
            |w| {
                w.ledger.accounts.remove(&id("acme"));
            },
            NOW + 9,
            ResultCode::UnknownAccount,
        ),
        (
            |w| {
                w.ledger.accounts.get_mut(&id("alice")).unwrap().key =
                    SymbolicSigner::new("x").public_key()
            },
            NOW + 9,
            ResultCode::UnknownAccount,
        ),
    ];
    for (setup, now, want) in cases {
        let mut w = World::new("USD:1");
        let (_, mut m, epo) = w.through_epo();
        let e = w.endorse(&mut m, epo);
        setup(&mut w);
        let before = w.ledger.accounts.clone();
        let (_, receipt) = w.bill(e, now).unwrap();
        assert_eq!(receipt.body_unverified().result, want);
        assert_eq!(w.ledger.accounts, before, "{want:?} moved money");
    }
}

#[test]
fn a_retried_endorsement_gets_the_same_receipt_and_one_debit() {
    let mut w = World::new("USD:1");
    let (_, mut m, epo) = w.through_epo();
    let e = w.endorse(&mut m, epo.clone());
    let (_, first) = w.bill(e.clone(), NOW + 9).unwrap();
    let (d, again) = w.bill(e, NOW + 20).unwrap();
    assert!(matches!(d, Decision::Settled(_)));
    assert_eq!(first, again);
    assert_eq!(w.balance("alice"), 98_000);
    // The merchant endorsing the same EPO again yields the stored endorsement.
    assert_eq!(
        m.endorse(
            &C,
            &w.merchant,
            &seal_secret("acme-seal"),
            &C.seal_key(&w.billing_secret),
            epo,
            "",
            NOW,
        )
        .unwrap(),
        m.endorsement.clone().unwrap()
    );
}

#[test]
fn a_different_endorsement_for_a_used_epoid_is_refused() {
    let mut w = World::new("USD:1");
    let (_, mut m, epo) = w.through_epo();
    let e = w.endorse(&mut m, epo.clone());
    w.bill(e, NOW + 9).unwrap();
    // Same EPO, endorsed again with a different K: a conflict, no second debit.
    let mut m2 = MerchantPurchase::new(m.quote.clone(), GoodsKey([8; 32]), m.offer.clone());
    m2.delivery = m.delivery.clone();
    let e2 = w.endorse(&mut m2, epo);
    let (d, _) = w.bill(e2, NOW + 10).unwrap();
    assert_eq!(d, Decision::Conflict);
    assert_eq!(w.balance("alice"), 98_000);
}

#[test]
fn an_unknown_epoid_past_expiry_is_aborted_and_a_late_endorsement_cannot_commit() {
    let mut w = World::new("USD:1");
    let (mut c, mut m, epo) = w.through_epo();
    let epoid = epo.body_unverified().epoid.clone();
    let late = NOW + w.policy.expiry_max_ms + 100;
    assert!(!billing::may_abort(&epoid, &w.policy, NOW + 9));
    assert!(billing::may_abort(&epoid, &w.policy, late));
    let abort = billing::make_abort_receipt(&w.billing, &epoid, late);
    w.ledger.abort(&epoid, abort.clone());
    let e = w.endorse(&mut m, epo);
    let (d, receipt) = w.bill(e, NOW + 9).unwrap();
    assert_eq!(d, Decision::Settled(Box::new(abort)));
    assert_eq!(receipt.body_unverified().result, ResultCode::Aborted);
    assert_eq!(w.balance("alice"), 100_000);
    assert_eq!(
        c.settle(
            &C,
            &w.billing.public_key(),
            &C.seal_key(&w.billing_secret),
            receipt
        )
        .unwrap(),
        Settlement::NotPaid {
            result: ResultCode::Aborted,
            balance_minor: None
        }
    );
}

#[test]
fn the_customer_refuses_a_wrong_checksum_and_cannot_abort_after_signing() {
    let w = World::new("USD:1");
    let quote = w.quote(&w.request()).unwrap();
    let offer = GoodsOffer {
        purchase: "p".into(),
        checksum: C.digest(&[b"x"]),
        ciphertext_len: 1,
    };
    let mut m = MerchantPurchase::new(quote.clone(), GoodsKey([1; 32]), offer.clone());
    let note = m.deliver(1, NOW, 1000);
    let mut c = CustomerPurchase::new(quote, offer, seal_secret("r"));
    assert_eq!(
        c.delivered(C.digest(&[b"y"]), 1, note.clone(), NOW),
        Err(CustomerError::ChecksumMismatch)
    );
    c.delivered(C.digest(&[b"x"]), 1, note, NOW).unwrap();
    c.sign_epo(
        &C,
        &w.customer,
        &C.seal_key(&w.billing_secret),
        &id("alice"),
        [0; 16],
        "",
        NOW,
        [0; 32],
    )
    .unwrap();
    assert_eq!(c.abort(), Err(CustomerError::AlreadyCommitted));
}

#[test]
fn the_merchant_refuses_an_epo_that_differs_from_quote_or_delivery() {
    let w = World::new("USD:1");
    let (_, m, epo) = w.through_epo();
    let mut body = epo.body_unverified().clone();
    body.price = usd("USD:0.00001");
    let cheap = Signed::sign(body, &w.customer);
    let mut m1 = m.clone();
    assert_eq!(
        m1.endorse(
            &C,
            &w.merchant,
            &seal_secret("acme-seal"),
            &C.seal_key(&w.billing_secret),
            cheap,
            "",
            NOW,
        ),
        Err(MerchantError::EpoMismatch("price"))
    );
    let mut body = epo.body_unverified().clone();
    body.goods_checksum = Digest([0; 32]);
    let other = Signed::sign(body, &w.customer);
    let mut m2 = m.clone();
    assert_eq!(
        m2.endorse(
            &C,
            &w.merchant,
            &seal_secret("acme-seal"),
            &C.seal_key(&w.billing_secret),
            other,
            "",
            NOW,
        ),
        Err(MerchantError::EpoMismatch(
            "checksum of the encrypted goods"
        ))
    );
    let by_mallory = Signed::sign(
        epo.body_unverified().clone(),
        &SymbolicSigner::new("mallory"),
    );
    let mut m3 = m;
    assert_eq!(
        m3.endorse(
            &C,
            &w.merchant,
            &seal_secret("acme-seal"),
            &C.seal_key(&w.billing_secret),
            by_mallory,
            "",
            NOW,
        ),
        Err(MerchantError::BadCustomerSignature)
    );
}

/// Flipping any bit of any signed object makes it undecodable or unverifiable.
fn assert_every_bit_is_covered<T: SignedBody + std::fmt::Debug>(
    s: &Signed<T>,
    key: &netbill_proto::crypto::PublicKey,
) {
    assert!(s.verify(&C, key).is_ok());
    for i in 0..s.bytes().len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = s.bytes().to_vec();
            bytes[i] ^= bit;
            if let Ok(t) = Signed::<T>::from_parts(bytes, *s.signature()) {
                assert!(
                    t.verify(&C, key).is_err(),
                    "byte {i} of {} not covered",
                    String::from_utf8_lossy(T::DOMAIN)
                );
            }
        }
    }
    let mut sig = *s.signature();
    sig.0[0] ^= 1;
    let t = Signed::<T>::from_parts(s.bytes().to_vec(), sig).unwrap();
    assert!(t.verify(&C, key).is_err());
    // A signature of one kind never verifies as another kind (domain separation).
    assert!(
        Signed::<Receipt>::from_parts(s.bytes().to_vec(), *s.signature())
            .map_or(true, |r| r.verify(&C, key).is_err())
            || T::DOMAIN == Receipt::DOMAIN
    );
}

#[test]
fn every_signed_field_is_covered() {
    let mut w = World::new("USD:1");
    let (_, mut m, epo) = w.through_epo();
    assert_every_bit_is_covered(&m.quote, &w.merchant.public_key());
    assert_every_bit_is_covered(&epo, &w.customer.public_key());
    let e = w.endorse(&mut m, epo);
    assert_every_bit_is_covered(&e, &w.merchant.public_key());
    let (_, receipt) = w.bill(e.clone(), NOW + 9).unwrap();
    assert_every_bit_is_covered(&receipt, &w.billing.public_key());
    // And N refuses an endorsement whose inner EPO was tampered with.
    let mut inner = e.body_unverified().clone();
    let mut epo_body = inner.epo.body_unverified().clone();
    epo_body.price = usd("USD:0.00001");
    inner.epo = Signed::from_parts(
        Signed::sign(epo_body, &w.customer).bytes().to_vec(),
        *inner.epo.signature(),
    )
    .unwrap();
    let forged = Signed::sign(inner, &w.merchant);
    assert_eq!(
        billing::verify_endorsement(&C, &w.billing_secret, &w.policy, forged).err(),
        Some(EndorsementError::BadCustomerSignature)
    );
}

#[test]
fn canonical_encoding_round_trips() {
    let w = World::new("USD:1");
    let (_, _, epo) = w.through_epo();
    let bytes = epo.body_unverified().to_bytes();
    assert_eq!(Epo::from_bytes(&bytes).unwrap(), *epo.body_unverified());
    let json = serde_json::to_string(&epo).unwrap();
    let back: Signed<Epo> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, epo);
    assert!(serde_json::from_str::<Signed<Epo>>(r#"{"body":"AAAA","sig":"AAAA"}"#).is_err());
    assert!(serde_json::from_str::<Signed<Epo>>(r#"{"body":"!!","sig":""}"#).is_err());
}

mod disputes {
    use super::*;
    use netbill_proto::dispute::{self, Claim, Evidence, GoodsFacts, Ruling, TrustedKeys};

    /// A committed purchase and all its records, as an arbitrator would receive them.
    fn committed() -> (World, Evidence, Signed<Receipt>) {
        let mut w = World::new("USD:1");
        let (_, mut m, epo) = w.through_epo();
        let e = w.endorse(&mut m, epo.clone());
        let (_, receipt) = w.bill(e.clone(), NOW + 9).unwrap();
        let ev = Evidence {
            quote: Some(m.quote.clone()),
            epo: Some(epo),
            endorsement: Some(e),
            receipt: Some(receipt.clone()),
            goods_key: Some(GoodsKey([7; 32])),
            goods: Some(GoodsFacts {
                // The ciphertext she signed for, decrypting to what the quote promised.
                ciphertext_digest: C.digest(&[b"ciphertext"]),
                plaintext_digest: Some(C.digest(&[b"the article"])),
            }),
        };
        (w, ev, receipt)
    }

    fn keys(w: &World) -> TrustedKeys {
        TrustedKeys {
            billing: w.billing.public_key(),
            merchant: w.merchant.public_key(),
        }
    }

    fn rule(w: &World, claim: Claim, ev: &Evidence) -> (Ruling, Option<Amount>) {
        let v = dispute::decide(&C, &keys(w), &claim, ev);
        assert!(!v.reasons.is_empty(), "a verdict always gives its reasons");
        (v.ruling, v.amount)
    }

    #[test]
    fn honest_delivery_is_upheld() {
        let (w, ev, _) = committed();
        assert_eq!(
            rule(&w, Claim::WrongGoods, &ev),
            (Ruling::ForMerchant, None)
        );
        assert_eq!(
            rule(&w, Claim::NeverBought, &ev),
            (Ruling::ForMerchant, None)
        );
        assert_eq!(
            rule(
                &w,
                Claim::ChargedWrongAmount {
                    agreed: usd("USD:0.01")
                },
                &ev
            ),
            (Ruling::ForMerchant, None)
        );
        assert_eq!(
            rule(&w, Claim::NeverGotKey, &ev),
            (Ruling::KeyProduced, None)
        );
        assert_eq!(
            rule(&w, Claim::MerchantNotPaid, &ev),
            (Ruling::MerchantOwed, Some(usd("USD:0.02")))
        );
    }

    /// `receipt` signed again, as N's writer signs: in a batch of three, at `index`.
    fn batch_signed(w: &World, receipt: &Signed<Receipt>, index: usize) -> Vec<Signed<Receipt>> {
        let mut bodies: Vec<Receipt> = (0..3u64)
            .map(|i| {
                let mut b = receipt.body_unverified().clone();
                b.time_ms += 100 + i;
                b
            })
            .collect();
        bodies[index] = receipt.body_unverified().clone();
        Signed::sign_batch(bodies, &C, &w.billing)
    }

    #[test]
    fn a_batch_signed_receipt_is_evidence_and_a_bad_path_is_none() {
        use netbill_proto::signed::SignatureForm;
        let claims = || {
            [
                Claim::WrongGoods,
                Claim::NeverBought,
                Claim::NeverGotKey,
                Claim::MerchantNotPaid,
                Claim::ChargedWrongAmount {
                    agreed: usd("USD:0.01"),
                },
            ]
        };
        let (w, ev, receipt) = committed();
        let batch = batch_signed(&w, &receipt, 1);
        let mut batched = ev.clone();
        batched.receipt = Some(batch[1].clone());
        let mut missing = ev.clone();
        missing.receipt = None;
        // Another receipt's path, and a path of another batch under this batch's signature.
        let other = batch_signed(&w, &receipt, 2);
        let SignatureForm::Batch { proof, .. } = batch[0].form().clone() else {
            panic!("batch-signed");
        };
        let wrong_path = Signed::from_form(
            batch[1].bytes().to_vec(),
            SignatureForm::Batch {
                root_signature: *batch[1].signature(),
                proof,
            },
        )
        .unwrap();
        let SignatureForm::Batch { proof, .. } = other[2].form().clone() else {
            panic!("batch-signed");
        };
        let other_batch = Signed::from_form(
            batch[1].bytes().to_vec(),
            SignatureForm::Batch {
                root_signature: *batch[1].signature(),
                proof,
            },
        )
        .unwrap();
        for claim in claims() {
            // The arbitrator rules on a batch-signed receipt as on one signed alone.
            assert_eq!(
                rule(&w, claim.clone(), &batched),
                rule(&w, claim.clone(), &ev)
            );
            // A receipt whose path does not reach a root N signed is no receipt at all.
            for forged in [&wrong_path, &other_batch] {
                let mut bad = ev.clone();
                bad.receipt = Some(forged.clone());
                assert_eq!(
                    rule(&w, claim.clone(), &bad),
                    rule(&w, claim.clone(), &missing)
                );
            }
        }
        // (Which matters: without N's receipt some claims are ruled otherwise.)
        assert!(
            claims()
                .into_iter()
                .any(|c| rule(&w, c.clone(), &ev) != rule(&w, c, &missing))
        );
    }

    #[test]
    fn a_merchant_who_delivers_garbage_or_other_goods_loses() {
        let (w, mut ev, _) = committed();
        ev.goods = Some(GoodsFacts {
            ciphertext_digest: C.digest(&[b"ciphertext"]),
            plaintext_digest: None,
        });
        assert_eq!(
            rule(&w, Claim::WrongGoods, &ev),
            (Ruling::ForCustomer, Some(usd("USD:0.02")))
        );
        ev.goods = Some(GoodsFacts {
            ciphertext_digest: C.digest(&[b"ciphertext"]),
            plaintext_digest: Some(C.digest(&[b"an unrelated pamphlet"])),
        });
        assert_eq!(
            rule(&w, Claim::WrongGoods, &ev),
            (Ruling::ForCustomer, Some(usd("USD:0.02")))
        );
    }

    #[test]
    fn a_customer_who_tampers_with_the_ciphertext_loses() {
        let (w, mut ev, _) = committed();
        ev.goods = Some(GoodsFacts {
            ciphertext_digest: C.digest(&[b"edited"]),
            plaintext_digest: None,
        });
        assert_eq!(
            rule(&w, Claim::WrongGoods, &ev),
            (Ruling::ForMerchant, None)
        );
    }

    #[test]
    fn a_server_that_cannot_show_the_epo_for_a_debit_refunds_it() {
        let (w, mut ev, _) = committed();
        ev.epo = None;
        assert_eq!(
            rule(&w, Claim::NeverBought, &ev),
            (Ruling::ForCustomer, Some(usd("USD:0.02")))
        );
        // An EPO signed by someone else does not count either.
        let (w, mut ev, _) = committed();
        let forged = Signed::sign(
            ev.epo.clone().unwrap().body_unverified().clone(),
            &SymbolicSigner::new("mallory"),
        );
        ev.epo = Some(forged);
        assert_eq!(
            rule(&w, Claim::NeverBought, &ev),
            (Ruling::ForCustomer, Some(usd("USD:0.02")))
        );
    }

    #[test]
    fn a_server_that_charges_more_than_the_epo_refunds_the_difference() {
        let (w, ev, receipt) = committed();
        let mut body = receipt.body_unverified().clone();
        body.price = usd("USD:0.05");
        let mut ev2 = ev.clone();
        ev2.receipt = Some(Signed::sign(body, &w.billing));
        assert_eq!(
            rule(
                &w,
                Claim::ChargedWrongAmount {
                    agreed: usd("USD:0.02")
                },
                &ev2
            ),
            (Ruling::ForCustomer, Some(usd("USD:0.03")))
        );
    }

    #[test]
    fn never_got_the_key_and_told_it_failed() {
        let (w, mut ev, receipt) = committed();
        let failure = {
            let mut b = receipt.body_unverified().clone();
            b.result = ResultCode::InsufficientFunds;
            Box::new(Signed::sign(b, &w.billing))
        };
        assert_eq!(
            rule(
                &w,
                Claim::ToldFailedButCharged {
                    failure: failure.clone()
                },
                &ev
            ),
            (Ruling::KeyProduced, None)
        );
        let forged = Box::new(Signed::sign(failure.body_unverified().clone(), &w.merchant));
        assert_eq!(
            rule(&w, Claim::ToldFailedButCharged { failure: forged }, &ev),
            (Ruling::ForMerchant, None)
        );
        ev.goods_key = Some(GoodsKey([8; 32]));
        assert_eq!(
            rule(&w, Claim::NeverGotKey, &ev),
            (Ruling::ForCustomer, Some(usd("USD:0.02")))
        );
        assert_eq!(
            rule(&w, Claim::ToldFailedButCharged { failure }, &ev),
            (Ruling::ForCustomer, Some(usd("USD:0.02")))
        );
        ev.receipt = None;
        assert_eq!(
            rule(&w, Claim::NeverGotKey, &ev),
            (Ruling::NothingOwed, None)
        );
    }
}

#[test]
fn refunds_and_checkpoints_are_signed_over_every_field() {
    let w = World::new("USD:1");
    let (_, mut m, epo) = w.through_epo();
    let e = w.endorse(&mut m, epo);
    let epoid = e.body_unverified().epo.body_unverified().epoid.clone();
    let req = netbill_proto::messages::RefundRequest {
        refund_id: "r-1".into(),
        epoid: epoid.clone(),
        merchant: AccountId::new("acme").unwrap(),
        amount: usd("USD:0.01"),
        reason: "damaged".into(),
        time_ms: NOW,
    };
    let signed_req = Signed::sign(req.clone(), &w.merchant);
    assert_every_bit_is_covered(&signed_req, &w.merchant.public_key());
    let receipt = billing::make_refund_receipt(
        &w.billing,
        &req,
        signed_req.digest(&C),
        usd("USD:0.01"),
        usd("USD:0.02"),
        NOW,
    );
    assert_every_bit_is_covered(&receipt, &w.billing.public_key());
    let cp = Signed::sign(
        netbill_proto::messages::Checkpoint {
            seq: 7,
            hash: C.digest(&[b"head"]),
            deposits_minor: 100,
            payouts_minor: 5,
            time_ms: NOW,
        },
        &w.billing,
    );
    assert_every_bit_is_covered(&cp, &w.billing.public_key());
}

#[test]
fn refund_decisions_never_exceed_the_price() {
    use netbill_proto::billing::{RefundError, RefundFacts, decide_refund};
    let acme = AccountId::new("acme").unwrap();
    let alice = AccountId::new("alice").unwrap();
    let epoid: netbill_proto::EpoId = "acme:1700000000000:1".parse().unwrap();
    let req = |amount: &str, id: &str| netbill_proto::messages::RefundRequest {
        refund_id: id.into(),
        epoid: epoid.clone(),
        merchant: acme.clone(),
        amount: usd(amount),
        reason: String::new(),
        time_ms: NOW,
    };
    let facts = |result, refunded: &str| RefundFacts {
        result,
        merchant: acme.clone(),
        customer: Some(alice.clone()),
        price: usd("USD:0.02"),
        refunded: usd(refunded),
    };
    assert_eq!(
        decide_refund(
            &req("USD:0.02", "a"),
            Some(&facts(ResultCode::Committed, "USD:0"))
        ),
        Ok((alice.clone(), usd("USD:0.02")))
    );
    assert!(matches!(
        decide_refund(
            &req("USD:0.00001", "a"),
            Some(&facts(ResultCode::Committed, "USD:0.02"))
        ),
        Err(RefundError::OverLimit { .. })
    ));
    assert!(matches!(
        decide_refund(
            &req("USD:0.01", "a"),
            Some(&facts(ResultCode::InsufficientFunds, "USD:0"))
        ),
        Err(RefundError::NotCommitted(..))
    ));
    assert_eq!(
        decide_refund(
            &req("USD:0", "a"),
            Some(&facts(ResultCode::Committed, "USD:0"))
        ),
        Err(RefundError::ZeroAmount)
    );
    for bad in ["", "a b", "é", &"x".repeat(65)] {
        assert_eq!(
            decide_refund(
                &req("USD:0.01", bad),
                Some(&facts(ResultCode::Committed, "USD:0"))
            ),
            Err(RefundError::BadRefundId),
            "{bad:?}"
        );
    }
    assert!(matches!(
        decide_refund(&req("USD:0.01", "a"), None),
        Err(RefundError::NoSuchPurchase(_))
    ));
    let mut other = req("USD:0.01", "a");
    other.merchant = AccountId::new("evil").unwrap();
    assert!(matches!(
        decide_refund(&other, Some(&facts(ResultCode::Committed, "USD:0"))),
        Err(RefundError::WrongMerchant { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// The merchant's effects: what its shells (the server, the model checker) carry out.

fn pay(
    w: &World,
    m: &mut MerchantPurchase,
    epo: Signed<Epo>,
) -> Result<MerchantEffect, MerchantError> {
    m.on_payment(
        &C,
        &w.merchant,
        &seal_secret("acme-seal"),
        &C.seal_key(&w.billing_secret),
        epo,
        "",
        NOW + 8,
    )
}

#[test]
fn a_payment_is_endorsed_once_then_answered_from_the_outcome() {
    let mut w = World::new("USD:1");
    let (_c, mut m, epo) = w.through_epo();
    let epoid = epo.body_unverified().epoid.clone();
    // The EPO: endorse, and send the endorsement to N.
    let MerchantEffect::SendEndorsement(e) = pay(&w, &mut m, epo.clone()).unwrap() else {
        panic!("a new EPO is endorsed and sent to N");
    };
    let e = *e;
    assert_eq!(m.endorsement.as_ref(), Some(&e));
    // The same EPO again before N answered: ask N, do not endorse twice.
    assert_eq!(
        pay(&w, &mut m, epo.clone()).unwrap(),
        MerchantEffect::AskBilling(epoid.clone())
    );
    // N knows no outcome yet: the very same endorsement again.
    let none = StatusAnswer {
        epoid: epoid.clone(),
        receipt: None,
    };
    assert_eq!(
        m.on_billing_answer(&C, &w.billing.public_key(), &none)
            .unwrap(),
        vec![MerchantEffect::SendEndorsement(Box::new(e.clone()))]
    );
    // A receipt that is not N's changes nothing.
    let (_, receipt) = w.bill(e, NOW + 9).unwrap();
    let forged = StatusAnswer {
        epoid: epoid.clone(),
        receipt: Some(Signed::sign(receipt.body_unverified().clone(), &w.merchant)),
    };
    assert!(
        m.on_billing_answer(&C, &w.billing.public_key(), &forged)
            .is_err()
    );
    assert_eq!(m.state(), MerchantState::Endorsed);
    // N's receipt: record the settled purchase, then answer the customer with it.
    let answer = StatusAnswer {
        epoid: epoid.clone(),
        receipt: Some(receipt.clone()),
    };
    assert_eq!(
        m.on_billing_answer(&C, &w.billing.public_key(), &answer)
            .unwrap(),
        vec![
            MerchantEffect::Record,
            MerchantEffect::AnswerCustomer(Box::new(receipt.clone()))
        ]
    );
    assert_eq!(m.state(), MerchantState::Settled(ResultCode::Committed));
    // The same EPO once settled: the receipt, from the record.
    assert_eq!(
        pay(&w, &mut m, epo).unwrap(),
        MerchantEffect::AnswerCustomer(Box::new(receipt))
    );
}

#[test]
fn another_epo_for_an_endorsed_purchase_is_refused() {
    let w = World::new("USD:1");
    let (mut c, mut m, epo) = w.through_epo();
    pay(&w, &mut m, epo).unwrap();
    // The customer signs again (another nonce): another EPO for the same EPOID.
    c.epo = None;
    let other = c
        .sign_epo(
            &C,
            &w.customer,
            &C.seal_key(&w.billing_secret),
            &id("alice"),
            [2; 16],
            "another memo",
            NOW + 7,
            [1; 32],
        )
        .unwrap_or_else(|_| panic!("a second EPO"));
    assert_eq!(pay(&w, &mut m, other), Err(MerchantError::AlreadyEndorsed));
}

#[test]
fn a_payment_finds_the_merchants_record_only_for_the_same_quote_and_goods() {
    let w = World::new("USD:1");
    let (_c, mut stored, epo) = w.through_epo();
    pay(&w, &mut stored, epo).unwrap();
    let (_c, fresh, _) = w.through_epo();
    assert_eq!(
        MerchantPurchase::for_payment(fresh.clone(), Some(stored.clone())),
        stored,
        "a retry is answered from the record"
    );
    assert_eq!(MerchantPurchase::for_payment(fresh.clone(), None), fresh);
    let mut other_goods = stored.clone();
    other_goods.offer.ciphertext_len += 1;
    assert_eq!(
        MerchantPurchase::for_payment(fresh.clone(), Some(other_goods)),
        fresh
    );
    let (_c, mut other_quote, _) = w.through_epo();
    other_quote.quote = w
        .quote(&PriceRequest {
            prd_hex: String::new(),
            ..w.request()
        })
        .unwrap();
    assert_eq!(
        MerchantPurchase::for_payment(fresh.clone(), Some(other_quote)),
        fresh
    );
}

// ---------------------------------------------------------------------------------------
// The customer's effects: what the wallet and the model checker carry out.

/// Steps 1–4 without the EPO: the quote, the merchant's record with its note, the customer's
/// fresh record.
fn until_goods(w: &World) -> (CustomerPurchase, MerchantPurchase, DeliveryNote, Digest) {
    let quote = w.quote(&w.request()).unwrap();
    let checksum = C.digest(&[b"ciphertext"]);
    let offer = GoodsOffer {
        purchase: "p1".into(),
        checksum,
        ciphertext_len: 10,
    };
    let mut m = MerchantPurchase::new(quote.clone(), GoodsKey([7; 32]), offer.clone());
    let note = m.deliver(1, NOW + 5, 600_000);
    let c = CustomerPurchase::new(quote, offer, seal_secret("reply"));
    (c, m, note, checksum)
}

fn goods(
    w: &World,
    c: &mut CustomerPurchase,
    received: (Digest, u64),
    note: DeliveryNote,
) -> Result<Vec<CustomerEffect>, (CustomerError, Vec<CustomerEffect>)> {
    let n_key = C.seal_key(&w.billing_secret);
    let account = id("alice");
    let payer = Payer {
        signer: &w.customer,
        billing_seal_key: &n_key,
        account: &account,
        memo: "memo",
    };
    c.on_goods(&C, &payer, received, note, NOW + 6, [1; 16], [0; 32])
}

/// The customer's core takes a receipt (from M or from N) as the wallet hands it over.
fn receive(
    w: &World,
    c: &mut CustomerPurchase,
    receipt: Signed<Receipt>,
) -> Result<(Settlement, Vec<CustomerEffect>), CustomerError> {
    c.on_receipt(
        &C,
        &w.billing.public_key(),
        &C.seal_key(&w.billing_secret),
        receipt,
    )
}

#[test]
fn the_goods_as_offered_are_paid_for_durably_before_the_epo_leaves() {
    let w = World::new("USD:1");
    let (mut c, _m, note, checksum) = until_goods(&w);
    let effects = goods(&w, &mut c, (checksum, 10), note).unwrap();
    let epo = c.epo.clone().expect("the EPO is signed");
    assert_eq!(
        effects,
        vec![
            CustomerEffect::PersistDurably,
            CustomerEffect::SendEpo(Box::new(epo))
        ],
        "persist durably first, then send"
    );
    assert_eq!(c.state(), CustomerState::Committed);
}

#[test]
fn goods_not_as_offered_abort_the_purchase_and_sign_nothing() {
    let w = World::new("USD:1");
    for received in [
        (C.digest(&[b"other bytes"]), 10),
        (C.digest(&[b"ciphertext"]), 11),
    ] {
        let (mut c, _m, note, _) = until_goods(&w);
        let (e, effects) = goods(&w, &mut c, received, note).unwrap_err();
        assert_eq!(e, CustomerError::ChecksumMismatch);
        assert_eq!(effects, vec![CustomerEffect::Persist]);
        assert_eq!(c.state(), CustomerState::Aborted);
        assert!(c.epo.is_none());
    }
}

#[test]
fn a_receipt_decrypts_then_records_and_recovery_asks_only_for_what_may_be_paid() {
    let mut w = World::new("USD:1");
    let (mut c, mut m, epo) = w.through_epo();
    let epoid = epo.body_unverified().epoid.clone();
    // Signed but not settled: recovery asks for the receipt.
    assert_eq!(c.recover(), vec![CustomerEffect::AskForReceipt(epoid)]);
    let e = w.endorse(&mut m, epo);
    let (_, receipt) = w.bill(e, NOW + 9).unwrap();
    // Not N's: refused, nothing changes.
    let forged = Signed::sign(receipt.body_unverified().clone(), &w.merchant);
    assert!(receive(&w, &mut c, forged).is_err());
    assert_eq!(c.state(), CustomerState::Committed);
    let (settlement, effects) = receive(&w, &mut c, receipt).unwrap();
    let Settlement::Paid { goods_key, .. } = settlement else {
        panic!("paid");
    };
    assert_eq!(goods_key, GoodsKey([7; 32]));
    assert_eq!(
        effects,
        vec![CustomerEffect::Decrypt(goods_key), CustomerEffect::Persist]
    );
    assert_eq!(c.recover(), vec![], "a settled purchase needs nothing");
    // Delivered but not signed: recovery aborts it (nothing can have been paid).
    let (mut fresh, _m, note, checksum) = until_goods(&w);
    fresh.delivered(checksum, 10, note, NOW + 6).unwrap();
    assert_eq!(fresh.recover(), vec![CustomerEffect::Persist]);
    assert_eq!(fresh.state(), CustomerState::Aborted);
    assert_eq!(fresh.recover(), vec![]);
}

#[test]
fn a_failure_receipt_records_without_decrypting() {
    let mut w = World::new("USD:0.01");
    let (mut c, mut m, epo) = w.through_epo();
    let e = w.endorse(&mut m, epo);
    let (_, receipt) = w.bill(e, NOW + 9).unwrap();
    assert_eq!(
        receipt.body_unverified().result,
        ResultCode::InsufficientFunds
    );
    let (settlement, effects) = receive(&w, &mut c, receipt).unwrap();
    assert!(matches!(settlement, Settlement::NotPaid { .. }));
    assert_eq!(effects, vec![CustomerEffect::Persist]);
}
