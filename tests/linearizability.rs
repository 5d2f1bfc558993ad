//! The linearizability checker against histories whose answer is known:
//! hand-written anomalies (stale read, lost update, a value nobody wrote),
//! ambiguous writes that land late or never, and large random histories of
//! a simulated atomic register, which must pass, with one answer changed,
//! which must fail.

mod support;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::linearizability::{Input, Operation, Output, Verdict, check};

/// Search steps any of these histories may take: far more than a correct
/// checker needs, far fewer than a naive one.
const STEPS: u64 = 1_000_000_000;

fn op(client: usize, call: u64, ret: Option<u64>, input: Input, output: Output) -> Operation {
    Operation { client, key: "k".into(), input, output, call, ret }
}
fn put(client: usize, call: u64, ret: u64, v: &str) -> Operation {
    op(client, call, Some(ret), Input::Put { value: v.into() }, Output::Done)
}
fn put_unknown(client: usize, call: u64, v: &str) -> Operation {
    op(client, call, None, Input::Put { value: v.into() }, Output::Unknown)
}
fn get(client: usize, call: u64, ret: u64, seen: Option<&str>) -> Operation {
    op(client, call, Some(ret), Input::Get, Output::Value(seen.map(Into::into)))
}
fn cas(client: usize, call: u64, ret: u64, expected: Option<&str>, new: &str, swapped: bool) -> Operation {
    let input = Input::Cas { expected: expected.map(Into::into), new: new.into() };
    op(client, call, Some(ret), input, Output::Swapped(swapped))
}
fn delete(client: usize, call: u64, ret: u64) -> Operation {
    op(client, call, Some(ret), Input::Delete, Output::Done)
}

fn linearizable(history: &[Operation]) -> bool {
    match check(history, STEPS) {
        Verdict::Linearizable => true,
        Verdict::Violation { .. } => false,
        Verdict::OutOfSteps { key } => panic!("the check of {key} ran out of steps"),
    }
}

#[test]
fn sequential_and_overlapping_histories_that_are_linearizable() {
    assert!(linearizable(&[]));
    assert!(linearizable(&[
        get(0, 0, 1, None),
        put(0, 2, 3, "a"),
        get(0, 4, 5, Some("a")),
        delete(0, 6, 7),
        get(0, 8, 9, None)
    ]));
    // Two reads overlapping a write may see it in either order of theirs,
    // as long as no read sees the old value after another saw the new one.
    assert!(linearizable(&[put(0, 0, 10, "a"), get(1, 1, 4, Some("a")), get(2, 2, 3, None)]));
    // Overlapping writes: the read decides their order.
    assert!(linearizable(&[put(0, 0, 10, "a"), put(1, 0, 10, "b"), get(2, 11, 12, Some("a"))]));
    assert!(linearizable(&[put(0, 0, 10, "a"), put(1, 0, 10, "b"), get(2, 11, 12, Some("b"))]));
    // Compare-and-swap on absence, then on a value.
    assert!(linearizable(&[
        cas(0, 0, 1, None, "a", true),
        cas(1, 2, 3, None, "b", false),
        cas(1, 4, 5, Some("a"), "b", true),
        get(0, 6, 7, Some("b")),
    ]));
}

#[test]
fn a_stale_read_is_caught() {
    let history = [put(0, 0, 1, "a"), put(0, 2, 3, "b"), get(1, 4, 5, Some("a"))];
    let Verdict::Violation { key, history } = check(&history, STEPS) else { panic!("stale read passed") };
    assert_eq!(key, "k");
    assert!(history.contains("Get"), "the violation shows the key's history: {history}");
}

#[test]
fn reads_that_go_back_in_time_are_caught() {
    // The first read saw the new value, so the later read may not see the old one.
    assert!(!linearizable(&[put(0, 0, 10, "a"), get(1, 1, 2, Some("a")), get(2, 3, 4, None)]));
}

#[test]
fn a_value_nobody_wrote_is_caught() {
    assert!(!linearizable(&[put(0, 0, 1, "a"), get(1, 2, 3, Some("z"))]));
}

#[test]
fn two_compare_and_swaps_from_the_same_value_cannot_both_succeed() {
    let history = [put(0, 0, 1, "a"), cas(1, 2, 10, Some("a"), "b", true), cas(2, 2, 10, Some("a"), "c", true)];
    assert!(!linearizable(&history));
    // A failed swap must have seen another value.
    assert!(!linearizable(&[put(0, 0, 1, "a"), cas(1, 2, 3, Some("a"), "b", false)]));
}

#[test]
fn an_ambiguous_write_may_land_late_or_never_but_not_before_it_was_sent() {
    // It lands after a read that did not see it.
    assert!(linearizable(&[put_unknown(0, 0, "a"), get(1, 10, 20, None), get(1, 30, 40, Some("a"))]));
    // It never lands.
    assert!(linearizable(&[put_unknown(0, 0, "a"), get(1, 10, 20, None), get(1, 30, 40, None)]));
    // It lands once: seen, then overwritten, then seen again is a violation.
    assert!(!linearizable(&[
        put_unknown(0, 0, "a"),
        get(1, 10, 20, Some("a")),
        put(1, 30, 40, "b"),
        get(1, 50, 60, Some("a")),
    ]));
    // Nothing is seen before it was sent.
    assert!(!linearizable(&[get(1, 0, 5, Some("a")), put_unknown(0, 10, "a")]));
    // An ambiguous swap may have swapped.
    let unknown_cas = op(0, 0, None, Input::Cas { expected: None, new: "a".into() }, Output::Unknown);
    assert!(linearizable(&[unknown_cas, get(1, 10, 20, Some("a"))]));
}

#[test]
fn many_unknown_writes_nobody_read_are_checked_in_few_steps() {
    // 60 clients each lose the answer to a put and a delete while others
    // write and read: 2^180 subsets for a naive search.
    let mut history = Vec::new();
    for c in 0..60u64 {
        history.push(put_unknown(c as usize, c, &format!("lost-{c}")));
        history.push(op(c as usize + 100, c, None, Input::Delete, Output::Unknown));
    }
    for i in 0..60u64 {
        let t = 1_000 + 10 * i;
        history.push(put(200, t, t + 2, &format!("seen-{i}")));
        history.push(get(201, t + 3, t + 5, Some(&format!("seen-{i}"))));
    }
    // 2^180 subsets would never finish: the budget bounds the work by count.
    assert!(matches!(check(&history, 1_000_000), Verdict::Linearizable));
    // And a stale read among them is still caught.
    history.push(get(202, 2_000, 2_001, Some("seen-3")));
    assert!(!linearizable(&history));
}

#[test]
fn keys_are_checked_independently() {
    let mut other = put(0, 0, 1, "x");
    other.key = "other".into();
    let mut stale = get(1, 4, 5, Some("a"));
    stale.key = "other".into();
    // "other" never held "a".
    let Verdict::Violation { key, .. } = check(&[put(0, 0, 1, "a"), other, stale], STEPS) else { panic!() };
    assert_eq!(key, "other");
}

/// A random concurrent history of an atomic register over a few keys: each
/// operation takes effect at an instant inside its interval, so the
/// history is linearizable by construction. Some writes lose their answer.
fn random_history(seed: u64, clients: usize, ops_per_client: usize) -> Vec<Operation> {
    let mut rng = SmallRng::seed_from_u64(seed);
    // (effect time, client, op index); each client's operations are sequential.
    let mut planned = Vec::new();
    for client in 0..clients {
        let mut t = rng.random_range(0..100u64);
        for _ in 0..ops_per_client {
            let call = t;
            let effect = call + rng.random_range(1..50);
            let ret = effect + rng.random_range(1..50);
            planned.push((effect, client, call, ret));
            t = ret + rng.random_range(1..20);
        }
    }
    planned.sort();
    let mut state: std::collections::BTreeMap<String, String> = Default::default();
    let mut history = Vec::new();
    for (n, (_, client, call, ret)) in planned.into_iter().enumerate() {
        let key = format!("k{}", rng.random_range(0..3));
        let current = state.get(&key).cloned();
        let value = format!("v{n}");
        let (input, output) = match rng.random_range(0..10) {
            0..=3 => (Input::Get, Output::Value(current)),
            4..=5 => {
                state.insert(key.clone(), value.clone());
                (Input::Put { value }, Output::Done)
            }
            6 => {
                state.remove(&key);
                (Input::Delete, Output::Done)
            }
            _ => {
                let expected = if rng.random_bool(0.7) { current.clone() } else { Some("never".into()) };
                let swapped = expected == current;
                if swapped {
                    state.insert(key.clone(), value.clone());
                }
                (Input::Cas { expected, new: value }, Output::Swapped(swapped))
            }
        };
        let mut op = Operation { client, key, input, output, call, ret: Some(ret) };
        // A write whose answer was lost is ambiguous; it did take effect.
        if !matches!(op.input, Input::Get) && rng.random_bool(0.05) {
            op.output = Output::Unknown;
            op.ret = None;
        }
        history.push(op);
    }
    history
}

#[test]
fn random_histories_of_an_atomic_register_pass_and_fail_with_one_answer_changed() {
    for seed in 0..20 {
        let mut history = random_history(seed, 6, 300);
        assert!(linearizable(&history), "seed {seed}: a linearizable history failed");
        // Change one read that saw a value into one that saw nothing... unless
        // nothing was a possible answer too; a value nobody wrote never is.
        let read = history.iter().position(|op| matches!(op.output, Output::Value(Some(_)))).unwrap();
        history[read].output = Output::Value(Some("never written".into()));
        assert!(!linearizable(&history), "seed {seed}: a read of a value nobody wrote passed");
    }
}

#[test]
fn running_out_of_steps_is_a_failure_not_a_pass() {
    let history = random_history(7, 4, 3000);
    assert!(matches!(check(&history, 10), Verdict::OutOfSteps { .. }));
}
