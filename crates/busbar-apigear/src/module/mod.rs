//! ObjectAPI modules: reading `apigear.module/1.0` documents, checking them, resolving their
//! types across the modules loaded together.
//!
//! Every problem is reported with the file, the element (`interface SimpleInterface,
//! operation funcInt, param paramInt`) and what is wrong; all of them at once, not only the
//! first.

mod document;
mod locate;
mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use model::*;

/// One problem in one module file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {element}: {problem}", file.display(), at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ModuleError {
    /// The file.
    pub file: PathBuf,
    /// Line and column (from 1) where the element is written, when it could be found.
    pub at: Option<(usize, usize)>,
    /// Where in it (`module`, `interface Foo, property bar`, ...).
    pub element: String,
    /// What is wrong.
    pub problem: String,
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ModuleErrors(pub Vec<ModuleError>);

impl ModuleErrors {
    /// The same problems, each with the line and column of its element where the file can
    /// be read and the element found in it (problems found while generating code, from
    /// modules read earlier, are named by element only until then).
    pub fn located(mut self) -> ModuleErrors {
        let files: BTreeSet<PathBuf> =
            self.0.iter().filter(|e| e.at.is_none()).map(|e| e.file.clone()).collect();
        for file in files {
            if let Ok(text) = busbar_core::limits::read_bounded(&file) {
                locate::place(&mut self.0, &file, &text);
            }
        }
        self
    }
}

/// Modules loaded together, so that their imports resolve.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModuleSet {
    /// In the order given.
    pub modules: Vec<Module>,
}

const PRIMITIVES: [&str; 10] =
    ["bool", "int", "int32", "int64", "float", "float32", "float64", "string", "bytes", "any"];

impl ModuleSet {
    /// Reads and checks the module files at `paths` (YAML, or JSON, which YAML reads too).
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<ModuleSet, ModuleErrors> {
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for path in paths {
            let path = path.as_ref();
            match busbar_core::limits::read_bounded(path) {
                Ok(text) => texts.push((path.to_path_buf(), text)),
                Err(e) => errors.push(ModuleError {
                    file: path.to_path_buf(),
                    at: None,
                    element: "file".into(),
                    problem: format!("cannot read it: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ModuleErrors(errors));
        }
        let sources: Vec<(&Path, &str)> =
            texts.iter().map(|(p, t)| (p.as_path(), t.as_str())).collect();
        Self::parse(&sources)
    }

    /// Checks module documents given as (file name for messages, text).
    pub fn parse(sources: &[(&Path, &str)]) -> Result<ModuleSet, ModuleErrors> {
        let mut errors = Vec::new();
        let mut modules = Vec::new();
        for (file, text) in sources {
            if let Err(problem) = busbar_core::limits::check_document(text) {
                errors.push(ModuleError {
                    file: file.to_path_buf(),
                    at: None,
                    element: "document".into(),
                    problem,
                });
                continue;
            }
            match yaml_serde::from_str::<document::Document>(text) {
                Ok(doc) => {
                    let mut check = Check { file, errors: &mut errors };
                    if let Some(m) = check.module(doc) {
                        modules.push(m);
                    }
                }
                Err(e) => {
                    // The YAML reader knows where; it says so at the end of its message.
                    let text = e.to_string();
                    let problem = match (e.location(), text.rfind(" at line ")) {
                        (Some(_), Some(i)) => text[..i].to_owned(),
                        _ => text,
                    };
                    errors.push(ModuleError {
                        file: file.to_path_buf(),
                        at: e.location().map(|l| (l.line(), l.column())),
                        element: "document".into(),
                        problem,
                    })
                }
            }
        }
        let mut names = BTreeSet::new();
        for m in &modules {
            if !names.insert(m.name.clone()) {
                errors.push(error(&m.file, "module", format!("module {} is given twice", m.name)));
            }
        }
        let mut set = ModuleSet { modules };
        set.resolve(&mut errors);
        for (file, text) in sources {
            locate::place(&mut errors, file, text);
        }
        if errors.is_empty() { Ok(set) } else { Err(ModuleErrors(errors)) }
    }

    /// The module named `name`.
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// The interface `symbol` names.
    pub fn interface(&self, symbol: &Symbol) -> Option<&Interface> {
        self.module(&symbol.module)?.interfaces.iter().find(|i| i.name == symbol.name)
    }

    /// The extern `symbol` names.
    pub fn extern_type(&self, symbol: &Symbol) -> Option<&Extern> {
        self.module(&symbol.module)?.externs.iter().find(|e| e.name == symbol.name)
    }

    /// An interface's properties, operations and signals, its bases' first (an interface
    /// has every member of the interfaces it extends).
    pub fn members(&self, module: &str, interface: &Interface) -> Members {
        let mut all = Members::default();
        let mut chain = vec![interface.clone()];
        let mut seen = BTreeSet::from([(module.to_owned(), interface.name.clone())]);
        let mut next = interface.extends.clone();
        while let Some(base) = next {
            // A cycle was reported by the check; stop rather than loop.
            if !seen.insert((base.module.clone(), base.name.clone())) {
                break;
            }
            match self.interface(&base) {
                Some(b) => {
                    chain.push(b.clone());
                    next = b.extends.clone();
                }
                None => break,
            }
        }
        for i in chain.iter().rev() {
            all.properties.extend(i.properties.iter().cloned());
            all.operations.extend(i.operations.iter().cloned());
            all.signals.extend(i.signals.iter().cloned());
        }
        all
    }

    /// Every topic of every interface, as the ApiGear MQTT mapping names them: `prop` for
    /// each property, `set` for each writable one, `rpc` for each operation, `sig` for
    /// each signal (results go to `rpc/{op}/{clientId}/result`, per client).
    pub fn topics(&self) -> Vec<String> {
        let mut all = Vec::new();
        for m in &self.modules {
            for i in &m.interfaces {
                let members = self.members(&m.name, i);
                let at = |verb: &str, name: &str| format!("{}/{}/{verb}/{name}", m.name, i.name);
                for p in &members.properties {
                    all.push(at("prop", &p.name));
                    if !p.readonly {
                        all.push(at("set", &p.name));
                    }
                }
                all.extend(members.operations.iter().map(|o| at("rpc", &o.name)));
                all.extend(members.signals.iter().map(|s| at("sig", &s.name)));
            }
        }
        all
    }

    /// Resolves every type name, and checks `extends` and struct recursion.
    fn resolve(&mut self, errors: &mut Vec<ModuleError>) {
        // What each module declares: name -> kind.
        let mut symbols: BTreeMap<String, BTreeMap<String, &'static str>> = BTreeMap::new();
        for m in &self.modules {
            let table = symbols.entry(m.name.clone()).or_default();
            let kinds = m
                .externs
                .iter()
                .map(|e| (&e.name, "extern"))
                .chain(m.enums.iter().map(|e| (&e.name, "enum")))
                .chain(m.structs.iter().map(|s| (&s.name, "struct")))
                .chain(m.interfaces.iter().map(|i| (&i.name, "interface")));
            for (name, kind) in kinds {
                if let Some(earlier) = table.insert(name.clone(), kind) {
                    errors.push(error(
                        &m.file,
                        &format!("{kind} {name}"),
                        format!("the name is taken by a {earlier} of the module"),
                    ));
                }
            }
        }
        for m in &mut self.modules {
            let resolver =
                Resolver { module: m.name.clone(), imports: m.imports.clone(), symbols: &symbols };
            let file = m.file.clone();
            let mut fail = |element: String, problem: String| {
                errors.push(ModuleError { file: file.clone(), at: None, element, problem });
            };
            for import in &m.imports {
                if !symbols.contains_key(import) {
                    fail(
                        format!("import {import}"),
                        format!("module {import} is not among the modules loaded with this one"),
                    );
                }
            }
            for i in &mut m.interfaces {
                let at = format!("interface {}", i.name);
                if let Some(base) = &mut i.extends {
                    match resolver.find(&base.name, Some(&base.module).filter(|m| !m.is_empty())) {
                        Ok((symbol, "interface")) => *base = symbol,
                        Ok((_, kind)) => {
                            fail(at.clone(), format!("extends {}, which is a {kind}", base.name))
                        }
                        Err(problem) if problem.is_empty() => {}
                        Err(problem) => fail(at.clone(), problem),
                    }
                }
                for p in &mut i.properties {
                    resolver.resolve(&mut p.ty, || format!("{at}, property {}", p.name), &mut fail);
                }
                for o in &mut i.operations {
                    for p in &mut o.params {
                        let e = || format!("{at}, operation {}, param {}", o.name, p.name);
                        resolver.resolve(&mut p.ty, e, &mut fail);
                    }
                    if let Some(r) = &mut o.returns {
                        resolver.resolve(
                            r,
                            || format!("{at}, operation {}, return", o.name),
                            &mut fail,
                        );
                    }
                }
                for s in &mut i.signals {
                    for p in &mut s.params {
                        let e = || format!("{at}, signal {}, param {}", s.name, p.name);
                        resolver.resolve(&mut p.ty, e, &mut fail);
                    }
                }
            }
            for s in &mut m.structs {
                for f in &mut s.fields {
                    let e = || format!("struct {}, field {}", s.name, f.name);
                    resolver.resolve(&mut f.ty, e, &mut fail);
                }
            }
        }
        self.check_extends_cycles(errors);
        self.check_struct_cycles(errors);
    }

    fn check_extends_cycles(&self, errors: &mut Vec<ModuleError>) {
        for m in &self.modules {
            for i in &m.interfaces {
                let mut seen = BTreeSet::from([(m.name.clone(), i.name.clone())]);
                let mut next = i.extends.clone();
                while let Some(base) = next {
                    if !seen.insert((base.module.clone(), base.name.clone())) {
                        errors.push(error(
                            &m.file,
                            &format!("interface {}", i.name),
                            "extends itself, through its bases".into(),
                        ));
                        break;
                    }
                    next = self.interface(&base).and_then(|b| b.extends.clone());
                }
            }
        }
    }

    /// A struct that holds itself by value (not in an array) has no finite size.
    fn check_struct_cycles(&self, errors: &mut Vec<ModuleError>) {
        let by_symbol: BTreeMap<Symbol, &Struct> = self
            .modules
            .iter()
            .flat_map(|m| {
                m.structs
                    .iter()
                    .map(|s| (Symbol { module: m.name.clone(), name: s.name.clone() }, s))
            })
            .collect();
        for m in &self.modules {
            for s in &m.structs {
                let start = Symbol { module: m.name.clone(), name: s.name.clone() };
                let mut stack = vec![start.clone()];
                let mut seen = BTreeSet::new();
                while let Some(at) = stack.pop() {
                    let Some(st) = by_symbol.get(&at) else { continue };
                    for f in &st.fields {
                        if let (Type::Struct(inner), false) = (&f.ty.ty, f.ty.array) {
                            if *inner == start {
                                errors.push(error(
                                    &m.file,
                                    &format!("struct {}", s.name),
                                    "holds itself (through its fields): use an array for a \
                                     recursive field"
                                        .into(),
                                ));
                                stack.clear();
                                break;
                            }
                            if seen.insert(inner.clone()) {
                                stack.push(inner.clone());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An interface's members with its bases' included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Members {
    /// Properties.
    pub properties: Vec<Property>,
    /// Operations.
    pub operations: Vec<Operation>,
    /// Signals.
    pub signals: Vec<Signal>,
}

fn error(file: &Path, element: &str, problem: String) -> ModuleError {
    ModuleError { file: file.to_path_buf(), at: None, element: element.to_owned(), problem }
}

/// Finds type names from one module.
struct Resolver<'a> {
    module: String,
    imports: Vec<String>,
    symbols: &'a BTreeMap<String, BTreeMap<String, &'static str>>,
}

impl Resolver<'_> {
    /// The symbol `name` (maybe `module.Name`) stands for, with `import` the module it is
    /// said to come from.
    fn find(&self, name: &str, import: Option<&String>) -> Result<(Symbol, &'static str), String> {
        let (module, local) = match (import, name.rsplit_once('.')) {
            (Some(m), _) => (m.clone(), name.to_owned()),
            (None, Some((m, n))) => (m.to_owned(), n.to_owned()),
            (None, None) => (self.module.clone(), name.to_owned()),
        };
        if module != self.module && !self.imports.contains(&module) {
            return Err(format!(
                "type {name} comes from module {module}, which this module does not import"
            ));
        }
        // An imported module that was not loaded is reported once, at its import.
        let table = self.symbols.get(&module).ok_or(String::new())?;
        let kind = table.get(&local).ok_or_else(|| {
            format!("unknown type {name}: no extern, enum, struct or interface {local} in module {module}")
        })?;
        Ok((Symbol { module, name: local }, kind))
    }

    fn resolve(
        &self,
        ty: &mut TypeRef,
        element: impl Fn() -> String,
        fail: &mut impl FnMut(String, String),
    ) {
        let Type::Interface(pending) = &ty.ty else { return };
        // Until resolved, a named type is held as an interface symbol whose module is the
        // `import:` given (empty for none); see `Check::type_ref`.
        let (name, import) = (pending.name.clone(), pending.module.clone());
        let import = Some(&import).filter(|m| !m.is_empty());
        ty.ty = match (name.as_str(), import) {
            ("bool", None) => Type::Bool,
            ("int" | "int32", None) => Type::Int32,
            ("int64", None) => Type::Int64,
            ("float" | "float32", None) => Type::Float32,
            ("float64", None) => Type::Float64,
            ("string", None) => Type::String,
            ("bytes", None) => Type::Bytes,
            ("any", None) => Type::Any,
            _ => match self.find(&name, import) {
                Ok((s, "extern")) => Type::Extern(s),
                Ok((s, "enum")) => Type::Enum(s),
                Ok((s, "struct")) => Type::Struct(s),
                Ok((s, _)) => Type::Interface(s),
                Err(problem) => {
                    if !problem.is_empty() {
                        fail(element(), problem);
                    }
                    Type::Any
                }
            },
        };
    }
}

/// Checks one document and builds its module, with type names still to resolve.
struct Check<'a> {
    file: &'a Path,
    errors: &'a mut Vec<ModuleError>,
}

impl Check<'_> {
    fn fail(&mut self, element: &str, problem: impl Into<String>) {
        // An element named by an over-long name is shown by its start.
        let element = match element.char_indices().nth(80) {
            Some((cut, _)) => format!("{}...", &element[..cut]),
            None => element.to_owned(),
        };
        self.errors.push(error(self.file, &element, problem.into()));
    }

    fn name(&mut self, element: &str, name: &str) {
        if let Err(problem) = busbar_core::limits::check_name(name) {
            self.fail(element, problem);
            return;
        }
        let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            self.fail(
                element,
                format!("{name:?} is not a name (a letter, then letters, digits or '_')"),
            );
        }
    }

    fn unique<'n>(&mut self, what: &str, names: impl IntoIterator<Item = &'n String>) {
        let mut seen = BTreeSet::new();
        for n in names {
            if !seen.insert(n) {
                self.fail(&format!("{what} {n}"), "the name is used twice");
            }
        }
    }

    fn module(&mut self, doc: document::Document) -> Option<Module> {
        if let Some(schema) = doc.schema.as_deref().filter(|s| *s != "apigear.module/1.0") {
            self.fail("schema", format!("{schema:?} is not apigear.module/1.0"));
        }
        let Some(name) = doc.name else {
            self.fail("module", "no name");
            return None;
        };
        // Dot-separated words; an empty word would make an empty topic level where the
        // dots become levels (NATS, AMQP).
        let module_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && name.split('.').all(|word| !word.is_empty());
        if !module_ok {
            self.fail(
                "module",
                format!("{name:?} is not a module name (letters, digits, '_', '.')"),
            );
        }
        let version = match doc.version {
            None => None,
            Some(document::Scalar::Text(v)) => Some(v),
            Some(other) => {
                self.fail(
                    "module",
                    format!("version {other:?} must be a string: quote it in YAML (\"1.0\")"),
                );
                None
            }
        };
        if let Some(v) = &version {
            let parts: Vec<&str> = v.split('.').collect();
            if parts.len() < 2
                || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                self.fail("module", format!("version {v:?} is not major.minor[.patch]"));
            }
        }
        let externs: Vec<Extern> = doc
            .externs
            .into_iter()
            .map(|e| {
                self.name(&format!("extern {}", e.name), &e.name);
                Extern { name: e.name, description: e.description, meta: e.meta }
            })
            .collect();
        let enums: Vec<Enum> = doc.enums.into_iter().map(|e| self.enumeration(e)).collect();
        let structs: Vec<Struct> = doc
            .structs
            .into_iter()
            .map(|s| {
                let at = format!("struct {}", s.name);
                self.name(&at, &s.name);
                let fields = self.params(&at, "field", s.fields);
                Struct { name: s.name, fields, description: s.description }
            })
            .collect();
        let interfaces: Vec<Interface> =
            doc.interfaces.into_iter().map(|i| self.interface(i)).collect();
        let imports: Vec<String> = doc.imports.into_iter().map(|i| i.name).collect();
        self.unique("import", &imports);
        Some(Module {
            name,
            version,
            description: doc.description,
            imports,
            externs,
            interfaces,
            structs,
            enums,
            file: self.file.to_path_buf(),
        })
    }

    fn enumeration(&mut self, e: document::Enum) -> Enum {
        let at = format!("enum {}", e.name);
        self.name(&at, &e.name);
        if e.members.is_empty() {
            self.fail(&at, "no members");
        }
        let mut next = 0i64;
        let mut members = Vec::new();
        let mut values = BTreeMap::new();
        for m in e.members {
            let element = format!("{at}, member {}", m.name);
            self.name(&element, &m.name);
            let value = match m.value {
                None => next,
                Some(document::Scalar::Int(v)) => v,
                Some(document::Scalar::Text(t)) => {
                    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                        Some(hex) => i64::from_str_radix(hex, 16).unwrap_or_else(|_| {
                            self.fail(&element, format!("value {t:?} is not a number"));
                            next
                        }),
                        None => t.parse().unwrap_or_else(|_| {
                            self.fail(&element, format!("value {t:?} is not a number"));
                            next
                        }),
                    }
                }
                Some(document::Scalar::Float(f)) => {
                    self.fail(&element, format!("value {f} is not an integer"));
                    next
                }
            };
            if value < 0 {
                self.fail(&element, format!("value {value} is negative"));
            }
            if let Some(other) = values.insert(value, m.name.clone()) {
                self.fail(&element, format!("value {value} is also {other}'s"));
            }
            next = value.saturating_add(1);
            members.push(EnumMember { name: m.name, value, description: m.description });
        }
        self.unique(&format!("{at}, member"), members.iter().map(|m| &m.name).collect::<Vec<_>>());
        Enum { name: e.name, members, description: e.description }
    }

    fn interface(&mut self, i: document::Interface) -> Interface {
        let at = format!("interface {}", i.name);
        self.name(&at, &i.name);
        let properties: Vec<Property> = i
            .properties
            .into_iter()
            .map(|p| {
                let element = format!("{at}, property {}", p.name);
                self.name(&element, &p.name);
                let ty = self.type_ref(&element, p.type_name.as_deref(), p.array, p.import);
                Property { name: p.name, ty, readonly: p.readonly, description: p.description }
            })
            .collect();
        let operations: Vec<Operation> = i
            .operations
            .into_iter()
            .map(|o| {
                let element = format!("{at}, operation {}", o.name);
                self.name(&element, &o.name);
                let params = self.params(&element, "param", o.params);
                let returns = match o.returns {
                    None => None,
                    Some(document::Return::Short(t)) if t == "void" => None,
                    Some(document::Return::Short(t)) => {
                        Some(self.type_ref(&element, Some(&t), false, None))
                    }
                    Some(document::Return::Full(r)) if r.type_name.as_deref() == Some("void") => {
                        None
                    }
                    Some(document::Return::Full(r)) => {
                        Some(self.type_ref(&element, r.type_name.as_deref(), r.array, r.import))
                    }
                };
                Operation { name: o.name, params, returns, description: o.description }
            })
            .collect();
        let signals: Vec<Signal> = i
            .signals
            .into_iter()
            .map(|s| {
                let element = format!("{at}, signal {}", s.name);
                self.name(&element, &s.name);
                let params = self.params(&element, "param", s.params);
                Signal { name: s.name, params, description: s.description }
            })
            .collect();
        self.unique(
            &format!("{at}, property"),
            properties.iter().map(|p| &p.name).collect::<Vec<_>>(),
        );
        self.unique(
            &format!("{at}, operation"),
            operations.iter().map(|o| &o.name).collect::<Vec<_>>(),
        );
        self.unique(&format!("{at}, signal"), signals.iter().map(|s| &s.name).collect::<Vec<_>>());
        let extends =
            i.extends.map(|e| Symbol { module: e.import.unwrap_or_default(), name: e.name });
        Interface {
            name: i.name,
            description: i.description,
            extends,
            properties,
            operations,
            signals,
        }
    }

    fn params(&mut self, at: &str, what: &str, params: Vec<document::NamedType>) -> Vec<Param> {
        let out: Vec<Param> = params
            .into_iter()
            .map(|p| {
                let element = format!("{at}, {what} {}", p.name);
                self.name(&element, &p.name);
                if p.readonly {
                    self.fail(&element, "only properties can be readonly");
                }
                let ty = self.type_ref(&element, p.type_name.as_deref(), p.array, p.import);
                Param { name: p.name, ty, description: p.description }
            })
            .collect();
        self.unique(&format!("{at}, {what}"), out.iter().map(|p| &p.name).collect::<Vec<_>>());
        out
    }

    /// A type name to resolve once every module is read: held as an interface symbol whose
    /// module is the `import:` given (see `Resolver::resolve`).
    fn type_ref(
        &mut self,
        element: &str,
        name: Option<&str>,
        array: bool,
        import: Option<String>,
    ) -> TypeRef {
        let name = match name {
            Some(n) if !n.trim().is_empty() => n.trim(),
            _ => {
                self.fail(element, "no type");
                "any"
            }
        };
        if name == "void" {
            self.fail(element, "void is only for operation returns");
        }
        if name.ends_with("[]") {
            self.fail(element, format!("{name}: arrays are written `array: true`"));
        }
        if import.is_some() && PRIMITIVES.contains(&name) {
            self.fail(element, format!("{name} is a primitive type: it has no import"));
        }
        TypeRef {
            ty: Type::Interface(Symbol {
                module: import.unwrap_or_default(),
                name: name.to_owned(),
            }),
            array,
        }
    }
}

#[cfg(test)]
mod tests;
