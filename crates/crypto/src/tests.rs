use std::io::Read;

use super::*;
use crate::goods::{HEADER_LEN, TAG_LEN};
use hpke::Kem as _;

fn h32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).expect("test hex");
    out
}

fn sha256(data: &[u8]) -> Digest {
    RealCrypto.digest(&[data])
}

// ---------------------------------------------------------------- standard vectors

#[test]
fn sha256_abc_vector() {
    assert_eq!(
        RealCrypto.digest(&[b"abc"]).to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        RealCrypto.digest(&[b"a", b"", b"bc"]),
        RealCrypto.digest(&[b"abc"])
    );
}

#[test]
fn ed25519_rfc8032_test1() {
    let signer = Ed25519Signer::from_bytes(&h32(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    ));
    assert_eq!(
        signer.public_key().to_hex(),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    let sig = signer.sign(b"");
    assert_eq!(
        sig.to_hex(),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
    assert!(RealCrypto.verify(&signer.public_key(), b"", &sig));
}

#[test]
fn x25519_rfc7748_public_key() {
    let secret = SealSecret(h32(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    assert_eq!(
        RealCrypto.seal_key(&secret).to_hex(),
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    );
}

// ---------------------------------------------------------------- signatures

#[test]
fn signature_flips_fail() {
    let s = Ed25519Signer::generate();
    let msg = b"pay 0.00125 USD for goods #42".to_vec();
    let sig = s.sign(&msg);
    let pk = s.public_key();
    assert!(RealCrypto.verify(&pk, &msg, &sig));
    for i in 0..msg.len() * 8 {
        let mut m = msg.clone();
        m[i / 8] ^= 1 << (i % 8);
        assert!(!RealCrypto.verify(&pk, &m, &sig), "message bit {i}");
    }
    for i in 0..512 {
        let mut bad = sig;
        bad.0[i / 8] ^= 1 << (i % 8);
        assert!(!RealCrypto.verify(&pk, &msg, &bad), "signature bit {i}");
    }
    for i in 0..256 {
        let mut bad = pk;
        bad.0[i / 8] ^= 1 << (i % 8);
        assert!(!RealCrypto.verify(&bad, &msg, &sig), "key bit {i}");
    }
    assert!(!RealCrypto.verify(&PublicKey([0xff; 32]), &msg, &sig));
}

#[test]
fn strict_rejects_small_order_forgery_also_in_batch() {
    // Identity key, R = identity, s = 0 satisfies the cofactorless equation for any
    // message; strict verification (and so our batch) must reject it.
    let mut id = [0u8; 32];
    id[0] = 1;
    let mut sig = [0u8; 64];
    sig[0] = 1;
    let (pk, sig) = (PublicKey(id), Signature(sig));
    assert!(!RealCrypto.verify(&pk, b"anything", &sig));
    assert!(!batch_verify(&[(pk, b"anything".as_slice(), sig)]));
    assert_eq!(
        verify_many(&[(pk, b"anything".as_slice(), sig)]),
        vec![false]
    );
}

#[test]
fn batch_and_verify_many() {
    let signers: Vec<_> = (0..8).map(|_| Ed25519Signer::generate()).collect();
    let msgs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; i as usize * 3]).collect();
    let mut items: Vec<(PublicKey, &[u8], Signature)> = signers
        .iter()
        .zip(&msgs)
        .map(|(s, m)| (s.public_key(), m.as_slice(), s.sign(m)))
        .collect();
    assert!(batch_verify(&[]));
    assert!(batch_verify(&items));
    assert_eq!(verify_many(&items), vec![true; 8]);
    items[5].2.0[40] ^= 4;
    items[2].1 = b"other";
    assert!(!batch_verify(&items));
    let expect: Vec<bool> = (0..8).map(|i| i != 2 && i != 5).collect();
    assert_eq!(verify_many(&items), expect);
}

#[test]
fn signer_hides_secret_and_round_trips_bytes() {
    let s = Ed25519Signer::generate();
    assert!(!format!("{s:?}").contains(&hex::encode(*s.secret_bytes())));
    let t = Ed25519Signer::from_bytes(&s.secret_bytes());
    assert_eq!(s.public_key(), t.public_key());
}

#[test]
fn randomness_differs() {
    assert_ne!(random_bytes::<32>(), random_bytes::<32>());
    assert_ne!(random_goods_key(), random_goods_key());
    assert_ne!(random_seal_secret(), random_seal_secret());
}

// ---------------------------------------------------------------- sealing

#[test]
fn seal_open_round_trip() {
    let sk = random_seal_secret();
    let pk = RealCrypto.seal_key(&sk);
    for len in [0usize, 1, 32, 1000] {
        let msg = vec![0xa5u8; len];
        let sealed = RealCrypto.seal(&pk, b"netbill goods key", &msg, [7; 32]);
        assert_eq!(sealed.len(), len + SEAL_OVERHEAD);
        assert_eq!(
            RealCrypto.open(&sk, b"netbill goods key", &sealed),
            Some(msg)
        );
    }
}

#[test]
fn seal_is_deterministic_in_entropy() {
    let pk = RealCrypto.seal_key(&random_seal_secret());
    let a = RealCrypto.seal(&pk, b"i", b"m", [1; 32]);
    assert_eq!(a, RealCrypto.seal(&pk, b"i", b"m", [1; 32]));
    assert_ne!(a, RealCrypto.seal(&pk, b"i", b"m", [2; 32]));
}

#[test]
fn open_fails_on_wrong_secret_info_flip_truncation() {
    let sk = random_seal_secret();
    let pk = RealCrypto.seal_key(&sk);
    let sealed = RealCrypto.seal(&pk, b"info", b"the goods key K", random_bytes());
    assert!(
        RealCrypto
            .open(&random_seal_secret(), b"info", &sealed)
            .is_none()
    );
    assert!(RealCrypto.open(&sk, b"infO", &sealed).is_none());
    assert!(RealCrypto.open(&sk, b"", &sealed).is_none());
    for i in 0..sealed.len() * 8 {
        let mut s = sealed.clone();
        s[i / 8] ^= 1 << (i % 8);
        assert!(RealCrypto.open(&sk, b"info", &s).is_none(), "bit {i}");
    }
    for n in 0..sealed.len() {
        assert!(
            RealCrypto.open(&sk, b"info", &sealed[..n]).is_none(),
            "len {n}"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(RealCrypto.open(&sk, b"info", &longer).is_none());
    assert!(RealCrypto.open(&sk, b"info", &[0u8; 100]).is_none());
}

#[test]
fn seal_to_low_order_key_is_empty_not_panic() {
    let sealed = RealCrypto.seal(&SealKey([0; 32]), b"i", b"m", [3; 32]);
    assert!(sealed.is_empty());
    assert!(
        RealCrypto
            .open(&random_seal_secret(), b"i", &sealed)
            .is_none()
    );
}

// ---------------------------------------------------------------- v2 pair sealing

/// Computed independently (pyca/cryptography X25519 + HKDF, PyNaCl XChaCha20-Poly1305) from
/// the construction in `docs/protocol.md`; the same vector is printed there.
#[test]
fn pair_seal_vector() {
    let c = SealSecret([0x11; 32]);
    let n = SealSecret([0x22; 32]);
    let (cp, np) = (pair::public_key(&c), pair::public_key(&n));
    assert_eq!(
        cp.to_hex(),
        "7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13"
    );
    assert_eq!(
        np.to_hex(),
        "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20"
    );
    // The public key is the one HPKE (v1) derives from the same secret.
    assert_eq!(
        cp.0[..],
        HpkeKem::sk_to_pk(&seal_private_key(&c)).to_bytes()[..]
    );
    let k = pair::derive_pair_key(&c, &np).unwrap();
    assert_eq!(
        hex::encode(*k),
        "5152b0b4d72e5efdb59113abced9e32afb2f8b733fda0f4c7d96dcb8841f9c2f"
    );
    assert_eq!(
        *pair::derive_pair_key(&n, &cp).unwrap(),
        *k,
        "both ends agree"
    );
    let sealed = RealCrypto.pair_seal(&c, &np, b"netbill/v2/test", b"hello, N", [0x33; 24]);
    assert_eq!(
        hex::encode(&sealed),
        "333333333333333333333333333333333333333333333333\
         58ed4ae7a7e76db1872b742fdde5f93a2dbc82d0001d9712"
    );
    assert_eq!(
        RealCrypto.pair_open(&n, &cp, b"netbill/v2/test", &sealed),
        Some(b"hello, N".to_vec())
    );
}

#[test]
fn pair_open_fails_for_another_pair_purpose_flip_or_truncation() {
    let (c, n, m) = (
        random_seal_secret(),
        random_seal_secret(),
        random_seal_secret(),
    );
    let np = RealCrypto.seal_key(&n);
    let cp = RealCrypto.seal_key(&c);
    let sealed = RealCrypto.pair_seal(&c, &np, b"aad", b"secret", random_bytes());
    assert_eq!(sealed.len(), b"secret".len() + pair::PAIR_OVERHEAD);
    assert!(RealCrypto.pair_open(&n, &cp, b"aad", &sealed).is_some());
    // A third party, or N believing it came from someone else: nothing opens.
    assert!(RealCrypto.pair_open(&m, &cp, b"aad", &sealed).is_none());
    assert!(
        RealCrypto
            .pair_open(&n, &RealCrypto.seal_key(&m), b"aad", &sealed)
            .is_none()
    );
    assert!(RealCrypto.pair_open(&n, &cp, b"other", &sealed).is_none());
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 1;
        assert!(
            RealCrypto.pair_open(&n, &cp, b"aad", &bad).is_none(),
            "bit {i}"
        );
    }
    for len in 0..sealed.len() {
        assert!(
            RealCrypto
                .pair_open(&n, &cp, b"aad", &sealed[..len])
                .is_none()
        );
    }
    // Fresh nonces: the same plaintext sealed twice differs.
    let again = RealCrypto.pair_seal(&c, &np, b"aad", b"secret", random_bytes());
    assert_ne!(again, sealed);
}

#[test]
fn pair_seal_to_low_order_key_is_empty_not_panic() {
    let own = random_seal_secret();
    let sealed = RealCrypto.pair_seal(&own, &SealKey([0; 32]), b"a", b"m", [1; 24]);
    assert!(sealed.is_empty());
    assert!(
        RealCrypto
            .pair_open(&own, &SealKey([0; 32]), b"a", &[0u8; 64])
            .is_none()
    );
}

// ---------------------------------------------------------------- goods

const C: u32 = 16;

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn encrypt(key: &GoodsKey, chunk: u32, pt: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let stats = encrypt_stream(key, chunk, pt, &mut out).expect("encrypt");
    assert_eq!(stats.ciphertext_len, out.len() as u64);
    assert_eq!(stats.checksum, sha256(&out));
    out
}

fn decrypt(key: &GoodsKey, ct: &[u8]) -> Result<(Vec<u8>, DecryptStats), GoodsError> {
    let mut out = Vec::new();
    decrypt_stream(key, ct, &mut out).map(|s| (out, s))
}

/// Reads everything through `r` in reads of at most `step` bytes.
fn read_in_steps<R: Read>(mut r: R, step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; step];
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn goods_round_trip_sizes() {
    let key = random_goods_key();
    let c = C as usize;
    for len in [0, 1, c - 1, c, c + 1, 2 * c, 3 * c + 5] {
        let pt = plaintext(len);
        let ct = encrypt(&key, C, &pt);
        assert_eq!(ct.len() as u64, ciphertext_len(len as u64, C), "len {len}");
        assert_eq!(&ct[..4], b"NBG1");
        assert_eq!(&ct[4..8], &C.to_be_bytes());
        let (out, stats) = decrypt(&key, &ct).expect("decrypt");
        assert_eq!(out, pt, "len {len}");
        assert_eq!(stats.plaintext_len, len as u64);
        assert_eq!(stats.plaintext_digest, sha256(&pt));
    }
}

#[test]
fn ciphertext_len_formula() {
    assert_eq!(ciphertext_len(0, 16), 8 + 16);
    assert_eq!(ciphertext_len(16, 16), 8 + 16 + 16);
    assert_eq!(ciphertext_len(17, 16), 8 + 17 + 32);
    assert_eq!(
        ciphertext_len(1 << 20, DEFAULT_CHUNK_SIZE),
        8 + (1 << 20) + 16 * 16
    );
}

#[test]
fn goods_encryption_is_deterministic() {
    let key = GoodsKey([9; 32]);
    let pt = plaintext(100);
    assert_eq!(encrypt(&key, C, &pt), encrypt(&key, C, &pt));
    assert_ne!(encrypt(&key, C, &pt), encrypt(&GoodsKey([8; 32]), C, &pt));
}

#[test]
fn encrypting_reader_matches_encrypt_stream() {
    let key = random_goods_key();
    for len in [0usize, 1, 16, 17, 53, 1000] {
        let pt = plaintext(len);
        let mut expected = Vec::new();
        let stats = encrypt_stream(&key, C, pt.as_slice(), &mut expected).expect("encrypt");
        for step in [1usize, 7, 16, 4096] {
            let mut r = EncryptingReader::new(&key, C, pt.as_slice()).expect("reader");
            let got = read_in_steps(&mut r, step);
            assert_eq!(got, expected, "len {len} step {step}");
            assert_eq!(r.stats(), Some(stats));
            assert_eq!(stats.checksum, sha256(&got));
        }
    }
}

#[test]
fn goods_default_chunk_size_large_round_trip() {
    let key = random_goods_key();
    let pt = plaintext(3 * DEFAULT_CHUNK_SIZE as usize + 12345);
    let r = EncryptingReader::new(&key, DEFAULT_CHUNK_SIZE, pt.as_slice()).expect("reader");
    let mut out = Vec::new();
    let stats = decrypt_stream(&key, r, &mut out).expect("decrypt");
    assert_eq!(out, pt);
    assert_eq!(stats.plaintext_digest, sha256(&pt));
}

#[test]
fn invalid_chunk_size_refused_on_encrypt() {
    let key = random_goods_key();
    assert!(encrypt_stream(&key, 0, &b"x"[..], Vec::new()).is_err());
    assert!(encrypt_stream(&key, MAX_CHUNK_SIZE + 1, &b"x"[..], Vec::new()).is_err());
    assert!(encrypt_stream(&key, MAX_CHUNK_SIZE, &b"x"[..], Vec::new()).is_ok());
}

/// Byte range of chunk `i` in a stream with chunk size `C`.
fn chunk_range(i: usize, total: usize) -> std::ops::Range<usize> {
    let b = C as usize + TAG_LEN;
    let start = HEADER_LEN + i * b;
    start..(start + b).min(total)
}

#[test]
fn wrong_key_refused() {
    let ct = encrypt(&GoodsKey([1; 32]), C, &plaintext(40));
    assert!(matches!(
        decrypt(&GoodsKey([2; 32]), &ct),
        Err(GoodsError::WrongKey)
    ));
    let empty = encrypt(&GoodsKey([1; 32]), C, &[]);
    assert!(matches!(
        decrypt(&GoodsKey([2; 32]), &empty),
        Err(GoodsError::WrongKey)
    ));
}

#[test]
fn bad_header_and_chunk_sizes_refused() {
    let key = random_goods_key();
    let ct = encrypt(&key, C, &plaintext(40));
    let mut bad = ct.clone();
    bad[0] = b'X';
    assert!(matches!(decrypt(&key, &bad), Err(GoodsError::BadHeader)));
    for n in 0..HEADER_LEN {
        assert!(matches!(
            decrypt(&key, &ct[..n]),
            Err(GoodsError::BadHeader)
        ));
    }
    let mut zero = ct.clone();
    zero[4..8].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        decrypt(&key, &zero),
        Err(GoodsError::InvalidChunkSize)
    ));
    let mut big = ct.clone();
    big[4..8].copy_from_slice(&(MAX_CHUNK_SIZE + 1).to_be_bytes());
    assert!(matches!(
        decrypt(&key, &big),
        Err(GoodsError::ChunkSizeTooLarge { size, max: MAX_CHUNK_SIZE }) if size == MAX_CHUNK_SIZE + 1
    ));
    // Another valid chunk size: the header is every chunk's AAD, so nothing authenticates.
    let mut other = ct.clone();
    other[4..8].copy_from_slice(&32u32.to_be_bytes());
    assert!(decrypt(&key, &other).is_err());
}

#[test]
fn truncation_refused() {
    let key = random_goods_key();
    let pt = plaintext(3 * C as usize + 5);
    let ct = encrypt(&key, C, &pt);
    // Dropping the final chunk, or everything after chunk 0, or all chunks.
    for keep in [3usize, 1, 0] {
        let end = HEADER_LEN + keep * (C as usize + TAG_LEN);
        assert!(
            matches!(decrypt(&key, &ct[..end]), Err(GoodsError::Truncated { chunks }) if chunks == keep as u64),
            "keep {keep}"
        );
    }
    // Any cut at all is refused.
    for n in 0..ct.len() {
        assert!(decrypt(&key, &ct[..n]).is_err(), "cut at {n}");
    }
    // Full final chunk: cutting it off leaves a non-final chunk at the end.
    let ct2 = encrypt(&key, C, &plaintext(2 * C as usize));
    let end = chunk_range(1, ct2.len()).start;
    assert!(matches!(
        decrypt(&key, &ct2[..end]),
        Err(GoodsError::Truncated { chunks: 1 })
    ));
}

#[test]
fn reordering_refused() {
    let key = random_goods_key();
    let ct = encrypt(&key, C, &plaintext(3 * C as usize + 5));
    let (r0, r1) = (chunk_range(0, ct.len()), chunk_range(1, ct.len()));
    let mut swapped = ct.clone();
    swapped[r0.clone()].copy_from_slice(&ct[r1.clone()]);
    swapped[r1].copy_from_slice(&ct[r0]);
    assert!(matches!(
        decrypt(&key, &swapped),
        Err(GoodsError::OutOfOrder {
            position: 0,
            found: 1
        })
    ));
}

#[test]
fn extension_refused() {
    let key = random_goods_key();
    let ct = encrypt(&key, C, &plaintext(3 * C as usize));
    let last = chunk_range(2, ct.len());
    let mut ext = ct.clone();
    ext.extend_from_slice(&ct[last]);
    assert!(matches!(
        decrypt(&key, &ext),
        Err(GoodsError::TrailingData { chunk: 2 })
    ));
    let mut one = ct.clone();
    one.push(0);
    assert!(matches!(
        decrypt(&key, &one),
        Err(GoodsError::TrailingData { chunk: 2 })
    ));
    // After a short final chunk the boundaries shift; still refused.
    let short = encrypt(&key, C, &plaintext(3 * C as usize + 5));
    for extra in [1usize, 5, 40] {
        let mut e = short.clone();
        e.extend(std::iter::repeat_n(0u8, extra));
        assert!(decrypt(&key, &e).is_err(), "extra {extra}");
    }
}

#[test]
fn corruption_refused_and_nothing_unauthenticated_written() {
    let key = random_goods_key();
    let pt = plaintext(3 * C as usize + 5);
    let ct = encrypt(&key, C, &pt);
    let mut bad = ct.clone();
    bad[chunk_range(2, ct.len()).start + 3] ^= 0x40;
    let mut out = Vec::new();
    let err = decrypt_stream(&key, bad.as_slice(), &mut out).expect_err("corrupt");
    assert!(matches!(err, GoodsError::Corrupted { chunk: 2 }), "{err:?}");
    // Only the two authenticated chunks before the damage reached the writer.
    assert_eq!(out, pt[..2 * C as usize]);
    // Every single-bit flip anywhere is refused.
    for i in 0..ct.len() * 8 {
        let mut b = ct.clone();
        b[i / 8] ^= 1 << (i % 8);
        assert!(decrypt(&key, &b).is_err(), "bit {i}");
    }
}

#[test]
fn goods_errors_say_what_happened() {
    let msg = GoodsError::Truncated { chunks: 3 }.to_string();
    assert!(msg.contains("truncated"), "{msg}");
}

// ---------------------------------------------------------------- key files

#[test]
fn key_file_round_trip_and_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("merchant.key");
    let secret = random_bytes::<32>();
    save_secret_key(&path, "signing", &secret, false).expect("save");
    assert_eq!(load_secret_key(&path, "signing").expect("load"), secret);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(
        text,
        format!("netbill-signing-secret-key v1\n{}\n", hex::encode(secret))
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    // A signer survives the trip.
    let s = Ed25519Signer::generate();
    let p2 = dir.path().join("s.key");
    save_secret_key(&p2, "signing", &s.secret_bytes(), false).expect("save");
    let t = Ed25519Signer::from_bytes(&load_secret_key(&p2, "signing").expect("load"));
    assert_eq!(s.public_key(), t.public_key());
}

#[test]
fn key_file_overwrite_refused_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k");
    save_secret_key(&path, "seal", &[1; 32], false).expect("save");
    let err = save_secret_key(&path, "seal", &[2; 32], false).expect_err("overwrite");
    assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err}");
    assert_eq!(load_secret_key(&path, "seal").expect("load"), [1; 32]);
    save_secret_key(&path, "seal", &[2; 32], true).expect("forced");
    assert_eq!(load_secret_key(&path, "seal").expect("load"), [2; 32]);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
}

#[cfg(unix)]
#[test]
fn key_file_readable_by_others_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k");
    save_secret_key(&path, "seal", &[1; 32], false).expect("save");
    for mode in [0o644, 0o640, 0o604, 0o620] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let err = load_secret_key(&path, "seal").expect_err("insecure");
        assert!(
            matches!(err, KeyFileError::InsecurePermissions { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    assert!(load_secret_key(&path, "seal").is_ok());
}

#[test]
fn key_file_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k");
    assert!(matches!(
        load_secret_key(&path, "seal"),
        Err(KeyFileError::NotFound { .. })
    ));
    save_secret_key(&path, "seal", &[1; 32], false).expect("save");
    assert!(matches!(
        load_secret_key(&path, "signing"),
        Err(KeyFileError::WrongKind { .. })
    ));
    assert!(matches!(
        save_secret_key(dir.path().join("x"), "Bad Kind", &[0; 32], false),
        Err(KeyFileError::InvalidKind(_))
    ));
    let bad_contents: [&[u8]; 5] = [
        b"",
        b"netbill-seal-secret-key v1\n",
        b"netbill-seal-secret-key v1\nzz\n",
        b"netbill-seal-secret-key v2\n0000000000000000000000000000000000000000000000000000000000000000\n",
        b"\xff\xfe\n",
    ];
    for (i, contents) in bad_contents.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}"));
        std::fs::write(&p, contents).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let err = load_secret_key(&p, "seal").expect_err("malformed");
        assert!(
            matches!(err, KeyFileError::Malformed { .. }),
            "case {i}: {err}"
        );
    }
}

// ---------------------------------------------------------------- interoperability vectors
//
// Produced by independent Python implementations (pyca/cryptography primitives) written
// from RFC 9180 and from the `goods` module documentation.

#[test]
fn hpke_opens_independently_sealed_vector() {
    let sk = SealSecret(std::array::from_fn(|i| i as u8));
    assert_eq!(
        RealCrypto.seal_key(&sk).to_hex(),
        "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f"
    );
    let sealed = hex::decode(
        "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254\
         6f072decbbdb2aeedb3c2e4f5d5656770f6a87aea6a70a7a156e5871dfa2d147fa819ebe38489b",
    )
    .expect("test hex");
    assert_eq!(
        RealCrypto
            .open(&sk, b"netbill test info", &sealed)
            .as_deref(),
        Some(&b"the goods key K, sealed"[..])
    );
}

#[test]
fn nbg1_known_answer_vectors() {
    let key = GoodsKey(std::array::from_fn(|i| i as u8));
    let cases: [(&[u8], &str, &str); 3] = [
        (
            b"",
            "4e424731000000108859ad39d346398749137eb310761e3b",
            "20c2bb061a23af93b0e32ea6b3aed925cdf7dccc8fb15f55f2c4bd71e984fb02",
        ),
        (
            b"abcdefghijklmnopqrstuvwxyz012345",
            "4e4247310000001079da2155c880c1b97a0b370dc22d21574525aab882156ee1bb6fbc1464e204e7\
             703171deac361334a6079c2abc371b27524fd268cf728f08343866752bfd2cff",
            "b349091e675e83ee760f32303c9d3f4ec2fb99889f982d77eef1c7f7fe150e8e",
        ),
        (
            b"abcdefghijklmnopqrstuvwxyz0123456789",
            "4e4247310000001079da2155c880c1b97a0b370dc22d21574525aab882156ee1bb6fbc1464e204e7\
             ca15b257db5b5fcb7d575cf79c0c4e1adaf8fe86ee939ae135c9ebb6b04ced64724f82eff2ae699a\
             4fe7b91c6b6a7b36d9956767",
            "c269eacbbeb35a404b26c0ca5dd4cf92286c4f7d4c5807200df5294d41cb96fc",
        ),
    ];
    for (pt, ct_hex, sum) in cases {
        let ct = encrypt(&key, 16, pt);
        assert_eq!(hex::encode(&ct), ct_hex, "plaintext {:?}", pt.len());
        assert_eq!(sha256(&ct).to_hex(), sum);
        assert_eq!(decrypt(&key, &ct).expect("decrypt").0, pt);
    }
}

// ---------------------------------------------------------------- batch signatures

/// Computed independently (Python hashlib + pyca/cryptography Ed25519) from the construction
/// in `docs/protocol.md` ("Batch signatures"); the same vector is printed there.
#[test]
fn batch_signature_vector() {
    use netbill_proto::batch;
    use netbill_proto::codec::{Codec, DecodeError, Reader, Writer};
    use netbill_proto::signed::{SignatureForm, Signed, SignedBody};

    /// Signed bytes taken as they are, under the receipt's domain: `B` is the raw string
    /// (its first byte standing for the version), so the vector need not be a receipt.
    #[derive(Clone, Debug, PartialEq)]
    struct Raw(Vec<u8>);
    impl Codec for Raw {
        fn encode(&self, w: &mut Writer) {
            w.fixed(&self.0[1..]);
        }
        fn decode(_: &mut Reader<'_>) -> Result<Self, DecodeError> {
            unreachable!("decoded through decode_version")
        }
    }
    impl SignedBody for Raw {
        const DOMAIN: &'static [u8] = b"netbill/v1/receipt";
        const BATCH_SIGNED: bool = true;
        fn version(&self) -> u8 {
            self.0[0]
        }
        fn decode_version(version: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
            let mut out = vec![version];
            while let Ok(b) = r.u8() {
                out.push(b);
            }
            Ok(Raw(out))
        }
    }

    let n = Ed25519Signer::from_bytes(&[0x55; 32]);
    assert_eq!(
        n.public_key().to_hex(),
        "c6822637c7d310ec57627be00ba259d253749f4aaf644470cffbe53a35f73242"
    );
    let bodies: Vec<Raw> = [b"receipt 0", b"receipt 1", b"receipt 2"]
        .iter()
        .map(|b| Raw(b.to_vec()))
        .collect();
    let leaves: Vec<String> = bodies
        .iter()
        .map(|b| batch::leaf_hash(&RealCrypto, Raw::DOMAIN, &b.0).to_hex())
        .collect();
    let (l0, l1, l2, n01) = (
        "625c8eb9b199c400e81c6ebe6f8ab7abb14a7ad8bffdc4a25d2196edb8bb8122",
        "bebbf8ea4a7b3e0a371bcbfae464a97458de7dcc44d171e1ef3c67ba80fd3548",
        "5c5c143bf95eb20e0ae96bd50c12473f9b62c1561613734b52ef2d094ec34c59",
        "5230fe48b3550c9d99f888055b2e669e19c552f2ebf77850aef5b6f07265d48a",
    );
    assert_eq!(leaves, [l0, l1, l2]);
    let root = "fbc1ee9c1659a66ca92cd2d8d9a8493495138fcc5bf5f5ca39c9c1ce2507f15a";
    let leaf_digests: Vec<Digest> = leaves.iter().map(|h| h.parse().unwrap()).collect();
    let (r, _) = batch::tree(&RealCrypto, &leaf_digests).unwrap();
    assert_eq!(r.to_hex(), root);
    assert_eq!(
        hex::encode(batch::root_message(&r, 3)),
        "6e657462696c6c2f76322f62617463682d726f6f7400\
         fbc1ee9c1659a66ca92cd2d8d9a8493495138fcc5bf5f5ca39c9c1ce2507f15a00000003"
    );
    let sig = "e420872bb7a10305ad36893f78012a0fa7dc3a0ac9a77fc50eea410003a3382f\
               fc81e80feba0c2cc6a7d36083f08638ae58eafd4c04d4590d788b1910993fb03";

    // The real code path: one signature, the paths, and each object verifying alone.
    let signed = Signed::sign_batch(bodies, &RealCrypto, &n);
    let expected_paths = [vec![l1, l2], vec![l0, l2], vec![n01]];
    for (i, s) in signed.iter().enumerate() {
        let SignatureForm::Batch {
            root_signature,
            proof,
        } = s.form()
        else {
            panic!("batch-signed");
        };
        assert_eq!(root_signature.to_hex(), sig);
        assert_eq!((proof.index(), proof.count()), (i as u32, 3));
        let path: Vec<String> = proof.path().iter().map(|d| d.to_hex()).collect();
        assert_eq!(path, expected_paths[i]);
        assert!(s.verify(&RealCrypto, &n.public_key()).is_ok());
    }
    // The stored form of the third, and its JSON.
    let form = "e420872bb7a10305ad36893f78012a0fa7dc3a0ac9a77fc50eea410003a3382f\
                fc81e80feba0c2cc6a7d36083f08638ae58eafd4c04d4590d788b1910993fb03\
                0000000200000003\
                01\
                5230fe48b3550c9d99f888055b2e669e19c552f2ebf77850aef5b6f07265d48a";
    assert_eq!(hex::encode(signed[2].form().to_bytes()), form);
    assert_eq!(
        SignatureForm::from_bytes(&hex::decode(form).unwrap()).as_ref(),
        Ok(signed[2].form())
    );
    assert_eq!(
        serde_json::to_value(&signed[2]).unwrap(),
        serde_json::json!({
            "body": "cmVjZWlwdCAy",
            "sig": "5CCHK7ehAwWtNok_eAEqD6fcOgrJp3_FDupBAAOjOC_8gegP66DCzGp9Ngg_CGOK5Y6v1MBNRZDXiLGRCZP7Aw",
            "batch": {"index": 2, "count": 3, "path": [n01]}
        })
    );
}

#[test]
fn the_canonical_check_agrees_with_decompress_and_recompress() {
    // The cheap check (y < p, then large order) against the definition (the point
    // re-encodes to the same bytes), over random encodings and every edge of y near p,
    // with both sign bits.
    let definition = |b: &[u8; 32]| {
        let c = curve25519_dalek::edwards::CompressedEdwardsY(*b);
        c.decompress()
            .is_some_and(|p| !p.is_small_order() && p.compress().as_bytes() == b)
    };
    let mut cases: Vec<[u8; 32]> = (0..2000).map(|_| random_bytes::<32>()).collect();
    for low in 0xe0..=0xffu8 {
        for top in [0x7f, 0xff] {
            let mut b = [0xff; 32];
            b[0] = low;
            b[31] = top;
            cases.push(b);
        }
    }
    for y in 0..40u8 {
        for top in [0x00, 0x80] {
            let mut b = [0; 32];
            b[0] = y;
            b[31] = top;
            cases.push(b);
        }
    }
    // Real signatures' R values: canonical and of large order.
    for _ in 0..50 {
        let s = Ed25519Signer::generate();
        let sig = s.sign(b"m");
        let mut r = [0u8; 32];
        r.copy_from_slice(&sig.0[..32]);
        cases.push(r);
    }
    let mut accepted = 0;
    for b in &cases {
        assert_eq!(
            super::canonical_large_order_point(b),
            definition(b),
            "{}",
            hex::encode(b)
        );
        accepted += usize::from(definition(b));
    }
    assert!(accepted > 50, "the cases include valid points");
}

#[test]
fn a_cached_key_verifies_as_a_fresh_one() {
    let s = Ed25519Signer::generate();
    let sig = s.sign(b"twice");
    for _ in 0..3 {
        assert!(RealCrypto.verify(&s.public_key(), b"twice", &sig));
        assert!(!RealCrypto.verify(&s.public_key(), b"other", &sig));
        assert!(batch_verify(&[(s.public_key(), b"twice".as_slice(), sig)]));
    }
}
