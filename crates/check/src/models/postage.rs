//! Cryptographic postage indicia (Tygar, Yee and Heintze; the USPS Information-Based Indicia
//! Program).
//!
//! A postal security device (PSD) — a tamper-resistant secure coprocessor — holds the postage
//! balance. Printing is one atomic step inside it: decrement the descending register, increment
//! the ascending register and the sequence number, sign the envelope data (destination,
//! postage, device, sequence). The mailer's host prints the indicium and posts the letter. The
//! sorting station for the destination verifies the signature, checks that the indicium was
//! made for its destination, and rejects a (device, sequence) seen before.
//!
//! 1. H → PSD: print postage for destination D1. 2. PSD → H: the signed indicium.
//! 3. H → S1: the letter. The mailer may also *copy* the indicium onto a second letter to D1
//!    and onto a letter to D2 (sorted by S2): the attacks the design must defeat.
//!
//! Abstractions: signatures cannot be forged (the key never leaves the PSD); the PSD and the
//! host talk over a local bus (the "bank" channel: fail-safe by default); the host keeps the
//! indicium only in memory until it is printed, so a host crash in between loses it; stations
//! keep their seen-lists durably; the six-month validity window is not modelled. "Usable money"
//! is the two registers plus any postage honoured without payment (a copy accepted for delivery
//! would be money created).

use crate::property::{Binds, Observation, PaperClaim, PropertyKind, Purchase, SignedRecord};
use crate::protocol::{Failures, ModelInfo, MoneyKind, Out, PartyId, PartySpec, Protocol, Role};

const H: PartyId = 0;
const PSD: PartyId = 1;
const S1: PartyId = 2;
const S2: PartyId = 3;

/// Destination served by sorting station S1.
const D1: u8 = 1;
/// Destination served by sorting station S2.
const D2: u8 = 2;

/// Cryptographic postage indicia.
pub struct Postage {
    stations_reject_copies: bool,
}

impl Postage {
    /// A mutant whose sorting stations forget to check for an indicium seen before.
    pub fn mutant_no_duplicate_check() -> Self {
        Self {
            stations_reject_copies: false,
        }
    }
}

/// A signed indicium (symbolic): the PSD's sequence number and the destination it was made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Indicium {
    /// PSD sequence number.
    pub seq: u8,
    /// Destination in the signed data.
    pub dest: u8,
}

/// Messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// 1. H → PSD: print postage for this destination.
    PrintRequest(u8),
    /// 2. PSD → H.
    Signed(Indicium),
    /// 3. H → station: a letter addressed to `to` bearing `indicium`.
    Letter {
        /// The indicium printed on it.
        indicium: Indicium,
        /// The address on the envelope.
        to: u8,
    },
}

/// A party's own steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// H asks the PSD for postage.
    Print,
    /// H posts the letter.
    Post,
    /// Copy the indicium onto a second letter to the same destination.
    CopySameAddress,
    /// Copy the indicium onto a letter to another destination.
    CopyOtherAddress,
}

/// The host's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HPhase {
    /// Nothing done.
    Start,
    /// Waiting for the PSD.
    AwaitIndicium,
    /// Indicium printed on the envelope.
    Printed(Indicium),
    /// Letter posted.
    Posted(Indicium),
    /// Crashed before printing: the indicium is gone.
    Lost,
}

/// One party's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// The mailer's host (and printer).
    Host {
        /// Progress.
        phase: HPhase,
        /// Copies made (at most one of each kind).
        copied_same: bool,
        /// Copied to another address.
        copied_other: bool,
    },
    /// The postal security device.
    Device {
        /// Postage left.
        descending: i64,
        /// Postage used.
        ascending: i64,
        /// Last sequence number used.
        seq: u8,
    },
    /// A sorting station.
    Station {
        /// The destination it sorts for.
        dest: u8,
        /// Sequence numbers seen.
        seen: Vec<u8>,
        /// Letters accepted for delivery.
        accepted: i64,
    },
}

impl Protocol for Postage {
    type Party = Party;
    type Msg = Msg;
    type Step = Step;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "postage",
            title: "Cryptographic postage indicia",
            source: "Tygar 1996 (seed); Heintze, Tygar, Yee 1996: cryptographic postage indicia",
            money: MoneyKind::Notational,
            default_failures: Failures::default(),
            paper: vec![PaperClaim::holds(
                PropertyKind::Money,
                "Tygar: money atomicity without a central server, by secure hardware",
            )],
        }
    }

    fn build(_failures: &Failures) -> Self {
        Self {
            stations_reject_copies: true,
        }
    }

    fn parties(&self) -> Vec<PartySpec> {
        vec![
            PartySpec::new("H", Role::Customer),
            PartySpec::new("PSD", Role::Bank),
            PartySpec::new("S1", Role::Merchant),
            PartySpec::new("S2", Role::Merchant),
        ]
    }

    fn init(&self) -> Vec<Party> {
        vec![
            Party::Host {
                phase: HPhase::Start,
                copied_same: false,
                copied_other: false,
            },
            Party::Device {
                descending: 1,
                ascending: 0,
                seq: 0,
            },
            Party::Station {
                dest: D1,
                seen: Vec::new(),
                accepted: 0,
            },
            Party::Station {
                dest: D2,
                seen: Vec::new(),
                accepted: 0,
            },
        ]
    }

    fn on_msg(
        &self,
        _me: PartyId,
        state: &Party,
        from: PartyId,
        msg: &Msg,
        out: &mut Out<Msg>,
    ) -> Party {
        let mut next = state.clone();
        match (&mut next, msg) {
            (Party::Host { phase, .. }, Msg::Signed(indicium))
                if *phase == HPhase::AwaitIndicium =>
            {
                *phase = HPhase::Printed(*indicium);
            }
            (
                Party::Device {
                    descending,
                    ascending,
                    seq,
                },
                Msg::PrintRequest(dest),
            ) => {
                // One atomic step inside the secure coprocessor; a repeated request (same
                // request from the same host) gets the same indicium again.
                if *seq == 0 && *descending >= 1 {
                    *descending -= 1;
                    *ascending += 1;
                    *seq += 1;
                }
                if *seq > 0 {
                    out.send(
                        from,
                        Msg::Signed(Indicium {
                            seq: *seq,
                            dest: *dest,
                        }),
                    );
                }
            }
            (
                Party::Station {
                    dest,
                    seen,
                    accepted,
                },
                Msg::Letter { indicium, to },
            ) => {
                let copy = self.stations_reject_copies && seen.contains(&indicium.seq);
                let valid = indicium.dest == *to && *to == *dest && !copy;
                if valid {
                    seen.push(indicium.seq);
                    *accepted += 1;
                }
            }
            _ => {}
        }
        next
    }

    fn steps(&self, _me: PartyId, state: &Party, steps: &mut Vec<Step>) {
        if let Party::Host {
            phase,
            copied_same,
            copied_other,
        } = state
        {
            match phase {
                HPhase::Start => steps.push(Step::Print),
                HPhase::Printed(_) => steps.push(Step::Post),
                HPhase::Posted(_) => {
                    if !*copied_same {
                        steps.push(Step::CopySameAddress);
                    }
                    if !*copied_other {
                        steps.push(Step::CopyOtherAddress);
                    }
                }
                _ => {}
            }
        }
    }

    fn on_step(&self, _me: PartyId, state: &Party, step: &Step, out: &mut Out<Msg>) -> Party {
        let mut next = state.clone();
        if let Party::Host {
            phase,
            copied_same,
            copied_other,
        } = &mut next
        {
            match (step, *phase) {
                (Step::Print, HPhase::Start) => {
                    out.send(PSD, Msg::PrintRequest(D1));
                    *phase = HPhase::AwaitIndicium;
                }
                (Step::Post, HPhase::Printed(indicium)) => {
                    out.send(S1, Msg::Letter { indicium, to: D1 });
                    *phase = HPhase::Posted(indicium);
                }
                (Step::CopySameAddress, HPhase::Posted(indicium)) => {
                    out.send(S1, Msg::Letter { indicium, to: D1 });
                    *copied_same = true;
                }
                (Step::CopyOtherAddress, HPhase::Posted(indicium)) => {
                    out.send(S2, Msg::Letter { indicium, to: D2 });
                    *copied_other = true;
                }
                _ => {}
            }
        }
        next
    }

    fn on_crash(&self, _me: PartyId, state: &Party, _out: &mut Out<Msg>) -> Party {
        match state {
            // The indicium was only in the host's memory, not yet on paper.
            Party::Host {
                phase: HPhase::AwaitIndicium,
                copied_same,
                copied_other,
            } => Party::Host {
                phase: HPhase::Lost,
                copied_same: *copied_same,
                copied_other: *copied_other,
            },
            other => other.clone(),
        }
    }

    fn is_done(&self, _me: PartyId, state: &Party) -> bool {
        match state {
            Party::Host { phase, .. } => matches!(phase, HPhase::Posted(_) | HPhase::Lost),
            Party::Device { .. } | Party::Station { .. } => true,
        }
    }

    fn observe(&self, parties: &[Party]) -> Observation {
        let (
            Party::Host { phase, .. },
            Party::Device {
                descending,
                ascending,
                ..
            },
            Party::Station {
                accepted: accepted_1,
                ..
            },
            Party::Station {
                accepted: accepted_2,
                ..
            },
        ) = (&parties[H], &parties[PSD], &parties[S1], &parties[S2])
        else {
            return Observation::default();
        };
        let delivered = accepted_1 + accepted_2;
        let unpaid_deliveries = (delivered - ascending).max(0);
        let purchases = if *phase != HPhase::Start {
            vec![Purchase {
                customer: H,
                merchant: S1,
                paid: *ascending >= 1,
                goods: *accepted_1 >= 1,
                // The indicium is signed by the device; nobody signs for the delivery.
                records: vec![SignedRecord {
                    signer: Role::Bank,
                    binds: Binds {
                        price: true,
                        goods_digest: true,
                        goods_key: false,
                    },
                }],
            }]
        } else {
            Vec::new()
        };
        Observation {
            money_total: descending + ascending + unpaid_deliveries,
            cash: Vec::new(),
            purchases,
        }
    }
}
