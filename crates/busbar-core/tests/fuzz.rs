//! Fuzz targets for what busbar-core reads off the wire or from users: topic and filter
//! names in busbar's spelling and in each broker's, payload codecs, and the document limits
//! every configuration and module file passes first. Each must answer every input with a
//! value or an error, never a panic (see `busbar_testkit::fuzz`).

use busbar_core::topic::{
    Topic, TopicFilter, TopicTrie, topic_from_amqp, topic_from_kafka, topic_from_mqtt,
    topic_from_nats, topic_from_redis,
};
use busbar_core::{Codec, limits};
use busbar_testkit::fuzz::Fuzz;

fn corpus(name: &str) -> String {
    format!("{}/fuzz/corpus/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn fuzz_topics() {
    Fuzz::new("core_topics", corpus("topics"))
        .dictionary(&["/", "+", "#", ".", "*", ">", "_busbar/", "_2e_", "%2F", "$share/g/"])
        .run(|input| {
            let text = String::from_utf8_lossy(input);
            let topic = Topic::new(&*text);
            let filter = TopicFilter::new(&*text);
            for parse in [
                topic_from_mqtt,
                topic_from_nats,
                topic_from_amqp,
                topic_from_redis,
                topic_from_kafka,
            ] {
                if let Ok(t) = parse(&text) {
                    // What a broker name turned into is a topic busbar can use.
                    assert!(Topic::new(t.as_str()).is_ok(), "{text:?} became {t:?}");
                }
            }
            if let Ok(filter) = filter {
                let mut trie = TopicTrie::new();
                trie.insert(&filter, ());
                let by_trie = topic.as_ref().map(|t| {
                    let mut hits = 0;
                    trie.for_each_match(t.as_str(), |_| hits += 1);
                    hits == 1
                });
                if let (Ok(t), Ok(hit)) = (&topic, by_trie) {
                    // The trie and the filter agree on whether a name matches.
                    assert_eq!(filter.matches(t), hit, "{filter:?} on {t:?}");
                }
            }
        });
}

#[test]
fn fuzz_codecs() {
    Fuzz::new("core_codecs", corpus("codecs")).dictionary(&["null", "[", "{\"", "1e999"]).run(
        |input| {
            let _ = Codec::Json.decode::<serde_json::Value>(input, "fuzz");
            let _ = Codec::MsgPack.decode::<serde_json::Value>(input, "fuzz");
            let _ = Codec::Json.decode::<(String, Vec<f64>, Option<bool>)>(input, "fuzz");
            if let Ok(text) = std::str::from_utf8(input) {
                let _ = limits::check_document(text);
                let _ = limits::check_name(text);
            }
        },
    );
}
