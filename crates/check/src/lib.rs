//! `netbill-check`: a model checker for the atomicity of payment protocols.
//!
//! Each protocol is a [`protocol::Protocol`]: parties as sans-IO state machines. The framework
//! ([`system`]) puts them on a network that loses, duplicates and reorders messages, lets
//! parties crash and restart from what they persisted, and explores every interleaving with
//! stateright. The properties ([`property`]) — money atomicity, the cash property, goods
//! atomicity and certified delivery, after Tygar — are judged on every state where all parties
//! have finished. [`registry`] lists the models; [`cli`] is `netbill check`.

#![warn(missing_docs)]

pub mod cli;
pub mod explore;
pub mod models;
pub mod msc;
pub mod property;
pub mod protocol;
pub mod registry;
pub mod report;
pub mod run;
pub mod simulate;
pub mod system;
