//! The Kafka topics this connection uses: looked up once, created when missing (if the
//! settings say so), and their partition counts kept for choosing partitions.
//!
//! Kafka brokers differ on creating topics by themselves (Apache Kafka does so for a
//! producer's metadata request when `auto.create.topics.enable` is on; Tansu never does), so
//! busbar creates them explicitly with the Admin API and never relies on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::error::{Common, OpError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::OAuthToken;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;

use crate::context::Context;
use crate::settings::{MissingTopics, Settings};

/// How long one metadata request or topic creation may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a topic is not available.
#[derive(Debug)]
pub(crate) enum TopicFailure {
    /// It does not exist and this connection does not create topics.
    Missing(String),
    /// The broker refused the operation (authorisation, policy, a group still in use).
    Refused(String),
    /// No answer from the cluster.
    Unreachable(String),
}

impl TopicFailure {
    /// The error of an operation of kind `K` for this failure.
    pub(crate) fn into_error<K: Copy + From<Common>>(self, shown: &str) -> OpError<K> {
        match self {
            TopicFailure::Missing(name) => OpError::refused(format!(
                "the Kafka topic {name:?} does not exist, and this connection does not create \
                 topics (create_topics=false)"
            )),
            TopicFailure::Refused(why) => OpError::refused(why),
            TopicFailure::Unreachable(why) => OpError::not_connected(shown, why),
        }
    }
}

/// The topics this connection has seen, and the admin client that looks them up.
pub(crate) struct Topics {
    admin: AdminClient<Context>,
    known: Mutex<HashMap<String, i32>>,
    partitions: i32,
    replication: i32,
    missing: MissingTopics,
}

impl Topics {
    pub(crate) fn new(admin: AdminClient<Context>, settings: &Settings) -> Arc<Topics> {
        Arc::new(Topics {
            admin,
            known: Mutex::default(),
            partitions: settings.partitions,
            replication: settings.replication,
            missing: settings.missing_topics,
        })
    }

    /// Gives the admin client the OAUTHBEARER token to sign in with.
    pub(crate) fn hand_token(&self, token: &OAuthToken) -> Result<(), String> {
        super::oauth::sign_in(self.admin.inner(), token)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, i32>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partition count of `name` if this connection has seen the topic.
    pub(crate) fn cached(&self, name: &str) -> Option<i32> {
        self.known().get(name).copied()
    }

    /// The cluster's metadata for one topic, or for all of them (`None`).
    pub(crate) async fn metadata(
        self: &Arc<Self>,
        topic: Option<String>,
        within: Duration,
    ) -> Result<Metadata, TopicFailure> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.admin.inner().fetch_metadata(topic.as_deref(), within)
        })
        .await
        .map_err(|e| TopicFailure::Unreachable(e.to_string()))?
        .map_err(|e| TopicFailure::Unreachable(format!("no metadata from the cluster: {e}")))
    }

    /// The partition count of `name`, creating the topic first where it is missing and the
    /// settings allow.
    pub(crate) async fn ensure(self: &Arc<Self>, name: &str) -> Result<i32, TopicFailure> {
        if let Some(n) = self.cached(name) {
            return Ok(n);
        }
        if self.missing == MissingTopics::Refuse {
            return self.look_up(name).await?.ok_or_else(|| TopicFailure::Missing(name.to_owned()));
        }
        // Created before it is looked up: some brokers (Tansu, Kafka with
        // `auto.create.topics.enable`) create a topic that a metadata request names, with
        // their own partition count, not the one asked for here.
        self.create_and_wait(name, self.partitions).await
    }

    /// Creates `name` with `partitions` partitions (one that exists already is fine) and
    /// returns its partition count once it has leaders.
    pub(crate) async fn create_and_wait(
        self: &Arc<Self>,
        name: &str,
        partitions: i32,
    ) -> Result<i32, TopicFailure> {
        self.create(name, partitions).await?;
        // The broker answers the creation before every broker knows the topic's leader:
        // wait until the metadata shows it, so the first publish does not stall on it.
        for _ in 0..100 {
            if let Some(n) = self.look_up(name).await? {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(TopicFailure::Unreachable(format!(
            "the Kafka topic {name:?} was created but has no leader yet"
        )))
    }

    /// The topic's partition count from the cluster, `None` when it does not exist.
    async fn look_up(self: &Arc<Self>, name: &str) -> Result<Option<i32>, TopicFailure> {
        let metadata = self.metadata(Some(name.to_owned()), ADMIN_TIMEOUT).await?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) else {
            return Ok(None);
        };
        if topic.error().is_some() || topic.partitions().is_empty() {
            return Ok(None);
        }
        if topic.partitions().iter().any(|p| p.leader() < 0) {
            return Ok(None);
        }
        let n = i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX);
        self.known().insert(name.to_owned(), n);
        Ok(Some(n))
    }

    /// Deletes the consumer group `group` with the positions it committed; one that does
    /// not exist is fine. Refused while the group has members.
    pub(crate) async fn delete_group(&self, group: &str) -> Result<(), TopicFailure> {
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results =
            self.admin.delete_groups(&[group], &options).await.map_err(|e| {
                TopicFailure::Unreachable(format!("deleting a consumer group: {e}"))
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
                Err((name, RDKafkaErrorCode::NonEmptyGroup)) => {
                    return Err(TopicFailure::Refused(format!(
                        "the Kafka consumer group {name:?} still has members (a subscriber in \
                         another process): it can be deleted once they left"
                    )));
                }
                Err((name, code)) => {
                    return Err(TopicFailure::Refused(format!(
                        "the broker refused to delete the Kafka consumer group {name:?}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Creates `name` with `partitions` partitions; one that exists already is fine.
    async fn create(&self, name: &str, partitions: i32) -> Result<(), TopicFailure> {
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(self.replication));
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| TopicFailure::Unreachable(format!("creating topics: {e}")))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(TopicFailure::Refused(format!(
                        "the broker refused to create the Kafka topic {name:?}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }
}
