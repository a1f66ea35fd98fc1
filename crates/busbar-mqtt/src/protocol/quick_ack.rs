//! Acknowledging the broker's small packets at once, so that a broker with Nagle's
//! algorithm on does not hold its next packet back for 40 ms.
//!
//! Mosquitto's packaged configuration leaves Nagle on for its own sockets
//! (`set_tcp_nodelay false`): a small packet it writes while an earlier one is not yet
//! acknowledged by our TCP stack waits for that acknowledgement. Linux delays ACKs on a
//! connection that looks interactive (one that sends soon after it receives: every RPC
//! client and server) by up to 40 ms. So a QoS 1 request meets the broker's PUBACK, then the
//! reply, which waits for our ACK of the PUBACK: 44 ms per call instead of 0.15 ms, for raw
//! rumqttc and paho as well. Setting `TCP_QUICKACK` on our socket right after the broker's
//! acknowledgement packets (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK) sends the pending ACK
//! at once; the broker's Nagle then has nothing to wait for. Publishes coming in are not
//! treated so: a stream of them is answered by our own PUBACKs or read in bulk.
//!
//! rumqttc owns the socket and does not expose it, so the socket is found once per
//! connection among this process's open files: the TCP socket to the server's port that
//! appeared while this connection was connecting. Connects to the same server in one
//! process take turns for that (briefly: a connect that waits longer goes ahead and, if its
//! socket cannot be told apart, runs without this). The socket stays ours from the CONNACK
//! to the next connection error, when rumqttc drops it; the option is set only between
//! polls of the event loop, from the task that owns it, so it is never set on a socket
//! rumqttc has closed. Linux only; elsewhere nothing is done.

use busbar_transport_kit::Server;

/// What the event loop just reported, as far as acknowledging goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketKind {
    /// The connection was made (CONNACK).
    Connected,
    /// PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK from the broker, after which it may well
    /// write again soon (the reply to a request, the next request to a server, the SUBACK
    /// of commlib's next per-call reply subscription).
    Acknowledgement,
    /// Anything else.
    Other,
}

#[cfg(target_os = "linux")]
pub(crate) use linux::QuickAck;

#[cfg(not(target_os = "linux"))]
pub(crate) use elsewhere::QuickAck;

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{HashMap, HashSet};
    use std::os::fd::RawFd;
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use super::{PacketKind, Server};

    /// How long a connect waits for another connect to the same server before going ahead.
    const TURN_WAIT: Duration = Duration::from_millis(200);

    /// The socket of one connection, found at each CONNACK.
    pub(crate) struct QuickAck {
        server: (String, u16),
        /// Between a CONNACK and the next connection error.
        connected: bool,
        /// Our socket while connected, when it could be found.
        socket: Option<RawFd>,
    }

    /// Taken before a poll that connects, handed back after it.
    pub(crate) struct Connecting {
        _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
        before: HashSet<u64>,
    }

    impl QuickAck {
        pub(crate) fn new(server: &Server) -> QuickAck {
            QuickAck { server: key(server), connected: false, socket: None }
        }

        /// The next connection goes to `server`.
        pub(crate) fn aim(&mut self, server: &Server) {
            self.server = key(server);
        }

        /// Before a poll of the event loop: when that poll is to connect, takes this
        /// server's turn and notes the sockets open before it.
        pub(crate) async fn before_poll(&self) -> Option<Connecting> {
            if self.connected {
                return None;
            }
            let turn = turn_for(&self.server);
            let turn = tokio::time::timeout(TURN_WAIT, turn.lock_owned()).await.ok();
            Some(Connecting { _turn: turn, before: socket_inodes().into_keys().collect() })
        }

        /// After a poll that reported `kind`.
        pub(crate) fn after_poll(&mut self, kind: PacketKind, connecting: Option<Connecting>) {
            match kind {
                PacketKind::Connected => {
                    self.connected = true;
                    self.socket = connecting.and_then(|c| find_socket(self.server.1, &c.before));
                    if self.socket.is_none() {
                        tracing::debug!(
                            "the connection's socket was not found: the broker's acknowledgements \
                             are ACKed as the kernel decides"
                        );
                    }
                }
                PacketKind::Acknowledgement => {
                    if let Some(fd) = self.socket
                        && !set_quick_ack(fd)
                    {
                        self.socket = None;
                    }
                }
                PacketKind::Other => {}
            }
        }

        /// The connection dropped: rumqttc has closed its socket.
        pub(crate) fn dropped(&mut self) {
            self.connected = false;
            self.socket = None;
        }

        /// Whether the socket was found (for tests).
        #[cfg(test)]
        pub(crate) fn socket(&self) -> Option<RawFd> {
            self.socket
        }
    }

    fn key(server: &Server) -> (String, u16) {
        (server.host.clone(), server.port)
    }

    /// One turn per server: connects to it take turns at finding their socket.
    type Turns = Mutex<HashMap<(String, u16), Arc<tokio::sync::Mutex<()>>>>;

    /// The lock that connects to `server` take turns on.
    fn turn_for(server: &(String, u16)) -> Arc<tokio::sync::Mutex<()>> {
        static TURNS: OnceLock<Turns> = OnceLock::new();
        let mut turns = TURNS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(server.clone()).or_default().clone()
    }

    /// This process's open sockets: inode to file descriptor.
    fn socket_inodes() -> HashMap<u64, RawFd> {
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return HashMap::new() };
        entries
            .flatten()
            .filter_map(|entry| {
                let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(entry.path()).ok()?;
                let inode = target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
                Some((inode.parse().ok()?, fd))
            })
            .collect()
    }

    /// The one socket opened since `before` that is an established TCP connection to
    /// `port`; `None` when there is none or more than one.
    fn find_socket(port: u16, before: &HashSet<u64>) -> Option<RawFd> {
        let to_port = established_to(port);
        let mut found = socket_inodes()
            .into_iter()
            .filter(|(inode, _)| !before.contains(inode) && to_port.contains(inode));
        let (_, fd) = found.next()?;
        found.next().is_none().then_some(fd)
    }

    /// Inodes of the established TCP connections (IPv4 and IPv6) whose remote port is `port`.
    fn established_to(port: u16) -> HashSet<u64> {
        ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .flat_map(|table| {
                table.lines().skip(1).filter_map(|line| tcp_entry(line, port)).collect::<Vec<_>>()
            })
            .collect()
    }

    /// The inode of one line of `/proc/net/tcp` when it is an established connection to
    /// `port` (columns: sl, local, remote, state, queues, timer, retransmits, uid, timeout,
    /// inode).
    fn tcp_entry(line: &str, port: u16) -> Option<u64> {
        const ESTABLISHED: &str = "01";
        let fields: Vec<&str> = line.split_whitespace().collect();
        let remote_port = fields.get(2)?.rsplit(':').next()?;
        let remote_port = u16::from_str_radix(remote_port, 16).ok()?;
        (remote_port == port && *fields.get(3)? == ESTABLISHED).then_some(())?;
        fields.get(9)?.parse().ok()
    }

    /// Sends the pending ACK now (and leaves delayed-ACK mode until the kernel re-enters it).
    #[allow(unsafe_code)]
    fn set_quick_ack(fd: RawFd) -> bool {
        let one: libc::c_int = 1;
        // SAFETY: plain setsockopt with a pointer to a live c_int and its size. `fd` is the
        // socket of this connection, open from its CONNACK to its next error (see the
        // module's comment): nothing here reads or writes memory through it.
        let done = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of_val(&one) as libc::socklen_t,
            )
        };
        done == 0
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_an_established_connection_from_the_tcp_table() {
            let line = "   3: 0100007F:C35A 0100007F:075B 01 00000000:00000000 00:00000000 \
                        00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1";
            assert_eq!(tcp_entry(line, 1883), Some(123_456));
            assert_eq!(tcp_entry(line, 1884), None, "another port");
            let listening = line.replace(" 01 ", " 0A ");
            assert_eq!(tcp_entry(&listening, 1883), None, "not established");
            assert_eq!(tcp_entry("garbage", 1883), None);
        }

        /// Two sockets to the same port opened since the snapshot cannot be told apart;
        /// one can.
        #[tokio::test]
        async fn finds_the_one_new_socket_to_the_port() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let before: HashSet<u64> = socket_inodes().into_keys().collect();
            let first = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("a");
            let (_accepted, _) = listener.accept().await.expect("accept");
            let fd = find_socket(port, &before).expect("the new socket is found");
            assert_eq!(fd, std::os::fd::AsRawFd::as_raw_fd(&first));
            assert!(set_quick_ack(fd), "TCP_QUICKACK is taken");
            let _second = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("b");
            let (_accepted2, _) = listener.accept().await.expect("accept");
            assert_eq!(find_socket(port, &before), None, "two candidates: none is taken");
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod elsewhere {
    use super::{PacketKind, Server};

    /// Nothing to do where `TCP_QUICKACK` does not exist.
    pub(crate) struct QuickAck;

    pub(crate) struct Connecting;

    impl QuickAck {
        pub(crate) fn new(_server: &Server) -> QuickAck {
            QuickAck
        }
        pub(crate) fn aim(&mut self, _server: &Server) {}
        pub(crate) async fn before_poll(&self) -> Option<Connecting> {
            None
        }
        pub(crate) fn after_poll(&mut self, _kind: PacketKind, _connecting: Option<Connecting>) {}
        pub(crate) fn dropped(&mut self) {}
    }
}
