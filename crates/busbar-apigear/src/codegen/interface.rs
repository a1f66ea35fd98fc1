//! One interface: its value types, its trait, its service and its client.

use super::{Gen, Out, names};
use crate::module::{Interface, Members, Operation, Param, Property, Signal};

/// Names derived from the interface's.
struct Names {
    /// As in the module (`SimpleInterface`): on the wire.
    wire: String,
    /// The trait (`SimpleInterface`).
    tr: String,
    /// `snake_case` stem (`simple_interface`).
    stem: String,
}

impl Names {
    fn of(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.tr)
    }

    fn constant(&self) -> String {
        format!("{}_NAME", self.stem.trim_start_matches("r#").to_ascii_uppercase())
    }
}

pub(crate) fn interface(out: &mut Out, tn: &Gen<'_>, i: &Interface) {
    let n = Names { wire: i.name.clone(), tr: names::camel(&i.name), stem: names::snake(&i.name) };
    let m = tn.set.members(tn.module, i);
    out.blank();
    out.line(&format!("/// Where `{}`'s topics are: `{}/{}/...`.", n.wire, tn.module, n.wire));
    out.line(&format!(
        "pub const {}: rt::InterfaceName = rt::InterfaceName {{ module: MODULE, interface: {:?} }};",
        n.constant(),
        n.wire
    ));
    values(out, tn, &n, &m);
    trait_(out, tn, &n, i, &m);
    service(out, tn, &n, &m);
    client(out, tn, &n, &m);
}

fn doc_or(out: &mut Out, description: &Option<String>, fallback: &str) {
    match description {
        Some(d) => out.doc(d),
        None => out.line(&format!("/// {fallback}")),
    }
}

/// `<I>Properties`, `<I>Property`, `<I>Signal`.
fn values(out: &mut Out, tn: &Gen<'_>, n: &Names, m: &Members) {
    out.blank();
    out.line(&format!("/// The values of `{}`'s properties.", n.wire));
    out.line("#[derive(Debug, Clone, PartialEq, Default)]");
    out.line(&format!("pub struct {} {{", n.of("Properties")));
    for p in &m.properties {
        doc_or(out, &p.description, &format!("`{}`", p.name));
        out.line(&format!("pub {}: {},", names::snake(&p.name), tn.ty(&p.ty)));
    }
    out.line("}");
    out.blank();
    out.line(&format!("/// A property of `{}` that changed, with its new value.", n.wire));
    out.line("#[derive(Debug, Clone, PartialEq)]");
    out.line(&format!("pub enum {} {{", n.of("Property")));
    for p in &m.properties {
        out.line(&format!("/// `{}`", p.name));
        out.line(&format!("{}({}),", names::camel(&p.name), tn.ty(&p.ty)));
    }
    out.line("}");
    out.blank();
    out.line(&format!("/// A signal of `{}`, with its arguments.", n.wire));
    out.line("#[derive(Debug, Clone, PartialEq)]");
    out.line(&format!("pub enum {} {{", n.of("Signal")));
    for s in &m.signals {
        doc_or(out, &s.description, &format!("`{}`", s.name));
        if s.params.is_empty() {
            out.line(&format!("{},", names::camel(&s.name)));
        } else {
            let fields: Vec<String> = s
                .params
                .iter()
                .map(|p| format!("{}: {}", names::snake(&p.name), tn.ty(&p.ty)))
                .collect();
            out.line(&format!("{} {{ {} }},", names::camel(&s.name), fields.join(", ")));
        }
    }
    out.line("}");
}

fn params(tn: &Gen<'_>, params: &[Param]) -> String {
    params.iter().map(|p| format!(", {}: {}", names::snake(&p.name), tn.ty(&p.ty))).collect()
}

fn returns(tn: &Gen<'_>, o: &Operation) -> String {
    o.returns.as_ref().map_or("()".to_owned(), |r| tn.ty(r))
}

fn future(output: &str) -> String {
    format!("impl std::future::Future<Output = Result<{output}, rt::ApiError>> + Send")
}

/// The trait both the implementation and the client implement.
fn trait_(out: &mut Out, tn: &Gen<'_>, n: &Names, i: &Interface, m: &Members) {
    out.blank();
    doc_or(out, &i.description, &format!("The interface `{}`.", n.wire));
    out.line("///");
    out.line(&format!(
        "/// Implement it and serve it with [`{}`]; or use it remotely through [`{}`].",
        n.of("Service"),
        n.of("Client")
    ));
    out.line(&format!("pub trait {}: Send + Sync + 'static {{", n.tr));
    for p in &m.properties {
        let ty = tn.ty(&p.ty);
        out.line(&format!("/// The value of `{}`.", p.name));
        if let Some(d) = &p.description {
            out.line("///");
            out.doc(d);
        }
        out.line(&format!("fn {}(&self) -> {ty};", names::snake(&p.name)));
        if !p.readonly {
            out.blank();
            out.line(&format!(
                "/// Sets `{}`: on a client, asks the service; the service publishes the new value.",
                p.name
            ));
            out.line(&format!(
                "fn set_{}(&self, value: {ty}) -> {};",
                names::snake(&p.name).trim_start_matches("r#"),
                future("()")
            ));
        }
        out.blank();
    }
    for o in &m.operations {
        doc_or(out, &o.description, &format!("The operation `{}`.", o.name));
        out.line(&format!(
            "fn {}(&self{}) -> {};",
            names::snake(&o.name),
            params(tn, &o.params),
            future(&returns(tn, o))
        ));
        out.blank();
    }
    out.line("}");
}

fn setter(p: &Property) -> String {
    format!("set_{}", names::snake(&p.name).trim_start_matches("r#"))
}

/// `<I>Service`, `<I>Notifier` and the dispatch behind them.
fn service(out: &mut Out, tn: &Gen<'_>, n: &Names, m: &Members) {
    let (service, notifier, dispatch) = (n.of("Service"), n.of("Notifier"), n.of("Dispatch"));
    out.blank();
    out.line(&format!(
        "/// Serves an implementation of [`{}`] on a connection; stops when dropped.",
        n.tr
    ));
    out.line("#[derive(Debug)]");
    out.line(&format!("pub struct {service} {{"));
    out.line("serving: rt::Serving,");
    out.line("}");
    out.blank();
    out.line(&format!("impl {service} {{"));
    out.line("/// Serves `implementation`: answers sets and calls, and publishes every property");
    out.line("/// (retained) now and after each reconnect.");
    out.line(&format!(
        "pub async fn serve<Implementation: {}>(conn: &rt::Connection, implementation: std::sync::Arc<Implementation>) -> Result<Self, rt::ApiError> {{",
        n.tr
    ));
    out.line(&format!("let handler = std::sync::Arc::new({dispatch}(implementation));"));
    out.line(&format!(
        "let serving = rt::ServiceLink::serve(conn, {}, handler).await?;",
        n.constant()
    ));
    out.line("Ok(Self { serving })");
    out.line("}");
    out.blank();
    out.line("/// Publishes property changes and signals for the implementation.");
    out.line(&format!("pub fn notifier(&self) -> {notifier} {{"));
    out.line(&format!("{notifier} {{ link: self.serving.link().clone() }}"));
    out.line("}");
    out.line("}");

    out.blank();
    out.line(&format!(
        "/// Announces what `{}`'s implementation changes on its own, and emits its signals.",
        n.wire
    ));
    out.line("#[derive(Debug, Clone)]");
    out.line(&format!("pub struct {notifier} {{"));
    out.line("link: rt::ServiceLink,");
    out.line("}");
    out.blank();
    out.line(&format!("impl {notifier} {{"));
    for p in &m.properties {
        let ty = tn.ty(&p.ty);
        out.line(&format!("/// Publishes `{}`'s new value (retained).", p.name));
        out.line(&format!(
            "pub async fn {}_changed(&self, value: &{ty}) -> Result<(), rt::ApiError> {{",
            names::snake(&p.name).trim_start_matches("r#")
        ));
        out.line(&format!(
            "self.link.publish_property({:?}, {}({:?}, value)?).await",
            p.name,
            tn.encoder(&p.ty),
            p.name
        ));
        out.line("}");
        out.blank();
    }
    for s in &m.signals {
        signal_emitter(out, tn, s);
    }
    out.line("}");

    out.blank();
    out.line(&format!("struct {dispatch}<Implementation>(std::sync::Arc<Implementation>);"));
    out.blank();
    // An interface without properties or operations leaves some parameters unused.
    out.line("#[allow(unused_variables, unused_mut)]");
    out.line(&format!(
        "impl<Implementation: {}> rt::ServiceHandler for {dispatch}<Implementation> {{",
        n.tr
    ));
    out.line("fn set<'a>(&'a self, __link: &'a rt::ServiceLink, __property: &'a str, __value: busbar_apigear::serde_json::Value) -> rt::BoxFuture<'a, Result<(), rt::ApiError>> {");
    out.line("Box::pin(async move {");
    out.line("match __property {");
    for p in &m.properties {
        if p.readonly {
            out.line(&format!(
                "{:?} => Err(rt::ApiError::refused(__property, \"the property is read-only\")),",
                p.name
            ));
            continue;
        }
        out.line(&format!("{:?} => {{", p.name));
        out.line(&format!(
            "<Implementation as {}>::{}(&self.0, rt::decode(__property, __value)?).await?;",
            n.tr,
            setter(p)
        ));
        out.line(&format!(
            "__link.publish_property(__property, {}(__property, &<Implementation as {}>::{}(&self.0))?).await",
            tn.encoder(&p.ty),
            n.tr,
            names::snake(&p.name)
        ));
        out.line("}");
    }
    out.line("_ => Err(rt::ApiError::refused(__property, \"no such property\")),");
    out.line("}");
    out.line("})");
    out.line("}");
    out.blank();
    out.line("fn call<'a>(&'a self, __operation: &'a str, __args: Vec<busbar_apigear::serde_json::Value>) -> rt::BoxFuture<'a, Result<busbar_apigear::serde_json::Value, rt::ApiError>> {");
    out.line("Box::pin(async move {");
    out.line("let mut __args = __args;");
    out.line("match __operation {");
    for o in &m.operations {
        out.line(&format!("{:?} => {{", o.name));
        let mut call_args = Vec::new();
        for (index, p) in o.params.iter().enumerate() {
            let var = names::snake(&p.name);
            out.line(&format!("let {var} = rt::arg(__operation, &mut __args, {index})?;"));
            call_args.push(var);
        }
        let mut call_args_with_self = vec!["&self.0".to_owned()];
        call_args_with_self.extend(call_args);
        let call = format!(
            "<Implementation as {}>::{}({}).await?",
            n.tr,
            names::snake(&o.name),
            call_args_with_self.join(", ")
        );
        match &o.returns {
            Some(r) => {
                out.line(&format!("let __result = {call};"));
                out.line(&format!("{}(__operation, &__result)", tn.encoder(r)));
            }
            None => {
                out.line(&format!("{call};"));
                out.line("Ok(busbar_apigear::serde_json::Value::Null)");
            }
        }
        out.line("}");
    }
    out.line("_ => Err(rt::ApiError::refused(__operation, \"no such operation\")),");
    out.line("}");
    out.line("})");
    out.line("}");
    out.blank();
    out.line("fn properties(&self) -> Result<busbar_apigear::serde_json::Map<String, busbar_apigear::serde_json::Value>, rt::ApiError> {");
    out.line("let mut all = busbar_apigear::serde_json::Map::new();");
    for p in &m.properties {
        out.line(&format!(
            "all.insert({:?}.to_owned(), {}({:?}, &<Implementation as {}>::{}(&self.0))?);",
            p.name,
            tn.encoder(&p.ty),
            p.name,
            n.tr,
            names::snake(&p.name)
        ));
    }
    out.line("Ok(all)");
    out.line("}");
    out.line("}");
}

fn signal_emitter(out: &mut Out, tn: &Gen<'_>, s: &Signal) {
    out.line(&format!("/// Emits `{}`.", s.name));
    out.line(&format!(
        "pub async fn {}(&self{}) -> Result<(), rt::ApiError> {{",
        names::snake(&s.name),
        params(tn, &s.params)
    ));
    let args: Vec<String> = s
        .params
        .iter()
        .map(|p| format!("{}({:?}, &{})?", tn.encoder(&p.ty), s.name, names::snake(&p.name)))
        .collect();
    out.line(&format!("self.link.publish_signal({:?}, vec![{}]).await", s.name, args.join(", ")));
    out.line("}");
    out.blank();
}

/// `<I>Client`: the trait over the bus.
fn client(out: &mut Out, tn: &Gen<'_>, n: &Names, m: &Members) {
    let (client, state, event) =
        (n.of("Client"), n.of("State"), format!("{}_event", n.stem.trim_start_matches("r#")));
    let (props, change, signal) = (n.of("Properties"), n.of("Property"), n.of("Signal"));
    out.blank();
    out.line(&format!("type {state} = rt::ClientState<{props}, {change}, {signal}>;"));
    out.blank();
    out.line(&format!(
        "/// [`{}`] served elsewhere: a cache of its properties, kept in step with the",
        n.tr
    ));
    out.line(
        "/// service's retained values; its signals and property changes as streams; calls with",
    );
    out.line("/// deadlines.");
    out.line("#[derive(Clone)]");
    out.line(&format!("pub struct {client} {{"));
    out.line("link: rt::ClientLink,");
    out.line(&format!("state: std::sync::Arc<{state}>,"));
    out.line("timeout: std::time::Duration,");
    out.line("void_replies: bool,");
    out.line("}");
    out.blank();
    out.line(&format!("impl std::fmt::Debug for {client} {{"));
    out.line("fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {");
    out.line(&format!("f.debug_struct({client:?}).field(\"link\", &self.link).field(\"properties\", &self.properties()).finish()"));
    out.line("}");
    out.line("}");
    out.blank();
    out.line(&format!("impl {client} {{"));
    out.line(
        "/// Connects to the service's topics. Returns once subscribed (ApiGear's \"ready\"): on",
    );
    out.line(
        "/// MQTT the retained property values follow at once; elsewhere they are read from the",
    );
    out.line("/// service before this returns.");
    out.line("pub async fn connect(conn: &rt::Connection) -> Result<Self, rt::ApiError> {");
    out.line(&format!("let state = {state}::new();"));
    out.line("let events = state.clone();");
    out.line(&format!(
        "let link = rt::ClientLink::connect(conn, {}, move |e| {event}(&events, e)).await?;",
        n.constant()
    ));
    out.line("Ok(Self { link, state, timeout: rt::DEFAULT_TIMEOUT, void_replies: true })");
    out.line("}");
    out.blank();
    out.line("/// Reads every property from the service (`_properties`) into the cache.");
    out.line("pub async fn refresh_properties(&self, timeout: std::time::Duration) -> Result<(), rt::ApiError> {");
    out.line("for (name, value) in self.link.properties(timeout).await? {");
    out.line(&format!("{event}(&self.state, rt::ClientEvent::Property {{ name, value }});"));
    out.line("}");
    out.line("Ok(())");
    out.line("}");
    out.blank();
    out.line("/// How long calls wait for their results (default 10 s).");
    out.line("pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {");
    out.line("self.timeout = timeout;");
    out.line("self");
    out.line("}");
    out.blank();
    out.line("/// Sends void operations without waiting for a reply (C++ services send none).");
    out.line("pub fn without_void_replies(mut self) -> Self {");
    out.line("self.void_replies = false;");
    out.line("self");
    out.line("}");
    out.blank();
    out.line("/// The cached property values.");
    out.line(&format!("pub fn properties(&self) -> {props} {{"));
    out.line("self.state.read(Clone::clone)");
    out.line("}");
    out.blank();
    out.line("/// Property changes from now on (a value that arrives again unchanged is not one).");
    out.line(&format!("pub fn changes(&self) -> rt::Receiver<{change}> {{"));
    out.line("self.state.changes()");
    out.line("}");
    out.blank();
    out.line("/// Signals from now on.");
    out.line(&format!("pub fn signals(&self) -> rt::Receiver<{signal}> {{"));
    out.line("self.state.signals()");
    out.line("}");
    out.blank();
    out.line("/// The link underneath (its client id, calls pending).");
    out.line("pub fn link(&self) -> &rt::ClientLink {");
    out.line("&self.link");
    out.line("}");
    out.line("}");

    out.blank();
    out.line("// Interfaces without properties, or signals without arguments, leave some unused.");
    out.line("#[allow(unused_variables, unused_mut)]");
    out.line(&format!("fn {event}(state: &{state}, event: rt::ClientEvent) {{"));
    out.line("match event {");
    out.line("rt::ClientEvent::Property { name, value } => match name.as_str() {");
    for p in &m.properties {
        let field = names::snake(&p.name);
        out.line(&format!("{:?} => match rt::decode::<{}>(&name, value) {{", p.name, tn.ty(&p.ty)));
        out.line(&format!(
            "Ok(v) => state.update(|p| (p.{field} != v).then(|| {{ p.{field} = v.clone(); {change}::{}(v) }})),",
            names::camel(&p.name)
        ));
        out.line("Err(e) => rt::dropped(&e),");
        out.line("},");
    }
    out.line("_ => {}");
    out.line("},");
    if m.signals.is_empty() {
        out.line("rt::ClientEvent::Signal { .. } => {}");
        // `ClientEvent` is non-exhaustive: code generated now keeps compiling with a newer
        // runtime, which may report more.
        out.line("_ => {}");
        out.line("}");
        out.line("}");
        client_impl(out, tn, n, m, &client);
        return;
    }
    out.line("rt::ClientEvent::Signal { name, args } => {");
    out.line("let (__name, mut __args) = (name, args);");
    out.line("let signal = match __name.as_str() {");
    for s in &m.signals {
        let variant = names::camel(&s.name);
        if s.params.is_empty() {
            out.line(&format!("{:?} => Ok({signal}::{variant}),", s.name));
        } else {
            let fields: Vec<String> = s
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    format!("{}: rt::arg(&__name, &mut __args, {i})?", names::snake(&p.name))
                })
                .collect();
            out.line(&format!(
                "{:?} => (|| Ok({signal}::{variant} {{ {} }}))(),",
                s.name,
                fields.join(", ")
            ));
        }
    }
    out.line("_ => return,");
    out.line("};");
    out.line("match signal {");
    out.line("Ok(s) => state.signal(s),");
    out.line("Err(e) => rt::dropped(&e),");
    out.line("}");
    out.line("}");
    out.line("_ => {}");
    out.line("}");
    out.line("}");
    client_impl(out, tn, n, m, &client);
}

/// The trait, implemented by the client.
fn client_impl(out: &mut Out, tn: &Gen<'_>, n: &Names, m: &Members, client: &str) {
    out.blank();
    out.line(&format!("impl {} for {client} {{", n.tr));
    for p in &m.properties {
        let ty = tn.ty(&p.ty);
        let field = names::snake(&p.name);
        out.line(&format!("fn {field}(&self) -> {ty} {{"));
        out.line(&format!("self.state.read(|p| p.{field}.clone())"));
        out.line("}");
        out.blank();
        if !p.readonly {
            out.line(&format!("fn {}(&self, value: {ty}) -> {} {{", setter(p), future("()")));
            out.line("let __link = self.link.clone();");
            out.line(&format!(
                "async move {{ __link.set({:?}, {}({:?}, &value)?).await }}",
                p.name,
                tn.encoder(&p.ty),
                p.name
            ));
            out.line("}");
            out.blank();
        }
    }
    for o in &m.operations {
        out.line(&format!(
            "fn {}(&self{}) -> {} {{",
            names::snake(&o.name),
            params(tn, &o.params),
            future(&returns(tn, o))
        ));
        if o.returns.is_some() {
            out.line("let (__link, __timeout) = (self.link.clone(), self.timeout);");
        } else {
            out.line("let (__link, __timeout, __void_replies) = (self.link.clone(), self.timeout, self.void_replies);");
        }
        out.line("async move {");
        let args: Vec<String> = o
            .params
            .iter()
            .map(|p| format!("{}({:?}, &{})?", tn.encoder(&p.ty), o.name, names::snake(&p.name)))
            .collect();
        out.line(&format!("let __args = vec![{}];", args.join(", ")));
        match &o.returns {
            Some(_) => {
                out.line(&format!(
                    "rt::decode({:?}, __link.call({:?}, __args, __timeout).await?)",
                    o.name, o.name
                ));
            }
            None => {
                out.line("if __void_replies {");
                out.line(&format!("__link.call({:?}, __args, __timeout).await?;", o.name));
                out.line("} else {");
                out.line(&format!("__link.call_no_wait({:?}, __args).await?;", o.name));
                out.line("}");
                out.line("Ok(())");
            }
        }
        out.line("}");
        out.line("}");
        out.blank();
    }
    out.line("}");
}
