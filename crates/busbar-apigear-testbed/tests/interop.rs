//! Generated Rust adapters against the Python reference peer (paho-mqtt 2.2.0, written from
//! the protocol notes), on a Mosquitto of each test's own: a Rust client with a Python
//! service, a Rust service with Python clients, in the Python adapters' style and the C++
//! adapters' (decimal correlation data, no replies to void operations).

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use busbar_apigear::runtime::ApiError;
use busbar_apigear_testbed::tb_enum::{
    Enum0, EnumInterface, EnumInterfaceClient, EnumInterfaceService,
};
use busbar_apigear_testbed::tb_simple::{
    SimpleInterface, SimpleInterfaceClient, SimpleInterfaceProperty, SimpleInterfaceService,
    SimpleInterfaceSignal, VoidInterface, VoidInterfaceClient, VoidInterfaceService,
};
use busbar_apigear_testbed::testbed1::{
    StructBool, StructInterface, StructInterfaceClient, StructInterfaceService,
};
use common::{DEADLINE, Enums, Simple, Structs, Void, ask, event, wait_until};
use serde_json::{Value, json};

const SIMPLE: &str = "tb.simple/SimpleInterface";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_client_uses_a_python_service() {
    let Some(broker) = common::mosquitto("a_rust_client_uses_a_python_service").await else {
        return;
    };
    let Some(python) = common::python() else { return };
    let mut service = common::peer(&python, &broker, "service", "py-service", "python").await;
    let mut events = Vec::new();
    // The service's value is retained before the client exists.
    let set = json!({"set_local": {"interface": SIMPLE, "prop": "propInt", "value": 5}});
    assert_eq!(ask(&mut service, set, &mut events).await, json!({"done": "set_local"}));

    let conn = busbar::connect(&broker.url()).await.expect("connect");
    let watcher = busbar::connect(&broker.url()).await.expect("connect");
    let mut wire = watcher.subscribe("tb.simple/SimpleInterface/+/propInt").await.expect("watch");
    let client = SimpleInterfaceClient::connect(&conn).await.expect("client");
    let c = client.clone();
    wait_until(client.changes(), move || c.prop_int(), |v| *v == 5).await;

    // A set: a plain publish on set/propInt, then the service's retained prop/propInt, and
    // one change on the client.
    let mut changes = client.changes();
    client.set_prop_int(7).await.expect("set");
    let seen = event(&mut service, &mut events, |e| e.get("set").is_some()).await;
    assert_eq!(seen["set"]["value"], 7, "{seen}");
    assert_eq!(seen["set"]["retained"], false, "{seen}");
    let change =
        tokio::time::timeout(DEADLINE, changes.recv()).await.expect("in time").expect("open");
    assert_eq!(change, SimpleInterfaceProperty::PropInt(7));
    let mut on_wire = Vec::new();
    while on_wire.len() < 3 {
        let m = tokio::time::timeout(DEADLINE, wire.recv()).await.expect("in time").expect("open");
        on_wire.push((
            m.topic.as_str().to_owned(),
            String::from_utf8_lossy(&m.payload.to_bytes().expect("bytes")).into_owned(),
        ));
    }
    assert_eq!(
        on_wire,
        [
            ("tb.simple/SimpleInterface/prop/propInt".to_owned(), "5".to_owned()),
            ("tb.simple/SimpleInterface/set/propInt".to_owned(), "7".to_owned()),
            ("tb.simple/SimpleInterface/prop/propInt".to_owned(), "7".to_owned()),
        ]
    );
    // A client that comes later gets 7, retained.
    let late = busbar::connect(&broker.url()).await.expect("connect");
    let mut retained = late.subscribe("tb.simple/SimpleInterface/prop/propInt").await.expect("sub");
    let m = tokio::time::timeout(DEADLINE, retained.recv()).await.expect("in time").expect("open");
    assert!(m.retain, "property values are retained");
    assert!(changes.try_recv().is_err(), "one change for one set");

    // 100 calls at once, each answered to its caller (the service echoes).
    common::hundred_calls(&client, |i| i, "python service").await;
    let seen = event(&mut service, &mut events, |e| e.get("call").is_some()).await;
    let response_topic = seen["call"]["response_topic"].as_str().unwrap_or_default();
    assert_eq!(
        response_topic,
        format!("tb.simple/SimpleInterface/rpc/funcInt/{}/result", client.link().client_id())
    );
    assert_eq!(seen["call"]["correlation_hex"].as_str().map(str::len), Some(64), "{seen}");
    assert_eq!(
        client.func_int64(9_007_199_254_740_993).await.expect("call"),
        9_007_199_254_740_993
    );
    // Python answers void operations with 0.
    client.func_no_return_value(true).await.expect("a void call is answered");

    // Two clients at once: neither sees the other's replies.
    let other = SimpleInterfaceClient::connect(&conn).await.expect("client");
    let (a, b) = tokio::join!(client.func_int(1), other.func_int(2));
    assert_eq!((a.expect("a"), b.expect("b")), (1, 2));

    // Signals from Python.
    let mut signals = client.signals();
    let signal = json!({"signal": {"interface": SIMPLE, "name": "sigInt", "args": [42]}});
    assert_eq!(ask(&mut service, signal, &mut events).await, json!({"done": "signal"}));
    let got = tokio::time::timeout(DEADLINE, signals.recv()).await.expect("in time").expect("open");
    assert_eq!(got, SimpleInterfaceSignal::SigInt { param_int: 42 });

    // Structs and enums, as Python writes them.
    let structs = StructInterfaceClient::connect(&conn).await.expect("client");
    let back = structs.func_bool(StructBool { field_bool: true }).await.expect("call");
    assert_eq!(back, StructBool { field_bool: true });
    let set = json!({"set_local": {"interface": "testbed1/StructInterface", "prop": "propBool", "value": {"fieldBool": true}}});
    ask(&mut service, set, &mut events).await;
    let c = structs.clone();
    wait_until(structs.changes(), move || c.prop_bool(), |v| v.field_bool).await;
    let enums = EnumInterfaceClient::connect(&conn).await.expect("client");
    assert_eq!(enums.func0(Enum0::Value1).await.expect("call"), Enum0::Value1);
    // A value the enum does not have is dropped; the cache keeps the last good one.
    let set =
        json!({"set_local": {"interface": "tb.enum/EnumInterface", "prop": "prop0", "value": 9}});
    ask(&mut service, set, &mut events).await;
    let set =
        json!({"set_local": {"interface": "tb.enum/EnumInterface", "prop": "prop0", "value": 2}});
    ask(&mut service, set, &mut events).await;
    let c = enums.clone();
    wait_until(enums.changes(), move || c.prop0(), |v| *v == Enum0::Value2).await;

    let void = VoidInterfaceClient::connect(&conn).await.expect("client");
    void.func_void().await.expect("answered with 0");
    assert_eq!(client.link().pending_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_use_a_rust_service() {
    let Some(broker) = common::mosquitto("python_clients_use_a_rust_service").await else { return };
    let Some(python) = common::python() else { return };
    let conn = busbar::connect(&broker.url()).await.expect("connect");
    let implementation = Arc::new(Simple::with_prop_int(5));
    let service =
        SimpleInterfaceService::serve(&conn, implementation.clone()).await.expect("serve");
    let void = Arc::new(Void::default());
    let _void_service = VoidInterfaceService::serve(&conn, void.clone()).await.expect("serve");
    let _structs =
        StructInterfaceService::serve(&conn, Arc::new(Structs::default())).await.expect("serve");
    let _enums =
        EnumInterfaceService::serve(&conn, Arc::new(Enums::default())).await.expect("serve");

    for style in ["python", "cpp"] {
        let mut client =
            common::peer(&python, &broker, "client", &format!("py-client-{style}"), style).await;
        let mut events = Vec::new();
        // The retained values reach the Python client on subscribing.
        event(&mut client, &mut events, |e| {
            e["prop"]["topic"] == "tb.simple/SimpleInterface/prop/propInt"
        })
        .await;

        let call = |op: &str, args: Value| json!({"call": {"interface": SIMPLE, "op": op, "args": args, "timeout": 10}});
        let answer = ask(&mut client, call("funcInt", json!([21])), &mut events).await;
        assert_eq!(answer["reply"], 42, "{style}: {answer}");
        let expected_correlation = if style == "python" { Some("00".to_owned()) } else { None };
        if let Some(hex) = expected_correlation {
            // Python's one-byte id, echoed byte for byte on the `b'...'` response topic.
            assert_eq!(answer["correlation_hex"], hex.as_str(), "{answer}");
        } else {
            // C++'s decimal text, echoed byte for byte.
            let hex = answer["correlation_hex"].as_str().unwrap_or_default();
            let text = (0..hex.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
                .map(char::from)
                .collect::<String>();
            assert!(text.parse::<u32>().is_ok(), "{style}: {text:?}");
        }
        let answer = ask(&mut client, call("funcString", json!(["abc"])), &mut events).await;
        assert_eq!(answer["reply"], "ABC", "{style}");

        // Void operations: the Python client waits for a reply and gets one; the C++ one
        // sends and goes on, and the call runs all the same.
        let before = implementation.no_return_calls.load(Ordering::Relaxed);
        let answer = ask(&mut client, call("funcNoReturnValue", json!([true])), &mut events).await;
        assert!(answer.get("timeout").is_none(), "{style}: {answer}");
        tokio::time::timeout(DEADLINE, async {
            while implementation.no_return_calls.load(Ordering::Relaxed) == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the void call ran");
        let answer = ask(&mut client, json!({"call": {"interface": "tb.simple/VoidInterface", "op": "funcVoid", "args": [], "timeout": 10}}), &mut events).await;
        assert!(answer.get("timeout").is_none(), "{style}: {answer}");

        // 100 at once, each matched by the Python client's own ids.
        let args: Vec<Value> = (0..100).map(|i| json!([i])).collect();
        let answer = ask(&mut client, json!({"calls": {"interface": SIMPLE, "op": "funcInt", "args_list": args, "timeout": 10}}), &mut events).await;
        let expected: Vec<Value> = (0..100).map(|i| json!(i * 2)).collect();
        assert_eq!(answer["replies"], json!(expected), "{style}");
        assert_eq!(answer["timeouts"], 0, "{style}");

        // A set from Python reaches the implementation and comes back retained.
        let value = if style == "python" { 9 } else { 11 };
        let answer = ask(
            &mut client,
            json!({"set": {"interface": SIMPLE, "prop": "propInt", "value": value}}),
            &mut events,
        )
        .await;
        assert_eq!(answer["sent"], true, "{style}: {answer}");
        let back = event(&mut client, &mut events, |e| {
            e["prop"]["topic"] == "tb.simple/SimpleInterface/prop/propInt"
                && e["prop"]["value"] == value
        })
        .await;
        assert_eq!(back["prop"]["value"], value);
        assert_eq!(implementation.prop_int(), value);

        // Signals from Rust, as arrays.
        service.notifier().sig_bool(true).await.expect("signal");
        let sig = event(&mut client, &mut events, |e| e.get("sig").is_some()).await;
        assert_eq!(
            sig["sig"],
            json!({"topic": "tb.simple/SimpleInterface/sig/sigBool", "args": [true]}),
            "{style}"
        );

        // Structs and enums as Python and C++ write them.
        let answer = ask(&mut client, json!({"call": {"interface": "testbed1/StructInterface", "op": "funcBool", "args": [{"fieldBool": true}], "timeout": 10}}), &mut events).await;
        assert_eq!(answer["reply"], json!({"fieldBool": true}), "{style}");
        let answer = ask(&mut client, json!({"call": {"interface": "tb.enum/EnumInterface", "op": "func0", "args": [2], "timeout": 10}}), &mut events).await;
        assert_eq!(answer["reply"], 2, "{style}");
        let answer = ask(&mut client, json!({"call": {"interface": "tb.enum/EnumInterface", "op": "func0", "args": [7], "timeout": 3}}), &mut events).await;
        // 7 is no Enum0: the service refuses the call (an error reply, which an ApiGear
        // peer cannot read as a result) rather than making a value up.
        assert_ne!(answer["reply"], 7, "{style}: {answer}");
    }
    assert!(void.calls.load(Ordering::Relaxed) >= 2);
}

/// A C++-style service sends no reply to void operations: a Rust client that waits for one
/// ends at its deadline with nothing left pending; one set for fire-and-forget returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn void_calls_to_a_cpp_style_service() {
    let Some(broker) = common::mosquitto("void_calls_to_a_cpp_style_service").await else { return };
    let Some(python) = common::python() else { return };
    let _service = common::peer(&python, &broker, "service", "cpp-service", "cpp").await;
    let conn = busbar::connect(&broker.url()).await.expect("connect");
    let client = VoidInterfaceClient::connect(&conn).await.expect("client");
    let waiting = client.clone().with_timeout(Duration::from_millis(500));
    let err = waiting.func_void().await.expect_err("no reply comes");
    assert!(matches!(err, ApiError::Timeout { .. }), "{err}");
    assert_eq!(waiting.link().pending_calls(), 0);
    client.clone().without_void_replies().func_void().await.expect("sent");
    // Operations with results are answered by C++ services as by any other.
    let simple = SimpleInterfaceClient::connect(&conn).await.expect("client");
    assert_eq!(simple.func_int(5).await.expect("answered"), 5);
}

/// The broker restarts with nothing kept: the Rust service publishes its properties again,
/// Rust and Python clients get them back, no change is announced for a value that did not
/// change, and a change made while the broker was away arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_comes_back_after_a_broker_restart() {
    let Some(mut broker) = common::mosquitto("state_comes_back_after_a_broker_restart").await
    else {
        return;
    };
    let Some(python) = common::python() else { return };
    let service_conn = busbar::connect(&broker.url()).await.expect("connect");
    let client_conn = busbar::connect(&broker.url()).await.expect("connect");
    let implementation = Arc::new(Simple::with_prop_int(5));
    let service =
        SimpleInterfaceService::serve(&service_conn, implementation.clone()).await.expect("serve");
    let client = SimpleInterfaceClient::connect(&client_conn).await.expect("client");
    let c = client.clone();
    wait_until(client.changes(), move || c.prop_int(), |v| *v == 5).await;
    let mut py = common::peer(&python, &broker, "client", "py-restart", "python").await;
    let mut events = Vec::new();
    event(&mut py, &mut events, |e| e["prop"]["topic"] == "tb.simple/SimpleInterface/prop/propInt")
        .await;

    let mut changes = client.changes();
    let (mut service_events, mut client_events) = (service_conn.events(), client_conn.events());
    broker.stop().await.expect("stop");
    // The implementation changes a value while the broker is away.
    implementation.props.lock().expect("lock").prop_string = "while away".into();
    broker.restart().await.expect("restart");
    busbar_testkit::next_event(&mut service_events, |e| {
        matches!(e, busbar::ConnectionEvent::Reconnected { .. })
    })
    .await;
    busbar_testkit::next_event(&mut client_events, |e| {
        matches!(e, busbar::ConnectionEvent::Reconnected { .. })
    })
    .await;
    let c = client.clone();
    wait_until(client.changes(), move || c.prop_string(), |v| v == "while away").await;
    assert_eq!(client.prop_int(), 5);
    // Only the value that changed is announced.
    let change =
        tokio::time::timeout(DEADLINE, changes.recv()).await.expect("in time").expect("open");
    assert_eq!(change, SimpleInterfaceProperty::PropString("while away".into()));
    assert!(
        changes.try_recv().is_err(),
        "an unchanged value is no change: {:?}",
        changes.try_recv()
    );
    // The Python client is back too: it hears the republished values and can call.
    event(&mut py, &mut events, |e| e.get("reconnected").is_some()).await;
    event(&mut py, &mut events, |e| e["prop"]["value"] == "while away").await;
    let answer = ask(
        &mut py,
        json!({"call": {"interface": SIMPLE, "op": "funcInt", "args": [4], "timeout": 10}}),
        &mut events,
    )
    .await;
    assert_eq!(answer["reply"], 8);
    client.set_prop_int(6).await.expect("set after the restart");
    let c = client.clone();
    wait_until(client.changes(), move || c.prop_int(), |v| *v == 6).await;
    drop(service);
}
