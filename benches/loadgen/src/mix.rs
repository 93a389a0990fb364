//! The request mix: which kinds of scan the drive sends, in which shares, and
//! the evenly spread sequence each worker walks through.

use crate::error::LoadgenError;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::fmt;
use std::str::FromStr;

/// One kind of request the drive sends, each with the answer a correct server gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Enter of a fresh ticket, never scanned before in this run.
    Enter,
    /// Enter of a ticket this run already entered.
    Duplicate,
    /// Exit of a ticket this run entered.
    Exit,
    /// Validate (secondary scan) of any loaded ticket.
    Validate,
    /// Enter of a token that is in no inventory.
    Unknown,
}

impl Op {
    /// Every op, in the order reports list them.
    pub const ALL: [Op; 5] = [
        Op::Enter,
        Op::Duplicate,
        Op::Exit,
        Op::Validate,
        Op::Unknown,
    ];

    /// The name used by `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Enter => "enter",
            Op::Duplicate => "duplicate",
            Op::Exit => "exit",
            Op::Validate => "validate",
            Op::Unknown => "unknown",
        }
    }

    /// The `result.status` a server that follows the contract answers.
    pub fn expected_status(self) -> &'static str {
        match self {
            Op::Enter => "OKAY",
            Op::Duplicate => "ALREADY_ENTERED",
            Op::Exit => "EXIT",
            Op::Validate => "INTERNAL_SCAN",
            Op::Unknown => "NOT_FOUND",
        }
    }

    /// The position of this op in [`Op::ALL`].
    pub fn index(self) -> usize {
        match self {
            Op::Enter => 0,
            Op::Duplicate => 1,
            Op::Exit => 2,
            Op::Validate => 3,
            Op::Unknown => 4,
        }
    }

    fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// Relative weights of the ops (`enter=90,duplicate=5,...`); ops left out weigh 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 5],
}

/// The largest weight one op may have, which keeps a [`Sequence`] small.
pub const MAX_WEIGHT: u32 = 10_000;

impl Default for Mix {
    /// Every request enters a fresh ticket.
    fn default() -> Self {
        Self {
            weights: [1, 0, 0, 0, 0],
        }
    }
}

impl Mix {
    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    /// The sequence the workers walk: each op appears `weight / gcd` times per
    /// cycle, spread as evenly as smooth weighted round-robin spreads them, and
    /// the heaviest op first (so a worker enters before it can re-scan).
    pub fn sequence(&self) -> Sequence {
        let divisor = self.weights.iter().copied().fold(0, gcd).max(1);
        let weights = self.weights.map(|w| i64::from(w / divisor));
        let total: i64 = weights.iter().sum();
        let mut current = [0i64; 5];
        let mut ops = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += w;
            }
            // The first of equal maxima wins, so ties go to the op listed first.
            let mut pick = 0;
            for (i, c) in current.iter().enumerate() {
                if *c > current[pick] {
                    pick = i;
                }
            }
            current[pick] -= total;
            ops.push(Op::ALL[pick]);
        }
        Sequence { ops }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl FromStr for Mix {
    type Err = LoadgenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| LoadgenError::Mix {
            mix: text.to_owned(),
            reason,
        };
        let mut weights = [0u32; 5];
        let mut seen = [false; 5];
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| invalid(format!("{part:?} is not NAME=WEIGHT")))?;
            let op = Op::from_name(&name.trim().to_ascii_lowercase()).ok_or_else(|| {
                invalid(format!(
                    "unknown op {:?} (known: enter, duplicate, exit, validate, unknown)",
                    name.trim()
                ))
            })?;
            let weight: u32 = weight.trim().parse().map_err(|_| {
                invalid(format!(
                    "the weight of {} must be a whole number",
                    op.name()
                ))
            })?;
            if weight > MAX_WEIGHT {
                return Err(invalid(format!(
                    "the weight of {} is above {MAX_WEIGHT}",
                    op.name()
                )));
            }
            if std::mem::replace(&mut seen[op.index()], true) {
                return Err(invalid(format!("{} is given twice", op.name())));
            }
            weights[op.index()] = weight;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err(invalid("at least one weight must be above 0".to_owned()));
        }
        Ok(Self { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for op in Op::ALL.into_iter().filter(|op| self.weight(*op) > 0) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}={}", op.name(), self.weight(op))?;
        }
        Ok(())
    }
}

/// Every op with its weight, zero weights included, so the field set is stable.
impl Serialize for Mix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Op::ALL.len()))?;
        for op in Op::ALL {
            map.serialize_entry(op.name(), &self.weight(op))?;
        }
        map.end()
    }
}

/// One cycle of ops in the mix's shares; request `n` of a worker is `op(n)`.
#[derive(Debug, Clone)]
pub struct Sequence {
    ops: Vec<Op>,
}

impl Sequence {
    pub fn op(&self, n: u64) -> Op {
        let len = self.ops.len() as u64;
        usize::try_from(n % len.max(1))
            .ok()
            .and_then(|i| self.ops.get(i))
            .copied()
            .unwrap_or(Op::Enter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(sequence: &Sequence, n: u64) -> [u64; 5] {
        let mut counts = [0; 5];
        for i in 0..n {
            counts[sequence.op(i).index()] += 1;
        }
        counts
    }

    #[test]
    fn parses_the_documented_example() {
        let mix: Mix = "enter=90,duplicate=5,exit=3,validate=1,unknown=1"
            .parse()
            .unwrap();
        assert_eq!(mix.weight(Op::Enter), 90);
        assert_eq!(mix.weight(Op::Duplicate), 5);
        assert_eq!(mix.weight(Op::Exit), 3);
        assert_eq!(mix.weight(Op::Validate), 1);
        assert_eq!(mix.weight(Op::Unknown), 1);
        assert_eq!(
            mix.to_string(),
            "enter=90,duplicate=5,exit=3,validate=1,unknown=1"
        );
    }

    #[test]
    fn left_out_ops_weigh_nothing_and_spaces_and_case_are_forgiven() {
        let mix: Mix = " Enter = 3 , unknown=1 ,".parse().unwrap();
        assert_eq!(mix.weight(Op::Enter), 3);
        assert_eq!(mix.weight(Op::Unknown), 1);
        assert_eq!(mix.weight(Op::Duplicate), 0);
        assert_eq!(mix.to_string(), "enter=3,unknown=1");
    }

    #[test]
    fn refuses_what_it_cannot_mean() {
        for bad in [
            "",
            "enter",
            "enter=x",
            "enter=-1",
            "enter=1.5",
            "enter=1,enter=2",
            "reenter=1",
            "enter=0,exit=0",
            "enter=10001",
        ] {
            let error = bad.parse::<Mix>().unwrap_err();
            assert!(
                matches!(error, LoadgenError::Mix { .. }),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn the_default_is_only_fresh_enters() {
        let sequence = Mix::default().sequence();
        assert_eq!(counts(&sequence, 1000), [1000, 0, 0, 0, 0]);
    }

    #[test]
    fn a_cycle_holds_each_op_exactly_its_share() {
        let mix: Mix = "enter=90,duplicate=5,exit=3,validate=1,unknown=1"
            .parse()
            .unwrap();
        let sequence = mix.sequence();
        assert_eq!(counts(&sequence, 100), [90, 5, 3, 1, 1]);
        assert_eq!(counts(&sequence, 1000), [900, 50, 30, 10, 10]);
    }

    #[test]
    fn weights_are_reduced_to_their_smallest_cycle() {
        let mix: Mix = "enter=50,exit=50".parse().unwrap();
        let sequence = mix.sequence();
        let first: Vec<Op> = (0..4).map(|n| sequence.op(n)).collect();
        assert_eq!(first, [Op::Enter, Op::Exit, Op::Enter, Op::Exit]);
    }

    #[test]
    fn the_heaviest_op_comes_first_and_the_rest_are_spread_out() {
        let mix: Mix = "enter=90,duplicate=5,exit=3,validate=1,unknown=1"
            .parse()
            .unwrap();
        let sequence = mix.sequence();
        assert_eq!(sequence.op(0), Op::Enter);
        // Five duplicates in a cycle of 100: no window of 40 holds more than two
        // of them, as it would if they were bunched together.
        let duplicates: Vec<u64> = (0..100)
            .filter(|n| sequence.op(*n) == Op::Duplicate)
            .collect();
        assert_eq!(duplicates.len(), 5);
        for pair in duplicates.windows(2) {
            assert!(pair[1] - pair[0] >= 10, "{duplicates:?}");
        }
    }

    #[test]
    fn serialises_every_op_with_its_weight() {
        let mix: Mix = "enter=9,unknown=1".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&mix).unwrap(),
            r#"{"enter":9,"duplicate":0,"exit":0,"validate":0,"unknown":1}"#
        );
    }
}
