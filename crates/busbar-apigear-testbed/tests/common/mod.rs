//! What the testbed's tests share: implementations of the test interfaces, brokers, the
//! Python reference peer, and waiting on a client's cache.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use busbar_apigear::runtime::ApiError;
use busbar_apigear_testbed::tb_enum::{Enum0, EnumInterface, EnumInterfaceProperties};
use busbar_apigear_testbed::tb_simple::{
    SimpleInterface, SimpleInterfaceProperties, VoidInterface,
};
use busbar_apigear_testbed::testbed1::{
    StructBool, StructInterface, StructInterfaceProperties, StructNested, StructString,
};
use busbar_testkit::peer::Peer;
use busbar_testkit::{BrokerProcess, MosquittoConfig};
use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// `SimpleInterface`: properties stored, `funcInt` doubles, `funcString` upper-cases,
/// `funcBool` negates, the 64-bit and float operations echo, `funcNoReturnValue` counts.
#[derive(Default)]
pub struct Simple {
    pub props: Mutex<SimpleInterfaceProperties>,
    pub no_return_calls: AtomicU64,
}

impl Simple {
    pub fn with_prop_int(value: i32) -> Self {
        let s = Simple::default();
        s.props.lock().expect("lock").prop_int = value;
        s
    }

    fn get<T>(&self, f: impl FnOnce(&SimpleInterfaceProperties) -> T) -> T {
        f(&self.props.lock().expect("lock"))
    }

    fn put(
        &self,
        f: impl FnOnce(&mut SimpleInterfaceProperties),
    ) -> std::future::Ready<Result<(), ApiError>> {
        f(&mut self.props.lock().expect("lock"));
        std::future::ready(Ok(()))
    }
}

impl SimpleInterface for Simple {
    fn prop_bool(&self) -> bool {
        self.get(|p| p.prop_bool)
    }
    fn set_prop_bool(&self, v: bool) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.put(|p| p.prop_bool = v)
    }
    fn prop_int(&self) -> i32 {
        self.get(|p| p.prop_int)
    }
    fn set_prop_int(&self, v: i32) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.put(|p| p.prop_int = v)
    }
    fn prop_int32(&self) -> i32 {
        self.get(|p| p.prop_int32)
    }
    fn set_prop_int32(&self, v: i32) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.put(|p| p.prop_int32 = v)
    }
    fn prop_int64(&self) -> i64 {
        self.get(|p| p.prop_int64)
    }
    fn set_prop_int64(&self, v: i64) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.put(|p| p.prop_int64 = v)
    }
    fn prop_float(&self) -> f32 {
        self.get(|p| p.prop_float)
    }
    fn set_prop_float(&self, v: f32) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.put(|p| p.prop_float = v)
    }
    fn prop_float32(&self) -> f32 {
        self.get(|p| p.prop_float32)
    }
    fn set_prop_float32(&self, v: f32) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.put(|p| p.prop_float32 = v)
    }
    fn prop_float64(&self) -> f64 {
        self.get(|p| p.prop_float64)
    }
    fn set_prop_float64(&self, v: f64) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.put(|p| p.prop_float64 = v)
    }
    fn prop_string(&self) -> String {
        self.get(|p| p.prop_string.clone())
    }
    fn set_prop_string(&self, v: String) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.put(|p| p.prop_string = v)
    }

    async fn func_no_return_value(&self, _param_bool: bool) -> Result<(), ApiError> {
        self.no_return_calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn func_bool(&self, param_bool: bool) -> Result<bool, ApiError> {
        Ok(!param_bool)
    }
    async fn func_int(&self, param_int: i32) -> Result<i32, ApiError> {
        Ok(param_int * 2)
    }
    async fn func_int64(&self, param_int64: i64) -> Result<i64, ApiError> {
        Ok(param_int64)
    }
    async fn func_float64(&self, param_float: f64) -> Result<f64, ApiError> {
        Ok(param_float)
    }
    async fn func_string(&self, param_string: String) -> Result<String, ApiError> {
        Ok(param_string.to_uppercase())
    }
}

/// `VoidInterface`: counts its calls.
#[derive(Default)]
pub struct Void {
    pub calls: AtomicU64,
}

impl VoidInterface for Void {
    async fn func_void(&self) -> Result<(), ApiError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// `StructInterface`: properties stored, operations echo.
#[derive(Default)]
pub struct Structs {
    pub props: Mutex<StructInterfaceProperties>,
}

impl StructInterface for Structs {
    fn prop_bool(&self) -> StructBool {
        self.props.lock().expect("lock").prop_bool.clone()
    }
    async fn set_prop_bool(&self, value: StructBool) -> Result<(), ApiError> {
        self.props.lock().expect("lock").prop_bool = value;
        Ok(())
    }
    fn prop_nested(&self) -> StructNested {
        self.props.lock().expect("lock").prop_nested.clone()
    }
    async fn set_prop_nested(&self, value: StructNested) -> Result<(), ApiError> {
        self.props.lock().expect("lock").prop_nested = value;
        Ok(())
    }
    async fn func_bool(&self, param_bool: StructBool) -> Result<StructBool, ApiError> {
        Ok(param_bool)
    }
    async fn func_nested(
        &self,
        param_nested: StructNested,
        _param_string: StructString,
    ) -> Result<StructNested, ApiError> {
        Ok(param_nested)
    }
}

/// `EnumInterface`: properties stored, `func0` echoes.
#[derive(Default)]
pub struct Enums {
    pub props: Mutex<EnumInterfaceProperties>,
}

impl EnumInterface for Enums {
    fn prop0(&self) -> Enum0 {
        self.props.lock().expect("lock").prop0
    }
    async fn set_prop0(&self, value: Enum0) -> Result<(), ApiError> {
        self.props.lock().expect("lock").prop0 = value;
        Ok(())
    }
    fn prop1(&self) -> busbar_apigear_testbed::tb_enum::Enum1 {
        self.props.lock().expect("lock").prop1
    }
    async fn set_prop1(
        &self,
        value: busbar_apigear_testbed::tb_enum::Enum1,
    ) -> Result<(), ApiError> {
        self.props.lock().expect("lock").prop1 = value;
        Ok(())
    }
    fn prop2(&self) -> Vec<busbar_apigear_testbed::tb_enum::Enum2> {
        self.props.lock().expect("lock").prop2.clone()
    }
    async fn set_prop2(
        &self,
        value: Vec<busbar_apigear_testbed::tb_enum::Enum2>,
    ) -> Result<(), ApiError> {
        self.props.lock().expect("lock").prop2 = value;
        Ok(())
    }
    async fn func0(&self, param0: Enum0) -> Result<Enum0, ApiError> {
        Ok(param0)
    }
}

/// Calls `funcInt(i)` for i in 0..100 all at once; each answer must be `expected(i)`,
/// delivered to its own caller.
pub async fn hundred_calls(
    client: &busbar_apigear_testbed::tb_simple::SimpleInterfaceClient,
    expected: fn(i32) -> i32,
    what: &str,
) {
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { (i, c.func_int(i).await) })
        })
        .collect();
    for call in calls {
        let (i, answer) = call.await.expect("task");
        assert_eq!(answer.expect("answered"), expected(i), "{what}: call {i}");
    }
}

/// A Mosquitto of this test's own: the test modules' topics are fixed, so their retained
/// values must not meet another test's.
pub async fn mosquitto(test: &str) -> Option<BrokerProcess> {
    busbar_testkit::skip_if_missing(test, BrokerProcess::mosquitto(MosquittoConfig::new()).await)
}

/// Waits until `done` holds for what `read` returns, re-checking on every change.
pub async fn wait_until<C: Clone, T>(
    mut changes: busbar_apigear::runtime::Receiver<C>,
    read: impl Fn() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let now = read();
            if done(&now) {
                return now;
            }
            let _ = changes.recv().await;
        }
    })
    .await
    .expect("the cache reached the value in time")
}

/// The test modules, for the peer.
pub fn module_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../busbar-apigear/tests/modules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("modules")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The Python with paho-mqtt for the reference peer (`scripts/test-all` makes it).
pub fn python() -> Option<PathBuf> {
    busbar_testkit::peer::python("apigear interop", "BUSBAR_APIGEAR_PYTHON", "apigear-venv")
}

/// Starts the reference peer as `role` (`service` or `client`) in `style` (`python` or `cpp`).
pub async fn peer(
    python: &Path,
    broker: &BrokerProcess,
    role: &str,
    id: &str,
    style: &str,
) -> Peer {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../busbar-apigear/tests/peer/apigear_peer.py");
    let mut args = vec![
        script.display().to_string(),
        "127.0.0.1".to_owned(),
        broker.port().to_string(),
        role.to_owned(),
        id.to_owned(),
    ];
    args.extend(module_files().iter().map(|p| p.display().to_string()));
    args.extend(["--style".to_owned(), style.to_owned()]);
    Peer::start(python, &args, &[]).await
}

/// Sends `command` and returns its answer; events that come first are kept in `events`.
pub async fn ask(peer: &mut Peer, command: Value, events: &mut Vec<Value>) -> Value {
    peer.send(&command).await;
    loop {
        let line = peer.next().await;
        let is_event = ["prop", "sig", "set", "call", "reconnected", "unmatched_reply"]
            .iter()
            .any(|k| line.get(k).is_some());
        if is_event {
            events.push(line);
        } else {
            return line;
        }
    }
}

/// Reads peer lines until one satisfies `wanted`, keeping the others in `events`.
pub async fn event(
    peer: &mut Peer,
    events: &mut Vec<Value>,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(at) = events.iter().position(&wanted) {
        return events.remove(at);
    }
    loop {
        let line = peer.next().await;
        if wanted(&line) {
            return line;
        }
        events.push(line);
    }
}
