//! The driver, tested turn by turn: real nodes (RocksDB stores in temporary
//! directories) whose outgoing messages land in the test's hands, which
//! delivers, drops or holds each one. No timers, no sockets: every scenario
//! is the same on every run.

use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot, watch};

use super::*;
use crate::kv;
use crate::proto::etcdserverpb::PutRequest;
use crate::raft::{Config, Role};
use crate::snapshot::SnapshotDir;
use crate::storage::LogStore;

const ROUND_TICKS: u64 = 5;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<Message>>>);

impl Outbox for Captured {
    fn send(&self, m: Message) {
        self.0.lock().unwrap().push(m);
    }
    fn set_members(&mut self, _: &crate::proto::Membership) {}
}

struct Member {
    node: Node,
    outbox: Captured,
    _requests: mpsc::Sender<Request>,
}

struct Harness {
    members: Vec<Member>,
    dirs: Vec<TempDir>,
}

/// Opens member `id` of voters `1..=n` from `dir`, bootstrapping it if new.
fn open(id: NodeId, n: u64, dir: &std::path::Path) -> Member {
    let mut store = RocksStore::open(dir.join("raft")).unwrap();
    if store.identity().unwrap().is_none() {
        store.bootstrap(&ConfState::with_voters(1..=n)).unwrap();
        store.set_identity(1, id).unwrap();
    }
    let state = store.initial_state().unwrap();
    let mut cfg = Config::new(id);
    // Elections happen when the test says so, and votes follow the log rule alone.
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    cfg.election_tick = 1000;
    let applied = state.offset_index;
    let raft = Raft::new(cfg, state, applied).unwrap();
    let snapshots = Arc::new(SnapshotDir::open(dir.join("snap")).unwrap());
    let (requests, _) = mpsc::channel(1);
    let outbox = Captured::default();
    let node = Node::new(NodeParts {
        raft,
        store,
        kv: KvStore::new(),
        outbox: Box::new(outbox.clone()),
        snapshotter: Snapshotter::new(snapshots, 1_000_000, 1000, 0, 0),
        requests: requests.downgrade(),
        status: watch::channel(NodeStatus::default()).0,
        applied: watch::channel(KvStore::new()).0,
        runtime: Handle::current(),
        read_round_ticks: ROUND_TICKS,
        election_ticks: 10,
        max_learners: 1,
        lease_checkpoint_interval: std::time::Duration::from_secs(5),
        metrics: Arc::new(crate::server::metrics::Metrics::new(id)),
    });
    Member { node, outbox, _requests: requests }
}

impl Harness {
    fn new(n: u64) -> Harness {
        let dirs: Vec<TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let members = (1..=n).zip(&dirs).map(|(id, d)| open(id, n, d.path())).collect();
        Harness { members, dirs }
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.members[id as usize - 1].node
    }

    /// Kills member `id` (its unsent messages are lost) and starts it again
    /// from its data directory, as a new process.
    fn restart(&mut self, id: NodeId) {
        let n = self.members.len() as u64;
        let dir = self.dirs[id as usize - 1].path().to_owned();
        // The old store must close before the new one opens.
        drop(self.members.remove(id as usize - 1));
        self.members.insert(id as usize - 1, open(id, n, &dir));
    }

    fn input(&mut self, id: NodeId, request: Request) {
        let node = self.node(id);
        node.handle(request).unwrap();
        node.end_turn().unwrap();
    }

    fn campaign(&mut self, id: NodeId) {
        let node = self.node(id);
        node.raft.campaign_now();
        node.end_turn().unwrap();
    }

    fn tick(&mut self, id: NodeId) {
        let node = self.node(id);
        node.tick();
        node.end_turn().unwrap();
    }

    fn put(&mut self, id: NodeId, key: &str, value: &str) -> oneshot::Receiver<Result<Applied, NodeError>> {
        let (reply, answer) = oneshot::channel();
        let req = PutRequest { key: key.to_owned().into(), value: value.to_owned().into(), ..Default::default() };
        self.input(id, Request::Propose { command: kv::put_command(req), reply });
        answer
    }

    fn read(&mut self, id: NodeId, key: &str) -> oneshot::Receiver<Result<(RangeResponse, i64), NodeError>> {
        let (reply, answer) = oneshot::channel();
        let req = RangeRequest { key: key.to_owned().into(), ..Default::default() };
        self.input(id, Request::Range { req, reader: None, linearizable: true, reply });
        answer
    }

    /// Takes every queued message: the test decides what becomes of each.
    fn take(&mut self) -> Vec<Message> {
        self.members.iter().flat_map(|m| std::mem::take(&mut *m.outbox.0.lock().unwrap())).collect()
    }

    /// Delivers every queued message but those `hold` keeps, which it
    /// returns, until none is left: at most 100 rounds.
    fn deliver_holding(&mut self, hold: impl Fn(&Message) -> bool) -> Vec<Message> {
        let mut held = Vec::new();
        for _ in 0..100 {
            let messages = self.take();
            if messages.is_empty() {
                return held;
            }
            for m in messages {
                if hold(&m) {
                    held.push(m);
                } else {
                    let to = m.to;
                    self.input(to, Request::Peer(m));
                }
            }
        }
        panic!("messages still flowing after 100 rounds");
    }

    /// Delivers queued messages that `pass` lets through (dropping the rest)
    /// until none is left: at most 100 rounds.
    fn deliver(&mut self, pass: impl Fn(&Message) -> bool) {
        for _ in 0..100 {
            let messages = self.take();
            if messages.is_empty() {
                return;
            }
            for m in messages.into_iter().filter(|m| pass(m)) {
                let to = m.to;
                self.input(to, Request::Peer(m));
            }
        }
        panic!("messages still flowing after 100 rounds");
    }

    fn value(&mut self, id: NodeId, key: &str) -> Option<(String, i64)> {
        let req = RangeRequest { key: key.to_owned().into(), ..Default::default() };
        let resp = self.node(id).kv.range(&req).unwrap();
        resp.kvs.first().map(|kv| (String::from_utf8(kv.value.to_vec()).unwrap(), kv.version))
    }
}

/// Messages between members of `group` only.
fn within(group: &'static [NodeId]) -> impl Fn(&Message) -> bool {
    move |m| group.contains(&m.from) && group.contains(&m.to)
}

fn is_vote(m: &Message) -> bool {
    matches!(m.body, Body::Vote { .. } | Body::VoteResponse { .. })
}

fn elect_everywhere(h: &mut Harness, id: NodeId) {
    h.campaign(id);
    h.deliver(|_| true);
    assert_eq!(h.node(id).raft.role(), Role::Leader);
}

/// Defect 1 of issue 11, the five-member scenario: A's write X reaches only
/// B; C's no-op truncates it from A's log; A, leader again, appends Y where
/// X was; B then commits X. X's client must hear X's real outcome (or
/// "unknown"), never a definite failure that invites a retry and a second
/// apply; Y's client hears that Y certainly failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_replaced_in_the_leaders_log_but_committed_by_another_is_answered_truly() {
    const A: NodeId = 1;
    const B: NodeId = 2;
    const C: NodeId = 3;
    let mut h = Harness::new(5);
    elect_everywhere(&mut h, A);
    let base = h.node(A).raft.last_index();

    // A's entries base+1..=base+3 (X last) reach only B.
    let p1 = h.put(A, "p1", "1");
    let p2 = h.put(A, "p2", "2");
    let mut x = h.put(A, "x", "X");
    h.deliver(within(&[A, B]));
    assert_eq!(h.node(B).raft.last_index(), base + 3);

    // C wins with C, D, E; its no-op at base+1 reaches only A, which truncates.
    h.campaign(C);
    h.deliver(|m| is_vote(m) && within(&[3, 4, 5])(m));
    assert_eq!(h.node(C).raft.role(), Role::Leader);
    // (Its first appends went nowhere; a heartbeat makes it probe again.)
    h.tick(C);
    h.deliver(within(&[A, C]));
    assert_eq!(h.node(A).raft.last_index(), base + 1, "A truncated X away");

    // A wins with A, D, E and appends Y at X's index; nothing of it leaves A.
    h.campaign(A);
    h.deliver(|m| is_vote(m) && within(&[1, 4, 5])(m));
    assert_eq!(h.node(A).raft.role(), Role::Leader);
    let mut y = h.put(A, "y", "Y");
    assert_eq!(h.node(A).raft.last_index(), base + 3, "Y took X's index");
    h.take();
    assert!(x.try_recv().is_err(), "X was answered before its index was decided: {:?}", x.try_recv());

    // A is cut off; B wins with B, D, E and commits X. (B, cut off since
    // the first term, learns the current term from its first refusals.)
    for _ in 0..3 {
        h.campaign(B);
        h.deliver(within(&[2, 4, 5]));
    }
    assert_eq!(h.node(B).raft.role(), Role::Leader);
    assert!(h.node(B).raft.commit_index() >= base + 3);

    // Healed: A learns X was committed at its index.
    for _ in 0..3 {
        h.tick(B);
        h.deliver(|_| true);
    }
    let x = x.try_recv().expect("X answered once its index was applied on A");
    match x {
        Ok(applied) => assert!(applied.result.is_ok(), "X applied with an error: {:?}", applied.result),
        Err(NodeError::OutcomeUnknown) => {}
        Err(e) => panic!("X took effect, but its client was told {e:?}: a retry would apply it twice"),
    }
    assert!(matches!(y.try_recv(), Ok(Err(NodeError::LeaderChanged))), "Y certainly failed: its index holds X");
    for id in 1..=5 {
        assert_eq!(h.value(id, "x"), Some(("X".into(), 1)), "member {id}: X applied once");
        assert_eq!(h.value(id, "y"), None, "member {id}: Y never applied");
    }
    drop((p1, p2));
}

/// Defect 2: a write whose index went to a new leader's no-op is answered in
/// the turn that applies the no-op, not when its client gives up.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_index_went_to_a_new_leaders_noop_fails_at_once() {
    let mut h = Harness::new(3);
    elect_everywhere(&mut h, 1);
    let mut w = h.put(1, "w", "lost");
    h.take(); // W never leaves member 1.
    h.campaign(2);
    h.deliver(within(&[2, 3]));
    assert_eq!(h.node(2).raft.role(), Role::Leader);
    assert!(w.try_recv().is_err(), "W answered before its index was decided");
    // Member 1 hears from the new leader: one round of messages, one turn each.
    h.tick(2);
    h.deliver(|_| true);
    assert!(matches!(w.try_recv(), Ok(Err(NodeError::LeaderChanged))), "W certainly failed: a no-op holds its index");
    assert_eq!(h.node(1).proposals.len(), 0, "nothing left waiting");
    assert_eq!(h.value(1, "w"), None);
}

/// Defect 3: the leader's answer to a follower's ReadIndex is lost; the
/// read fails as retryable within the round's deadline and leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_whose_read_index_answer_was_lost_is_failed_within_its_deadline() {
    let mut h = Harness::new(3);
    elect_everywhere(&mut h, 1);
    let mut read = h.read(2, "k");
    // The request reaches the leader; its answer is lost on the way back.
    let lost = h.deliver_holding(|m| matches!(m.body, Body::ReadIndexResponse { .. }));
    assert_eq!(lost.len(), 1);
    for _ in 0..ROUND_TICKS - 1 {
        h.tick(2);
        h.take();
        assert!(read.try_recv().is_err(), "failed before its deadline");
    }
    h.tick(2);
    assert!(matches!(read.try_recv(), Ok(Err(NodeError::ReadIndexLost))), "the lost round failed its read");
    assert_eq!(h.node(2).reads.waiting(), 0, "nothing left waiting");
}

/// Defect 4: an answer to a read round of a previous process of the same
/// member must not release a read of the restarted one, even with the same
/// round number.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_index_answer_from_before_a_restart_is_ignored() {
    let mut h = Harness::new(3);
    elect_everywhere(&mut h, 1);
    // Member 2's first process asks; the leader's answer is held back.
    let first = h.read(2, "k");
    let mut stale = h.deliver_holding(|m| matches!(m.body, Body::ReadIndexResponse { .. }));
    assert_eq!(stale.len(), 1, "the leader answered the first process's read");

    // Member 2 restarts, then learns the leader and a newer write.
    drop(first);
    h.restart(2);
    h.put(1, "k", "new");
    h.deliver(|_| true);
    assert_eq!(h.value(2, "k").map(|v| v.0), Some("new".into()));
    // The new process's first round (number 0, as the old one's was).
    let mut read = h.read(2, "k");
    let asked = h.take();
    assert_eq!(asked.len(), 1, "the new process asked the leader");
    // The stale answer arrives first: it must release nothing.
    h.input(2, Request::Peer(stale.pop().unwrap()));
    assert!(read.try_recv().is_err(), "a read was released by an answer meant for another process");
    // The real round completes the read.
    for m in asked {
        let to = m.to;
        h.input(to, Request::Peer(m));
    }
    h.deliver(|_| true);
    let (resp, _) = tokio::time::timeout(std::time::Duration::from_secs(5), read).await.unwrap().unwrap().unwrap();
    assert_eq!(resp.kvs[0].value.as_ref(), b"new");
}

// Leases, on a clock the test moves. The checkpoint interval is 5 s.

/// A clock shared by every member, moved only by the test.
#[derive(Clone)]
struct TestClock(Arc<Mutex<std::time::Instant>>);

impl TestClock {
    fn install(h: &mut Harness) -> TestClock {
        let clock = TestClock(Arc::new(Mutex::new(std::time::Instant::now())));
        for m in &mut h.members {
            let c = clock.0.clone();
            m.node.clock = Arc::new(move || *c.lock().unwrap());
        }
        clock
    }

    fn advance_ms(&self, ms: u64) {
        *self.0.lock().unwrap() += std::time::Duration::from_millis(ms);
    }
}

impl Harness {
    fn propose(&mut self, id: NodeId, command: Command) -> oneshot::Receiver<Result<Applied, NodeError>> {
        let (reply, answer) = oneshot::channel();
        self.input(id, Request::Propose { command, reply });
        answer
    }

    fn grant(&mut self, leader: NodeId, lease: i64, ttl: i64) {
        let grant = crate::proto::etcdserverpb::LeaseGrantRequest { id: lease, ttl };
        let mut answer = self.propose(leader, Command::new(command::Request::LeaseGrant(grant)));
        self.deliver(|_| true);
        assert!(answer.try_recv().unwrap().unwrap().result.is_ok());
    }

    fn put_with_lease(&mut self, leader: NodeId, key: &str, lease: i64) {
        let req = PutRequest { key: key.to_owned().into(), value: "v".into(), lease, ..Default::default() };
        let mut answer = self.propose(leader, kv::put_command(req));
        self.deliver(|_| true);
        assert!(answer.try_recv().unwrap().unwrap().result.is_ok());
    }

    /// A keep-alive at `id`, with every message delivered (a renewal may
    /// wait for a reset through the log): the TTL it answered.
    fn renew(&mut self, id: NodeId, lease: i64) -> Result<i64, NodeError> {
        let (reply, mut answer) = oneshot::channel();
        self.input(id, Request::LeaseRenew { id: lease, reply });
        self.deliver(|_| true);
        for _ in 0..100 {
            match answer.try_recv() {
                Ok(answer) => return answer,
                // The reset's answer is fanned out by a task of its own.
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        panic!("the keep-alive was not answered");
    }

    /// Moves the clock in steps of at most 500 ms, each member taking a
    /// turn per step and every message that `pass` lets through delivered.
    fn pass_time(&mut self, clock: &TestClock, ms: u64, pass: impl Fn(&Message) -> bool) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(500);
            clock.advance_ms(step);
            left -= step;
            for id in 1..=self.members.len() as NodeId {
                let node = self.node(id);
                node.end_turn().unwrap();
            }
            self.deliver(&pass);
        }
    }

    fn has_lease(&mut self, id: NodeId, lease: i64) -> bool {
        self.node(id).kv.leases().contains(lease)
    }
}

/// Member 1 is cut off for a second, then member 2 takes over (and its
/// lease clock starts).
fn fail_over_to_2(h: &mut Harness, clock: &TestClock) {
    h.pass_time(clock, 1_000, within(&[2, 3]));
    h.campaign(2);
    h.deliver(within(&[2, 3]));
    h.tick(2);
    h.deliver(within(&[2, 3]));
    assert!(h.node(2).lessor.is_some(), "the new leader's lease clock started");
}

fn lease_harness() -> (Harness, TestClock) {
    let mut h = Harness::new(3);
    let clock = TestClock::install(&mut h);
    elect_everywhere(&mut h, 1);
    // The leader's clock starts once its own no-op is applied.
    h.tick(1);
    h.deliver(|_| true);
    assert!(h.node(1).lessor.is_some());
    (h, clock)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_revokes_an_expired_lease_and_every_member_deletes_its_keys_at_one_revision() {
    let (mut h, clock) = lease_harness();
    h.grant(1, 7, 10);
    h.put_with_lease(1, "k", 7);
    assert!(h.node(2).lessor.is_none() && h.node(3).lessor.is_none(), "followers keep no lease clock");
    h.pass_time(&clock, 9_500, |_| true);
    assert!((1..=3).all(|id| h.has_lease(id, 7)), "not expired before its TTL");

    // Past the deadline, followers take turns and propose nothing.
    clock.advance_ms(1_000);
    let before = h.node(2).raft.last_index();
    for id in [2, 3] {
        h.node(id).end_turn().unwrap();
    }
    assert!(h.take().is_empty(), "a follower proposed something");
    assert_eq!(h.node(2).raft.last_index(), before);
    // The leader's turn proposes the revocation.
    h.node(1).end_turn().unwrap();
    h.deliver(|_| true);
    let revision = h.node(1).kv.revision();
    for id in 1..=3 {
        assert!(!h.has_lease(id, 7), "member {id} still has the lease");
        assert_eq!(h.value(id, "k"), None, "member {id} kept the lease's key");
        assert_eq!(h.node(id).kv.revision(), revision, "member {id} deleted at another revision");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_kept_alive_across_a_leader_change_never_expires_and_ends_a_ttl_after_its_last_renewal() {
    let (mut h, clock) = lease_harness();
    h.grant(1, 7, 10);
    // Renewed every 3 s at the leader: member 1, then member 2 from 12 s on.
    for round in 1..=10 {
        h.pass_time(&clock, 3_000, |_| true);
        if round == 4 {
            h.campaign(2);
            h.deliver(|_| true);
            assert!(h.node(2).raft.is_leader());
            h.tick(2);
            h.deliver(|_| true);
            assert!(h.node(1).lessor.is_none(), "the old leader's clock stopped");
        }
        let leader = if round < 4 { 1 } else { 2 };
        assert_eq!(h.renew(leader, 7), Ok(10), "round {round}");
        assert!((1..=3).all(|id| h.has_lease(id, 7)), "expired while kept alive (round {round})");
    }
    assert!(matches!(h.renew(1, 7), Err(NodeError::NotLeader { leader: Some(2) })), "only the leader renews");
    // No renewal from now on: gone 10 s later, not before.
    h.pass_time(&clock, 9_500, |_| true);
    assert!(h.has_lease(3, 7), "expired before its TTL ran out");
    h.pass_time(&clock, 1_000, |_| true);
    assert!((1..=3).all(|id| !h.has_lease(id, 7)), "outlived its TTL");
    assert_eq!(h.renew(2, 7), Ok(0), "a keep-alive of a gone lease answers TTL 0");
}

/// The leader dies 11 s into a 20 s lease nobody renews; the new leader
/// counts the remaining 10 s its predecessor checkpointed at 10 s, so the
/// lease ends at 22 s: within TTL + interval + the leaderless second.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_counts_the_checkpointed_remaining_ttl_not_a_fresh_one() {
    let (mut h, clock) = lease_harness();
    h.grant(1, 7, 20);
    h.pass_time(&clock, 11_000, |_| true);
    assert_eq!(h.node(2).kv.leases().get(7).map(|l| l.remaining), Some(10), "checkpointed at 10 s");
    // Member 1 is cut off; member 2 takes over a second later.
    fail_over_to_2(&mut h, &clock);
    h.pass_time(&clock, 9_500, within(&[2, 3]));
    assert!(h.has_lease(3, 7), "expired before the remaining TTL ran out");
    h.pass_time(&clock, 1_000, within(&[2, 3]));
    assert!(!h.has_lease(3, 7), "the new leader gave the lease more than its checkpointed remaining TTL");
}

/// A renewal of a lease with a recorded remaining TTL is answered only once
/// that record is reset: a leader change right after it must not cut the
/// TTL the owner was promised back to the stale record.
#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_after_a_checkpoint_resets_it_before_answering_so_a_new_leader_honours_it() {
    let (mut h, clock) = lease_harness();
    h.grant(1, 7, 20);
    h.pass_time(&clock, 6_000, |_| true);
    assert_eq!(h.node(3).kv.leases().get(7).map(|l| l.remaining), Some(15));
    assert_eq!(h.renew(1, 7), Ok(20), "renewed at 6 s: promised until 26 s");
    assert_eq!(h.node(3).kv.leases().get(7).map(|l| l.remaining), Some(0), "the record was reset first");
    // Member 1 is cut off at once; member 2 leads from 7 s.
    fail_over_to_2(&mut h, &clock);
    h.pass_time(&clock, 18_500, within(&[2, 3]));
    assert!(h.has_lease(3, 7), "expired at 25.5 s, before the 26 s its owner was promised");
}
