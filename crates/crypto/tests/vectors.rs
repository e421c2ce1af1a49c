//! The test vectors of docs/vectors.md: one fixed example of every signed object kind,
//! built here with the real cryptography from fixed seeds, and compared with the blocks of
//! the document, which this test parses, so the document and the code cannot drift apart.
//!
//! After a deliberate change of an encoding, regenerate the blocks with
//! `NETBILL_WRITE_VECTORS=1 cargo test -p netbill-crypto --test vectors` (it rewrites the
//! ```` ```vector ```` blocks of docs/vectors.md in place), and say why in the changelog.

use std::path::PathBuf;

use netbill_crypto::{Ed25519Signer, RealCrypto, encrypt_stream};
use netbill_proto::codec::Codec;
use netbill_proto::crypto::{Crypto, Digest, GoodsKey, PublicKey, SealSecret, Signer};
use netbill_proto::messages::{
    Checkpoint, CustomerPart, Endorsement, Epo, EpoSecret, EvidenceGrant, GroupCredential, Quote,
    Receipt, RefundReceipt, RefundRequest, RequestAuth, ResultCode,
};
use netbill_proto::signed::{SignedBody, to_be_signed};
use netbill_proto::{AccountId, Amount, EpoId, GroupName, ProductCode, Signed, billing, sealing};

const C: RealCrypto = RealCrypto;
const HEX_PER_LINE: usize = 64;
const KEY_WIDTH: usize = 24;

const ARTICLE: &[u8] = b"On atomicity: money, goods and proof move together.\n";

/// The fixed inputs every vector is built from.
struct Inputs {
    merchant: Ed25519Signer,
    customer: Ed25519Signer,
    billing: Ed25519Signer,
    authority: Ed25519Signer,
    arbitrator: Ed25519Signer,
    customer_seal: SealSecret,
    merchant_seal: SealSecret,
    billing_seal: SealSecret,
    goods_key: GoodsKey,
    epoid: EpoId,
}

fn inputs() -> Inputs {
    Inputs {
        merchant: Ed25519Signer::from_bytes(&[0x4d; 32]),
        customer: Ed25519Signer::from_bytes(&[0x43; 32]),
        billing: Ed25519Signer::from_bytes(&[0x4e; 32]),
        authority: Ed25519Signer::from_bytes(&[0x47; 32]),
        arbitrator: Ed25519Signer::from_bytes(&[0x41; 32]),
        customer_seal: SealSecret([0x11; 32]),
        billing_seal: SealSecret([0x22; 32]),
        merchant_seal: SealSecret([0x33; 32]),
        goods_key: GoodsKey([0x4b; 32]),
        epoid: EpoId {
            merchant: id("acme"),
            delivered_at_ms: 1_732_400_000_000,
            serial: 7,
        },
    }
}

fn id(s: &str) -> AccountId {
    AccountId::new(s).expect("a valid account id")
}

fn amount(minor: u64) -> Amount {
    Amount::from_minor(minor).expect("a valid amount")
}

fn sha256(b: &[u8]) -> Digest {
    C.digest(&[b])
}

/// The 32 bytes of entropy whose first 24 are the pair seal's nonce (§1.1).
fn entropy(byte: u8) -> [u8; 32] {
    [byte; 32]
}

/// One rendered vector: `name = value` lines in order.
struct Block {
    kind: &'static str,
    lines: Vec<(String, String)>,
}

impl Block {
    fn new(kind: &'static str) -> Block {
        Block {
            kind,
            lines: vec![("kind".into(), kind.into())],
        }
    }
    fn field(&mut self, name: &str, value: impl ToString) {
        self.lines.push((name.into(), value.to_string()));
    }
    fn hex(&mut self, name: &str, bytes: &[u8]) {
        self.field(name, hex::encode(bytes));
    }
    /// The signed object's part: domain, signer, its key, the bytes, to-be-signed bytes,
    /// signature and digest.
    fn signed<T: SignedBody>(&mut self, s: &Signed<T>, signer: &str, seed: u8, key: PublicKey) {
        self.field(
            "domain",
            std::str::from_utf8(T::DOMAIN).expect("ASCII domain"),
        );
        self.field("version", s.version());
        self.field("signer", format!("{signer}, seed {seed:02x} x 32"));
        self.hex("public_key", &key.0);
        self.hex("signed_bytes", s.bytes());
        self.hex("to_be_signed", &to_be_signed(T::DOMAIN, s.bytes()));
        self.hex("signature", &s.signature().0);
        self.hex("digest", &s.digest(&C).0);
        assert!(s.verify(&C, &key).is_ok(), "{} verifies", self.kind);
        // The bytes decode back to the same object.
        let again = Signed::<T>::from_parts(s.bytes().to_vec(), *s.signature())
            .expect("the vector decodes");
        assert_eq!(again.bytes(), s.bytes());
    }
    fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.lines {
            let is_hex = v.len() > HEX_PER_LINE && v.bytes().all(|b| b.is_ascii_hexdigit());
            if is_hex {
                for (i, chunk) in v.as_bytes().chunks(HEX_PER_LINE).enumerate() {
                    let chunk = std::str::from_utf8(chunk).expect("hex is ASCII");
                    let head = if i == 0 {
                        format!("{k} =")
                    } else {
                        String::new()
                    };
                    out.push_str(&format!("{head:<KEY_WIDTH$}{chunk}\n"));
                }
            } else {
                let head = format!("{k} =");
                out.push_str(&format!("{head:<KEY_WIDTH$}{v}\n"));
            }
        }
        out
    }
}

fn vectors() -> Vec<Block> {
    let i = inputs();
    let (m_pk, c_pk, n_pk) = (
        i.merchant.public_key(),
        i.customer.public_key(),
        i.billing.public_key(),
    );
    let c_seal_key = C.seal_key(&i.customer_seal);
    let n_seal_key = C.seal_key(&i.billing_seal);
    let m_seal_key = C.seal_key(&i.merchant_seal);
    let mut out = Vec::new();

    // Keys and the goods, shared by the vectors below.
    let mut ciphertext = Vec::new();
    let stats =
        encrypt_stream(&i.goods_key, 64 * 1024, ARTICLE, &mut ciphertext).expect("encrypting");
    assert_eq!(stats.checksum, sha256(&ciphertext));
    let mut b = Block::new("keys");
    for (name, signer) in [
        ("merchant", &i.merchant),
        ("customer", &i.customer),
        ("billing", &i.billing),
        ("group_authority", &i.authority),
        ("arbitrator", &i.arbitrator),
    ] {
        b.hex(&format!("{name}.seed"), &*signer.secret_bytes());
        b.hex(&format!("{name}.public_key"), &signer.public_key().0);
    }
    for (name, secret, key) in [
        ("customer", &i.customer_seal, c_seal_key),
        ("billing", &i.billing_seal, n_seal_key),
        ("merchant", &i.merchant_seal, m_seal_key),
    ] {
        b.hex(&format!("{name}.seal_secret"), &secret.0);
        b.hex(&format!("{name}.seal_key"), &key.0);
    }
    b.hex("goods_key", &i.goods_key.0);
    b.field(
        "goods",
        format!("{:?}", std::str::from_utf8(ARTICLE).unwrap()),
    );
    b.hex("goods_digest", &sha256(ARTICLE).0);
    b.hex("goods_ciphertext", &ciphertext);
    b.hex("goods_checksum", &stats.checksum.0);
    b.hex(
        "key_digest",
        &netbill_proto::crypto::goods_key_digest(&C, &i.goods_key).0,
    );
    b.hex("epoid_bytes", &i.epoid.to_bytes());
    out.push(b);

    let credential = GroupCredential {
        group: GroupName::new("acm-student").expect("group"),
        detail: "member 4711".into(),
        holder_key: c_pk,
        expires_at_ms: 1_767_225_600_000,
    };
    let s = Signed::sign(credential.clone(), &i.authority);
    let mut b = Block::new("group-credential");
    b.field("group", &credential.group);
    b.field("detail", format!("{:?}", credential.detail));
    b.hex("holder_key", &credential.holder_key.0);
    b.field("expires_at_ms", credential.expires_at_ms);
    b.signed(&s, "group authority", 0x47, i.authority.public_key());
    out.push(b);

    let quote = Quote {
        merchant: id("acme"),
        quote_id: 7,
        identity: "alice".into(),
        customer_key: c_pk,
        product: ProductCode::new("article").expect("product"),
        description: "Tygar: Atomicity in Electronic Commerce".into(),
        price: amount(2_000),
        group: None,
        prd_digest: sha256(b""),
        goods_digest: sha256(ARTICLE),
        goods_len: ARTICLE.len() as u64,
        expires_at_ms: 1_732_400_300_000,
    };
    let signed_quote = Signed::sign(quote.clone(), &i.merchant);
    let mut b = Block::new("quote");
    b.field("merchant", &quote.merchant);
    b.field("quote_id", quote.quote_id);
    b.field("identity", format!("{:?}", quote.identity));
    b.hex("customer_key", &quote.customer_key.0);
    b.field("product", &quote.product);
    b.field("description", format!("{:?}", quote.description));
    b.field(
        "price",
        format!("{} ({} minor)", quote.price, quote.price.minor()),
    );
    b.field("group", "none");
    b.hex("prd_digest", &quote.prd_digest.0);
    b.hex("goods_digest", &quote.goods_digest.0);
    b.field("goods_len", quote.goods_len);
    b.field("expires_at_ms", quote.expires_at_ms);
    b.signed(&signed_quote, "merchant", 0x4d, m_pk);
    out.push(b);

    let secret = EpoSecret {
        account: id("alice"),
        account_nonce: [0x5a; 16],
        memo: String::new(),
    };
    let sealed = sealing::seal_epo_secret(
        &C,
        &i.customer_seal,
        &n_seal_key,
        &i.epoid,
        &secret,
        entropy(0x01),
    );
    let epo = Epo {
        identity: "alice".into(),
        customer_key: c_pk,
        description: quote.description.clone(),
        price: quote.price,
        merchant: id("acme"),
        goods_checksum: stats.checksum,
        prd_digest: quote.prd_digest,
        account_commitment: billing::account_commitment(&C, &secret.account, &secret.account_nonce),
        epoid: i.epoid.clone(),
        expires_at_ms: 1_732_400_600_000,
        quote_digest: signed_quote.digest(&C),
        reply_key: c_seal_key,
        sealed_for_billing: sealed,
    };
    let signed_epo = Signed::sign(epo.clone(), &i.customer);
    assert_eq!(signed_epo.version(), 2);
    assert_eq!(
        sealing::open_epo_secret(&C, &i.billing_seal, &epo),
        Some(secret.clone()),
        "N opens the EPO secret"
    );
    let mut b = Block::new("epo-v2");
    b.field("identity", format!("{:?}", epo.identity));
    b.hex("customer_key", &epo.customer_key.0);
    b.field("description", format!("{:?}", epo.description));
    b.field(
        "price",
        format!("{} ({} minor)", epo.price, epo.price.minor()),
    );
    b.field("merchant", &epo.merchant);
    b.hex("goods_checksum", &epo.goods_checksum.0);
    b.hex("prd_digest", &epo.prd_digest.0);
    b.field("secret.account", &secret.account);
    b.hex("secret.account_nonce", &secret.account_nonce);
    b.field("secret.memo", "\"\"");
    b.hex("secret.bytes", &secret.to_bytes());
    b.hex("account_commitment", &epo.account_commitment.0);
    b.field("epoid", &epo.epoid);
    b.field("expires_at_ms", epo.expires_at_ms);
    b.hex("quote_digest", &epo.quote_digest.0);
    b.hex("reply_key", &epo.reply_key.0);
    b.hex(
        "seal_aad",
        &netbill_proto::messages::pair_aad(EpoSecret::PAIR_PURPOSE, &epo.epoid),
    );
    b.hex("sealed_for_billing", epo.sealed_for_billing.as_bytes());
    b.signed(&signed_epo, "customer", 0x43, c_pk);
    out.push(b);

    let sealed_key = sealing::seal_goods_key(
        &C,
        &i.merchant_seal,
        &n_seal_key,
        &i.epoid,
        &i.goods_key,
        entropy(0x02),
    );
    let endorsement = Endorsement {
        epo: signed_epo.clone(),
        merchant_key: m_pk,
        memo: String::new(),
        sealed_key,
        key_digest: netbill_proto::crypto::goods_key_digest(&C, &i.goods_key),
    };
    let signed_endorsement = Signed::sign(endorsement.clone(), &i.merchant);
    assert_eq!(signed_endorsement.version(), 2);
    assert_eq!(
        sealing::open_goods_key(&C, &i.billing_seal, &endorsement).map(|k| k.0),
        Some(i.goods_key.0),
        "N opens K"
    );
    let mut b = Block::new("endorsement-v2");
    b.field(
        "epo",
        "the signed epo-v2 above: bytes B, then its 64-byte signature",
    );
    b.hex("merchant_key", &m_pk.0);
    b.field("memo", "\"\"");
    let netbill_proto::messages::SealedKey::Pair {
        merchant_seal_key,
        sealed,
    } = &endorsement.sealed_key
    else {
        panic!("a v2 endorsement pair-seals K");
    };
    b.hex("merchant_seal_key", &merchant_seal_key.0);
    b.hex(
        "seal_aad",
        &netbill_proto::messages::pair_aad(Endorsement::KEY_PURPOSE, &i.epoid),
    );
    b.hex("sealed_key", sealed);
    b.hex("key_digest", &endorsement.key_digest.0);
    b.signed(&signed_endorsement, "merchant", 0x4d, m_pk);
    out.push(b);

    let part = CustomerPart {
        epoid: i.epoid.clone(),
        account: id("alice"),
        balance_minor: 98_000,
        low_balance: false,
        goods_key: Some(i.goods_key.0),
    };
    let receipt = Receipt {
        result: ResultCode::Committed,
        epoid: i.epoid.clone(),
        identity: "alice".into(),
        merchant: id("acme"),
        description: quote.description.clone(),
        price: quote.price,
        epo_digest: signed_epo.digest(&C),
        key_digest: endorsement.key_digest,
        customer_part: sealing::seal_customer_part(&C, &i.billing_seal, &epo, &part, entropy(0x03)),
        time_ms: 1_732_400_000_123,
    };
    let signed_receipt = Signed::sign(receipt.clone(), &i.billing);
    assert_eq!(
        sealing::open_customer_part(
            &C,
            &i.customer_seal,
            &n_seal_key,
            &epo,
            &receipt.customer_part
        ),
        Some(part.clone()),
        "C opens her part"
    );
    let mut b = Block::new("receipt");
    b.field("result", "committed (0)");
    b.field("epoid", &receipt.epoid);
    b.field("identity", format!("{:?}", receipt.identity));
    b.field("merchant", &receipt.merchant);
    b.field("description", format!("{:?}", receipt.description));
    b.field(
        "price",
        format!("{} ({} minor)", receipt.price, receipt.price.minor()),
    );
    b.hex("epo_digest", &receipt.epo_digest.0);
    b.hex("key_digest", &receipt.key_digest.0);
    b.field("part.account", &part.account);
    b.field("part.balance_minor", part.balance_minor);
    b.field("part.low_balance", part.low_balance);
    b.field("part.goods_key", "goods_key (keys block)");
    b.hex("part.bytes", &part.to_bytes());
    b.hex(
        "seal_aad",
        &netbill_proto::messages::pair_aad(CustomerPart::PAIR_PURPOSE, &i.epoid),
    );
    b.hex("customer_part", &receipt.customer_part);
    b.field("time_ms", receipt.time_ms);
    b.signed(&signed_receipt, "billing server", 0x4e, n_pk);
    out.push(b);

    let path = format!("/v1/status/{}", i.epoid);
    let auth = RequestAuth {
        account: id("alice"),
        method: "GET".into(),
        path: path.clone(),
        body_digest: sha256(b""),
        time_ms: 1_732_400_001_000,
    };
    let s = Signed::sign(auth.clone(), &i.customer);
    let mut b = Block::new("request");
    b.field("account", &auth.account);
    b.field("method", &auth.method);
    b.field("path", &auth.path);
    b.hex("body_digest", &auth.body_digest.0);
    b.field("time_ms", auth.time_ms);
    b.signed(&s, "customer", 0x43, c_pk);
    out.push(b);

    let refund = RefundRequest {
        refund_id: "r1".into(),
        epoid: i.epoid.clone(),
        merchant: id("acme"),
        amount: amount(1_000),
        reason: "late delivery".into(),
        time_ms: 1_732_400_100_000,
    };
    let signed_refund = Signed::sign(refund.clone(), &i.merchant);
    let mut b = Block::new("refund");
    b.field("refund_id", format!("{:?}", refund.refund_id));
    b.field("epoid", &refund.epoid);
    b.field("merchant", &refund.merchant);
    b.field(
        "amount",
        format!("{} ({} minor)", refund.amount, refund.amount.minor()),
    );
    b.field("reason", format!("{:?}", refund.reason));
    b.field("time_ms", refund.time_ms);
    b.signed(&signed_refund, "merchant", 0x4d, m_pk);
    out.push(b);

    let rr = RefundReceipt {
        refund_id: "r1".into(),
        epoid: i.epoid.clone(),
        merchant: id("acme"),
        amount: amount(1_000),
        refunded_total: amount(1_000),
        price: amount(2_000),
        request_digest: signed_refund.digest(&C),
        time_ms: 1_732_400_100_050,
    };
    let s = Signed::sign(rr.clone(), &i.billing);
    let mut b = Block::new("refund-receipt");
    b.field("refund_id", format!("{:?}", rr.refund_id));
    b.field("epoid", &rr.epoid);
    b.field("merchant", &rr.merchant);
    b.field(
        "amount",
        format!("{} ({} minor)", rr.amount, rr.amount.minor()),
    );
    b.field(
        "refunded_total",
        format!(
            "{} ({} minor)",
            rr.refunded_total,
            rr.refunded_total.minor()
        ),
    );
    b.field(
        "price",
        format!("{} ({} minor)", rr.price, rr.price.minor()),
    );
    b.hex("request_digest", &rr.request_digest.0);
    b.field("time_ms", rr.time_ms);
    b.signed(&s, "billing server", 0x4e, n_pk);
    out.push(b);

    let cp = Checkpoint {
        seq: 42,
        hash: sha256(b"netbill vectors: a journal head"),
        deposits_minor: 100_000,
        payouts_minor: 0,
        time_ms: 1_732_400_200_000,
    };
    let s = Signed::sign(cp.clone(), &i.billing);
    let mut b = Block::new("checkpoint");
    b.field("seq", cp.seq);
    b.hex("hash", &cp.hash.0);
    b.field("deposits_minor", cp.deposits_minor);
    b.field("payouts_minor", cp.payouts_minor);
    b.field("time_ms", cp.time_ms);
    b.signed(&s, "billing server", 0x4e, n_pk);
    out.push(b);

    let grant = EvidenceGrant {
        epoid: i.epoid.clone(),
        grantor: id("alice"),
        arbitrator_key: i.arbitrator.public_key(),
        expires_at_ms: 1_733_004_800_000,
    };
    let s = Signed::sign(grant.clone(), &i.customer);
    let mut b = Block::new("evidence-grant");
    b.field("epoid", &grant.epoid);
    b.field("grantor", &grant.grantor);
    b.hex("arbitrator_key", &grant.arbitrator_key.0);
    b.field("expires_at_ms", grant.expires_at_ms);
    b.signed(&s, "customer", 0x43, c_pk);
    out.push(b);

    out
}

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors.md")
}

/// The ```` ```vector ```` blocks of the document: (byte range of the content, content).
fn doc_blocks(doc: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let open = "```vector\n";
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = doc[at..].find(open) {
        let content_start = at + start + open.len();
        let len = doc[content_start..]
            .find("```")
            .expect("a vector block is closed");
        let range = content_start..content_start + len;
        out.push((range.clone(), doc[range].to_string()));
        at = content_start + len + 3;
    }
    out
}

fn kind_of(block: &str) -> Option<&str> {
    block
        .lines()
        .next()?
        .strip_prefix("kind =")
        .map(|k| k.trim())
}

#[test]
fn docs_vectors_md_holds_exactly_the_bytes_the_code_makes() {
    let vectors = vectors();
    let path = doc_path();
    let mut doc = std::fs::read_to_string(&path).expect("docs/vectors.md");
    if std::env::var_os("NETBILL_WRITE_VECTORS").is_some() {
        for (range, content) in doc_blocks(&doc).into_iter().rev() {
            let kind = kind_of(&content)
                .expect("a block starts with its kind")
                .to_string();
            let v = vectors
                .iter()
                .find(|v| v.kind == kind)
                .unwrap_or_else(|| panic!("no vector {kind}"));
            doc.replace_range(range, &v.render());
        }
        std::fs::write(&path, &doc).expect("writing docs/vectors.md");
    }
    let blocks = doc_blocks(&doc);
    let kinds: Vec<&str> = blocks.iter().filter_map(|(_, b)| kind_of(b)).collect();
    let expected: Vec<&str> = vectors.iter().map(|v| v.kind).collect();
    assert_eq!(
        kinds, expected,
        "docs/vectors.md has one block per vector, in order"
    );
    for (v, (_, block)) in vectors.iter().zip(&blocks) {
        assert_eq!(
            block,
            &v.render(),
            "docs/vectors.md block {} differs from what the code makes (regenerate: see this test's doc)",
            v.kind
        );
    }
}

/// Every `impl SignedBody` in netbill-proto has a vector: a new signed kind without one
/// fails here.
#[test]
fn every_signed_kind_of_the_proto_crate_has_a_vector() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/src/messages.rs");
    let src = std::fs::read_to_string(src).expect("messages.rs");
    let domains: Vec<String> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("const DOMAIN: &'static [u8] = b\""))
        .map(|l| l.trim_end_matches("\";").to_string())
        .collect();
    assert_eq!(domains.len(), 10, "{domains:?}");
    let doc = std::fs::read_to_string(doc_path()).expect("docs/vectors.md");
    for d in &domains {
        let line = format!("{:<KEY_WIDTH$}{d}\n", "domain =");
        assert!(doc.contains(&line), "no vector for {d} in docs/vectors.md");
    }
}
