//! The registry of models: every protocol the checker knows, by name.
//!
//! Adding a model is one line in [`models`]: `entry::<MyProtocol>()`, where `MyProtocol`
//! implements [`Protocol`].

use std::net::SocketAddr;

use stateright::Model;

use crate::models;
use crate::protocol::{Failures, ModelInfo, Protocol};
use crate::run::{self, ModelReport, RunOptions};
use crate::system::System;

/// A registered model, with its protocol type erased.
pub trait Registered: Send + Sync {
    /// The model's static description.
    fn info(&self) -> ModelInfo;
    /// Checks the model under `failures`.
    fn check(&self, failures: Failures, options: &RunOptions) -> ModelReport;
    /// Serves stateright's web explorer for the model on `addr` (blocks while serving).
    fn explore(&self, failures: Failures, addr: SocketAddr) -> anyhow::Result<()>;
    /// Runs `count` seeded random walks of at most `max_steps` steps.
    fn simulate(
        &self,
        failures: Failures,
        first_seed: u64,
        count: usize,
        max_steps: usize,
        progress: &mut dyn FnMut(usize),
    ) -> crate::simulate::Simulation;
}

/// A model: how to build its system for a failure model, and, for a NetBill mutant
/// (`netbill check netbill --mutant NAME`), which one. A mutant is NetBill with one deliberate
/// bug, checked like any model; it is not the paper's protocol, so its "≠" against the paper's
/// claims is the checker catching the bug (`--expect-paper` ignores it).
struct Entry<P: Protocol> {
    build: fn(Failures, Option<models::netbill::NetBillMutant>) -> System<P>,
    mutant: Option<models::netbill::NetBillMutant>,
}

impl<P: Protocol> Entry<P> {
    fn system(&self, failures: Failures) -> System<P> {
        (self.build)(failures, self.mutant)
    }
}

impl<P: Protocol> Registered for Entry<P> {
    fn info(&self) -> ModelInfo {
        P::info()
    }

    fn check(&self, failures: Failures, options: &RunOptions) -> ModelReport {
        let mut report = run::check_system(&self.system(failures), options);
        if let Some(m) = self.mutant {
            report.name = format!("{} --mutant {}", report.name, m.name());
            report.title = format!("{} — mutant: {}", report.title, m.about());
            report.mutant = Some(m.about().to_string());
        }
        report
    }

    fn explore(&self, failures: Failures, addr: SocketAddr) -> anyhow::Result<()> {
        // stateright's server panics if it cannot bind: find out first and say so clearly.
        std::net::TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let _checker = self.system(failures).checker().serve(addr);
        Ok(())
    }

    fn simulate(
        &self,
        failures: Failures,
        first_seed: u64,
        count: usize,
        max_steps: usize,
        progress: &mut dyn FnMut(usize),
    ) -> crate::simulate::Simulation {
        crate::simulate::simulate(
            &self.system(failures),
            first_seed,
            count,
            max_steps,
            progress,
        )
    }
}

/// A registry entry for protocol `P`.
pub fn entry<P: Protocol>() -> Box<dyn Registered> {
    Box::new(Entry::<P> {
        build: |failures, _| System::new(failures),
        mutant: None,
    })
}

/// The NetBill model with mutant `name` (see [`models::netbill::NetBillMutant::ALL`]).
pub fn netbill_mutant(name: &str) -> Option<Box<dyn Registered>> {
    let mutant = models::netbill::NetBillMutant::from_name(name)?;
    Some(Box::new(Entry::<models::netbill::NetBill> {
        build: |failures, m| match m {
            Some(m) => System::with_protocol(models::netbill::NetBill::mutant(m), failures),
            None => System::new(failures),
        },
        mutant: Some(mutant),
    }))
}

/// Every model, in table order.
pub fn models() -> Vec<Box<dyn Registered>> {
    vec![
        entry::<models::digicash::DigiCash>(),
        entry::<models::heintze::HeintzeCash>(),
        entry::<models::first_virtual::FirstVirtual>(),
        entry::<models::ssl::SslCard>(),
        entry::<models::set::Set>(),
        entry::<models::postage::Postage>(),
        entry::<models::anonymous::AnonymousAtomic>(),
        entry::<models::netbill::NetBill>(),
    ]
}

/// The model called `name`, if any.
pub fn find(name: &str) -> Option<Box<dyn Registered>> {
    models().into_iter().find(|m| m.info().name == name)
}
