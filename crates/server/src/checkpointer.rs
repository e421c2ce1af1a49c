//! Checking the journal's chain before N signs a checkpoint of it, on a connection of its
//! own so that the writer thread never waits for the scan.

use netbill_ledger::{ChainHead, Store, StoreError, follow_chain};
use netbill_proto::crypto::PublicKey;

use netbill_crypto::RealCrypto;

/// Where the check of the chain has reached, and what N has signed.
pub struct Checkpointer {
    url: String,
    /// A reading connection, opened on first use.
    store: Option<Box<dyn Store>>,
    /// The head checked last (`None`: start from the newest signed checkpoint).
    head: Option<ChainHead>,
    /// The seq of the newest checkpoint signed.
    signed_seq: u64,
}

impl Checkpointer {
    /// A checkpointer over the ledger at `url` (the server's own store URL).
    pub fn new(url: &str) -> Self {
        Checkpointer {
            url: url.to_string(),
            store: None,
            head: None,
            signed_seq: 0,
        }
    }

    /// Follows the journal from where the last check ended (or the newest checkpoint,
    /// whose signature under `key` is checked) to its head; the head if it is past the
    /// newest checkpoint. `ChainBroken` if an entry no longer chains, unless `acknowledge`.
    pub fn next(
        &mut self,
        key: &PublicKey,
        acknowledge: bool,
    ) -> Result<Option<ChainHead>, StoreError> {
        let store = match &mut self.store {
            Some(s) => s,
            None => self.store.insert(netbill_ledger::open_store(&self.url)?),
        };
        let from = match self.head.take() {
            Some(h) => h,
            None => {
                let newest = newest_checkpoint(store.as_mut(), key, acknowledge)?;
                self.signed_seq = newest.seq;
                newest
            }
        };
        let head = match follow_chain(store.as_mut(), from.clone(), false) {
            Ok(h) => h,
            Err(StoreError::ChainBroken(_)) if acknowledge => {
                follow_chain(store.as_mut(), from, true)?
            }
            Err(e) => return Err(e),
        };
        let advanced = head.seq > self.signed_seq;
        self.head = Some(head.clone());
        Ok(advanced.then_some(head))
    }

    /// Notes that a checkpoint of entry `seq` is stored.
    pub fn signed(&mut self, seq: u64) {
        self.signed_seq = self.signed_seq.max(seq);
    }
}

/// The newest checkpoint in the ledger, its signature checked; genesis if there is none.
/// A checkpoint not signed by `key` breaks the chain, unless `acknowledge` (it is skipped).
fn newest_checkpoint(
    store: &mut dyn Store,
    key: &PublicKey,
    acknowledge: bool,
) -> Result<ChainHead, StoreError> {
    let mut newest = ChainHead::genesis();
    let mut after = 0;
    loop {
        let page = store.checkpoints(after, 1000)?;
        let done = page.len() < 1000;
        for c in &page {
            after = c.body_unverified().seq;
            match c.verify(&RealCrypto, key) {
                Ok(body) => newest = ChainHead::of(body),
                Err(_) if acknowledge => {}
                Err(_) => {
                    return Err(StoreError::ChainBroken(format!(
                        "the checkpoint of entry {after} is not signed by this server's key"
                    )));
                }
            }
        }
        if done {
            return Ok(newest);
        }
    }
}
