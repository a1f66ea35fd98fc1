//! What every transport says the same way about durable subscriptions.

use busbar_core::error::{OpError, SubscribeError, SubscribeErrorKind};
use busbar_core::topic::TopicFilter;

/// The refusal of removing the durable subscription `name` of `filter` while a
/// subscription of this connection still reads it: removing it under the reader would end
/// that reader's stream without a word (or, where the broker recreates it on the next read,
/// not remove it at all).
pub fn in_use(name: &str, filter: &TopicFilter) -> SubscribeError {
    OpError::new(
        SubscribeErrorKind::InvalidFilter,
        format!(
            "the durable subscription {name:?} of {} is in use on this connection: drop its \
             subscription first",
            filter.as_str()
        ),
    )
}
