//! The settle contract: a source hands the core an [`Event`](crate::Event)
//! and a [`Settle`] handle for the message it came from; the core delivers
//! the event and settles the message through the handle, once, by the
//! [`Outcome`]. A source never decides when to ack.

use crate::event::Response;
use std::time::Duration;

/// How delivery of one event ended, which is how its message is settled.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Every subscriber answered (2xx). Ack.
    Delivered,
    /// The event is in the dead letters (a subscriber refused it, its
    /// retries ran out, or nothing subscribes). Ack, or terminate where the
    /// broker tells the two apart.
    DeadLettered,
    /// Neither delivered nor dead-lettered: a retry is due, the hub is
    /// stopping, or the dead letter could not be written. Redeliver after
    /// `after` (where the broker can wait) and say why.
    Redeliver { after: Duration, reason: String },
}

impl Outcome {
    /// Whether the message may leave the broker: delivered or dead-lettered.
    pub fn settled(&self) -> bool {
        !matches!(self, Outcome::Redeliver { .. })
    }
}

/// A source's handle on one broker message. The core calls
/// [`Settle::settle`] exactly once, after the event is delivered or
/// dead-lettered or known to need redelivery, and [`Settle::keep_alive`]
/// while an invocation outlives the broker's patience.
pub trait Settle: Sized + Send + Sync + 'static {
    /// Times the broker has handed out this message, this time included
    /// (JetStream's delivered count, Redis's times-delivered, SQS's receive
    /// count). The core's one dead-letter policy counts attempts from it,
    /// so a message that crashes the hub on every try still reaches the
    /// dead letters. 1 for brokers that do not count.
    fn deliveries(&self) -> u32 {
        1
    }

    /// Whether the broker redelivers the message after a delay of the
    /// core's choosing (JetStream's nak, SQS's visibility). Then a retry is
    /// the broker's redelivery and holds no place in the hub while it
    /// waits; otherwise the core retries in-process.
    fn redelivers_later(&self) -> bool {
        false
    }

    /// Whether the broker itself moves a message handed out too often to a
    /// dead-letter queue of its own (an SQS queue's redrive policy, when
    /// the source is set to let it decide). Then the core never
    /// dead-letters the message: every failure gives it back with the
    /// retry's delay, and the broker's count decides when it moves.
    /// Implies [`Settle::redelivers_later`].
    fn broker_dead_letters(&self) -> bool {
        false
    }

    /// How often [`Settle::keep_alive`] must be called while the event is
    /// being delivered, for brokers that hand a slow message to another
    /// consumer (JetStream's ack wait, Redis's claim time, SQS visibility).
    fn keep_alive_every(&self) -> Option<Duration> {
        None
    }

    fn keep_alive(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// For request/reply protocols (NATS reply subjects, MQTT 5 response
    /// topics): the answer of the first subscriber, before settling.
    fn reply(&self, _response: &Response) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Acks, terminates or gives the message back, as `outcome` says.
    fn settle(self, outcome: Outcome) -> impl Future<Output = ()> + Send;
}

/// For sources whose messages need no settling (core NATS, Redis pub/sub:
/// at most once). The outcome is logged when not settled.
pub struct NoAck;

impl Settle for NoAck {
    async fn settle(self, outcome: Outcome) {
        if let Outcome::Redeliver { reason, .. } = outcome {
            tracing::warn!(%reason, "not delivered, and this source cannot redeliver (at most once)");
        }
    }
}
