//! A TCP proxy on loopback that gives real connections the simulator's network: each
//! chunk read from either side is forwarded after a delay drawn from the scenario's
//! [`DelayModel`], in order (like TCP behind a queue). It runs on OS threads with
//! precise sleeps, so the delays it adds are what the model says (an async timer
//! would round them to whole milliseconds). `syncstream demo --scenario` puts the
//! stream, HTTP and MQTT connections of every receiver through one.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::network::DelayModel;
use crate::scenario::NetworkSpec;

/// A running proxy; connections made to [`NetProxy::addr`] reach the target.
pub struct NetProxy {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    held_until: Hold,
}

/// Until when nothing is forwarded (a network outage): bytes wait, connections stay.
type Hold = Arc<Mutex<Option<Instant>>>;

impl NetProxy {
    /// Starts a proxy to `target` on a free loopback port, delaying with `net`'s model
    /// (each direction of each connection its own draw sequence from `seed`).
    ///
    /// Errors: no loopback port can be bound.
    pub fn start(target: SocketAddr, net: &NetworkSpec, seed: u64) -> std::io::Result<NetProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let open2 = open.clone();
        let held_until: Hold = Arc::new(Mutex::new(None));
        let hold = held_until.clone();
        let net = net.clone();
        std::thread::Builder::new()
            .name("net-proxy".into())
            .spawn(move || {
                let mut n = seed;
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    n = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                        continue;
                    };
                    if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                        let mut o = open2.lock().unwrap_or_else(|e| e.into_inner());
                        o.push(a);
                        o.push(b);
                    }
                    let (up, down) = (DelayModel::new(&net, n), DelayModel::new(&net, n ^ 0xABCD));
                    let (h1, h2) = (hold.clone(), hold.clone());
                    std::thread::spawn(move || pipe(client, s2, up, h1));
                    std::thread::spawn(move || pipe(server, c2, down, h2));
                }
            })?;
        Ok(NetProxy {
            addr,
            open,
            held_until,
        })
    }

    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A network outage of `d`: nothing crosses in either direction until it ends (the
    /// bytes sent meanwhile arrive then, as TCP retransmits them; connections stay
    /// open unless an end gives up on them).
    pub fn hold_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut h = self.held_until.lock().unwrap_or_else(|e| e.into_inner());
        *h = Some(h.map_or(until, |u| u.max(until)));
    }

    /// Drops every connection open now (new ones are accepted again): a network cut.
    pub fn cut(&self) {
        for s in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, mut delays: DelayModel, hold: Hold) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        while let Ok((at, bytes)) = rx.recv() {
            let held = *hold.lock().unwrap_or_else(|e| e.into_inner());
            let at = held.map_or(at, |h| at.max(h));
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now); // the modelled delay (or the outage)
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut last = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let d = Duration::from_micros(delays.draw_us().max(0) as u64);
        let at = (Instant::now() + d).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}
