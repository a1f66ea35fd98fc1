//! Generated clients and services, Rust to Rust: on the in-process bus, on Mosquitto (MQTT
//! 5, retained properties), and on Redis, NATS and AMQP (busbar's own mapping, properties
//! read with `_properties`).

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use busbar::Connection;
use busbar_apigear::runtime::ApiError;
use busbar_apigear_testbed::tb_enum::{
    Enum0, Enum1, Enum2, EnumInterface, EnumInterfaceClient, EnumInterfaceService,
};
use busbar_apigear_testbed::tb_simple::{
    SimpleArrayInterface, SimpleArrayInterfaceClient, SimpleInterface, SimpleInterfaceClient,
    SimpleInterfaceProperty, SimpleInterfaceService, SimpleInterfaceSignal, VoidInterface,
    VoidInterfaceClient, VoidInterfaceService,
};
use busbar_apigear_testbed::testbed1::{
    StructBool, StructInt, StructInterface, StructInterfaceClient, StructInterfaceService,
    StructNested, StructString,
};
use busbar_testkit::{BrokerKind, shared_broker};
use common::{DEADLINE, Enums, Simple, Structs, Void, wait_until};

/// A connection per transport there is, each under a prefix of its own (the module's
/// topics are fixed, so runs on a shared broker must not meet); Mosquitto is this test's
/// own, so retained values start empty.
async fn transports(
    test: &str,
) -> (Vec<(String, Connection, Connection)>, Option<busbar_testkit::BrokerProcess>) {
    let run = busbar_testkit::unique_name();
    let mut all = Vec::new();
    let mem = busbar::connect(&format!("mem://{run}")).await.expect("mem");
    all.push(("mem".to_owned(), mem.clone(), mem));
    let mosquitto = common::mosquitto(test).await;
    if let Some(m) = &mosquitto {
        let a = busbar::connect(&m.url()).await.expect("mqtt");
        let b = busbar::connect(&m.url()).await.expect("mqtt");
        all.push(("mqtt".to_owned(), a, b));
        // MQTT 3.1.1 has no response topic: busbar carries it in front of the payload,
        // so busbar peers work there too (ApiGear's own need MQTT 5).
        // Under a prefix of its own: the same broker holds the MQTT 5 run's retained values.
        let v311 = format!("{}?version=3.1.1", m.url());
        let connect = || async {
            busbar::connect(&v311)
                .await
                .expect("mqtt 3.1.1")
                .with_topic_prefix("v311")
                .expect("prefix")
        };
        let (a, b) = (connect().await, connect().await);
        all.push(("mqtt 3.1.1".to_owned(), a, b));
    }
    for kind in [BrokerKind::Redis, BrokerKind::Nats, BrokerKind::Amqp] {
        let Some(broker) = shared_broker(kind).await else { continue };
        let connect = || async {
            busbar::connect(broker.url())
                .await
                .expect("connect")
                .with_topic_prefix(&format!("apigear-{run}"))
                .expect("prefix")
        };
        let (a, b) = (connect().await, connect().await);
        all.push((kind.name().to_owned(), a, b));
    }
    (all, mosquitto)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_interface_works_end_to_end_on_every_transport() {
    let (all, _mosquitto) =
        transports("a_simple_interface_works_end_to_end_on_every_transport").await;
    for (name, service_conn, client_conn) in all {
        let implementation = Arc::new(Simple::with_prop_int(5));
        let service = SimpleInterfaceService::serve(&service_conn, implementation.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: serve: {e}"));
        let client = SimpleInterfaceClient::connect(&client_conn)
            .await
            .unwrap_or_else(|e| panic!("{name}: connect: {e}"));

        // The service's value is in the cache without asking.
        let c = client.clone();
        wait_until(client.changes(), move || c.prop_int(), |v| *v == 5).await;

        // A set goes to the service and comes back as exactly one change.
        let mut changes = client.changes();
        client.set_prop_int(7).await.expect("set");
        let change =
            tokio::time::timeout(DEADLINE, changes.recv()).await.expect("in time").expect("open");
        assert_eq!(change, SimpleInterfaceProperty::PropInt(7), "{name}");
        assert_eq!(implementation.prop_int(), 7, "{name}: the implementation has it");
        client.set_prop_string("héllo".into()).await.expect("set");
        let change =
            tokio::time::timeout(DEADLINE, changes.recv()).await.expect("in time").expect("open");
        assert_eq!(change, SimpleInterfaceProperty::PropString("héllo".into()), "{name}");
        assert!(changes.try_recv().is_err(), "{name}: one change per set");

        // Operations, 100 at once, each answered to its caller.
        assert_eq!(client.func_int(21).await.expect("call"), 42, "{name}");
        assert_eq!(client.func_string("abc".into()).await.expect("call"), "ABC", "{name}");
        assert!(!client.func_bool(true).await.expect("call"), "{name}");
        assert_eq!(client.func_int64(i64::MAX).await.expect("call"), i64::MAX, "{name}: int64");
        common::hundred_calls(&client, |i| i * 2, &name).await;
        client.func_no_return_value(true).await.expect("a void call is answered");
        assert_eq!(implementation.no_return_calls.load(Ordering::Relaxed), 1, "{name}");

        // NaN cannot travel: refused before anything is sent.
        let err = client.func_float64(f64::NAN).await.expect_err("NaN refused");
        assert!(matches!(err, ApiError::Serialization { .. }), "{name}: {err}");

        // Signals.
        let mut signals = client.signals();
        service.notifier().sig_int(3).await.expect("signal");
        service.notifier().sig_string("s".into()).await.expect("signal");
        let got =
            tokio::time::timeout(DEADLINE, signals.recv()).await.expect("in time").expect("open");
        assert_eq!(got, SimpleInterfaceSignal::SigInt { param_int: 3 }, "{name}");
        let got =
            tokio::time::timeout(DEADLINE, signals.recv()).await.expect("in time").expect("open");
        assert_eq!(got, SimpleInterfaceSignal::SigString { param_string: "s".into() }, "{name}");

        // A change the implementation makes on its own, announced by the notifier.
        implementation.props.lock().expect("lock").prop_bool = true;
        service.notifier().prop_bool_changed(&true).await.expect("notify");
        let c = client.clone();
        wait_until(client.changes(), move || c.prop_bool(), |v| *v).await;

        assert_eq!(client.link().pending_calls(), 0, "{name}: nothing left pending");
        drop(service);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn void_operations_readonly_properties_and_deadlines() {
    let (all, _mosquitto) = transports("void_operations_readonly_properties_and_deadlines").await;
    for (name, service_conn, client_conn) in all {
        let void = Arc::new(Void::default());
        let _service =
            VoidInterfaceService::serve(&service_conn, void.clone()).await.expect("serve");
        let client = VoidInterfaceClient::connect(&client_conn).await.expect("connect");
        client.func_void().await.expect("void call");
        assert_eq!(void.calls.load(Ordering::Relaxed), 1, "{name}");
        // Fire and forget: back at once, done all the same.
        let quick = client.clone().without_void_replies();
        quick.func_void().await.expect("sent");
        tokio::time::timeout(DEADLINE, async {
            while void.calls.load(Ordering::Relaxed) < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the fire-and-forget call ran");

        // Nobody serves this one: a client still starts (from defaults), the deadline ends
        // a call, and nothing stays pending.
        let lonely = SimpleArrayInterfaceClient::connect(&client_conn)
            .await
            .expect("a client without a service")
            .with_timeout(Duration::from_millis(300));
        let err = lonely.func_int(vec![1]).await.expect_err("no service");
        assert!(matches!(err, ApiError::Timeout { .. }), "{name}: {err}");
        assert_eq!(lonely.link().pending_calls(), 0, "{name}");
        // A read-only property has a getter and no setter (checked by the compiler).
        assert_eq!(lonely.prop_read_only_string(), "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structs_and_enums_keep_their_wire_form() {
    let (all, _mosquitto) = transports("structs_and_enums_keep_their_wire_form").await;
    for (name, service_conn, client_conn) in all {
        let _s = StructInterfaceService::serve(&service_conn, Arc::new(Structs::default()))
            .await
            .expect("serve");
        let _e = EnumInterfaceService::serve(&service_conn, Arc::new(Enums::default()))
            .await
            .expect("serve");
        let structs = StructInterfaceClient::connect(&client_conn).await.expect("connect");
        let enums = EnumInterfaceClient::connect(&client_conn).await.expect("connect");

        let nested = StructNested {
            field_bool: StructBool { field_bool: true },
            field_ints: vec![StructInt { field_int: 1 }, StructInt { field_int: -2 }],
        };
        let back = structs
            .func_nested(nested.clone(), StructString { field_string: "x".into() })
            .await
            .expect("call");
        assert_eq!(back, nested, "{name}");
        structs.set_prop_bool(StructBool { field_bool: true }).await.expect("set");
        let c = structs.clone();
        wait_until(structs.changes(), move || c.prop_bool(), |v| v.field_bool).await;

        assert_eq!(enums.func0(Enum0::Value2).await.expect("call"), Enum0::Value2, "{name}");
        enums.set_prop1(Enum1::Value3).await.expect("set");
        enums.set_prop2(vec![Enum2::Value6, Enum2::Value0]).await.expect("set");
        let c = enums.clone();
        wait_until(
            enums.changes(),
            move || c.properties(),
            |p| p.prop1 == Enum1::Value3 && p.prop2.len() == 2,
        )
        .await;
        // An empty array is a value like any other here (C++ adapters ignore `[]`).
        enums.set_prop2(Vec::new()).await.expect("set");
        let c = enums.clone();
        wait_until(enums.changes(), move || c.prop2(), |v| v.is_empty()).await;
    }
}

#[test]
fn the_wire_form_of_structs_and_enums() {
    let nested = StructNested {
        field_bool: StructBool { field_bool: true },
        field_ints: vec![StructInt { field_int: 3 }],
    };
    // IDL field names as keys, enums as integers.
    assert_eq!(
        serde_json::to_string(&nested).expect("json"),
        r#"{"fieldBool":{"fieldBool":true},"fieldInts":[{"fieldInt":3}]}"#
    );
    assert_eq!(serde_json::to_string(&Enum2::Value6).expect("json"), "6");
    assert_eq!(serde_json::from_str::<Enum1>("2").expect("an Enum1"), Enum1::Value2);
    let err = serde_json::from_str::<Enum1>("7").expect_err("7 is no Enum1");
    assert!(err.to_string().contains("7 is not a value of Enum1"), "{err}");
    assert_eq!(Enum0::default(), Enum0::Value0);
    assert_eq!(Enum2::from_value(5), Some(Enum2::Value5));
}

/// Parameters named like the generated code's own locals (`link`, `timeout`,
/// `void_replies`, `operation`, `args`) and keywords (`type`, `async`, `loop`) carry the
/// caller's values, not the adapter's.
#[tokio::test]
async fn names_that_meet_the_generated_code_keep_their_values() {
    use busbar_apigear_testbed::tb_names::{T, TClient, TService, TSignal, Type};
    #[derive(Default)]
    struct Names {
        enabled: std::sync::Mutex<Vec<(bool, i32)>>,
    }
    impl T for Names {
        fn clone(&self) -> i32 {
            1
        }
        async fn set_clone(&self, _value: i32) -> Result<(), ApiError> {
            Ok(())
        }
        fn r#type(&self) -> Type {
            Type { r#type: "t".into(), self_: 2 }
        }
        async fn set_type(&self, _value: Type) -> Result<(), ApiError> {
            Ok(())
        }
        fn r#async(&self) -> bool {
            true
        }
        async fn call(
            &self,
            link: i32,
            timeout: i32,
            operation: String,
            args: Vec<i32>,
        ) -> Result<i32, ApiError> {
            Ok(link + timeout + operation.len() as i32 + args.iter().sum::<i32>())
        }
        async fn enable(&self, void_replies: bool, value: i32) -> Result<(), ApiError> {
            self.enabled.lock().expect("lock").push((void_replies, value));
            Ok(())
        }
    }
    let conn =
        busbar::connect(&format!("mem://{}", busbar_testkit::unique_name())).await.expect("mem");
    let names = Arc::new(Names::default());
    let service = TService::serve(&conn, names.clone()).await.expect("serve");
    let client = TClient::connect(&conn).await.expect("client");
    assert_eq!(T::call(&client, 1, 10, "abc".into(), vec![100, 1000]).await.expect("call"), 1114);
    T::enable(&client, false, 7).await.expect("enable");
    assert_eq!(
        *names.enabled.lock().expect("lock"),
        [(false, 7)],
        "the caller's false, not the adapter's setting"
    );
    let mut signals = client.signals();
    service.notifier().r#loop("n".into(), 3).await.expect("signal");
    let got = tokio::time::timeout(DEADLINE, signals.recv()).await.expect("in time").expect("open");
    assert_eq!(got, TSignal::Loop { name: "n".into(), args: 3 });
    // A property named `clone` meets `Clone::clone`: say which one.
    let c = Clone::clone(&client);
    wait_until(client.changes(), move || T::r#type(&c), |t| t.self_ == 2).await;
}

/// What goes wrong reaches the caller as what it is: an implementation's error, an unknown
/// operation, arguments of the wrong type, a set of a read-only property (refused, the value
/// kept); a call given up or cut off by a closed connection leaves nothing pending.
#[tokio::test]
async fn failures_reach_the_caller_and_nothing_stays_pending() {
    use busbar_apigear_testbed::tb_simple::{
        SimpleArrayInterface, SimpleArrayInterfaceService, VoidInterface,
    };
    struct Failing;
    impl VoidInterface for Failing {
        async fn func_void(&self) -> Result<(), ApiError> {
            Err(ApiError::refused("funcVoid", "not today"))
        }
    }
    struct Arrays;
    impl SimpleArrayInterface for Arrays {
        fn prop_int(&self) -> Vec<i32> {
            Vec::new()
        }
        async fn set_prop_int(&self, _value: Vec<i32>) -> Result<(), ApiError> {
            Ok(())
        }
        fn prop_string(&self) -> Vec<String> {
            Vec::new()
        }
        async fn set_prop_string(&self, _value: Vec<String>) -> Result<(), ApiError> {
            Ok(())
        }
        fn prop_read_only_string(&self) -> String {
            "fixed".into()
        }
        async fn func_int(&self, param_int: Vec<i32>) -> Result<Vec<i32>, ApiError> {
            Ok(param_int)
        }
    }
    let conn =
        busbar::connect(&format!("mem://{}", busbar_testkit::unique_name())).await.expect("mem");
    let _void = VoidInterfaceService::serve(&conn, Arc::new(Failing)).await.expect("serve");
    let _arrays = SimpleArrayInterfaceService::serve(&conn, Arc::new(Arrays)).await.expect("serve");
    let void = VoidInterfaceClient::connect(&conn).await.expect("client");
    match void.func_void().await {
        Err(ApiError::Remote { message, .. }) => {
            assert!(message.contains("not today"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let arrays = SimpleArrayInterfaceClient::connect(&conn).await.expect("client");
    let link = arrays.link();
    for (operation, args, says) in [
        ("nope", vec![], "no such operation"),
        ("funcInt", vec![serde_json::json!("not an array of ints")], "invalid type"),
    ] {
        match link.call(operation, args, DEADLINE).await {
            Err(ApiError::Remote { message, .. }) => {
                assert!(message.contains(says), "{operation}: {message}")
            }
            other => panic!("{operation}: {other:?}"),
        }
    }
    // A set of the read-only property is refused; the value published stays.
    let c = arrays.clone();
    wait_until(arrays.changes(), move || c.prop_read_only_string(), |v| v == "fixed").await;
    link.set("propReadOnlyString", serde_json::json!("changed")).await.expect("sent");
    assert_eq!(arrays.func_int(vec![1]).await.expect("a call after the set"), [1]);
    assert_eq!(arrays.prop_read_only_string(), "fixed");

    // Nobody serves this one: a call given up early leaves nothing behind ...
    let lonely_conn =
        busbar::connect(&format!("mem://{}", busbar_testkit::unique_name())).await.expect("mem");
    let lonely = SimpleInterfaceClient::connect(&lonely_conn).await.expect("client");
    let given_up = tokio::time::timeout(Duration::from_millis(50), lonely.func_int(1)).await;
    assert!(given_up.is_err(), "no answer can come");
    assert_eq!(lonely.link().pending_calls(), 0);
    // ... and one cut off by the connection's close ends then, not at its deadline.
    let waiting = {
        let c = lonely.clone();
        tokio::spawn(async move { c.func_int(2).await })
    };
    while lonely.link().pending_calls() == 0 {
        tokio::task::yield_now().await;
    }
    lonely_conn.close().await.expect("close");
    let ended = waiting.await.expect("task");
    assert!(matches!(ended, Err(ApiError::Transport(_))), "{ended:?}");
}

/// On Redis nothing is retained: a client whose connection comes back reads the
/// properties again, and sees what changed while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_retained_values_catches_up_after_a_reconnect() {
    let test = "a_client_without_retained_values_catches_up_after_a_reconnect";
    let Some(mut redis) =
        busbar_testkit::skip_if_missing(test, busbar_testkit::BrokerProcess::redis().await)
    else {
        return;
    };
    let service_conn = busbar::connect(&redis.url()).await.expect("redis");
    let client_conn = busbar::connect(&redis.url()).await.expect("redis");
    let implementation = Arc::new(Simple::with_prop_int(5));
    let _service =
        SimpleInterfaceService::serve(&service_conn, implementation.clone()).await.expect("serve");
    let client = SimpleInterfaceClient::connect(&client_conn).await.expect("client");
    assert_eq!(client.prop_int(), 5, "read from the service on connecting");
    let mut events = client_conn.events();
    redis.stop().await.expect("stop");
    implementation.props.lock().expect("lock").prop_int = 9;
    redis.restart().await.expect("restart");
    busbar_testkit::next_event(&mut events, |e| {
        matches!(e, busbar::ConnectionEvent::Reconnected { .. })
    })
    .await;
    let c = client.clone();
    wait_until(client.changes(), move || c.prop_int(), |v| *v == 9).await;
}
