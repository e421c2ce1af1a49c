//! The registry of models: every protocol the checker knows, by name.
//!
//! Adding a model is one line in [`models`]: `entry::<MyProtocol>()`, where `MyProtocol`
//! implements [`Protocol`].

use std::marker::PhantomData;
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

struct Entry<P>(PhantomData<fn() -> P>);

impl<P: Protocol> Registered for Entry<P> {
    fn info(&self) -> ModelInfo {
        P::info()
    }

    fn check(&self, failures: Failures, options: &RunOptions) -> ModelReport {
        run::check::<P>(failures, options)
    }

    fn explore(&self, failures: Failures, addr: SocketAddr) -> anyhow::Result<()> {
        // stateright's server panics if it cannot bind: find out first and say so clearly.
        std::net::TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let _checker = System::<P>::new(failures).checker().serve(addr);
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
            &System::<P>::new(failures),
            first_seed,
            count,
            max_steps,
            progress,
        )
    }
}

/// A NetBill mutant (`netbill check netbill --mutant NAME`): the NetBill model with one
/// deliberate bug, checked like any model. It is not the paper's protocol: its "≠" against
/// the paper's claims is the checker catching the bug (`--expect-paper` ignores it).
struct MutantEntry(models::netbill::NetBillMutant);

impl MutantEntry {
    fn system(&self, failures: Failures) -> System<models::netbill::NetBill> {
        System::with_protocol(models::netbill::NetBill::mutant(self.0), failures)
    }
}

impl Registered for MutantEntry {
    fn info(&self) -> ModelInfo {
        <models::netbill::NetBill as Protocol>::info()
    }

    fn check(&self, failures: Failures, options: &RunOptions) -> ModelReport {
        let mut report = run::check_system(&self.system(failures), options);
        report.name = format!("netbill --mutant {}", self.0.name());
        report.title = format!("{} — mutant: {}", report.title, self.0.about());
        report.mutant = Some(self.0.about().to_string());
        report
    }

    fn explore(&self, failures: Failures, addr: SocketAddr) -> anyhow::Result<()> {
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

/// The NetBill model with mutant `name` (see [`models::netbill::NetBillMutant::ALL`]).
pub fn netbill_mutant(name: &str) -> Option<Box<dyn Registered>> {
    models::netbill::NetBillMutant::from_name(name)
        .map(|m| Box::new(MutantEntry(m)) as Box<dyn Registered>)
}

/// A registry entry for protocol `P`.
pub fn entry<P: Protocol>() -> Box<dyn Registered> {
    Box::new(Entry::<P>(PhantomData))
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
