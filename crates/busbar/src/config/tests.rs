use super::*;
use crate::auth::TokenPlacement;

fn env(name: &str) -> Option<String> {
    match name {
        "MQTT_HOST" => Some("10.1.2.3".into()),
        "AMQP_PASSWORD" => Some("p@ss:word".into()),
        "OIDC_SECRET" => Some("s3cret".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn parse(text: &str) -> std::result::Result<Config, ConfigError> {
    Config::parse(text, "site.yaml", env)
}

const OURS: &str = r#"
# Two brokers, the first by URL, the second by fields.
default: plant
oidc:
  issuer: http://127.0.0.1:8080/realms/plant
  client_id: gateway-7
  client_secret: ${OIDC_SECRET}
  scope: openid
brokers:
  plant:
    url: mqtt://${MQTT_HOST:-127.0.0.1}:1883
    client_id: gw-7
    topic_prefix: /site-a/
  cloud:
    transport: amqp
    host: rabbit.example.com
    port: "5671"
    username: gateway
    password: ${AMQP_PASSWORD}
    vhost: /
    tls:
      ca: /etc/busbar/ca.pem
    token:
      oidc: {scope: amqp}
      as: username
  edge:
    enabled: ${EDGE_ENABLED:-true}
    transport: redis
    host: 127.0.0.1
    database: 2
  static:
    url: nats://127.0.0.1:4222
    enabled: false
    token: {static: abc}
"#;

#[test]
fn brokers_load_by_url_and_by_fields() {
    let config = parse(OURS).expect("loads");
    assert_eq!(config.default_name(), Some("plant"));
    let plant = config.broker(None).expect("default");
    assert_eq!(plant.url(), "mqtt://10.1.2.3:1883");
    assert_eq!(plant.client_id.as_deref(), Some("gw-7"));
    assert_eq!(plant.topic_prefix.as_deref(), Some("site-a"));
    assert!(plant.token.is_none());

    let cloud = config.broker(Some("cloud")).expect("cloud");
    assert_eq!(
        cloud.url(),
        "amqps://gateway:p%40ss%3Aword@rabbit.example.com:5671/%2F?ca=%2Fetc%2Fbusbar%2Fca.pem"
    );
    assert_eq!(
        cloud.redacted_url(),
        "amqps://gateway:***@rabbit.example.com:5671/%2F?ca=%2Fetc%2Fbusbar%2Fca.pem"
    );
    assert_eq!(cloud.placement, TokenPlacement::Username);
    match &cloud.token {
        Some(TokenSource::Oidc { client, scope }) => {
            assert_eq!(client.client_secret, "s3cret");
            assert_eq!(client.scope.as_deref(), Some("openid"));
            assert_eq!(scope.as_deref(), Some("amqp"));
        }
        other => panic!("oidc token expected, got {:?}", other.is_some()),
    }
    // Nothing secret in the debug form.
    let debug = format!("{cloud:?}");
    assert!(!debug.contains("p%40ss") && !debug.contains("s3cret"), "{debug}");

    assert_eq!(config.broker(Some("edge")).expect("edge").url(), "redis://127.0.0.1/2");
    // CELINE's rule: a variable set to the empty string wins over the default.
    let err = parse(&OURS.replace("${EDGE_ENABLED:-true}", "${EMPTY:-true}")).expect_err("empty");
    assert!(err.to_string().contains("\"\" is not a boolean"), "{err}");

    let disabled = config.broker(Some("static")).expect_err("disabled");
    assert!(matches!(disabled, ConfigError::Disabled { .. }), "{disabled}");
    let unknown = config.broker(Some("kafka")).expect_err("unknown");
    assert_eq!(
        unknown.to_string(),
        "site.yaml: no broker named \"kafka\" (it has cloud, edge, plant, static)"
    );
}

#[test]
fn unknown_keys_are_refused_where_they_are() {
    let text = "brokers:\n  plant:\n    url: mqtt://h\n    hots: h\n";
    let err = parse(text).expect_err("unknown key");
    let ConfigError::Invalid { line, message, .. } = &err else { panic!("{err}") };
    assert_eq!(*line, 4, "{err}");
    assert!(message.contains("unknown field `hots`"), "{err}");
    assert!(err.to_string().starts_with("site.yaml:4:"), "{err}");
}

#[test]
fn unset_variables_are_named_with_their_place_when_their_broker_is_used() {
    let text = "brokers:\n  plant:\n    transport: mqtt\n    host: h\n    password: ${MQTT_PASSWORD}\n  local:\n    url: mem://x\n";
    // Another broker of the file does not need the variable.
    let config = parse(text).expect("loads: only `plant` needs MQTT_PASSWORD");
    assert_eq!(config.broker(Some("local")).expect("usable").url(), "mem://x");
    let err = config.broker(Some("plant")).expect_err("unset");
    let text = err.to_string();
    assert!(text.starts_with("site.yaml:5:"), "{text}");
    assert!(text.contains("MQTT_PASSWORD is not set"), "{text}");
    assert!(text.contains("broker \"plant\" needs it"), "{text}");
    // Outside the brokers and the `oidc` section, an unset variable fails the file at once.
    let text = "brokers:\n  local:\n    url: mem://x\nbridges:\n  - {name: b, from: local, to: local, topics: [a], capacity: x}\n";
    parse(text).expect_err("not a number");
    // A malformed reference is the file's fault wherever it is.
    let text = "brokers:\n  plant:\n    url: mqtt://h\n  cache:\n    transport: redis\n    host: h\n    password: ${REDIS\n";
    let err = parse(text).expect_err("unclosed");
    assert!(err.to_string().starts_with("site.yaml:7:"), "{err}");
    // Keys and comments are never expanded.
    let text = "# ${NOT_A_VALUE}\nbrokers:\n  plant:\n    url: mqtt://h\n";
    parse(text).expect("comments are not expanded");
}

#[test]
fn values_of_the_wrong_type_are_refused_where_they_are() {
    let text = "brokers:\n  p:\n    transport: mqtt\n    host: h\n    port: ${MQTT_HOST}\n";
    let err = parse(text).expect_err("not a port");
    assert!(err.to_string().starts_with("site.yaml:5:"), "{err}");
    assert!(err.to_string().contains("not a port number"), "{err}");
    let err = parse("brokers:\n  p:\n    transport: zeromq\n    host: h\n").expect_err("transport");
    assert!(err.to_string().contains("unknown variant `zeromq`"), "{err}");
}

#[test]
fn kafka_brokers_load_by_fields() {
    let text = "brokers:\n  k:\n    transport: kafka\n    host: 10.0.0.5\n    port: 9093\n    \
                username: app\n    password: pw\n    tls:\n      ca: /etc/ca.pem\n";
    let config = parse(text).expect("loads");
    assert_eq!(
        config.broker(Some("k")).expect("k").url(),
        "kafka+tls://app:pw@10.0.0.5:9093?ca=%2Fetc%2Fca.pem"
    );
    let plain = parse("brokers:\n  k:\n    transport: kafka\n    host: h\n").expect("loads");
    assert_eq!(plain.broker(Some("k")).expect("k").url(), "kafka://h");
}

#[test]
fn server_lists_load_by_fields() {
    let text = "brokers:\n  n:\n    transport: nats\n    servers: ['10.0.0.1:4222', \
                '10.0.0.2', '[::1]:4223']\n    server_order: random\n  s:\n    transport: \
                redis\n    servers: ['s1:26379', 's2:26379']\n    sentinel: mymaster\n";
    let config = parse(text).expect("loads");
    assert_eq!(
        config.broker(Some("n")).expect("n").url(),
        "nats://10.0.0.1:4222,10.0.0.2,[::1]:4223?server_order=random"
    );
    assert_eq!(
        config.broker(Some("s")).expect("s").url(),
        "redis://s1:26379,s2:26379?sentinel=mymaster"
    );
}

#[test]
fn inconsistent_entries_are_explained() {
    for (text, expect) in [
        ("brokers:\n  p:\n    url: mqtt://h\n    host: h\n", "`host` goes into the `url`"),
        ("brokers:\n  p:\n    port: 1\n", "give `url`, or `transport` with `host`"),
        ("brokers:\n  p:\n    transport: mqtt\n", "`host` (or `servers`) is missing"),
        (
            "brokers:\n  p:\n    transport: nats\n    host: h\n    servers: [a]\n",
            "`host` (and `port`) or `servers`, not both",
        ),
        (
            "brokers:\n  p:\n    transport: nats\n    servers: [a, 'b:x']\n",
            "`servers` entry 2 (\"b:x\")",
        ),
        (
            "brokers:\n  p:\n    transport: kafka\n    servers: [a]\n    server_order: random\n",
            "`server_order` does not apply to Kafka",
        ),
        (
            "brokers:\n  p:\n    transport: nats\n    servers: [a]\n    sentinel: m\n",
            "`sentinel` applies to redis",
        ),
        ("brokers:\n  p:\n    url: nats://a\n    servers: [b]\n", "`servers` goes into the `url`"),
        (
            "brokers:\n  p:\n    transport: mqtt\n    host: h\n    vhost: v\n",
            "`vhost` applies to amqp",
        ),
        ("brokers:\n  p:\n    url: mqtt://h\n    token: {oidc: {}}\n", "needs the file's `oidc:`"),
        ("brokers:\n  p:\n    url: mqtt://h\n    token: {}\n", "`token` needs `static` or `oidc`"),
        ("brokers:\n  p:\n    url: gopher://h\n", "no transport for gopher://"),
        ("default: q\nbrokers:\n  p:\n    url: mqtt://h\n", "no broker named \"q\""),
        ("brokers:\n  p:\n    url: mqtt://h\n  q:\n    url: mqtt://h\n", ""),
    ] {
        match parse(text) {
            Err(e) => {
                assert!(!expect.is_empty() && e.to_string().contains(expect), "{expect:?}: {e}")
            }
            Ok(c) => {
                assert!(expect.is_empty(), "{expect:?} loaded");
                // Two brokers and no default: naming one is required.
                let err = c.broker(None).expect_err("no default");
                assert!(err.to_string().contains("no default"), "{err}");
            }
        }
    }
}

/// CELINE's shipped `config/brokers.yaml`, unchanged.
const CELINE: &str = r#"
brokers:
  celine_mqtt:
    enabled: true
    auth_with_token: true
    config:
      host: "${MQTT_HOST:-host.docker.internal}"
      port: "${MQTT_PORT:-1883}"
      use_tls: "${MQTT_USE_TLS:-false}"
      keepalive: 60
      clean_session: true
      token_refresh_margin: 30.0
default_broker: celine_mqtt
"#;

#[test]
fn celine_brokers_yaml_loads() {
    let celine_env = |name: &str| match name {
        "CELINE_OIDC_BASE_URL" => Some("http://127.0.0.1:9/realms/celine".to_owned()),
        "CELINE_OIDC_CLIENT_ID" => Some("dt".to_owned()),
        "CELINE_OIDC_CLIENT_SECRET" => Some("x".to_owned()),
        "CELINE_OIDC_SCOPE" => Some("openid a.events.read".to_owned()),
        other => env(other),
    };
    let config = Config::parse(CELINE, "brokers.yaml", celine_env).expect("loads");
    let broker = config.broker(None).expect("default_broker");
    assert_eq!(broker.name, "celine_mqtt");
    // Token as user name, password `jwt`: CELINE's login.
    assert_eq!(broker.url(), "mqtt://:jwt@10.1.2.3:1883?keep_alive=60");
    assert_eq!(broker.placement, TokenPlacement::Username);
    let Some(TokenSource::Oidc { client, scope }) = &broker.token else { panic!("oidc") };
    assert_eq!(
        (client.issuer.as_str(), client.client_id.as_str()),
        ("http://127.0.0.1:9/realms/celine", "dt")
    );
    assert_eq!(client.scope.as_deref(), Some("openid a.events.read"));
    assert_eq!(scope.as_deref(), Some("mqtt"));

    // The variables CELINE's documentation names (`OIDC_*`) do as well.
    let documented_env = |name: &str| match name {
        "OIDC_BASE_URL" => Some("http://127.0.0.1:9/realms/docs".to_owned()),
        "OIDC_CLIENT_ID" => Some("dt-docs".to_owned()),
        "OIDC_CLIENT_SECRET" => Some("y".to_owned()),
        other => env(other),
    };
    let config = Config::parse(CELINE, "brokers.yaml", documented_env).expect("loads");
    let broker = config.broker(None).expect("default_broker");
    let Some(TokenSource::Oidc { client, .. }) = &broker.token else { panic!("oidc") };
    assert_eq!(
        (client.issuer.as_str(), client.client_id.as_str(), client.client_secret.as_str()),
        ("http://127.0.0.1:9/realms/docs", "dt-docs", "y")
    );

    // Without an identity provider, the token login cannot work: said so.
    let err = Config::parse(CELINE, "brokers.yaml", env).expect_err("no provider");
    assert!(err.to_string().contains("CELINE_OIDC_BASE_URL"), "{err}");

    // TLS on, files given, no token.
    let tls = CELINE.replace("auth_with_token: true", "auth_with_token: false").replace(
        "keepalive: 60",
        "keepalive: 60\n      ca_certs: /ca.pem\n      topic_prefix: celine/dt",
    );
    let config = Config::parse(&tls, "brokers.yaml", |n| {
        (n == "MQTT_USE_TLS").then(|| "TRUE".to_owned()).or_else(|| env(n))
    })
    .expect("loads");
    let broker = config.broker(None).expect("default");
    assert_eq!(broker.url(), "mqtts://10.1.2.3:1883?ca=%2Fca.pem&keep_alive=60");
    assert_eq!(broker.topic_prefix.as_deref(), Some("celine/dt"));
    assert!(broker.token.is_none());

    // CELINE's connection settings become the MQTT transport's, so they are honoured.
    let tuned = CELINE.replace("auth_with_token: true", "auth_with_token: false").replace(
        "clean_session: true",
        "clean_session: \"false\"\n      reconnect_interval: 0.5\n      \
         max_reconnect_attempts: \"3\"\n      connect_timeout: 2.5",
    );
    let config = Config::parse(&tuned, "brokers.yaml", env).expect("loads");
    let url = config.broker(None).expect("default").url();
    assert_eq!(
        url,
        "mqtt://10.1.2.3:1883?keep_alive=60&session_expiry=4294967295&reconnect_interval=500ms\
         &connect_timeout=2500ms&max_reconnect_attempts=3"
    );
    let bad = tuned.replace("reconnect_interval: 0.5", "reconnect_interval: -1");
    let err = Config::parse(&bad, "brokers.yaml", env).and_then(|c| c.broker(None).map(drop));
    assert!(err.is_err_and(|e| e.to_string().contains("reconnect_interval")));

    // CELINE's MqttConfig has no `hots` either.
    let err = Config::parse(&CELINE.replace("keepalive:", "keepalivee:"), "brokers.yaml", env)
        .expect_err("unknown");
    assert!(err.to_string().contains("unknown field `keepalivee`"), "{err}");
}

/// The `brokers.yaml` of CELINE's own broker documentation, as written there: `class:` on
/// every broker (the MQTT broker's class is taken), one broker disabled.
const CELINE_DOCUMENTED: &str = r#"
brokers:
  mqtt_local:
    class: celine.dt.core.broker.mqtt:MqttBroker
    enabled: true
    config:
      host: "${MQTT_HOST:-localhost}"
      port: ${MQTT_PORT:-1883}
      topic_prefix: "celine/dt/"
      keepalive: 60
      clean_session: true
  mqtt_secure:
    class: celine.dt.core.broker.mqtt:MqttBroker
    enabled: false
    config:
      host: secure-broker.example.com
      port: 8883
      use_tls: true
      ca_certs: /etc/ssl/certs/ca-certificates.crt
default_broker: mqtt_local
"#;

#[test]
fn celines_documented_brokers_yaml_loads() {
    let config = Config::parse(CELINE_DOCUMENTED, "brokers.yaml", |_| None).expect("loads");
    let broker = config.broker(None).expect("default_broker");
    assert_eq!(broker.name, "mqtt_local");
    assert_eq!(broker.url(), "mqtt://localhost:1883?keep_alive=60");
    assert_eq!(broker.topic_prefix.as_deref(), Some("celine/dt"));
    // The SDK's later module path, and the earlier `jwt_auth` for `auth_with_token`.
    let later = CELINE_DOCUMENTED
        .replace("celine.dt.core.broker.mqtt:MqttBroker", "celine.sdk.broker.mqtt:MqttBroker")
        .replacen("enabled: true", "enabled: true\n    jwt_auth: true", 1);
    let oidc = |name: &str| match name {
        "OIDC_BASE_URL" => Some("http://127.0.0.1:9/realms/celine".to_owned()),
        "OIDC_CLIENT_ID" => Some("dt".to_owned()),
        _ => None,
    };
    let config = Config::parse(&later, "brokers.yaml", oidc).expect("loads");
    let broker = config.broker(None).expect("default_broker");
    assert_eq!(broker.placement, TokenPlacement::Username, "jwt_auth logs in with the token");
    assert!(matches!(broker.token, Some(TokenSource::Oidc { .. })));
    let both = later.replacen("jwt_auth: true", "jwt_auth: true\n    auth_with_token: true", 1);
    let err = Config::parse(&both, "brokers.yaml", oidc).expect_err("both names");
    assert!(err.to_string().contains("old name of `auth_with_token`"), "{err}");

    // The documentation's own example of a broker of another kind: a Python class busbar
    // cannot load, refused with what to write instead.
    let kafka = "brokers:\n  kafka:\n    class: mymodule.kafka:KafkaBroker\n    config:\n      \
                 host: kafka\n";
    let err = Config::parse(kafka, "brokers.yaml", |_| None).expect_err("a Python class");
    let text = err.to_string();
    assert!(text.contains("mymodule.kafka:KafkaBroker") && text.contains("kafka://"), "{text}");
    // A class without CELINE's settings.
    let bare = "brokers:\n  m:\n    class: celine.sdk.broker.mqtt:MqttBroker\n    url: mqtt://h\n";
    let err = Config::parse(bare, "brokers.yaml", |_| None).expect_err("no config");
    assert!(err.to_string().contains("settings go in `config`"), "{err}");
}

/// The JSON Schema shipped in `docs/` is the one the file's types describe. After a change
/// to them, run with `BUSBAR_BLESS=1` to write the new schema.
#[test]
fn the_shipped_json_schema_is_current() {
    let schema = schemars::schema_for!(file::File);
    let text = serde_json::to_string_pretty(&schema).expect("schema") + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/busbar-config.schema.json");
    if std::env::var_os("BUSBAR_BLESS").is_some() {
        std::fs::write(&path, &text).expect("write the schema");
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == text,
        "docs/busbar-config.schema.json is out of date: run `BUSBAR_BLESS=1 cargo test -p busbar \
         the_shipped_json_schema_is_current` and commit it"
    );
}

#[test]
fn the_example_file_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/busbar.example.yaml");
    let config =
        Config::parse(&std::fs::read_to_string(&path).expect("the example file"), &path, |name| {
            (name == "OIDC_CLIENT_SECRET" || name == "REDIS_PASSWORD").then(|| "x".to_owned())
        })
        .expect("the example loads");
    assert!(config.broker(None).is_ok());
    // Without the secrets, the brokers that do not need them still work.
    let config =
        Config::parse(&std::fs::read_to_string(&path).expect("the example file"), &path, |_| None)
            .expect("the example loads without its secrets");
    assert!(config.broker(None).is_ok(), "the default broker needs no secret");
    assert!(config.broker(Some("plant")).is_ok());
    let err = config.broker(Some("cache")).expect_err("REDIS_PASSWORD").to_string();
    assert!(err.contains("REDIS_PASSWORD is not set"), "{err}");
    let err = config.broker(Some("cloud")).expect_err("OIDC_CLIENT_SECRET").to_string();
    assert!(err.contains("OIDC_CLIENT_SECRET is not set"), "{err}");
    assert!(err.contains("`oidc` section"), "{err}");
    assert!(config.bridges().iter().all(|b| !b.name.is_empty()));
}

#[test]
fn bridges_are_checked_against_the_brokers() {
    let base = "brokers:\n  edge:\n    url: mem://edge\n  cloud:\n    url: mqtt://127.0.0.1\n";
    let ok = format!(
        "{base}bridges:\n  - name: up\n    from: edge\n    to: cloud\n    topics: [\"sensors/#\"]\n    rewrite: {{add_prefix: site-a}}\n    two_way: true\n    overflow: drop-oldest\n    rpc: [{{topic: svc/add, target: cloud/add, timeout: 2}}]\n"
    );
    let config = parse(&ok).expect("loads");
    let spec = &config.bridges()[0];
    assert_eq!((spec.from.as_str(), spec.to.as_str(), spec.two_way), ("edge", "cloud", true));
    assert_eq!(spec.overflow, crate::Overflow::DropOldest);
    assert_eq!(
        spec.rpc[0],
        ("svc/add".into(), "cloud/add".into(), std::time::Duration::from_secs(2))
    );
    for (bridge, expect) in [
        ("  - {name: b, from: edge, to: nowhere, topics: [a]}", "no broker named \"nowhere\""),
        ("  - {name: b, from: edge, to: cloud}", "nothing to carry"),
        (
            "  - {name: b, from: edge, to: cloud, topics: [\"a/+\"], rewrite: {template: \"x/{2}\"}}",
            "capture",
        ),
        (
            "  - {name: b, from: edge, to: cloud, topics: [a], two_way: true, rewrite: {template: x}}",
            "cannot be undone",
        ),
        ("  - {name: b, from: edge, to: cloud, topics: [a], overflow: sometimes}", "none of block"),
        (
            "  - {name: b, from: edge, to: cloud, topics: [a], durable: d, overflow: drop-newest}",
            "must be block",
        ),
        ("  - {name: b, from: edge, to: cloud, topics: [a], rewrite: {}}", "exactly one of"),
        (
            "  - {name: b, from: edge, to: cloud, topics: [a], colour: red}",
            "unknown field `colour`",
        ),
    ] {
        let err = parse(&format!("{base}bridges:\n{bridge}\n")).expect_err(expect);
        assert!(err.to_string().contains(expect), "{expect}: {err}");
    }
}

/// A durable bridge's subscriptions: the name itself for one topic one way, else a tag per
/// filter and direction that does not depend on the order of the topics.
#[test]
fn durable_bridges_name_each_subscription() {
    let base = "brokers:\n  edge: {url: mem://d-edge}\n  cloud: {url: mem://d-cloud}\nbridges:\n";
    let one =
        parse(&format!("{base}  - {{name: b, from: edge, to: cloud, topics: [a], durable: up}}\n"))
            .expect("loads");
    assert_eq!(one.bridges()[0].durable_name("a", false).as_deref(), Some("up"));
    let two = |topics: &str| {
        let text = format!(
            "{base}  - {{name: b, from: edge, to: cloud, topics: [{topics}], durable: up, two_way: true}}\n"
        );
        parse(&text).expect("loads").bridges()[0].clone()
    };
    let (ab, ba) = (two("a, b"), two("b, a"));
    let there = ab.durable_name("a", false).expect("named");
    assert!(there.starts_with("up-") && there.len() == "up-".len() + 8, "{there}");
    assert_eq!(Some(there.clone()), ba.durable_name("a", false), "order of topics matters not");
    assert_ne!(Some(there.clone()), ab.durable_name("a", true), "each direction its own");
    assert_ne!(Some(there), ab.durable_name("b", false), "each filter its own");
    assert_eq!(
        parse(&format!("{base}  - {{name: b, from: edge, to: cloud, topics: [a]}}\n"))
            .expect("loads")
            .bridges()[0]
            .durable_name("a", false),
        None
    );
}

#[tokio::test]
async fn bridges_start_from_the_file() {
    let text = "brokers:\n  a:\n    url: mem://cfg-bridge-a\n  b:\n    url: mem://cfg-bridge-b\nbridges:\n  - {name: ab, from: a, to: b, topics: [\"t/#\"], rewrite: {add_prefix: from-a}}\n";
    let config = parse(text).expect("loads");
    let running = config.start_bridges().await.expect("started");
    assert_eq!(running.len(), 1);
    let b = config.connect(Some("b")).await.expect("b");
    let mut sub = b.subscribe("from-a/t/#").await.expect("subscribe");
    let a = config.connect(Some("a")).await.expect("a");
    a.publish_bytes("t/1", &b"x"[..]).await.expect("publish");
    let m = sub.recv().await.expect("crossed");
    assert_eq!(m.topic.as_str(), "from-a/t/1");
}

/// A configuration nested 100,000 levels deep once took 22 s to refuse; the depth is now
/// refused before the parser starts, naming the bound.
#[test]
fn documents_past_the_limits_are_refused_at_once() {
    let deep = format!("brokers: {}{}\n", "{a: ".repeat(100_000), "}".repeat(100_000));
    let Err(err) = parse(&deep) else { panic!("a document too deep was read") };
    assert!(err.to_string().contains("levels deep; at most 100"), "{err}");
    let dashes = format!("brokers:\n{}x\n", "- ".repeat(100_000));
    assert!(parse(&dashes).is_err());
}
