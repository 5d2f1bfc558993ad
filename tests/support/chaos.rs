//! The chaos harness: concurrent clients doing puts, linearizable gets,
//! deletes and compare-and-swaps on a few keys through random members, each
//! operation recorded for the linearizability checker; and the end-of-run
//! checks (members converge to one applied index and one state hash; the
//! whole history, final reads included, is linearizable).
//!
//! Values are unique (`c<client>-<n>`), so a read names the write it saw. A
//! write that failed or timed out is recorded as ambiguous; a failed read is
//! dropped, since it says nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftkv::proto::etcdserverpb::kv_client::KvClient;
use raftkv::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv::proto::etcdserverpb::request_op::Request as Op;
use raftkv::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, HashKvRequest, PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::transport::{Channel, Endpoint};

use super::cluster::Cluster;
use super::linearizability::{Input, Operation, Output, Verdict, check};

/// Longer than the server's own request timeout (5 s) would make every
/// fault slow; shorter only turns more writes ambiguous, which is allowed.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How many steps the checker may search before the run counts as failed
/// (about a minute of search on an idle machine).
const CHECK_STEPS: u64 = 2_000_000_000;

/// The seed of a run: `RAFTKV_CHAOS_SEED`, or a fresh one (printed, so a
/// failure can be replayed as far as real processes allow).
pub fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("RAFTKV_CHAOS_SEED") {
        return vec![seed.parse().expect("RAFTKV_CHAOS_SEED is a number")];
    }
    let rounds: usize = std::env::var("RAFTKV_CHAOS_ROUNDS").map_or(1, |r| r.parse().expect("RAFTKV_CHAOS_ROUNDS"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let mut rng = SmallRng::seed_from_u64(now.as_nanos() as u64);
    (0..rounds).map(|_| rng.random_range(0..1_000_000)).collect()
}

/// The clients' shared record.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Operation>>>,
    /// How often each error message was seen, for the run's summary.
    errors: Arc<Mutex<std::collections::BTreeMap<String, usize>>>,
    /// Values whose write the cluster said certainly did not take effect,
    /// with what it said: none may ever be read.
    refused: Arc<Mutex<std::collections::HashMap<String, String>>>,
}

impl History {
    fn new() -> History {
        History { start: Instant::now(), ops: Arc::default(), errors: Arc::default(), refused: Arc::default() }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn record(&self, op: Operation) {
        self.ops.lock().unwrap().push(op);
    }

    fn refused(&self, value: &str, answer: &str) {
        self.refused.lock().unwrap().insert(value.to_string(), answer.to_string());
    }

    /// Every write the cluster called a certain failure (a definite error, or
    /// a compare-and-swap that did not swap) whose value a read saw anyway.
    pub fn refused_but_seen(&self) -> Vec<(String, String)> {
        let refused = self.refused.lock().unwrap();
        let ops = self.ops.lock().unwrap();
        let mut seen: Vec<(String, String)> = ops
            .iter()
            .filter_map(|op| match &op.output {
                Output::Value(Some(v)) => refused.get(v).map(|why| (v.clone(), why.clone())),
                _ => None,
            })
            .collect();
        seen.dedup();
        seen
    }

    fn count_error(&self, message: &str) {
        *self.errors.lock().unwrap().entry(message.to_string()).or_default() += 1;
    }

    pub fn errors(&self) -> std::collections::BTreeMap<String, usize> {
        self.errors.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.ops.lock().unwrap().len()
    }

    /// (acknowledged writes, ambiguous writes, reads)
    pub fn counts(&self) -> (usize, usize, usize) {
        let ops = self.ops.lock().unwrap();
        let reads = ops.iter().filter(|o| o.input == Input::Get).count();
        let ambiguous = ops.iter().filter(|o| o.output == Output::Unknown).count();
        (ops.len() - reads - ambiguous, ambiguous, reads)
    }
}

pub struct Workload {
    history: History,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    endpoints: Vec<String>,
}

pub const KEYS: usize = 5;

impl Workload {
    pub fn start(clients: usize, endpoints: Vec<String>, seed: u64) -> Workload {
        let history = History::new();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = (0..clients)
            .map(|c| {
                let mut client = ChaosClient::new(c, &endpoints, history.clone(), seed.wrapping_add(c as u64));
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    while !*stopped.borrow() {
                        client.random_op().await;
                    }
                })
            })
            .collect();
        Workload { history, stop, tasks, endpoints }
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Stops the clients (each finishes its operation in flight), then
    /// reads every key through every member into the history.
    pub async fn finish(self, cluster: &Cluster) -> History {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await.unwrap();
        }
        let mut reader = ChaosClient::new(usize::MAX, &self.endpoints, self.history.clone(), 0);
        for (m, _) in self.endpoints.iter().enumerate().filter(|(m, _)| cluster.is_running(*m)) {
            for k in 0..KEYS {
                let key = format!("k{k}");
                // A member still catching up may take a few tries (a failed
                // read is not recorded); five in a row is a failure.
                let mut done = false;
                for _ in 0..5 {
                    done = reader.get(m, &key).await;
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                assert!(done, "the final read of {key} through member {m} failed\n{}", cluster.logs());
            }
        }
        self.history
    }
}

/// Errors after which a write certainly did not take effect. Every run
/// checks the claim: no value written by a call answered so is ever read
/// (see [`History::refused_but_seen`]).
const DEFINITE_FAILURES: [&str; 3] = [
    // The server retries a write only while it is certain the write was not
    // appended (no leader, not the leader) or another term's entry was
    // applied at its index, and answers "no leader" when its time runs out
    // in that state. Anything else (a timeout after appending, a lost answer
    // from the leader) is answered with "request timed out" or "may or may
    // not have been applied".
    "etcdserver: no leader",
    // This member has no connection to forward through: nothing was sent.
    "etcdserver: leader unknown",
    // The client never reached a member.
    "tcp connect error",
];

#[derive(Debug, PartialEq)]
enum Outcome {
    Done(Output),
    /// Certainly not applied, with the answer that says so.
    NotApplied(String),
    Unknown,
}

struct ChaosClient {
    id: usize,
    kv: Vec<KvClient<Channel>>,
    history: History,
    rng: SmallRng,
    written: u64,
    /// The last value this client saw per key: what a swap expects.
    seen: Vec<Option<String>>,
}

impl ChaosClient {
    fn new(id: usize, endpoints: &[String], history: History, seed: u64) -> ChaosClient {
        let kv = endpoints
            .iter()
            .map(|e| {
                let channel = Endpoint::from_shared(e.clone())
                    .unwrap()
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .connect_lazy();
                KvClient::new(channel)
            })
            .collect();
        ChaosClient { id, kv, history, rng: SmallRng::seed_from_u64(seed), written: 0, seen: vec![None; KEYS] }
    }

    async fn random_op(&mut self) {
        let member = self.rng.random_range(0..self.kv.len());
        let k = self.rng.random_range(0..KEYS);
        let key = format!("k{k}");
        self.written += 1;
        let value = format!("c{}-{}", self.id, self.written);
        match self.rng.random_range(0..100) {
            0..40 => {
                if !self.get(member, &key).await {
                    // A member that does not answer: don't spin on it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            40..65 => {
                let req = PutRequest { key: key.clone().into(), value: value.clone().into(), ..Default::default() };
                let mut kv = self.kv[member].clone();
                let call = self.history.now();
                let outcome = self.outcome(tokio::time::timeout(OP_TIMEOUT, kv.put(req)).await, |_| Output::Done);
                if outcome == Outcome::Done(Output::Done) {
                    self.seen[k] = Some(value.clone());
                }
                self.note_refusal(&value, &outcome);
                self.write_done(key, Input::Put { value }, call, outcome).await;
            }
            65..75 => {
                let req = DeleteRangeRequest { key: key.clone().into(), ..Default::default() };
                let mut kv = self.kv[member].clone();
                let call = self.history.now();
                let outcome =
                    self.outcome(tokio::time::timeout(OP_TIMEOUT, kv.delete_range(req)).await, |_| Output::Done);
                self.write_done(key, Input::Delete, call, outcome).await;
            }
            _ => {
                let expected = self.seen[k].clone();
                let compare = match &expected {
                    Some(v) => Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: key.clone().into(),
                        target_union: Some(TargetUnion::Value(v.clone().into())),
                        ..Default::default()
                    },
                    // Absent: never created (etcd's idiom for "if missing").
                    None => Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Create as i32,
                        key: key.clone().into(),
                        target_union: Some(TargetUnion::CreateRevision(0)),
                        ..Default::default()
                    },
                };
                let put = PutRequest { key: key.clone().into(), value: value.clone().into(), ..Default::default() };
                let req = TxnRequest {
                    compare: vec![compare],
                    success: vec![RequestOp { request: Some(Op::RequestPut(put)) }],
                    failure: vec![],
                };
                let mut kv = self.kv[member].clone();
                let call = self.history.now();
                let answer = tokio::time::timeout(OP_TIMEOUT, kv.txn(req)).await;
                let outcome = self.outcome(answer, |r| Output::Swapped(r.into_inner().succeeded));
                if outcome == Outcome::Done(Output::Swapped(true)) {
                    self.seen[k] = Some(value.clone());
                }
                self.note_refusal(&value, &outcome);
                self.write_done(key, Input::Cas { expected, new: value }, call, outcome).await;
            }
        }
    }

    /// Remembers a value the cluster said was certainly not written.
    fn note_refusal(&self, value: &str, outcome: &Outcome) {
        match outcome {
            Outcome::NotApplied(answer) => self.history.refused(value, answer),
            Outcome::Done(Output::Swapped(false)) => self.history.refused(value, "compare failed"),
            _ => {}
        }
    }

    /// What a write's answer says about its effect.
    fn outcome<T>(
        &self,
        answer: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>,
        output: impl FnOnce(T) -> Output,
    ) -> Outcome {
        match answer {
            Ok(Ok(resp)) => Outcome::Done(output(resp)),
            Ok(Err(status)) => {
                let message = status.message();
                self.history.count_error(message);
                // The request never reached a member (connection refused),
                // or the member says no leader took it: it did nothing. If
                // that were untrue, its unique value would show up in a read
                // and the check would fail on a value nobody wrote.
                if DEFINITE_FAILURES.iter().any(|m| message.contains(m)) {
                    Outcome::NotApplied(message.to_string())
                } else {
                    Outcome::Unknown
                }
            }
            Err(_) => {
                self.history.count_error("client timeout");
                Outcome::Unknown
            }
        }
    }

    /// Records a write with its outcome.
    async fn write_done(&mut self, key: String, input: Input, call: u64, outcome: Outcome) {
        let (output, ret) = match outcome {
            Outcome::Done(output) => (output, Some(self.history.now())),
            Outcome::Unknown => (Output::Unknown, None),
            Outcome::NotApplied(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
        };
        let failed = ret.is_none();
        self.history.record(Operation { client: self.id, key, input, output, call, ret });
        if failed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A linearizable read, recorded if it succeeded.
    async fn get(&mut self, member: usize, key: &str) -> bool {
        let req = RangeRequest { key: key.to_string().into(), ..Default::default() };
        let mut kv = self.kv[member].clone();
        let call = self.history.now();
        let Ok(Ok(resp)) = tokio::time::timeout(OP_TIMEOUT, kv.range(req)).await else { return false };
        let ret = self.history.now();
        let value = resp.into_inner().kvs.first().map(|kv| String::from_utf8(kv.value.to_vec()).unwrap());
        if let Some(k) = key.strip_prefix('k').and_then(|k| k.parse::<usize>().ok()) {
            self.seen[k] = value.clone();
        }
        let op = Operation {
            client: self.id,
            key: key.to_string(),
            input: Input::Get,
            output: Output::Value(value),
            call,
            ret: Some(ret),
        };
        self.history.record(op);
        true
    }
}

/// Waits until every running member reports the same applied index and the
/// same hash and revision of its key-value map.
pub async fn wait_converged(cluster: &Cluster, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut seen = Vec::new();
        for (i, endpoint) in cluster.endpoints().iter().enumerate().filter(|(i, _)| cluster.is_running(*i)) {
            seen.push((i, state_of(endpoint).await));
        }
        if seen.iter().all(|(_, s)| s.is_some() && *s == seen[0].1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members did not converge within {limit:?}: (member, (applied, hash, revision)) {seen:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn state_of(endpoint: &str) -> Option<(u64, u32, i64)> {
    let mut m = MaintenanceClient::connect(endpoint.to_string()).await.ok()?;
    let applied = m.status(StatusRequest {}).await.ok()?.into_inner().raft_applied_index;
    let hash = m.hash_kv(HashKvRequest::default()).await.ok()?.into_inner();
    // The applied index again: the hash belongs to it only if it did not move.
    let again = m.status(StatusRequest {}).await.ok()?.into_inner().raft_applied_index;
    (applied == again).then(|| (applied, hash.hash, hash.header.map_or(0, |h| h.revision)))
}

/// Checks the history; on failure names the seed and shows the key's history.
/// Also checks that no write answered as a certain failure was ever seen.
pub fn assert_linearizable(history: &History, seed: u64, cluster: &Cluster) {
    let seen = history.refused_but_seen();
    assert!(
        seen.is_empty(),
        "seed {seed}: writes answered as certain failures took effect (value, answer): {seen:?}\n{}",
        cluster.logs()
    );
    let ops = history.ops.lock().unwrap().clone();
    match check(&ops, CHECK_STEPS) {
        Verdict::Linearizable => {}
        Verdict::Violation { key, history } => {
            panic!("seed {seed}: the history of {key} is not linearizable:\n{history}\n{}", cluster.logs())
        }
        Verdict::OutOfSteps { key } => panic!("seed {seed}: checking {key} took more than {CHECK_STEPS} steps"),
    }
}
