//! Which subjects a durable subscription keeps. A publish to one of them is confirmed by the
//! JetStream stream that stores it (a PubAck), not only handed to the server: a core publish
//! taken by a server that dies before it reached the stream (a cluster node killed, the
//! stream's leader changing) would be lost to every durable subscriber without a word.
//!
//! The streams are busbar's own (`busbar-durable-*`, see `durable.rs`): listed when the
//! connection is made, and followed through the server's stream advisories (created,
//! updated, deleted) and this connection's own durable subscriptions. A stream made on
//! another connection a moment before a publish may not be known yet: that publish goes as
//! a core publish, which the stream still stores, unconfirmed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// The name every busbar durable stream starts with.
pub(super) const STREAM_PREFIX: &str = "busbar-durable-";

/// The subject filters of busbar's durable streams, by stream.
#[derive(Default)]
pub(super) struct KeptSubjects {
    streams: RwLock<HashMap<String, Vec<String>>>,
    /// Whether any stream is known: the common case (none) costs one load per publish.
    any: AtomicBool,
}

impl KeptSubjects {
    /// Whether a durable stream keeps `subject`.
    pub(super) fn covers(&self, subject: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let streams = self.streams.read().unwrap_or_else(|p| p.into_inner());
        streams.values().flatten().any(|filter| subject_matches(filter, subject))
    }

    /// `stream` keeps `subjects` (now, or from now on).
    pub(super) fn keep(&self, stream: &str, subjects: Vec<String>) {
        if !stream.starts_with(STREAM_PREFIX) {
            return;
        }
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        streams.insert(stream.to_owned(), subjects);
        self.any.store(true, Ordering::Release);
    }

    /// `stream` is gone.
    pub(super) fn forget(&self, stream: &str) {
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        streams.remove(stream);
        self.any.store(!streams.is_empty(), Ordering::Release);
    }
}

/// Whether NATS subject `filter` (with `*` and `>`) matches `subject`.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut filter = filter.split('.');
    let mut subject = subject.split('.');
    loop {
        match (filter.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(f), Some(s)) if f == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// How long a new connection waits for the list of streams before it is used (a cluster
/// still electing its JetStream leader answers late; the list is then read on meanwhile).
const LIST_WAIT: Duration = Duration::from_secs(1);

/// Learns the durable streams there are and follows their changes until `shutdown`. The
/// advisories are subscribed to before the list is read, so that nothing made in between
/// is missed. Without JetStream nothing is known and publishes stay core publishes; a
/// list that does not come (a cluster electing its leader) is asked for again.
pub(super) async fn follow(
    client: &async_nats::Client,
    kept: &Arc<KeptSubjects>,
    shutdown: CancellationToken,
) {
    let advisories = client.subscribe("$JS.EVENT.ADVISORY.STREAM.*.>").await;
    let js = jetstream::new(client.clone());
    match advisories {
        Ok(advisories) => {
            tokio::spawn(watch(advisories, js.clone(), Arc::downgrade(kept), shutdown.clone()));
        }
        Err(e) => tracing::debug!(error = %e, "subscribing to JetStream stream advisories"),
    }
    let (listed, known) = tokio::sync::oneshot::channel();
    tokio::spawn(list_until_known(js, Arc::downgrade(kept), shutdown, listed));
    let _ = tokio::time::timeout(LIST_WAIT, known).await;
}

/// Reads the list of streams into `kept`, asking again until it comes.
async fn list_until_known(
    js: jetstream::Context,
    kept: Weak<KeptSubjects>,
    shutdown: CancellationToken,
    listed: tokio::sync::oneshot::Sender<()>,
) {
    let mut pause = Duration::from_millis(250);
    loop {
        let mut streams = js.streams();
        let mut found = Vec::new();
        let mut failed = None;
        while let Some(info) = streams.next().await {
            match info {
                Ok(info) => found.push((info.config.name.clone(), info.config.subjects.clone())),
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        let Some(kept) = kept.upgrade() else { return };
        for (stream, subjects) in found {
            kept.keep(&stream, subjects);
        }
        match failed {
            None => break,
            // No JetStream here: nothing to confirm with.
            Some(e) if e.contains("no responders") || e.contains("not enabled") => break,
            Some(e) => tracing::debug!(error = e, "listing JetStream streams; asking again"),
        }
        drop(kept);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
    let _ = listed.send(());
}

/// Applies stream advisories (`$JS.EVENT.ADVISORY.STREAM.<KIND>.<STREAM>`) to `kept`.
async fn watch(
    mut advisories: async_nats::Subscriber,
    js: jetstream::Context,
    kept: Weak<KeptSubjects>,
    shutdown: CancellationToken,
) {
    loop {
        let advisory = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = advisories.next() => a,
        };
        let Some(advisory) = advisory else { return };
        let mut tokens = advisory.subject.as_str().splitn(6, '.');
        let (Some(kind), Some(stream)) = (tokens.nth(4), tokens.next()) else { continue };
        if !stream.starts_with(STREAM_PREFIX) {
            continue;
        }
        let Some(kept) = kept.upgrade() else { return };
        match kind {
            "CREATED" | "UPDATED" => match js.get_stream(stream).await {
                Ok(s) => kept.keep(stream, s.cached_info().config.subjects.clone()),
                Err(e) => tracing::debug!(stream, error = %e, "reading a durable stream"),
            },
            "DELETED" => kept.forget(stream),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_filters_with_wildcards() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(subject_matches(">", "a"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.b", "a.bc"));
        assert!(!subject_matches("a.b.c", "a.b"));
    }

    #[test]
    fn only_busbar_streams_are_kept_and_forgotten() {
        let kept = KeptSubjects::default();
        assert!(!kept.covers("plant.x"));
        kept.keep("orders", vec![">".into()]);
        assert!(!kept.covers("plant.x"), "not a busbar stream");
        kept.keep("busbar-durable-log", vec!["plant.>".into()]);
        assert!(kept.covers("plant.x") && !kept.covers("other.x"));
        kept.forget("busbar-durable-log");
        assert!(!kept.covers("plant.x"));
    }
}
