//! Fault-injecting TCP proxies for the peer links of a real cluster.
//!
//! Every ordered pair of members (i → j) gets its own proxy: member i is
//! told that j's peer URL is the proxy's address, so everything i sends to j
//! (Raft messages, forwarded writes, snapshots) crosses it, and so do j's
//! answers on those connections. Faults are set per direction:
//!
//! - `Blackhole`: bytes stop moving, as when packets are dropped: open
//!   connections stall (neither direction is read), new ones are accepted
//!   and stall too. Healing lets the held bytes through, late, as TCP's
//!   retransmission would.
//! - `Delay(d)`: every chunk is delivered `d` after it was read, in order.
//! - `drop_connections`: closes every open connection, as a middlebox reset
//!   would; new connections work.
//! - `stall_open_connections`: open connections stop moving bytes for good
//!   and are never closed, as when a NAT forgets them or a peer host dies
//!   without a reset; new connections work. Only the endpoints themselves
//!   (keepalive) can notice.
//!
//! Proxies run on the test's tokio runtime and stop when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Blackhole,
    Delay(Duration),
}

#[derive(Clone, Copy, Debug)]
struct Control {
    mode: Mode,
    /// Each connection is born in the current generation.
    generation: u64,
    /// Connections born before this generation close.
    closed_before: u64,
    /// Connections born before this generation stall for good.
    stalled_before: u64,
}

impl Control {
    fn closes(&self, born: u64) -> bool {
        born < self.closed_before
    }

    fn holds(&self, born: u64) -> bool {
        self.mode == Mode::Blackhole || born < self.stalled_before
    }
}

/// One direction's proxy: from a member to the peer address of another.
pub struct Proxy {
    pub addr: SocketAddr,
    control: watch::Sender<Control>,
    listener: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a proxy port");
        let addr = listener.local_addr().unwrap();
        let (control, _) =
            watch::channel(Control { mode: Mode::Pass, generation: 0, closed_before: 0, stalled_before: 0 });
        let spawner = control.clone();
        let listener = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let ctl = spawner.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(pump(in_read, out_write, ctl.clone()), pump(out_read, in_write, ctl));
                });
            }
        });
        Proxy { addr, control, listener }
    }

    pub fn set(&self, mode: Mode) {
        self.control.send_modify(|c| c.mode = mode);
    }

    pub fn mode(&self) -> Mode {
        self.control.borrow().mode
    }

    pub fn drop_connections(&self) {
        self.control.send_modify(|c| {
            c.generation += 1;
            c.closed_before = c.generation;
        });
    }

    pub fn stall_open_connections(&self) {
        self.control.send_modify(|c| {
            c.generation += 1;
            c.stalled_before = c.generation;
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.listener.abort();
        self.drop_connections();
    }
}

/// Waits until bytes may move; false when the connection must close.
async fn may_move(ctl: &mut watch::Receiver<Control>, generation: u64) -> bool {
    loop {
        let c = *ctl.borrow_and_update();
        if c.closes(generation) {
            return false;
        }
        if !c.holds(generation) {
            return true;
        }
        if ctl.changed().await.is_err() {
            return false;
        }
    }
}

/// Copies one direction of a connection under the proxy's control. A reader
/// and a writer joined by a queue, so a delay postpones delivery without
/// slowing reading (as a long link would).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, ctl: watch::Receiver<Control>) {
    let generation = ctl.borrow().generation;
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let mut read_ctl = ctl.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !may_move(&mut read_ctl, generation).await {
                return;
            }
            let n = tokio::select! {
                n = from.read(&mut buf) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
                changed = read_ctl.changed() => if changed.is_err() { return } else { continue },
            };
            let delay = match read_ctl.borrow().mode {
                Mode::Delay(d) => d,
                _ => Duration::ZERO,
            };
            if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let mut write_ctl = ctl;
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            // Timers tick in milliseconds: undelayed bytes skip them.
            if at > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = closed(&mut write_ctl, generation) => return,
                }
            }
            if !may_move(&mut write_ctl, generation).await {
                return;
            }
            let written = tokio::select! {
                r = to.write_all(&bytes) => r.is_ok(),
                _ = closed(&mut write_ctl, generation) => false,
            };
            if !written {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    // A reader that met the end lets the writer deliver what it holds; a
    // writer that failed or was closed ends the direction at once.
    tokio::pin!(reader, writer);
    tokio::select! {
        _ = &mut reader => writer.await,
        _ = &mut writer => {}
    }
}

/// Resolves when the connection must close.
async fn closed(ctl: &mut watch::Receiver<Control>, generation: u64) {
    loop {
        if ctl.borrow_and_update().closes(generation) {
            return;
        }
        if ctl.changed().await.is_err() {
            return;
        }
    }
}

/// The proxies of a whole cluster, one per ordered pair of members.
pub struct Network {
    n: usize,
    proxies: HashMap<(usize, usize), Proxy>,
}

impl Network {
    /// Proxies in front of the given peer addresses.
    pub async fn start(peers: &[SocketAddr]) -> Network {
        let mut proxies = HashMap::new();
        for from in 0..peers.len() {
            for (to, &target) in peers.iter().enumerate() {
                if from != to {
                    proxies.insert((from, to), Proxy::start(target).await);
                }
            }
        }
        Network { n: peers.len(), proxies }
    }

    /// The address member `from` uses to reach member `to`.
    pub fn addr(&self, from: usize, to: usize) -> SocketAddr {
        self.proxies[&(from, to)].addr
    }

    pub fn set(&self, from: usize, to: usize, mode: Mode) {
        self.proxies[&(from, to)].set(mode);
    }

    /// Every link back to passing.
    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.set(Mode::Pass);
        }
    }

    /// Cuts every link between the groups (both directions); links within a
    /// group pass. Members in no group keep all their links: a bridge.
    pub fn partition(&self, groups: &[&[usize]]) {
        let group_of = |m: usize| groups.iter().position(|g| g.contains(&m));
        for (&(from, to), p) in &self.proxies {
            let cut = matches!((group_of(from), group_of(to)), (Some(a), Some(b)) if a != b);
            p.set(if cut { Mode::Blackhole } else { Mode::Pass });
        }
    }

    /// Cuts one member off from all the others, both directions.
    pub fn isolate(&self, member: usize) {
        let rest: Vec<usize> = (0..self.n).filter(|&m| m != member).collect();
        self.partition(&[&[member], &rest]);
    }

    /// Every link delayed by `d`.
    pub fn delay_all(&self, d: Duration) {
        for p in self.proxies.values() {
            p.set(Mode::Delay(d));
        }
    }

    pub fn drop_connections(&self) {
        for p in self.proxies.values() {
            p.drop_connections();
        }
    }

    pub fn stall_open_connections(&self) {
        for p in self.proxies.values() {
            p.stall_open_connections();
        }
    }
}
