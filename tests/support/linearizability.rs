//! A linearizability checker for key-value histories, after Porcupine: the
//! Wing–Gong/Lowe search with memoization of (linearized set, state),
//! partitioned by key (operations on different keys commute, so a history
//! is linearizable when each key's sub-history is).
//!
//! An operation is (client, call time, return time, input, output). A write
//! whose outcome is unknown (it failed or timed out) has no return time: it
//! may take effect at any moment after its call, or never. A failed read
//! says nothing and is left out by the recorder. A search that uses up its
//! budget of steps (counted in steps, not seconds, so a loaded machine gets
//! the same verdict as an idle one) is a failure, never a pass.
//!
//! Unknown writes are what makes the search explode: k of them pending give
//! 2^k subsets to try. Most of them are interchangeable: a put whose unique
//! value nobody ever read leaves the key in a state no read can tell from
//! another such put's, and unknown deletes all do the same. Within such a
//! class the search places the operations in call order only; any
//! linearization can be rearranged that way (swap two members: both never
//! return, the earlier-called one may stand wherever the later one did), so
//! k pending members cost k + 1 subsets instead of 2^k.

use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    Put {
        value: String,
    },
    Get,
    Delete,
    /// Put `new` if the key holds `expected` (`None`: if it is absent).
    Cas {
        expected: Option<String>,
        new: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A put or delete that was acknowledged.
    Done,
    /// What a get saw.
    Value(Option<String>),
    /// Whether a compare-and-swap swapped.
    Swapped(bool),
    /// The outcome is unknown (failed or timed out); only for writes.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub input: Input,
    pub output: Output,
    /// Nanoseconds since the history began.
    pub call: u64,
    /// `None`: the operation never returned (its outcome is unknown).
    pub ret: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// The first key whose history has no linearization, with that history.
    Violation {
        key: String,
        history: String,
    },
    /// The search used up its step budget (a failure, never a pass).
    OutOfSteps {
        key: String,
    },
}

/// What an unread value becomes: every such value looks the same to a read.
const UNREAD: &str = "\u{0}a value nobody read";

/// The model: one key's value. Returns the state after `input` if the
/// output is possible there.
fn step(state: &Option<String>, input: &Input, output: &Output) -> Option<Option<String>> {
    match (input, output) {
        (Input::Put { value }, Output::Done | Output::Unknown) => Some(Some(value.clone())),
        (Input::Delete, Output::Done | Output::Unknown) => Some(None),
        (Input::Get, Output::Value(seen)) => (seen == state).then(|| state.clone()),
        (Input::Cas { expected, new }, Output::Swapped(true)) => (state == expected).then(|| Some(new.clone())),
        (Input::Cas { expected, .. }, Output::Swapped(false)) => (state != expected).then(|| state.clone()),
        (Input::Cas { expected, new }, Output::Unknown) => {
            Some(if state == expected { Some(new.clone()) } else { state.clone() })
        }
        _ => None,
    }
}

/// Checks a whole history, key by key, within `budget` search steps in all.
pub fn check(history: &[Operation], budget: u64) -> Verdict {
    let mut remaining = budget;
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        match check_key(&ops, &mut remaining) {
            Some(Ok(())) => {}
            Some(Err(stuck)) => return Verdict::Violation { key: key.to_string(), history: describe(&ops, stuck) },
            None => return Verdict::OutOfSteps { key: key.to_string() },
        }
    }
    Verdict::Linearizable
}

/// The operations around `stuck` (the first one no linearization could
/// place), marked, with at most 20 before and after it in call order.
fn describe(ops: &[&Operation], stuck: usize) -> String {
    let mut sorted: Vec<(usize, &Operation)> = ops.iter().copied().enumerate().collect();
    sorted.sort_by_key(|(_, op)| op.call);
    let at = sorted.iter().position(|(i, _)| *i == stuck).unwrap_or(0);
    let window = &sorted[at.saturating_sub(20)..(at + 21).min(sorted.len())];
    window
        .iter()
        .map(|&(i, op)| (if i == stuck { "=>" } else { "  " }, op))
        .map(|(mark, op)| {
            let ret = op.ret.map_or("∞".to_string(), |r| format!("{:.3}", r as f64 / 1e6));
            format!(
                "{mark} client {} [{:.3} ms, {ret} ms] {:?} -> {:?}",
                op.client,
                op.call as f64 / 1e6,
                op.input,
                op.output
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One event of the search's list: an operation's call or its return.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call, the index of its return event.
    partner: usize,
}

/// The Wing–Gong/Lowe search over one key's operations, each step taken
/// from `remaining`. `None`: out of steps; `Err(op)`: not linearizable, and `op` is the operation the deepest
/// attempt could not place before its return.
fn check_key(ops: &[&Operation], remaining: &mut u64) -> Option<Result<(), usize>> {
    let (ops, after) = interchangeable(ops);
    let ops: Vec<&Operation> = ops.iter().collect();
    // Events sorted by time; a call before a return at the same instant
    // (the more permissive order). Unknown returns come last.
    let mut times: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
    for (i, op) in ops.iter().enumerate() {
        times.push((op.call, false, i));
        times.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    times.sort();
    let n = times.len();
    let mut events: Vec<Event> =
        times.iter().map(|&(_, is_return, op)| Event { op, is_call: !is_return, partner: 0 }).collect();
    let mut return_at = vec![0; ops.len()];
    for (i, e) in events.iter().enumerate() {
        if !e.is_call {
            return_at[e.op] = i;
        }
    }
    for e in events.iter_mut().filter(|e| e.is_call) {
        e.partner = return_at[e.op];
    }
    // A doubly linked list over the events, with a head sentinel at n.
    const END: usize = usize::MAX;
    if n == 0 {
        return Some(Ok(()));
    }
    let mut next: Vec<usize> = (1..n).chain([END, 0]).collect();
    let mut prev: Vec<usize> = std::iter::once(n).chain(0..n - 1).chain([END]).collect();
    let head = |next: &Vec<usize>| next[n];

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut state: Option<String> = None;
    let mut entry = head(&next);
    // (operations placed, the one whose return stopped it) at the deepest point.
    let mut deepest = (0usize, 0usize);
    while head(&next) != END {
        *remaining = remaining.checked_sub(1)?;
        let e = events[entry];
        if e.is_call {
            let op = ops[e.op];
            let in_turn = after[e.op].is_none_or(|before| linearized[before / 64] & (1 << (before % 64)) != 0);
            if !in_turn {
                entry = next[entry];
                continue;
            }
            if let Some(new_state) = step(&state, &op.input, &op.output) {
                let mut with = linearized.clone();
                with[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((with.clone(), new_state.clone())) {
                    stack.push((entry, state));
                    state = new_state;
                    linearized = with;
                    // Lift the call and its return out of the list.
                    for i in [entry, e.partner] {
                        let (p, q) = (prev[i], next[i]);
                        next[p] = q;
                        if q != END {
                            prev[q] = p;
                        }
                    }
                    entry = head(&next);
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // A return reached before its operation was placed: undo the
            // last placement and try the next candidate after it.
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), e.op);
            }
            let Some((call, before)) = stack.pop() else { return Some(Err(deepest.1)) };
            let op = events[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            // Put the call and its return back (reverse order of lifting).
            for i in [events[call].partner, call] {
                let (p, q) = (prev[i], next[i]);
                next[p] = i;
                if q != END {
                    prev[q] = i;
                }
            }
            entry = next[call];
        }
    }
    Some(Ok(()))
}

/// Rewrites unknown writes that no read can tell apart into their class's
/// canonical form, and gives each the member of its class it must follow
/// (the one called just before it), if any.
fn interchangeable(ops: &[&Operation]) -> (Vec<Operation>, Vec<Option<usize>>) {
    let mut read: HashSet<&str> = HashSet::new();
    for op in ops {
        if let Output::Value(Some(v)) = &op.output {
            read.insert(v);
        }
        if let Input::Cas { expected: Some(v), .. } = &op.input {
            read.insert(v);
        }
    }
    let mut rewritten: Vec<Operation> = ops.iter().map(|op| (*op).clone()).collect();
    let mut classes: BTreeMap<(u64, usize), Input> = BTreeMap::new();
    for (i, op) in rewritten.iter_mut().enumerate() {
        if op.output != Output::Unknown {
            continue;
        }
        let class = match &mut op.input {
            Input::Put { value } if !read.contains(value.as_str()) => {
                *value = UNREAD.to_string();
                op.input.clone()
            }
            Input::Cas { new, .. } if !read.contains(new.as_str()) => {
                *new = UNREAD.to_string();
                op.input.clone()
            }
            Input::Delete => Input::Delete,
            _ => continue,
        };
        classes.insert((op.call, i), class);
    }
    // Walk each class in call order, chaining every member to the previous.
    let mut after = vec![None; ops.len()];
    let mut last_of: Vec<(Input, usize)> = Vec::new();
    for ((_, i), class) in classes {
        match last_of.iter_mut().find(|(c, _)| *c == class) {
            Some((_, last)) => {
                after[i] = Some(*last);
                *last = i;
            }
            None => last_of.push((class, i)),
        }
    }
    (rewritten, after)
}
