//! Chaos for NetBill: runs the real `netbill` server, merchant and wallet processes on
//! loopback with a fault-injecting HTTP proxy between each pair, and for every protocol step
//! and party crashes a process or loses, duplicates or delays a message; then restarts,
//! recovers and checks NetBill's guarantees (docs/reliability.md).
//!
//! Used by `netbill chaos` and by the test suite.

pub mod check;
pub mod cli;
pub mod deploy;
pub mod process;
pub mod proxy;
pub mod run;

use std::fmt;

/// A party of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Party {
    /// C, the customer's wallet.
    Customer,
    /// M, the merchant server.
    Merchant,
    /// N, the billing server.
    Billing,
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Party::Customer => "C wallet",
            Party::Merchant => "M merchant",
            Party::Billing => "N billing",
        })
    }
}

/// One fault injected in a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The message is lost (the connection closes without it).
    Drop,
    /// The message is delivered twice.
    Duplicate,
    /// The message is held back before delivery.
    Delay,
    /// The sender is SIGKILLed just before the message would leave it (it never arrives).
    KillSenderBeforeSend,
    /// The sender is SIGKILLed just after the message left it.
    KillSenderAfterSend,
    /// The receiver is SIGKILLed just before the message reaches it (and it is lost).
    KillReceiverBeforeReceive,
    /// The receiver is SIGKILLed just after it received and handled the message.
    KillReceiverAfterReceive,
    /// The party aborts itself at a named crash point (`NETBILL_CRASH_AT`).
    Crash(&'static str),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Drop => f.write_str("drop"),
            Fault::Duplicate => f.write_str("duplicate"),
            Fault::Delay => f.write_str("delay"),
            Fault::KillSenderBeforeSend => f.write_str("SIGKILL sender before send"),
            Fault::KillSenderAfterSend => f.write_str("SIGKILL sender after send"),
            Fault::KillReceiverBeforeReceive => f.write_str("SIGKILL receiver before receive"),
            Fault::KillReceiverAfterReceive => f.write_str("SIGKILL receiver after receive"),
            Fault::Crash(p) => write!(f, "crash at {p}"),
        }
    }
}

/// One schedule: one purchase with one fault at one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Schedule {
    /// The message of the purchase (1–6, [`STEPS`]) whose sending or handling the fault hits.
    pub step: u8,
    /// The party the fault hits (for a lost, duplicated or delayed message: its sender).
    pub party: Party,
    /// What happens.
    pub fault: Fault,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} ({}), {}: {}",
            self.step,
            step_name(self.step),
            self.party,
            self.fault
        )
    }
}

/// The six messages of a v2 purchase, as the proxies see them: two customer–merchant
/// round trips (1–2, 3 and 6) around one merchant–billing round trip (4–5).
pub const STEPS: [(u8, &str, Party, Party); 6] = [
    (1, "C→M purchase request", Party::Customer, Party::Merchant),
    (2, "M→C 402 offer + goods", Party::Merchant, Party::Customer),
    (3, "C→M signed EPO", Party::Customer, Party::Merchant),
    (4, "M→N endorsed EPO", Party::Merchant, Party::Billing),
    (5, "N→M signed receipt", Party::Billing, Party::Merchant),
    (6, "M→C receipt", Party::Merchant, Party::Customer),
];

/// A step's one-line name.
pub fn step_name(step: u8) -> &'static str {
    STEPS.iter().find(|s| s.0 == step).map_or("?", |s| s.1)
}

/// Every crash point in the shells: (name, step, party). Documented in docs/reliability.md.
pub const CRASH_POINTS: [(&str, u8, Party); 12] = [
    ("wallet.after_receive_goods", 2, Party::Customer),
    ("wallet.before_persist_epo", 3, Party::Customer),
    ("wallet.before_send_epo", 3, Party::Customer),
    ("wallet.after_receive_receipt", 6, Party::Customer),
    ("wallet.after_persist_receipt", 6, Party::Customer),
    ("merchant.before_send_offer", 2, Party::Merchant),
    ("merchant.before_send_endorsement", 4, Party::Merchant),
    ("merchant.after_receive_receipt", 5, Party::Merchant),
    ("merchant.before_send_receipt", 6, Party::Merchant),
    ("server.before_commit", 5, Party::Billing),
    ("server.mid_batch", 5, Party::Billing),
    ("server.after_commit_before_reply", 5, Party::Billing),
];

/// The full matrix: every step × {drop, duplicate, delay} for its sender, every step ×
/// {SIGKILL sender before / after send, SIGKILL receiver before / after receive}, and every
/// crash point.
pub fn matrix() -> Vec<Schedule> {
    let mut out = Vec::new();
    for &(step, _, sender, receiver) in &STEPS {
        for fault in [Fault::Drop, Fault::Duplicate, Fault::Delay] {
            out.push(Schedule {
                step,
                party: sender,
                fault,
            });
        }
        for fault in [Fault::KillSenderBeforeSend, Fault::KillSenderAfterSend] {
            out.push(Schedule {
                step,
                party: sender,
                fault,
            });
        }
        for fault in [
            Fault::KillReceiverBeforeReceive,
            Fault::KillReceiverAfterReceive,
        ] {
            out.push(Schedule {
                step,
                party: receiver,
                fault,
            });
        }
    }
    for &(point, step, party) in &CRASH_POINTS {
        out.push(Schedule {
            step,
            party,
            fault: Fault::Crash(point),
        });
    }
    out
}

/// A small deterministic generator (SplitMix64), so a seed reproduces a run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// `n` schedules for `seed`: the matrix shuffled, repeated as often as needed.
pub fn schedules(seed: u64, n: usize) -> Vec<Schedule> {
    let base = matrix();
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut round = base.clone();
        for i in (1..round.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            round.swap(i, j);
        }
        out.extend(round.into_iter().take(n - out.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_covers_every_step_with_every_message_fault_and_every_crash_point() {
        let m = matrix();
        assert_eq!(m.len(), STEPS.len() * 7 + CRASH_POINTS.len());
        for step in 1..=6 {
            for f in [
                Fault::Drop,
                Fault::Duplicate,
                Fault::Delay,
                Fault::KillSenderBeforeSend,
                Fault::KillSenderAfterSend,
                Fault::KillReceiverBeforeReceive,
                Fault::KillReceiverAfterReceive,
            ] {
                assert!(
                    m.iter().any(|s| s.step == step && s.fault == f),
                    "{step} {f}"
                );
            }
        }
        for (p, _, _) in CRASH_POINTS {
            assert_eq!(m.iter().filter(|s| s.fault == Fault::Crash(p)).count(), 1);
        }
    }

    #[test]
    fn a_seed_reproduces_its_schedules_and_each_round_is_the_whole_matrix() {
        let a = schedules(42, 200);
        assert_eq!(a, schedules(42, 200));
        assert_ne!(a, schedules(43, 200));
        let mut round = a[..matrix().len()].to_vec();
        round.sort();
        let mut m = matrix();
        m.sort();
        assert_eq!(round, m);
    }
}
