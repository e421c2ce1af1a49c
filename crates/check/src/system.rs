//! A [`Protocol`] plus a failure model, as a `stateright` model: the global state is every
//! party's state and the messages in flight; the actions are deliveries, losses, parties' own
//! steps and crashes.

use std::fmt::Debug;
use std::hash::Hash;

use serde::Serialize;
use stateright::{Model, Property};

use crate::property::{self, Observation, PropertyKind};
use crate::protocol::{Failures, MoneyKind, Out, PartyId, PartySpec, Protocol, Role};

/// Name of the guard that some run reaches a state where every party has finished.
pub const GUARD_QUIESCENT: &str = "some run finishes";
/// Name of the guard that some run completes a purchase (money moved and goods received).
pub const GUARD_PURCHASE: &str = "some purchase completes";

/// A message in flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Envelope<M> {
    /// Sender.
    pub src: PartyId,
    /// Receiver.
    pub dst: PartyId,
    /// The message.
    pub msg: M,
}

/// The global state: every party's state, the network and the crashes used so far.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SysState<S, M> {
    /// Each party's state, in [`PartyId`] order.
    pub parties: Vec<S>,
    /// Messages in flight: sorted when the network reorders, in send order when it is FIFO.
    pub network: Vec<Envelope<M>>,
    /// Crashes so far.
    pub crashes: u8,
}

/// One transition of the global state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action<M, T> {
    /// The network delivers a message.
    Deliver(Envelope<M>),
    /// The network loses a message.
    Lose(Envelope<M>),
    /// A party takes one of its own steps.
    Step(PartyId, T),
    /// A party crashes and restarts from what it persisted.
    Crash(PartyId),
}

/// The global state of a protocol's system.
pub type StateOf<P> = SysState<<P as Protocol>::Party, <P as Protocol>::Msg>;
/// An action of a protocol's system.
pub type ActionOf<P> = Action<<P as Protocol>::Msg, <P as Protocol>::Step>;

/// A protocol under a failure model: the thing the checker explores.
pub struct System<P: Protocol> {
    /// The protocol.
    pub protocol: P,
    /// The failure model.
    pub failures: Failures,
    /// The parties (cached from the protocol).
    pub specs: Vec<PartySpec>,
    /// Usable money in the initial state.
    pub initial_money: i64,
}

impl<P: Protocol> System<P> {
    /// Builds the protocol for `failures` and wraps it.
    pub fn new(failures: Failures) -> Self {
        Self::with_protocol(P::build(&failures), failures)
    }

    /// Wraps an already configured protocol (a mutant, say) with a failure model.
    pub fn with_protocol(protocol: P, failures: Failures) -> Self {
        let specs = protocol.parties();
        let initial_money = protocol.observe(&protocol.init()).money_total;
        Self {
            protocol,
            failures,
            specs,
            initial_money,
        }
    }

    /// The properties this system is checked for (cash properties only for token money).
    pub fn checked_properties() -> Vec<PropertyKind> {
        let token = P::info().money == MoneyKind::Token;
        PropertyKind::ALL
            .into_iter()
            .filter(|p| {
                token || !matches!(p, PropertyKind::CashCustomer | PropertyKind::CashMerchant)
            })
            .collect()
    }

    /// The party names, in [`PartyId`] order.
    pub fn names(&self) -> Vec<&'static str> {
        self.specs.iter().map(|s| s.name).collect()
    }

    fn roles(&self) -> Vec<Role> {
        self.specs.iter().map(|s| s.role).collect()
    }

    /// Whether a message from `src` to `dst` may be lost under this failure model.
    pub fn link_lossy(&self, src: PartyId, dst: PartyId) -> bool {
        let touches_bank = self.specs[src].role == Role::Bank || self.specs[dst].role == Role::Bank;
        self.failures.lossy && !(self.failures.failsafe_bank_channel && touches_bank)
    }

    /// Whether `party` may crash in `state`.
    fn may_crash(&self, state: &StateOf<P>, party: PartyId) -> bool {
        let bank = self.specs[party].role == Role::Bank;
        state.crashes < self.failures.max_crashes && !(bank && self.failures.reliable_bank)
    }

    /// Whether the run is over: every party has finished (including recovery) and no message
    /// in flight would still change its receiver's state. (A message that changes nothing, say a
    /// late duplicate, may stay in the network, even if its receiver would answer it again:
    /// quiescence is about the parties' states.)
    pub fn quiescent(&self, state: &StateOf<P>) -> bool {
        let all_done = state
            .parties
            .iter()
            .enumerate()
            .all(|(id, s)| self.protocol.is_done(id, s));
        all_done
            && state.network.iter().all(|env| {
                let mut out = Out::default();
                let receiver = &state.parties[env.dst];
                let after = self
                    .protocol
                    .on_msg(env.dst, receiver, env.src, &env.msg, &mut out);
                after == *receiver
            })
    }

    /// The model's observation of a state.
    pub fn observe(&self, state: &StateOf<P>) -> Observation {
        self.protocol.observe(&state.parties)
    }

    /// Why `property` fails in `state`, or `None` if it holds there (it always holds in states
    /// that are not quiescent: the properties speak about finished runs).
    pub fn violation(&self, property: PropertyKind, state: &StateOf<P>) -> Option<String> {
        if !self.quiescent(state) {
            return None;
        }
        property::violation(
            property,
            &self.observe(state),
            self.initial_money,
            &self.roles(),
            &self.names(),
        )
    }

    fn holds(&self, property: PropertyKind, state: &StateOf<P>) -> bool {
        self.violation(property, state).is_none()
    }

    fn push(&self, network: &mut Vec<Envelope<P::Msg>>, env: Envelope<P::Msg>) {
        if self.failures.reordering {
            let at = network.partition_point(|e| e <= &env);
            if self.failures.duplicating && at > 0 && network[at - 1] == env {
                return; // a duplicating network holds each distinct message once
            }
            network.insert(at, env);
        } else {
            network.push(env);
        }
    }

    /// Applies `action` to `state`; returns the next state and the messages sent by the step.
    pub fn apply(
        &self,
        state: &StateOf<P>,
        action: &ActionOf<P>,
    ) -> (StateOf<P>, Vec<Envelope<P::Msg>>) {
        let mut next = state.clone();
        let mut out = Out::default();
        let actor = match action {
            Action::Deliver(env) => {
                let keep = self.failures.duplicating && self.failures.reordering;
                if !keep && let Some(i) = next.network.iter().position(|e| e == env) {
                    next.network.remove(i);
                }
                next.parties[env.dst] = self.protocol.on_msg(
                    env.dst,
                    &state.parties[env.dst],
                    env.src,
                    &env.msg,
                    &mut out,
                );
                env.dst
            }
            Action::Lose(env) => {
                if let Some(i) = next.network.iter().position(|e| e == env) {
                    next.network.remove(i);
                }
                return (next, Vec::new());
            }
            Action::Step(party, step) => {
                next.parties[*party] =
                    self.protocol
                        .on_step(*party, &state.parties[*party], step, &mut out);
                *party
            }
            Action::Crash(party) => {
                next.crashes += 1;
                next.parties[*party] =
                    self.protocol
                        .on_crash(*party, &state.parties[*party], &mut out);
                *party
            }
        };
        let sent: Vec<Envelope<P::Msg>> = out
            .into_sends()
            .into_iter()
            .map(|(dst, msg)| Envelope {
                src: actor,
                dst,
                msg,
            })
            .collect();
        for env in &sent {
            self.push(&mut next.network, env.clone());
        }
        (next, sent)
    }
}

fn prop_money<P: Protocol>(m: &System<P>, s: &StateOf<P>) -> bool {
    m.holds(PropertyKind::Money, s)
}
fn prop_cash_customer<P: Protocol>(m: &System<P>, s: &StateOf<P>) -> bool {
    m.holds(PropertyKind::CashCustomer, s)
}
fn prop_cash_merchant<P: Protocol>(m: &System<P>, s: &StateOf<P>) -> bool {
    m.holds(PropertyKind::CashMerchant, s)
}
fn prop_goods<P: Protocol>(m: &System<P>, s: &StateOf<P>) -> bool {
    m.holds(PropertyKind::Goods, s)
}
fn prop_certified<P: Protocol>(m: &System<P>, s: &StateOf<P>) -> bool {
    m.holds(PropertyKind::Certified, s)
}
fn guard_quiescent<P: Protocol>(m: &System<P>, s: &StateOf<P>) -> bool {
    m.quiescent(s)
}
fn guard_purchase<P: Protocol>(m: &System<P>, s: &StateOf<P>) -> bool {
    m.quiescent(s) && m.observe(s).purchases.iter().any(|p| p.paid && p.goods)
}

impl<P: Protocol> Model for System<P> {
    type State = StateOf<P>;
    type Action = ActionOf<P>;

    fn init_states(&self) -> Vec<Self::State> {
        vec![SysState {
            parties: self.protocol.init(),
            network: Vec::new(),
            crashes: 0,
        }]
    }

    fn actions(&self, state: &Self::State, actions: &mut Vec<Self::Action>) {
        for (i, env) in state.network.iter().enumerate() {
            let earlier = &state.network[..i];
            if earlier.contains(env) {
                continue; // the same message twice: one action covers both copies
            }
            let head_of_link = !earlier.iter().any(|e| e.src == env.src && e.dst == env.dst);
            if self.failures.reordering || head_of_link {
                actions.push(Action::Deliver(env.clone()));
            }
            if self.link_lossy(env.src, env.dst) {
                actions.push(Action::Lose(env.clone()));
            }
        }
        for (id, party) in state.parties.iter().enumerate() {
            let mut steps = Vec::new();
            self.protocol.steps(id, party, &mut steps);
            actions.extend(steps.into_iter().map(|s| Action::Step(id, s)));
        }
        for id in 0..state.parties.len() {
            if self.may_crash(state, id) {
                actions.push(Action::Crash(id));
            }
        }
    }

    fn next_state(&self, last_state: &Self::State, action: Self::Action) -> Option<Self::State> {
        let (next, sent) = self.apply(last_state, &action);
        // A crash that loses nothing, or a delivery that changes nothing, is no transition.
        let unchanged = next.parties == last_state.parties && sent.is_empty();
        match action {
            Action::Lose(_) => Some(next),
            Action::Deliver(_) if !(self.failures.duplicating && self.failures.reordering) => {
                Some(next)
            }
            _ if unchanged => None,
            _ => Some(next),
        }
    }

    fn format_action(&self, action: &Self::Action) -> String {
        let names = self.names();
        match action {
            Action::Deliver(e) => format!(
                "{} → {}: {}",
                names[e.src],
                names[e.dst],
                self.protocol.label(&e.msg)
            ),
            Action::Lose(e) => format!(
                "lost {} → {}: {}",
                names[e.src],
                names[e.dst],
                self.protocol.label(&e.msg)
            ),
            Action::Step(p, s) => format!("{}: {}", names[*p], self.protocol.step_label(s)),
            Action::Crash(p) => format!("{} crashes and restarts", names[*p]),
        }
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut props = Vec::new();
        for kind in Self::checked_properties() {
            let condition: fn(&Self, &Self::State) -> bool = match kind {
                PropertyKind::Money => prop_money::<P>,
                PropertyKind::CashCustomer => prop_cash_customer::<P>,
                PropertyKind::CashMerchant => prop_cash_merchant::<P>,
                PropertyKind::Goods => prop_goods::<P>,
                PropertyKind::Certified => prop_certified::<P>,
            };
            props.push(Property::always(kind.name(), condition));
        }
        props.push(Property::sometimes(GUARD_QUIESCENT, guard_quiescent::<P>));
        props.push(Property::sometimes(GUARD_PURCHASE, guard_purchase::<P>));
        props
    }
}
