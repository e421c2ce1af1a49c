//! Verifying many endorsements at once with Ed25519 batch verification.
//!
//! Each endorsement carries two signatures: the merchant's over the endorsement and the
//! customer's over the EPO inside it. [`verify_chunk`] checks all of a chunk's signatures
//! with one batch equation ([`netbill_crypto::batch_verify`], which accepts exactly what
//! strict one-by-one verification accepts), about twice as fast per signature. If the batch
//! holds, each endorsement then goes through the ordinary [`billing::verify_endorsement`]
//! with a [`Crypto`] that answers "valid" for exactly the (key, message, signature) triples
//! the batch covered, so every other check (seals, digests, commitments) and every error
//! are the protocol core's own. If the batch fails, the chunk is verified one endorsement
//! at a time with [`RealCrypto`], so a bad signature is pinpointed with the same problem
//! code as ever (`bad-merchant-signature`, `bad-customer-signature`) and the good
//! endorsements beside it still go through.

use netbill_crypto::RealCrypto;
use netbill_proto::Signed;
use netbill_proto::billing::{self, BillingPolicy, EndorsementError, VerifiedPurchase};
use netbill_proto::crypto::{Crypto, Digest, PublicKey, SealKey, SealSecret, Signature};
use netbill_proto::messages::{Endorsement, Epo};
use netbill_proto::signed::{SignedBody, to_be_signed};

/// One signature to check: key, the exact signed message, signature.
type Triple = (PublicKey, Vec<u8>, Signature);

/// The two signatures an endorsement carries, as [`billing::verify_endorsement`] checks
/// them: the merchant's (under the key the endorsement names) and the customer's (under
/// the key the EPO names).
fn signatures(e: &Signed<Endorsement>) -> [Triple; 2] {
    let body = e.body_unverified();
    [
        (
            body.merchant_key,
            to_be_signed(Endorsement::DOMAIN, e.bytes()),
            *e.signature(),
        ),
        (
            body.epo.body_unverified().customer_key,
            to_be_signed(Epo::DOMAIN, body.epo.bytes()),
            *body.epo.signature(),
        ),
    ]
}

/// [`RealCrypto`], except that the signatures in `checked` (already verified by a batch)
/// are not verified again. Any other signature is verified as usual.
struct BatchChecked<'a> {
    checked: &'a [Triple],
}

impl Crypto for BatchChecked<'_> {
    fn digest(&self, parts: &[&[u8]]) -> Digest {
        RealCrypto.digest(parts)
    }
    fn verify(&self, key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
        self.checked
            .iter()
            .any(|(k, m, s)| k == key && s == sig && m.as_slice() == msg)
            || RealCrypto.verify(key, msg, sig)
    }
    fn seal(&self, to: &SealKey, info: &[u8], plaintext: &[u8], entropy: [u8; 32]) -> Vec<u8> {
        RealCrypto.seal(to, info, plaintext, entropy)
    }
    fn seal_key(&self, secret: &SealSecret) -> SealKey {
        RealCrypto.seal_key(secret)
    }
    fn open(&self, secret: &SealSecret, info: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        RealCrypto.open(secret, info, sealed)
    }
    fn pair_seal(
        &self,
        own: &SealSecret,
        peer: &SealKey,
        aad: &[u8],
        plaintext: &[u8],
        nonce: [u8; 24],
    ) -> Vec<u8> {
        RealCrypto.pair_seal(own, peer, aad, plaintext, nonce)
    }
    fn pair_open(
        &self,
        own: &SealSecret,
        peer: &SealKey,
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        RealCrypto.pair_open(own, peer, aad, sealed)
    }
    fn mac(&self, key: &[u8; 32], parts: &[&[u8]]) -> Digest {
        RealCrypto.mac(key, parts)
    }
}

/// Verifies a chunk of endorsements (phase 1, no ledger), checking all their signatures
/// with one batch equation and falling back to one by one if it fails. The answers are in
/// the order of `chunk`, and are exactly what [`billing::verify_endorsement`] with
/// [`RealCrypto`] would answer for each.
pub fn verify_chunk(
    billing_secret: &SealSecret,
    policy: &BillingPolicy,
    chunk: Vec<Signed<Endorsement>>,
) -> Vec<Result<VerifiedPurchase, EndorsementError>> {
    let triples: Vec<Vec<Triple>> = chunk.iter().map(|e| signatures(e).to_vec()).collect();
    let items: Vec<(PublicKey, &[u8], Signature)> = triples
        .iter()
        .flatten()
        .map(|(k, m, s)| (*k, m.as_slice(), *s))
        .collect();
    if netbill_crypto::batch_verify(&items) {
        chunk
            .into_iter()
            .zip(&triples)
            .map(|(e, checked)| {
                billing::verify_endorsement(&BatchChecked { checked }, billing_secret, policy, e)
            })
            .collect()
    } else {
        chunk
            .into_iter()
            .map(|e| billing::verify_endorsement(&RealCrypto, billing_secret, policy, e))
            .collect()
    }
}

/// A chunk of one request's endorsements and where to send their answers.
type VerifyJob = (
    Vec<Signed<Endorsement>>,
    tokio::sync::oneshot::Sender<Vec<Result<VerifiedPurchase, EndorsementError>>>,
);

/// Endorsements smaller requests bring are verified together, up to this many per batch
/// equation (past it a batch saves little more, and the answers would wait longer).
pub const VERIFY_CHUNK_MAX: usize = 32;

/// Verifier threads, one per core: each takes the requests waiting (up to
/// [`VERIFY_CHUNK_MAX`] endorsements, a request's never split) and checks them with one
/// batch equation ([`verify_chunk`]). So concurrent single-endorsement requests get batch
/// verification too, and an idle server verifies a lone endorsement at once.
#[derive(Clone)]
pub struct Verifier {
    tx: tokio::sync::mpsc::Sender<VerifyJob>,
    stats: std::sync::Arc<VerifierStats>,
}

/// Counters of the verifier threads' work, for `GET /v1/admin/stats` and benchmarks.
#[derive(Debug, Default)]
pub struct VerifierStats {
    /// Chunks verified, each with one batch equation (or one by one if it failed).
    pub chunks: std::sync::atomic::AtomicU64,
    /// Endorsements verified in them.
    pub endorsements: std::sync::atomic::AtomicU64,
}

/// Waits for the next request and takes every other one already waiting, until the jobs hold
/// [`VERIFY_CHUNK_MAX`] endorsements or more; empty once the channel is closed.
fn take_jobs(rx: &mut tokio::sync::mpsc::Receiver<VerifyJob>) -> Vec<VerifyJob> {
    let Some(first) = rx.blocking_recv() else {
        return Vec::new();
    };
    let mut n = first.0.len();
    let mut jobs = vec![first];
    while n < VERIFY_CHUNK_MAX {
        match rx.try_recv() {
            Ok(job) => {
                n += job.0.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    jobs
}

impl Verifier {
    /// Starts `threads` verifier threads; at most `queue_max` requests wait.
    pub fn start(
        threads: usize,
        queue_max: usize,
        billing_secret: SealSecret,
        policy: BillingPolicy,
    ) -> Verifier {
        let (tx, rx) = tokio::sync::mpsc::channel::<VerifyJob>(queue_max.max(1));
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let stats = std::sync::Arc::new(VerifierStats::default());
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let secret = billing_secret.clone();
            let counters = stats.clone();
            std::thread::Builder::new()
                .name(format!("verifier-{i}"))
                .spawn(move || {
                    loop {
                        // The thread holding the lock waits for the next request and takes
                        // whatever else is waiting; the others wait for the lock.
                        let jobs = take_jobs(&mut rx.lock().unwrap_or_else(|e| e.into_inner()));
                        if jobs.is_empty() {
                            break;
                        }
                        let sizes: Vec<usize> = jobs.iter().map(|(c, _)| c.len()).collect();
                        let (chunks, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
                        let chunk: Vec<_> = chunks.into_iter().flatten().collect();
                        {
                            use std::sync::atomic::Ordering::Relaxed;
                            counters.chunks.fetch_add(1, Relaxed);
                            counters.endorsements.fetch_add(chunk.len() as u64, Relaxed);
                        }
                        let mut answers = verify_chunk(&secret, &policy, chunk).into_iter();
                        for (reply, k) in replies.into_iter().zip(sizes) {
                            let _ = reply.send(answers.by_ref().take(k).collect());
                        }
                    }
                })
                .expect("spawning a verifier thread");
        }
        Verifier { tx, stats }
    }

    /// The verifier threads' counters.
    pub fn stats(&self) -> &VerifierStats {
        &self.stats
    }

    /// Verifies one request's endorsements (phase 1, no ledger); the answers are in order and
    /// exactly what [`billing::verify_endorsement`] with [`RealCrypto`] would answer. `None`
    /// if the verifier threads are gone.
    pub async fn verify(
        &self,
        chunk: Vec<Signed<Endorsement>>,
    ) -> Option<Vec<Result<VerifiedPurchase, EndorsementError>>> {
        if chunk.is_empty() {
            return Some(Vec::new());
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.send((chunk, reply)).await.ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbill_crypto::{Ed25519Signer, random_bytes, random_seal_secret};
    use netbill_proto::crypto::{GoodsKey, SealKey, Signer};
    use netbill_proto::customer::CustomerPurchase;
    use netbill_proto::merchant::{MerchantPurchase, Offer, make_quote};
    use netbill_proto::messages::{GoodsOffer, PriceRequest};
    use netbill_proto::{AccountId, Amount, ProductCode};

    struct World {
        secret: SealSecret,
        seal_key: SealKey,
        customer: Ed25519Signer,
        merchant: Ed25519Signer,
        merchant_seal: SealSecret,
    }

    fn world() -> World {
        let secret = random_seal_secret();
        let seal_key = RealCrypto.seal_key(&secret);
        World {
            secret,
            seal_key,
            customer: Ed25519Signer::generate(),
            merchant: Ed25519Signer::generate(),
            merchant_seal: random_seal_secret(),
        }
    }

    /// A real endorsement, as a merchant sends it in step 6.
    fn endorsement(w: &World, serial: u64) -> Signed<Endorsement> {
        let c = RealCrypto;
        let (cid, mid) = (
            AccountId::new("alice").unwrap(),
            AccountId::new("shop").unwrap(),
        );
        let now = 1_000_000;
        let offer = Offer {
            product: ProductCode::new("article").unwrap(),
            description: "An article".into(),
            price: Amount::from_minor(125).unwrap(),
            group_prices: vec![],
            goods_digest: c.digest(&[b"goods"]),
            goods_len: 5,
        };
        let req = PriceRequest {
            identity: cid.to_string(),
            customer_key: w.customer.public_key(),
            product: offer.product.clone(),
            prd_hex: String::new(),
            bid: None,
            credentials: vec![],
        };
        let quote = make_quote(
            &c,
            &w.merchant,
            &mid,
            &req,
            &offer,
            &|_| None,
            serial,
            now,
            3_600_000,
        )
        .unwrap();
        let goods = GoodsOffer {
            purchase: format!("{serial}"),
            checksum: c.digest(&[b"ciphertext"]),
            ciphertext_len: 42,
        };
        let mut m = MerchantPurchase::new(quote.clone(), GoodsKey(random_bytes()), goods.clone());
        let note = m.deliver(serial, now, 3_000_000);
        let mut cp = CustomerPurchase::new(quote, goods.clone(), random_seal_secret());
        cp.delivered(goods.checksum, goods.ciphertext_len, note, now)
            .unwrap();
        let epo = cp
            .sign_epo(
                &c,
                &w.customer,
                &w.seal_key,
                &cid,
                random_bytes(),
                "",
                now,
                random_bytes(),
            )
            .unwrap();
        m.endorse(&c, &w.merchant, &w.merchant_seal, &w.seal_key, epo, "", now)
            .unwrap()
    }

    fn flip(sig: &Signature) -> Signature {
        let mut s = *sig;
        s.0[40] ^= 1;
        s
    }

    /// The merchant's signature broken.
    fn bad_merchant(e: &Signed<Endorsement>) -> Signed<Endorsement> {
        Signed::from_parts(e.bytes().to_vec(), flip(e.signature())).unwrap()
    }

    /// The customer's signature broken, under a valid merchant signature.
    fn bad_customer(w: &World, e: &Signed<Endorsement>) -> Signed<Endorsement> {
        let mut body = e.body_unverified().clone();
        let epo = &body.epo;
        body.epo = Signed::from_parts(epo.bytes().to_vec(), flip(epo.signature())).unwrap();
        Signed::sign(body, &w.merchant)
    }

    fn one_by_one(w: &World, chunk: &[Signed<Endorsement>]) -> Vec<Result<Digest, String>> {
        chunk
            .iter()
            .map(|e| {
                billing::verify_endorsement(
                    &RealCrypto,
                    &w.secret,
                    &BillingPolicy::default(),
                    e.clone(),
                )
                .map(|v| v.endorsement_digest)
                .map_err(|e| e.code().to_string())
            })
            .collect()
    }

    fn batched(w: &World, chunk: &[Signed<Endorsement>]) -> Vec<Result<Digest, String>> {
        verify_chunk(&w.secret, &BillingPolicy::default(), chunk.to_vec())
            .into_iter()
            .map(|r| {
                r.map(|v| v.endorsement_digest)
                    .map_err(|e| e.code().to_string())
            })
            .collect()
    }

    #[test]
    fn a_good_chunk_verifies_as_one_by_one() {
        let w = world();
        let chunk: Vec<_> = (0..9).map(|i| endorsement(&w, i)).collect();
        let got = batched(&w, &chunk);
        assert!(got.iter().all(Result::is_ok));
        assert_eq!(got, one_by_one(&w, &chunk));
    }

    #[test]
    fn a_bad_signature_is_pinpointed_with_its_code() {
        let w = world();
        let mut chunk: Vec<_> = (0..8).map(|i| endorsement(&w, i)).collect();
        chunk[2] = bad_merchant(&chunk[2]);
        chunk[5] = bad_customer(&w, &chunk[5]);
        let got = batched(&w, &chunk);
        assert_eq!(got, one_by_one(&w, &chunk));
        assert_eq!(got[2], Err("bad-merchant-signature".to_string()));
        assert_eq!(got[5], Err("bad-customer-signature".to_string()));
        assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 6);
    }

    #[test]
    fn only_the_batch_checked_signatures_are_taken_as_valid() {
        let w = world();
        let e = endorsement(&w, 1);
        let checked = signatures(&e).to_vec();
        let crypto = BatchChecked { checked: &checked };
        let (k, m, s) = &checked[0];
        assert!(crypto.verify(k, m, s));
        // Another message, key or signature is verified for real, and fails.
        assert!(!crypto.verify(k, b"another message", s));
        assert!(!crypto.verify(&checked[1].0, m, s));
        assert!(!crypto.verify(k, m, &flip(s)));
    }

    /// Requests waiting together are verified as one chunk, and each gets exactly its own
    /// answers, in order, as one-by-one verification would give them.
    #[test]
    fn the_verifier_answers_each_request_its_own_endorsements_in_order() {
        let w = world();
        let mut all: Vec<_> = (0..12).map(|i| endorsement(&w, i)).collect();
        all[4] = bad_customer(&w, &all[4]);
        all[9] = bad_merchant(&all[9]);
        let expected = one_by_one(&w, &all);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let verifier = Verifier::start(1, 64, w.secret.clone(), BillingPolicy::default());
        // Requests of 1, 3, 5 and 3 endorsements, sent at once.
        let requests = [&all[0..1], &all[1..4], &all[4..9], &all[9..12]];
        let answers = rt.block_on(futures_util::future::join_all(
            requests.iter().map(|r| verifier.verify(r.to_vec())),
        ));
        let mut got = Vec::new();
        for (request, answer) in requests.iter().zip(answers) {
            let answer = answer.expect("the verifier runs");
            assert_eq!(answer.len(), request.len(), "one answer per endorsement");
            got.extend(answer.into_iter().map(|r| {
                r.map(|v| v.endorsement_digest)
                    .map_err(|e| e.code().to_string())
            }));
        }
        assert_eq!(got, expected);
        assert_eq!(got[4], Err("bad-customer-signature".to_string()));
        assert_eq!(got[9], Err("bad-merchant-signature".to_string()));
    }

    /// A verifier thread takes what is waiting, up to the chunk limit, and never splits a
    /// request: 40 waiting single requests are taken as 32 and then 8; one request of 40
    /// alone.
    #[test]
    fn a_verifier_thread_takes_the_waiting_requests_up_to_the_chunk_limit() {
        let w = world();
        let e = endorsement(&w, 1);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<VerifyJob>(64);
        let mut waiting = Vec::new();
        let mut send = |n: usize| {
            let (reply, answer) = tokio::sync::oneshot::channel();
            tx.try_send((vec![e.clone(); n], reply)).unwrap();
            waiting.push(answer);
        };
        for _ in 0..40 {
            send(1);
        }
        send(40);
        send(1);
        let sizes = |jobs: Vec<VerifyJob>| jobs.iter().map(|(c, _)| c.len()).collect::<Vec<_>>();
        assert_eq!(sizes(take_jobs(&mut rx)), vec![1; VERIFY_CHUNK_MAX]);
        assert_eq!(sizes(take_jobs(&mut rx)), [vec![1; 8], vec![40]].concat());
        assert_eq!(sizes(take_jobs(&mut rx)), vec![1]);
        drop(tx);
        assert!(take_jobs(&mut rx).is_empty(), "closed: nothing more");
    }
}
