//! The conformance suite: one set of cases written against the transport contract and the
//! patterns, run for every transport.
//!
//! A transport joins with one line in its `tests/conformance.rs`:
//!
//! ```ignore
//! busbar_conformance::suite!(async { Some(MyHarness::new()) });
//! ```
//!
//! where the expression yields `Option<impl Harness>`; `None` means the broker is not
//! available and every case reports itself skipped (transports use `busbar-testkit` to decide
//! that, which turns a missing broker into a failure when `BUSBAR_REQUIRE_BROKERS=1`).
//! `mem://` is the reference: every case passes there by definition of the contract, and a
//! broker transport that fails a case is wrong or must declare the missing capability.
//!
//! Cases never sleep to synchronise: they wait for the messages, replies or events they
//! expect, each under a deadline, so a broken transport fails instead of hanging.

#![forbid(unsafe_code)]

pub mod cases;
mod harness;

pub use harness::{CASE_DEADLINE, Harness, TestResult, run_case, within};

/// Every case, for transports that want to list or filter them.
pub const CASES: &[&str] = &[
    "ordering_per_publisher",
    "wildcard_semantics",
    "qos_kept_or_refused",
    "concurrent_subscribes",
    "queue_groups_share_the_load",
    "named_queues",
    "overflow_drop_newest",
    "overflow_drop_oldest",
    "overflow_block_loses_nothing",
    "counters_of_deliveries",
    "counters_of_requests",
    "retained_messages",
    "message_expiry",
    "unsubscribe_on_drop",
    "close_ends_everything",
    "close_sends_what_was_published",
    "malformed_payloads",
    "codecs_interoperate",
    "no_local",
    "start_before_now",
    "durable_subscriptions",
    "request_deadline",
    "request_without_responder",
    "rpc_concurrency",
    "rpc_concurrency_limit",
    "rpc_error_replies",
    "rpc_cancel_on_drop",
    "rpc_load_balanced",
    "replies_cannot_be_forged",
    "action_feedback_in_order",
    "action_feedback_burst_and_overflow",
    "action_cancel",
    "action_abort",
    "action_reject",
    "action_many_goals",
    "events",
    "heartbeats_and_liveness",
    "last_will",
];

/// Generates one `#[tokio::test]` per conformance case for the harness `$harness`
/// (an expression, usually an `async` block, evaluating to `Option<impl Harness>`).
#[macro_export]
macro_rules! suite {
    ($harness:expr) => {
        $crate::suite!(@cases $harness;
            ordering_per_publisher,
            wildcard_semantics,
            qos_kept_or_refused,
            concurrent_subscribes,
            queue_groups_share_the_load,
            named_queues,
            overflow_drop_newest,
            overflow_drop_oldest,
            overflow_block_loses_nothing,
            counters_of_deliveries,
            counters_of_requests,
            retained_messages,
            message_expiry,
            unsubscribe_on_drop,
            close_ends_everything,
            close_sends_what_was_published,
            malformed_payloads,
            codecs_interoperate,
            no_local,
            start_before_now,
            durable_subscriptions,
            request_deadline,
            request_without_responder,
            rpc_concurrency,
            rpc_concurrency_limit,
            rpc_error_replies,
            rpc_cancel_on_drop,
            rpc_load_balanced,
            replies_cannot_be_forged,
            action_feedback_in_order,
            action_feedback_burst_and_overflow,
            action_cancel,
            action_abort,
            action_reject,
            action_many_goals,
            events,
            heartbeats_and_liveness,
            last_will,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness.await;
                $crate::run_case(stringify!($case), harness, |h| {
                    ::std::boxed::Box::pin(async move { $crate::cases::$case(h).await })
                })
                .await;
            }
        )*
    };
}
