//! The interface every model implements: parties as sans-IO state machines over a network.
//!
//! A model is a [`Protocol`]: a fixed set of parties, each a state machine that reacts to a
//! delivered message or to one of its own steps (a timeout firing, a decision), and that says
//! what survives a crash. The framework ([`crate::system`]) supplies everything else: the
//! network (loss, duplication, reordering), crashes, the failure-model options and the checks.
//! A protocol never sees the network or the failures; it only sees its inputs.

use std::fmt::Debug;
use std::hash::Hash;

use serde::Serialize;

use crate::property::{Observation, PaperClaim};

/// Index of a party in [`Protocol::parties`] and [`Protocol::init`].
pub type PartyId = usize;

/// What a party is, as far as the failure model is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The buyer: the customer, the mailer.
    Customer,
    /// The seller: the merchant, the postal sorting station.
    Merchant,
    /// A trusted server that keeps the money or the outcome: the bank, the billing server, the
    /// card network, the public log, the postal security device. Heintze et al. assume it never
    /// fails and that every party reaches it over a fail-safe channel; both are options here.
    Bank,
}

/// One party of a model: a short name for charts and its role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartySpec {
    /// Short name shown in message sequence charts, e.g. `C`, `M1`, `B`.
    pub name: &'static str,
    /// The party's role, which decides how the failure options apply to it.
    pub role: Role,
}

impl PartySpec {
    /// A party called `name` with role `role`.
    pub const fn new(name: &'static str, role: Role) -> Self {
        Self { name, role }
    }
}

/// The failure model of one check. Every option only adds behaviours to the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Failures {
    /// Messages may be lost.
    pub lossy: bool,
    /// A message may be delivered more than once (with reordering only: a FIFO link does not
    /// duplicate).
    pub duplicating: bool,
    /// Messages on one link may overtake each other (otherwise each link is FIFO).
    pub reordering: bool,
    /// How many crashes may happen in one run, over all parties that can crash.
    pub max_crashes: u8,
    /// The bank (every [`Role::Bank`] party) never crashes.
    pub reliable_bank: bool,
    /// Messages to and from the bank are never lost (Heintze et al.'s fail-safe channel).
    pub failsafe_bank_channel: bool,
}

impl Default for Failures {
    /// The failure model of Heintze et al.: a lossy, reordering network between customer and
    /// merchant, one crash, a bank that never fails and a fail-safe channel to it.
    fn default() -> Self {
        Self {
            lossy: true,
            duplicating: false,
            reordering: true,
            max_crashes: 1,
            reliable_bank: true,
            failsafe_bank_channel: true,
        }
    }
}

/// Whether the protocol moves money as bearer tokens or as entries in a server's accounts
/// (Camp, Sirbu and Tygar's "token and notational money").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MoneyKind {
    /// Bearer tokens: the cash property is checked too.
    Token,
    /// Account entries at a server: the cash property does not apply.
    Notational,
}

/// Static description of a model: its registry name, where it comes from, what the paper says.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// Registry name used on the command line, e.g. `digicash`.
    pub name: &'static str,
    /// Human-readable title for the table.
    pub title: &'static str,
    /// Where the protocol and its claimed properties come from.
    pub source: &'static str,
    /// Token or notational money.
    pub money: MoneyKind,
    /// The failure model that reproduces the paper's setting for this protocol.
    pub default_failures: Failures,
    /// What the paper(s) claim about each property; properties without a claim are absent.
    pub paper: Vec<PaperClaim>,
}

/// The messages a party sends while handling one input.
#[derive(Debug)]
pub struct Out<M> {
    sends: Vec<(PartyId, M)>,
}

impl<M> Default for Out<M> {
    fn default() -> Self {
        Self { sends: Vec::new() }
    }
}

impl<M> Out<M> {
    /// Sends `msg` to party `to`.
    pub fn send(&mut self, to: PartyId, msg: M) {
        self.sends.push((to, msg));
    }

    /// The messages sent so far, in order.
    pub fn into_sends(self) -> Vec<(PartyId, M)> {
        self.sends
    }
}

/// A payment protocol as a set of sans-IO party state machines.
///
/// The NetBill model implements this by wrapping the production state machines of
/// `netbill-proto` in [`Protocol::Party`] and mapping their inputs and effects; the other models
/// are written directly against it. All methods must be deterministic.
pub trait Protocol: Sized + Send + Sync + 'static {
    /// One party's state (every party of the model uses the same type, usually an enum).
    type Party: Clone + Debug + Hash + Eq + Send + Sync + 'static;
    /// A message on the network.
    type Msg: Clone + Debug + Hash + Eq + Ord + Send + Sync + 'static;
    /// A party's own move: a timeout firing or a decision it takes.
    type Step: Clone + Debug + Hash + Eq + Send + Sync + 'static;

    /// The model's name, sources, money kind, default failure model and the paper's claims.
    fn info() -> ModelInfo;

    /// Builds the model for a failure model (a protocol may bound its retries differently when,
    /// for example, the channel to the bank is not fail-safe).
    fn build(failures: &Failures) -> Self;

    /// The parties, in [`PartyId`] order.
    fn parties(&self) -> Vec<PartySpec>;

    /// Every party's initial state, in [`PartyId`] order.
    fn init(&self) -> Vec<Self::Party>;

    /// Party `me` in `state` receives `msg` from `from`; returns its next state.
    fn on_msg(
        &self,
        me: PartyId,
        state: &Self::Party,
        from: PartyId,
        msg: &Self::Msg,
        out: &mut Out<Self::Msg>,
    ) -> Self::Party;

    /// The steps party `me` may take on its own in `state` (timeouts, decisions).
    fn steps(&self, me: PartyId, state: &Self::Party, steps: &mut Vec<Self::Step>);

    /// Party `me` in `state` takes `step`; returns its next state.
    fn on_step(
        &self,
        me: PartyId,
        state: &Self::Party,
        step: &Self::Step,
        out: &mut Out<Self::Msg>,
    ) -> Self::Party;

    /// Party `me` crashes in `state` and restarts from what it had persisted, running its
    /// recovery; returns the state after recovery.
    fn on_crash(&self, me: PartyId, state: &Self::Party, out: &mut Out<Self::Msg>) -> Self::Party;

    /// Whether party `me` has finished, including any recovery it still owes. The properties
    /// are judged in states where every party has finished ("quiescent" states).
    fn is_done(&self, me: PartyId, state: &Self::Party) -> bool;

    /// The facts the properties are judged on: money, tokens, purchases, signed records.
    fn observe(&self, parties: &[Self::Party]) -> Observation;

    /// A short label for a message in charts (defaults to its `Debug` form).
    fn label(&self, msg: &Self::Msg) -> String {
        format!("{msg:?}")
    }

    /// A short label for a step in charts (defaults to its `Debug` form).
    fn step_label(&self, step: &Self::Step) -> String {
        format!("{step:?}")
    }
}
