//! Counterexamples as readable message sequence charts in plain text.
//!
//! One lane per party; one line per event. A delivered message is an arrow from the sender's
//! lane to the receiver's, drawn when it arrives (the network may have held it for a while); a
//! lost message ends in `x`; a party's own step is `*` on its lane; a crash is `#`.

use serde::Serialize;

/// One event of a counterexample, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TraceEvent {
    /// A message arrived.
    Deliver {
        /// Sender's name.
        from: String,
        /// Receiver's name.
        to: String,
        /// The message.
        message: String,
    },
    /// The network lost a message.
    Lose {
        /// Sender's name.
        from: String,
        /// Intended receiver's name.
        to: String,
        /// The message.
        message: String,
    },
    /// A party took one of its own steps (a timeout, a decision).
    Step {
        /// The party's name.
        party: String,
        /// The step.
        step: String,
    },
    /// A party crashed and restarted from what it persisted.
    Crash {
        /// The party's name.
        party: String,
    },
}

const LANE_WIDTH: usize = 16;

fn lane_of(names: &[&str], name: &str) -> usize {
    names.iter().position(|n| *n == name).unwrap_or(0)
}

fn center(lane: usize) -> usize {
    lane * LANE_WIDTH + LANE_WIDTH / 2
}

/// Draws one arrow line from lane `a` to lane `b` with `label`; `lost` ends it in `x` halfway.
fn arrow(lanes: usize, a: usize, b: usize, label: &str, lost: bool) -> String {
    let width = lanes * LANE_WIDTH;
    let mut line: Vec<char> = vec![' '; width];
    for lane in 0..lanes {
        line[center(lane)] = '|';
    }
    let (lo, hi) = (center(a.min(b)), center(a.max(b)));
    let end = if lost { (lo + hi) / 2 } else { hi };
    let (from, to) = if a < b {
        (lo, end)
    } else {
        (hi - (end - lo), hi)
    };
    for c in line.iter_mut().take(to).skip(from + 1) {
        *c = '-';
    }
    if lost {
        let x = if a < b { to } else { from };
        line[x] = 'x';
    } else if a < b {
        line[hi - 1] = '>';
    } else {
        line[lo + 1] = '<';
    }
    let text: String = line.into_iter().collect();
    format!("{}  {label}", text.trim_end())
}

fn mark(lanes: usize, lane: usize, symbol: char, label: &str) -> String {
    let mut line: Vec<char> = vec![' '; lanes * LANE_WIDTH];
    for l in 0..lanes {
        line[center(l)] = '|';
    }
    line[center(lane)] = symbol;
    let text: String = line.into_iter().collect();
    format!("{}  {label}", text.trim_end())
}

/// Renders a counterexample as a text chart with a header naming the lanes.
pub fn render(names: &[&str], events: &[TraceEvent]) -> String {
    let lanes = names.len();
    let mut header = String::new();
    for (i, n) in names.iter().enumerate() {
        let pad = center(i).saturating_sub(header.chars().count());
        header.push_str(&" ".repeat(pad));
        header.push_str(n);
    }
    let mut out = format!("      {header}\n");
    for (i, e) in events.iter().enumerate() {
        let line = match e {
            TraceEvent::Deliver { from, to, message } => arrow(
                lanes,
                lane_of(names, from),
                lane_of(names, to),
                message,
                false,
            ),
            TraceEvent::Lose { from, to, message } => arrow(
                lanes,
                lane_of(names, from),
                lane_of(names, to),
                &format!("{message} (lost)"),
                true,
            ),
            TraceEvent::Step { party, step } => mark(lanes, lane_of(names, party), '*', step),
            TraceEvent::Crash { party } => mark(
                lanes,
                lane_of(names, party),
                '#',
                "crash; restart from persisted state",
            ),
        };
        out.push_str(&format!("{:>4}  {line}\n", i + 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_draws_arrows_in_both_directions_and_marks() {
        let names = ["C", "M", "B"];
        let events = vec![
            TraceEvent::Step {
                party: "C".into(),
                step: "buy".into(),
            },
            TraceEvent::Deliver {
                from: "C".into(),
                to: "B".into(),
                message: "Withdraw".into(),
            },
            TraceEvent::Deliver {
                from: "B".into(),
                to: "C".into(),
                message: "Coin".into(),
            },
            TraceEvent::Lose {
                from: "C".into(),
                to: "M".into(),
                message: "Spend".into(),
            },
            TraceEvent::Crash { party: "M".into() },
        ];
        let chart = render(&names, &events);
        let lines: Vec<&str> = chart.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines[0].contains('C') && lines[0].contains('M') && lines[0].contains('B'));
        assert!(lines[1].contains('*') && lines[1].ends_with("buy"));
        assert!(lines[2].contains("->|") && lines[2].ends_with("Withdraw"));
        assert!(lines[3].contains("|<-") && lines[3].ends_with("Coin"));
        assert!(lines[4].contains('x') && lines[4].ends_with("Spend (lost)"));
        assert!(lines[5].contains('#'));
    }
}
