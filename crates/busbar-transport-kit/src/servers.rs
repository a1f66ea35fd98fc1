//! Server lists: which of an endpoint's servers a connection tries next, and how long it
//! waits first.
//!
//! Every transport takes `SCHEME://HOST1[:PORT],HOST2[:PORT],...` (parsed by
//! [`Endpoint`](crate::Endpoint)). A connection starts at the first server (or at a random
//! one, `?server_order=random`); when the server in use fails or is lost it moves to the next
//! at once, and only after a whole round of them failed does it wait, with the jittered
//! [`backoff`](crate::backoff) growing round by round. One server is the special case of a
//! round of one: the same delays as before lists existed.

use std::time::Duration;

use busbar_core::error::ConnectError;

use crate::backoff::backoff;
use crate::endpoint::{Params, Server};

/// In which order a connection tries its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ServerOrder {
    /// As listed: the first is the primary, the others stand by (`?server_order=listed`,
    /// the default).
    #[default]
    Listed,
    /// Shuffled once when the connection is made, so that many clients spread over a
    /// cluster (`?server_order=random`); then round in that order.
    Random,
}

impl ServerOrder {
    /// `?server_order=listed|random` from the URL's parameters (listed when absent).
    pub fn from_params(params: &mut Params) -> Result<ServerOrder, ConnectError> {
        Ok(match params.choice("server_order", &["listed", "random"])? {
            Some("random") => ServerOrder::Random,
            _ => ServerOrder::Listed,
        })
    }
}

/// How a connection that lost its server tries again: by default after each failed round
/// with the growing [`backoff`](crate::backoff), for as long as it is open; or, as CELINE's
/// clients are configured, after a fixed `reconnect_interval`, giving up after
/// `max_reconnect_attempts` failed attempts (the connection then closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retry {
    /// The wait after a failed round instead of the backoff (`?reconnect_interval=5s`).
    pub interval: Option<Duration>,
    /// Failed attempts after which the connection gives up (`?max_reconnect_attempts=10`;
    /// absent or 0: never).
    pub max_attempts: Option<u32>,
}

impl Retry {
    /// `?reconnect_interval=` and `?max_reconnect_attempts=` from the URL's parameters.
    pub fn from_params(params: &mut Params) -> Result<Retry, ConnectError> {
        let interval = params.duration("reconnect_interval", Duration::ZERO)?;
        let max_attempts =
            params.number("max_reconnect_attempts", 0u32, u32::MAX)?.filter(|n| *n > 0);
        Ok(Retry { interval, max_attempts })
    }
}

/// The servers of one connection and where it stands among them.
#[derive(Debug, Clone)]
pub struct Servers {
    list: Vec<Server>,
    at: usize,
    /// Failures since the last successful connection.
    failures: u32,
    retry: Retry,
}

impl Servers {
    /// `list` (at least one server) in `order`.
    ///
    /// # Panics
    ///
    /// Never for a list from [`Endpoint::parse`](crate::Endpoint::parse), which has at least
    /// one server; an empty list is a programming error.
    pub fn new(mut list: Vec<Server>, order: ServerOrder) -> Servers {
        assert!(!list.is_empty(), "a server list needs at least one server");
        if order == ServerOrder::Random {
            shuffle(&mut list);
        }
        Servers { list, at: 0, failures: 0, retry: Retry::default() }
    }

    /// Tries again as `retry` says instead of with the default backoff, without end.
    pub fn with_retry(mut self, retry: Retry) -> Servers {
        self.retry = retry;
        self
    }

    /// Whether the connection has tried as often as its [`Retry`] allows since it was lost
    /// (the loss itself is not an attempt): time to give up and close.
    pub fn exhausted(&self) -> bool {
        self.retry.max_attempts.is_some_and(|most| self.failures > most)
    }

    /// The server to use now.
    pub fn current(&self) -> &Server {
        &self.list[self.at]
    }

    /// Every server, in the order they are tried.
    pub fn all(&self) -> &[Server] {
        &self.list
    }

    /// The server in use failed or was lost: moves to the next one and says how long to
    /// wait before trying it (nothing while this round still has servers to try).
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.at = (self.at + 1) % self.list.len();
        let per_round = self.list.len() as u32;
        if !self.failures.is_multiple_of(per_round) {
            Duration::ZERO
        } else if let Some(interval) = self.retry.interval {
            interval
        } else {
            backoff(self.failures / per_round - 1)
        }
    }

    /// A connection to [`current`](Self::current) was made: the next failure starts a new
    /// round.
    pub fn connected(&mut self) {
        self.failures = 0;
    }
}

/// Fisher-Yates with the process's random source.
fn shuffle(list: &mut [Server]) {
    for i in (1..list.len()).rev() {
        let j = (uuid::Uuid::new_v4().as_u128() % (i as u128 + 1)) as usize;
        list.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_policy_waits_its_interval_and_gives_up_after_its_attempts() {
        let retry = Retry { interval: Some(Duration::from_secs(5)), max_attempts: Some(2) };
        let mut s = Servers::new(servers(1), ServerOrder::Listed).with_retry(retry);
        // The loss, then two failed attempts: still trying; a third: given up.
        for _ in 0..3 {
            assert!(!s.exhausted());
            assert_eq!(s.failed(), Duration::from_secs(5));
        }
        assert!(s.exhausted());
        s.connected();
        assert!(!s.exhausted(), "a connection made starts again");
        let mut unbounded = Servers::new(servers(1), ServerOrder::Listed);
        for _ in 0..100 {
            unbounded.failed();
        }
        assert!(!unbounded.exhausted());
    }

    fn servers(n: u16) -> Vec<Server> {
        (1..=n).map(|port| Server { host: "h".into(), port }).collect()
    }

    #[test]
    fn a_round_tries_every_server_before_waiting() {
        let mut s = Servers::new(servers(3), ServerOrder::Listed);
        assert_eq!(s.current().port, 1);
        assert_eq!(s.failed(), Duration::ZERO);
        assert_eq!(s.current().port, 2);
        assert_eq!(s.failed(), Duration::ZERO);
        assert_eq!(s.current().port, 3);
        let wait = s.failed();
        assert_eq!(s.current().port, 1, "round again from the first");
        assert!(wait >= crate::backoff::MIN / 2 && wait <= crate::backoff::MIN, "{wait:?}");
        s.failed();
        s.failed();
        let second_round = s.failed();
        assert!(second_round >= crate::backoff::MIN, "grows: {second_round:?}");
        s.connected();
        assert_eq!(s.failed(), Duration::ZERO, "a new round after a connection");
    }

    #[test]
    fn one_server_waits_after_every_failure() {
        let mut s = Servers::new(servers(1), ServerOrder::Listed);
        for _ in 0..3 {
            assert!(s.failed() > Duration::ZERO);
            assert_eq!(s.current().port, 1);
        }
    }

    #[test]
    fn random_order_is_a_permutation_and_varies() {
        let mut orders = std::collections::HashSet::new();
        for _ in 0..50 {
            let s = Servers::new(servers(4), ServerOrder::Random);
            let mut ports: Vec<u16> = s.all().iter().map(|s| s.port).collect();
            orders.insert(ports.clone());
            ports.sort_unstable();
            assert_eq!(ports, [1, 2, 3, 4]);
        }
        assert!(orders.len() > 1, "never shuffled");
    }

    #[test]
    fn the_order_is_read_from_the_url() {
        use crate::endpoint::{Endpoint, Scheme};
        let schemes = [Scheme { name: "x", default_port: 1, secure: false }];
        let mut e = Endpoint::parse("x://a,b?server_order=random", &schemes).expect("ok");
        assert_eq!(ServerOrder::from_params(&mut e.params).expect("random"), ServerOrder::Random);
        let mut e = Endpoint::parse("x://a,b?server_order=first", &schemes).expect("ok");
        let err = ServerOrder::from_params(&mut e.params).expect_err("bad");
        assert!(err.to_string().contains("listed, random"), "{err}");
    }
}
