//! Many publishes in flight, confirmed in order.
//!
//! A publish at QoS 1 or 2 resolves when the broker has it, one round trip after it was
//! sent. Awaiting each before sending the next makes a publisher as slow as the round trip;
//! a [`Pipeline`] keeps up to a window of them in flight, as MQTT's receive maximum and
//! AMQP's publisher confirms intend, and still reports every refusal.

use std::collections::VecDeque;

use crate::connection::Connection;
use crate::error::PublishError;
use crate::message::Message;
use crate::transport::Completion;

/// Publishes on one connection with up to `window` of them awaiting the broker's
/// confirmation at once.
///
/// Transports that hand a message over when `publish` is called (MQTT) get it on the wire
/// at once and in order; the others send each when its turn to be awaited comes, which
/// keeps their order too.
pub struct Pipeline<'a> {
    conn: &'a Connection,
    window: usize,
    in_flight: VecDeque<Completion<'a>>,
}

impl<'a> Pipeline<'a> {
    /// A pipeline on `conn` (a window of 0 counts as 1).
    pub fn new(conn: &'a Connection, window: usize) -> Pipeline<'a> {
        let window = window.max(1);
        Pipeline { conn, window, in_flight: VecDeque::with_capacity(window) }
    }

    /// Publishes `message`, first waiting for the oldest publish in flight when the window
    /// is full. Returns that oldest publish's error if it failed (the message is then
    /// still sent: each failure is reported once, by the call that saw it).
    pub async fn publish(&mut self, message: Message) -> Result<(), PublishError> {
        let oldest =
            if self.in_flight.len() >= self.window { self.in_flight.pop_front() } else { None };
        self.in_flight.push_back(self.conn.publish(message));
        match oldest {
            Some(done) => done.await,
            None => Ok(()),
        }
    }

    /// How many publishes await their confirmation.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Waits for every publish in flight; returns the first error and how many failed.
    pub async fn finish(mut self) -> Result<(), (PublishError, usize)> {
        let mut first = None;
        let mut failed = 0;
        while let Some(done) = self.in_flight.pop_front() {
            if let Err(e) = done.await {
                failed += 1;
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err((e, failed)),
            None => Ok(()),
        }
    }
}
