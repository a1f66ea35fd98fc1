//! Names a module may have but Rust may not: two IDL names that become one Rust name
//! (`fooBar` and `foo_bar`, property `value` and signal `valueChanged`, interface `Light` and
//! struct `LightState`), or a name that would hide one the generated code uses (`Result`).
//! Refused with the module, the element and both names, before anything is generated.

use std::collections::BTreeMap;
use std::path::Path;

use super::names;
use crate::module::{ModuleError, ModuleErrors, ModuleSet};

/// Names the generated code relies on, which a module's types must not take.
const RESERVED: [&str; 22] = [
    "Result",
    "Option",
    "Vec",
    "String",
    "Box",
    "Ok",
    "Err",
    "Some",
    "None",
    "Clone",
    "Copy",
    "Default",
    "Send",
    "Sync",
    "Sized",
    "Drop",
    "Fn",
    "FnMut",
    "FnOnce",
    "Future",
    "Implementation",
    "MODULE",
];

/// What each generated name stands for, in one namespace.
struct Namespace<'a> {
    file: &'a Path,
    what: &'a str,
    taken: BTreeMap<String, String>,
    errors: &'a mut Vec<ModuleError>,
}

impl<'a> Namespace<'a> {
    fn new(file: &'a Path, what: &'a str, errors: &'a mut Vec<ModuleError>) -> Self {
        Namespace { file, what, taken: BTreeMap::new(), errors }
    }

    /// Claims `rust` for `element`; a second claim is an error naming both.
    fn claim(&mut self, element: &str, rust: String) {
        let bare = rust.trim_start_matches("r#").to_owned();
        if let Some(first) = self.taken.get(&bare) {
            self.errors.push(ModuleError {
                file: self.file.to_path_buf(),
                at: None,
                element: element.to_owned(),
                problem: format!(
                    "its Rust {} `{bare}` is also {first}'s: rename one of them",
                    self.what
                ),
            });
        } else {
            self.taken.insert(bare, element.to_owned());
        }
    }
}

/// Every clash in `set`.
pub fn check(set: &ModuleSet) -> Result<(), ModuleErrors> {
    let mut errors = Vec::new();
    let mut module_names = BTreeMap::<String, String>::new();
    for m in &set.modules {
        let file = m.file.as_path();
        let ident = names::module(&m.name);
        if let Some(first) = module_names.insert(ident.clone(), m.name.clone()) {
            errors.push(ModuleError {
                file: file.to_path_buf(),
                at: None,
                element: "module".into(),
                problem: format!("its Rust module `{ident}` is also module {first}'s"),
            });
        }
        let mut types = Namespace::new(file, "type name", &mut errors);
        for name in RESERVED {
            types.taken.insert(name.to_owned(), "what the generated code uses".to_owned());
        }
        for e in &m.enums {
            types.claim(&format!("enum {}", e.name), names::camel(&e.name));
        }
        for s in &m.structs {
            types.claim(&format!("struct {}", s.name), names::camel(&s.name));
        }
        for i in &m.interfaces {
            let base = names::camel(&i.name);
            let at = format!("interface {}", i.name);
            types.claim(&at, base.clone());
            for suffix in [
                "Properties",
                "Property",
                "Signal",
                "Service",
                "Notifier",
                "Dispatch",
                "State",
                "Client",
            ] {
                types.claim(&format!("{at} (its {suffix})"), format!("{base}{suffix}"));
            }
        }
        let mut values = Namespace::new(file, "item", &mut errors);
        for i in &m.interfaces {
            let stem = names::snake(&i.name);
            let stem = stem.trim_start_matches("r#");
            let at = format!("interface {}", i.name);
            values.claim(&at, format!("{}_NAME", stem.to_ascii_uppercase()));
            values.claim(&format!("{at} (its event handler)"), format!("{stem}_event"));
        }
        for e in &m.enums {
            let mut members = Namespace::new(file, "variant", &mut errors);
            for member in &e.members {
                members.claim(
                    &format!("enum {}, member {}", e.name, member.name),
                    names::camel(&member.name),
                );
            }
        }
        for s in &m.structs {
            let mut fields = Namespace::new(file, "field", &mut errors);
            for f in &s.fields {
                fields
                    .claim(&format!("struct {}, field {}", s.name, f.name), names::snake(&f.name));
            }
        }
        for i in &m.interfaces {
            let at = format!("interface {}", i.name);
            let all = set.members(&m.name, i);
            let mut methods = Namespace::new(file, "method", &mut errors);
            for p in &all.properties {
                let snake = names::snake(&p.name);
                methods.claim(&format!("{at}, property {}", p.name), snake.clone());
                if !p.readonly {
                    methods.claim(
                        &format!("{at}, property {} (its setter)", p.name),
                        format!("set_{}", snake.trim_start_matches("r#")),
                    );
                }
            }
            for o in &all.operations {
                methods.claim(&format!("{at}, operation {}", o.name), names::snake(&o.name));
            }
            let mut notifier = Namespace::new(file, "notifier method", &mut errors);
            for p in &all.properties {
                let snake = names::snake(&p.name);
                notifier.claim(
                    &format!("{at}, property {} (its change)", p.name),
                    format!("{}_changed", snake.trim_start_matches("r#")),
                );
            }
            for s in &all.signals {
                notifier.claim(&format!("{at}, signal {}", s.name), names::snake(&s.name));
            }
            let mut variants = Namespace::new(file, "variant", &mut errors);
            for p in &all.properties {
                variants.claim(&format!("{at}, property {}", p.name), names::camel(&p.name));
            }
            let mut signals = Namespace::new(file, "variant", &mut errors);
            for s in &all.signals {
                signals.claim(&format!("{at}, signal {}", s.name), names::camel(&s.name));
            }
            for (kind, name, params) in all
                .operations
                .iter()
                .map(|o| ("operation", &o.name, &o.params))
                .chain(all.signals.iter().map(|s| ("signal", &s.name, &s.params)))
            {
                let mut params_ns = Namespace::new(file, "parameter", &mut errors);
                for p in params {
                    params_ns.claim(
                        &format!("{at}, {kind} {name}, param {}", p.name),
                        names::snake(&p.name),
                    );
                }
            }
        }
        // Inherited members: a derived interface may not declare a base's member again.
        for i in &m.interfaces {
            let all = set.members(&m.name, i);
            let at = format!("interface {}", i.name);
            let mut seen = BTreeMap::<(&str, &str), ()>::new();
            let names_of = all
                .properties
                .iter()
                .map(|p| ("property", p.name.as_str()))
                .chain(all.operations.iter().map(|o| ("operation", o.name.as_str())))
                .chain(all.signals.iter().map(|s| ("signal", s.name.as_str())));
            for key in names_of {
                if seen.insert(key, ()).is_some() {
                    errors.push(ModuleError {
                        file: file.to_path_buf(),
                        at: None,
                        element: format!("{at}, {} {}", key.0, key.1),
                        problem: "the interface it extends has one of that name already".into(),
                    });
                }
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ModuleErrors(errors)) }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::module::ModuleSet;

    fn problems(text: &str) -> Vec<String> {
        let set = ModuleSet::parse(&[(Path::new("m.yaml"), text)]).expect("a valid module");
        match super::check(&set) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn assert_clash(text: &str, expected: &str) {
        let all = problems(text);
        assert!(all.iter().any(|p| p.contains(expected)), "expected {expected:?} in {all:#?}");
    }

    #[test]
    fn names_that_become_one_rust_name_are_refused() {
        assert_clash(
            "name: m\ninterfaces:\n  - {name: I, properties: [{name: value, type: int}], signals: [{name: valueChanged}]}\n",
            "interface I, signal valueChanged: its Rust notifier method `value_changed` is also interface I, property value (its change)'s",
        );
        assert_clash(
            "name: m\ninterfaces:\n  - {name: I, properties: [{name: foo, type: int}], operations: [{name: setFoo}]}\n",
            "its Rust method `set_foo`",
        );
        assert_clash(
            "name: m\nstructs: [{name: LightState, fields: []}]\ninterfaces: [{name: Light}]\n",
            "its Rust type name `LightState`",
        );
        assert_clash(
            "name: m\nstructs: [{name: Result, fields: []}]\n",
            "`Result` is also what the generated code uses's",
        );
        assert_clash(
            "name: m\nstructs: [{name: S, fields: [{name: fooBar, type: int}, {name: foo_bar, type: int}]}]\n",
            "its Rust field `foo_bar`",
        );
        assert_clash(
            "name: m\nenums: [{name: E, members: [{name: value_1}, {name: value1}]}]\n",
            "its Rust variant `Value1`",
        );
        assert_clash(
            "name: m\ninterfaces:\n  - {name: Base, properties: [{name: id, type: int}]}\n  - {name: Derived, extends: {name: Base}, properties: [{name: id, type: int}]}\n",
            "interface Derived, property id: the interface it extends has one of that name already",
        );
    }

    #[test]
    fn modules_that_become_one_rust_module_are_refused() {
        let set = ModuleSet::parse(&[
            (Path::new("a.yaml"), "name: a.b\n"),
            (Path::new("b.yaml"), "name: a_b\n"),
        ])
        .expect("valid modules");
        let err = super::check(&set).expect_err("a clash").to_string();
        assert!(err.contains("its Rust module `a_b` is also module a.b's"), "{err}");
    }
}
