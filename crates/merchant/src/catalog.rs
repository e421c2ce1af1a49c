//! The merchant's catalog: a TOML file naming products, their prices and files.
//!
//! ```toml
//! merchant = "acme"
//!
//! [groups]                     # group authorities this merchant trusts
//! acm-student = "9f3c…"        # the authority's Ed25519 public key, hex
//!
//! [[product]]
//! code = "atomicity"
//! description = "Tygar: Atomicity in Electronic Commerce (1996)"
//! price = "USD:0.02"
//! file = "atomicity.txt"       # relative to the catalog file
//! group_prices = { acm-student = "USD:0.01" }
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use netbill_proto::crypto::{Digest, PublicKey};
use netbill_proto::merchant::Offer;
use netbill_proto::messages::DESCRIPTION_LEN_MAX;
use netbill_proto::{AccountId, Amount, GroupName, ProductCode};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// Most products one catalog may list.
pub const PRODUCTS_MAX: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    merchant: AccountId,
    #[serde(default)]
    groups: BTreeMap<GroupName, PublicKey>,
    #[serde(default)]
    product: Vec<ProductFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductFile {
    code: ProductCode,
    description: String,
    price: Amount,
    file: PathBuf,
    #[serde(default)]
    group_prices: BTreeMap<GroupName, Amount>,
}

/// One product ready to sell.
#[derive(Clone, Debug)]
pub struct Product {
    pub offer: Offer,
    pub path: PathBuf,
}

/// The loaded catalog.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub merchant: AccountId,
    pub groups: BTreeMap<GroupName, PublicKey>,
    pub products: BTreeMap<ProductCode, Product>,
}

impl Catalog {
    /// Reads and checks the catalog at `path`, hashing every product's file.
    pub fn load(path: &Path) -> anyhow::Result<Catalog> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading catalog {}", path.display()))?;
        let file: CatalogFile =
            toml::from_str(&text).with_context(|| format!("parsing catalog {}", path.display()))?;
        if file.product.len() > PRODUCTS_MAX {
            bail!(
                "the catalog lists {} products; the limit is {PRODUCTS_MAX}",
                file.product.len()
            );
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut products = BTreeMap::new();
        for p in file.product {
            if p.description.is_empty() || p.description.len() > DESCRIPTION_LEN_MAX {
                bail!(
                    "product {}: the description must be 1–{DESCRIPTION_LEN_MAX} bytes",
                    p.code
                );
            }
            if p.price.is_zero() {
                bail!("product {}: the price must be more than USD:0", p.code);
            }
            for (g, price) in &p.group_prices {
                if !file.groups.contains_key(g) {
                    bail!(
                        "product {}: group {g} has a price but no trusted authority in [groups]",
                        p.code
                    );
                }
                if price.is_zero() {
                    bail!(
                        "product {}: the price for group {g} must be more than USD:0",
                        p.code
                    );
                }
            }
            let full = base.join(&p.file);
            let (goods_digest, goods_len) = hash_file(&full)
                .with_context(|| format!("product {}: reading {}", p.code, full.display()))?;
            let offer = Offer {
                product: p.code.clone(),
                description: p.description,
                price: p.price,
                group_prices: p.group_prices.into_iter().collect(),
                goods_digest,
                goods_len,
            };
            if products
                .insert(p.code.clone(), Product { offer, path: full })
                .is_some()
            {
                bail!("product {} is listed twice", p.code);
            }
        }
        Ok(Catalog {
            merchant: file.merchant,
            groups: file.groups,
            products,
        })
    }
}

/// SHA-256 and length of a file, read in constant memory.
pub fn hash_file(path: &Path) -> std::io::Result<(Digest, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((Digest(h.finalize().into()), len))
}
