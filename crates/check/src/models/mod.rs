//! The protocol models. Each file states its source and its abstractions at the top.

pub mod anonymous;
pub mod digicash;
pub mod first_virtual;
pub mod heintze;
pub mod netbill;
pub mod postage;
pub mod set;
pub mod ssl;
