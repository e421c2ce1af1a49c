//! NetBill's sans-IO protocol core.
//!
//! Messages and signed objects with one canonical encoding each, and the customer, merchant
//! and billing-server logic as state machines. Nothing here touches the network, the disk,
//! the clock or a random source: callers pass time, randomness and keys in, and carry out
//! the effects the state machines ask for.

pub mod batch;
pub mod billing;
pub mod codec;
pub mod crypto;
pub mod customer;
pub mod dispute;
pub mod ids;
pub mod merchant;
pub mod messages;
pub mod money;
pub mod sealing;
pub mod signed;

pub use ids::{AccountId, EpoId, GroupName, ProductCode};
pub use money::Amount;
pub use signed::Signed;
