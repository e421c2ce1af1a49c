#!/usr/bin/env python3
"""Independent check of docs/vectors.md with PyNaCl and pyca/cryptography (no NetBill code).

    python3 crates/crypto/tests/vectors.py docs/vectors.md

For every block: to_be_signed = domain || 00 || signed_bytes, the seed gives public_key,
the Ed25519 signature verifies, digest = SHA-256(to_be_signed || signature). From the keys
block: seal keys (X25519), pair keys (HKDF-SHA256), and the three pair seals open
(XChaCha20-Poly1305) to the EPO secret, K and the customer part."""
import hashlib
import re
import sys

import nacl.bindings as nb
import nacl.signing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def blocks(text):
    for body in re.findall(r"```vector\n(.*?)```", text, re.S):
        fields, last = {}, None
        for line in body.splitlines():
            if line.startswith(" ") and last:
                fields[last] += line.strip()
            else:
                k, v = line.split("=", 1)
                last = k.strip()
                fields[last] = v.strip()
        yield fields


def pair_key(secret, peer):
    shared = X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(peer))
    own = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    lo, hi = sorted([own, peer])
    return HKDF(hashes.SHA256(), 32, b"netbill/v2/pair-key", lo + hi).derive(shared)


def open_seal(key, aad, sealed):
    return nb.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[24:], aad, sealed[:24], key)


def main(path):
    bs = list(blocks(open(path, encoding="utf-8").read()))
    keys = bs[0]
    h = lambda name: bytes.fromhex(keys[name])
    for who in ["customer", "billing", "merchant"]:
        pk = X25519PrivateKey.from_private_bytes(h(f"{who}.seal_secret")).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert pk == h(f"{who}.seal_key"), who
    for who in ["merchant", "customer", "billing", "group_authority", "arbitrator"]:
        pk = bytes(nacl.signing.SigningKey(h(f"{who}.seed")).verify_key)
        assert pk == h(f"{who}.public_key"), who
    n = 0
    for b in bs[1:]:
        x = lambda name: bytes.fromhex(b[name])
        seed = bytes([int(b["signer"].split("seed ")[1].split()[0], 16)]) * 32
        vk = nacl.signing.SigningKey(seed).verify_key
        assert bytes(vk) == x("public_key"), b["kind"]
        tbs = b["domain"].encode() + b"\x00" + x("signed_bytes")
        assert tbs == x("to_be_signed"), b["kind"]
        assert x("signed_bytes")[0] == int(b["version"]), b["kind"]
        vk.verify(tbs, x("signature"))
        assert hashlib.sha256(tbs + x("signature")).digest() == x("digest"), b["kind"]
        n += 1
        if b["kind"] == "epo-v2":
            k = pair_key(h("billing.seal_secret"), h("customer.seal_key"))
            assert open_seal(k, x("seal_aad"), x("sealed_for_billing")) == x("secret.bytes")
        if b["kind"] == "endorsement-v2":
            k = pair_key(h("billing.seal_secret"), x("merchant_seal_key"))
            assert open_seal(k, x("seal_aad"), x("sealed_key")) == h("goods_key")
        if b["kind"] == "receipt":
            k = pair_key(h("customer.seal_secret"), h("billing.seal_key"))
            assert open_seal(k, x("seal_aad"), x("customer_part")) == x("part.bytes")
    assert hashlib.sha256(h("goods_ciphertext")).digest() == h("goods_checksum")
    print(f"{n} signed vectors and 3 pair seals check out")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/vectors.md")
