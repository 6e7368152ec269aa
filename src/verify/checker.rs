//! The linearizability checker: is there an order of a key's operations,
//! consistent with real time, in which a single register explains every
//! result? The register also increments (Redis's INCR), so a counter's
//! history is checked the same way: an increment applied twice, or lost,
//! leaves a value no order explains.
//!
//! The search is Wing & Gong's, with Lowe's memo of (operations linearized,
//! register state) pairs already explored, as Porcupine does it. Keys are
//! independent registers, so each key's history is checked on its own
//! (P-compositionality); keys run in parallel. An operation whose outcome is
//! unknown (a timeout, a dropped connection, a 5xx) returns "at infinity": it
//! may take effect at any point after it began, or never, which placing it
//! after everything else models. Reads with unknown outcomes say nothing and
//! are dropped before the search.
//!
//! The search is bounded in steps; past the bound the verdict for that key is
//! [`KeyVerdict::Undecided`], never a hang.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// What an operation did to (or saw of) the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A read; `value: None` is "not found".
    Get {
        value: Option<String>,
    },
    Put {
        value: String,
    },
    Delete,
    /// Compare-and-swap: write `value` if the register holds `expected`
    /// (`None`: absent). `succeeded` is what the server answered.
    Cas {
        expected: Option<String>,
        value: String,
        succeeded: bool,
    },
    /// Adds one to the integer the register holds (absent counts as 0), as
    /// INCR does. `value` is the new value the server answered, or `None`
    /// when it answered that the register holds no integer.
    Incr {
        value: Option<i64>,
    },
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: u64,
    pub key: String,
    pub action: Action,
    /// Nanoseconds since the run began, when the request was sent.
    pub invoked_ns: u64,
    /// When the response arrived; `None` when the outcome is unknown.
    pub completed_ns: Option<u64>,
    /// The revision (ETag) the server reported, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Which node served it, for the report.
    #[serde(default)]
    pub endpoint: String,
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyVerdict {
    Linearizable,
    NotLinearizable,
    /// The search hit its bound before deciding.
    Undecided,
}

/// Register state: the value held, `None` when absent.
type Register = Option<String>;

/// Applies `action` to `state`: the new state, or `None` if the action's
/// result cannot have come from `state`. Unknown outcomes are judged by the
/// state alone (a CAS whose answer was lost did whatever the state implies).
fn step(state: &Register, action: &Action, known: bool) -> Option<Register> {
    match action {
        Action::Get { value } => (value == state).then(|| state.clone()),
        Action::Put { value } => Some(Some(value.clone())),
        Action::Delete => Some(None),
        Action::Cas {
            expected,
            value,
            succeeded,
        } => {
            let matches = expected == state;
            if known && matches != *succeeded {
                return None;
            }
            Some(if matches {
                Some(value.clone())
            } else {
                state.clone()
            })
        }
        Action::Incr { value } => {
            let incremented = match state {
                None => Some(1),
                Some(text) => text
                    .parse::<i64>()
                    .ok()
                    .and_then(|held| held.checked_add(1)),
            };
            if known && incremented != *value {
                return None;
            }
            Some(match incremented {
                Some(incremented) => Some(incremented.to_string()),
                None => state.clone(),
            })
        }
    }
}

/// A call or return event in the time-ordered list the search walks.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// Index of the matching event (the return of a call, and back).
    partner: usize,
    prev: usize,
    next: usize,
}

/// Checks one key's operations; `budget` bounds the search steps.
pub fn check_key(operations: &[Operation], budget: u64) -> KeyVerdict {
    let ops: Vec<&Operation> = operations
        .iter()
        .filter(|op| op.completed_ns.is_some() || !matches!(op.action, Action::Get { .. }))
        .collect();
    if ops.is_empty() {
        return KeyVerdict::Linearizable;
    }
    // Event times: unknown outcomes return after everything else.
    let mut times: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (index, op) in ops.iter().enumerate() {
        times.push((op.invoked_ns, true, index));
        times.push((op.completed_ns.unwrap_or(u64::MAX), false, index));
    }
    // At equal times a return sorts before a call: the operations then do
    // not overlap, the stricter (and real-time correct) reading.
    times.sort_by_key(|&(time, is_call, index)| (time, is_call, index));
    // Node 0 is the head sentinel; events are 1..=len.
    let len = times.len();
    let mut events = vec![
        Event {
            op: usize::MAX,
            is_call: false,
            partner: 0,
            prev: 0,
            next: 0,
        };
        len + 1
    ];
    let mut call_at = vec![0; ops.len()];
    let mut return_at = vec![0; ops.len()];
    for (position, &(_, is_call, op)) in times.iter().enumerate() {
        let node = position + 1;
        events[node] = Event {
            op,
            is_call,
            partner: 0,
            prev: node - 1,
            next: if node == len { 0 } else { node + 1 },
        };
        if is_call {
            call_at[op] = node;
        } else {
            return_at[op] = node;
        }
    }
    events[0].next = if len == 0 { 0 } else { 1 };
    for op in 0..ops.len() {
        events[call_at[op]].partner = return_at[op];
        events[return_at[op]].partner = call_at[op];
    }

    let unlink = |events: &mut Vec<Event>, node: usize| {
        let (prev, next) = (events[node].prev, events[node].next);
        events[prev].next = next;
        if next != 0 {
            events[next].prev = prev;
        }
    };
    let relink = |events: &mut Vec<Event>, node: usize| {
        let (prev, next) = (events[node].prev, events[node].next);
        events[prev].next = node;
        if next != 0 {
            events[next].prev = node;
        }
    };

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: Register = None;
    let mut cache: HashSet<(Vec<u64>, Register)> = HashSet::new();
    let mut stack: Vec<(usize, Register)> = Vec::new();
    let mut entry = events[0].next;
    let mut steps = 0u64;
    while events[0].next != 0 {
        steps += 1;
        if steps > budget {
            return KeyVerdict::Undecided;
        }
        if entry == 0 {
            // Walked past the end without a return blocking: cannot happen
            // while events remain, but never loop on it.
            return KeyVerdict::Undecided;
        }
        let event = events[entry];
        if event.is_call {
            let op = ops[event.op];
            if let Some(next_state) = step(&state, &op.action, op.completed_ns.is_some()) {
                let mut next_linearized = linearized.clone();
                next_linearized[event.op / 64] |= 1 << (event.op % 64);
                if cache.insert((next_linearized.clone(), next_state.clone())) {
                    stack.push((entry, state));
                    state = next_state;
                    linearized = next_linearized;
                    unlink(&mut events, entry);
                    unlink(&mut events, event.partner);
                    entry = events[0].next;
                    continue;
                }
            }
            entry = event.next;
        } else {
            // A return whose call could not be placed: backtrack.
            let Some((call, previous)) = stack.pop() else {
                return KeyVerdict::NotLinearizable;
            };
            let op = events[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = previous;
            let partner = events[call].partner;
            relink(&mut events, partner);
            relink(&mut events, call);
            entry = events[call].next;
        }
    }
    KeyVerdict::Linearizable
}

/// Checks every key, in parallel; returns each key's verdict.
pub fn check_all(operations: &[Operation], budget_per_key: u64) -> BTreeMap<String, KeyVerdict> {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in operations {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    let keys: Vec<(&str, Vec<Operation>)> = by_key.into_iter().collect();
    let threads = std::thread::available_parallelism().map_or(2, |count| count.get());
    let chunk = keys.len().div_ceil(threads).max(1);
    let mut verdicts = BTreeMap::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = keys
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(key, ops)| (key.to_string(), check_key(ops, budget_per_key)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            if let Ok(results) = handle.join() {
                verdicts.extend(results);
            }
        }
    });
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, action: Action, invoked: u64, completed: Option<u64>) -> Operation {
        Operation {
            client,
            key: "k".into(),
            action,
            invoked_ns: invoked,
            completed_ns: completed,
            revision: None,
            endpoint: String::new(),
        }
    }

    fn put(value: &str) -> Action {
        Action::Put {
            value: value.into(),
        }
    }

    fn get(value: Option<&str>) -> Action {
        Action::Get {
            value: value.map(Into::into),
        }
    }

    const BUDGET: u64 = 1_000_000;

    #[test]
    fn sequential_and_overlapping_histories_are_linearizable() {
        let history = [
            op(1, put("a"), 0, Some(10)),
            op(2, get(Some("a")), 20, Some(30)),
            // Overlapping put and get: the get may see either value.
            op(1, put("b"), 40, Some(60)),
            op(2, get(Some("a")), 45, Some(50)),
            op(3, get(Some("b")), 55, Some(70)),
            op(1, Action::Delete, 80, Some(90)),
            op(2, get(None), 95, Some(99)),
        ];
        assert_eq!(check_key(&history, BUDGET), KeyVerdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_caught() {
        let history = [
            op(1, put("a"), 0, Some(10)),
            op(1, put("b"), 20, Some(30)),
            // Began after b was acknowledged, yet saw a.
            op(2, get(Some("a")), 40, Some(50)),
        ];
        assert_eq!(check_key(&history, BUDGET), KeyVerdict::NotLinearizable);
    }

    #[test]
    fn a_lost_write_is_caught() {
        let history = [op(1, put("a"), 0, Some(10)), op(2, get(None), 20, Some(30))];
        assert_eq!(check_key(&history, BUDGET), KeyVerdict::NotLinearizable);
    }

    #[test]
    fn a_value_never_written_is_caught() {
        let history = [
            op(1, put("a"), 0, Some(10)),
            op(2, get(Some("z")), 20, Some(30)),
        ];
        assert_eq!(check_key(&history, BUDGET), KeyVerdict::NotLinearizable);
    }

    #[test]
    fn a_compare_and_swap_that_succeeds_twice_is_caught() {
        let cas = |value: &str| Action::Cas {
            expected: Some("a".into()),
            value: value.into(),
            succeeded: true,
        };
        let history = [
            op(1, put("a"), 0, Some(10)),
            op(2, cas("b"), 20, Some(40)),
            op(3, cas("c"), 25, Some(45)),
        ];
        assert_eq!(check_key(&history, BUDGET), KeyVerdict::NotLinearizable);
        let one_wins = [
            op(1, put("a"), 0, Some(10)),
            op(2, cas("b"), 20, Some(40)),
            op(
                3,
                Action::Cas {
                    expected: Some("a".into()),
                    value: "c".into(),
                    succeeded: false,
                },
                25,
                Some(45),
            ),
        ];
        assert_eq!(check_key(&one_wins, BUDGET), KeyVerdict::Linearizable);
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        // A put that timed out, seen by a later read ...
        let seen = [
            op(1, put("a"), 0, Some(10)),
            op(2, put("b"), 20, None),
            op(3, get(Some("b")), 30, Some(40)),
            op(3, get(Some("b")), 50, Some(60)),
        ];
        assert_eq!(check_key(&seen, BUDGET), KeyVerdict::Linearizable);
        // ... or never seen.
        let unseen = [
            op(1, put("a"), 0, Some(10)),
            op(2, put("b"), 20, None),
            op(3, get(Some("a")), 30, Some(40)),
        ];
        assert_eq!(check_key(&unseen, BUDGET), KeyVerdict::Linearizable);
        // But once seen, it cannot un-happen.
        let flapping = [
            op(1, put("a"), 0, Some(10)),
            op(2, put("b"), 20, None),
            op(3, get(Some("b")), 30, Some(40)),
            op(3, get(Some("a")), 50, Some(60)),
        ];
        assert_eq!(check_key(&flapping, BUDGET), KeyVerdict::NotLinearizable);
    }

    fn incr(value: Option<i64>) -> Action {
        Action::Incr { value }
    }

    #[test]
    fn a_counter_explained_by_one_order_of_its_increments_is_linearizable() {
        let history = [
            op(1, incr(Some(1)), 0, Some(10)),
            // Two overlapping increments: either may have come first.
            op(1, incr(Some(3)), 20, Some(40)),
            op(2, incr(Some(2)), 25, Some(45)),
            op(3, get(Some("3")), 50, Some(60)),
            // A delete starts the count again.
            op(1, Action::Delete, 70, Some(80)),
            op(2, incr(Some(1)), 90, Some(100)),
            // An increment whose answer was lost may have happened ...
            op(3, incr(None), 110, None),
            op(1, get(Some("2")), 120, Some(130)),
            // ... and on a value that is no integer, it changes nothing.
            op(2, put("text"), 140, Some(150)),
            op(3, incr(None), 160, Some(170)),
            op(1, get(Some("text")), 180, Some(190)),
        ];
        assert_eq!(check_key(&history, BUDGET), KeyVerdict::Linearizable);
    }

    #[test]
    fn an_increment_applied_twice_or_lost_is_caught() {
        // A retried INCR applied twice: one answer, two steps.
        let twice = [
            op(1, incr(Some(1)), 0, Some(10)),
            op(2, incr(Some(2)), 20, Some(30)),
            op(3, get(Some("3")), 40, Some(50)),
        ];
        assert_eq!(check_key(&twice, BUDGET), KeyVerdict::NotLinearizable);
        // Two overlapping increments that both read 0 (a read-modify-write
        // done outside the store): both answer 1.
        let lost = [
            op(1, incr(Some(1)), 0, Some(20)),
            op(2, incr(Some(1)), 5, Some(25)),
        ];
        assert_eq!(check_key(&lost, BUDGET), KeyVerdict::NotLinearizable);
        // "Not an integer" from a register that holds one.
        let refused = [
            op(1, incr(Some(1)), 0, Some(10)),
            op(2, incr(None), 20, Some(30)),
        ];
        assert_eq!(check_key(&refused, BUDGET), KeyVerdict::NotLinearizable);
    }

    #[test]
    fn the_bound_gives_undecided_not_a_hang() {
        let mut history = Vec::new();
        for index in 0..200u64 {
            history.push(op(index, put(&format!("v{index}")), 0, Some(1_000)));
        }
        history.push(op(999, get(Some("nope")), 2_000, Some(3_000)));
        assert_eq!(check_key(&history, 10_000), KeyVerdict::Undecided);
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut history = vec![
            op(1, put("a"), 0, Some(10)),
            op(2, get(Some("a")), 20, Some(30)),
        ];
        let mut other = op(3, get(Some("ghost")), 0, Some(5));
        other.key = "other".into();
        history.push(other);
        let verdicts = check_all(&history, BUDGET);
        assert_eq!(verdicts["k"], KeyVerdict::Linearizable);
        assert_eq!(verdicts["other"], KeyVerdict::NotLinearizable);
    }
}
