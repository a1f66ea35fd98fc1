use std::path::Path;

use super::*;

fn fixtures() -> ModuleSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    ModuleSet::load(&files).unwrap_or_else(|e| panic!("the fixtures load:\n{e}"))
}

fn problems(text: &str) -> Vec<String> {
    let others = "schema: apigear.module/1.0\nname: other\nversion: \"1.0\"\nstructs:\n  - name: Point\n    fields: [{name: x, type: int}]\n";
    match ModuleSet::parse(&[(Path::new("m.yaml"), text), (Path::new("other.yaml"), others)]) {
        Ok(_) => Vec::new(),
        Err(ModuleErrors(all)) => all.iter().map(ToString::to_string).collect(),
    }
}

fn assert_problem(text: &str, expected: &str) {
    let all = problems(text);
    assert!(all.iter().any(|p| p.contains(expected)), "expected {expected:?} in {all:#?}");
}

#[test]
fn the_test_api_shapes_load() {
    let set = fixtures();
    let simple = set.module("tb.simple").expect("tb.simple");
    assert_eq!(simple.version.as_deref(), Some("1.0"));
    let iface = &simple.interfaces[0];
    assert_eq!(iface.name, "SimpleInterface");
    assert_eq!(iface.properties[1].ty, TypeRef { ty: Type::Int32, array: false });
    assert_eq!(iface.properties[3].ty.ty, Type::Int64);
    assert_eq!(iface.operations[0].returns, None, "funcNoReturnValue is void");
    let arrays = &simple.interfaces[1];
    assert!(arrays.properties[0].ty.array);
    assert!(arrays.properties[2].readonly);

    let enums = set.module("tb.enum").expect("tb.enum");
    let values = |i: usize| enums.enums[i].members.iter().map(|m| m.value).collect::<Vec<_>>();
    assert_eq!(values(0), [0, 1, 2], "counted from 0");
    assert_eq!(values(2), [2, 1, 0, 5, 6], "counted on from the member before");

    let counter = set.module("counter").expect("counter");
    let props = &counter.interfaces[0].properties;
    let vector = Symbol { module: "custom_types".into(), name: "Vector3D".into() };
    let extern_vector = Symbol { module: "extern_types".into(), name: "MyVector3D".into() };
    assert_eq!(props[0].ty.ty, Type::Struct(vector.clone()));
    assert_eq!(props[1].ty.ty, Type::Extern(extern_vector.clone()));
    // The dotted form names the module too.
    assert_eq!(counter.interfaces[0].operations[1].params[0].ty.ty, Type::Struct(vector));
    let ext = set.extern_type(&extern_vector).expect("extern");
    assert_eq!(ext.rust_type(), Some("crate::MyVector3D"));

    let extends = set.module("tb.extends").expect("tb.extends");
    let derived = &extends.interfaces[1];
    let members = set.members(&extends.name, derived);
    let names: Vec<&str> = members.properties.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["id", "level"], "the base's members first");
    assert_eq!(members.operations[0].name, "ping");
}

#[test]
fn names_are_checked() {
    assert_problem("name: 9lives\n", "module: \"9lives\" is not a module name");
    assert_problem("name: a..b\n", "module: \"a..b\" is not a module name");
    assert_problem("name: a.\n", "is not a module name");
    assert_problem(
        "name: m\ninterfaces:\n  - name: My-Iface\n",
        "interface My-Iface: \"My-Iface\" is not a name",
    );
    assert_problem(
        "name: m\ninterfaces:\n  - name: I\n    properties: [{name: a, type: int}, {name: a, type: bool}]\n",
        "interface I, property a: the name is used twice",
    );
    assert_problem(
        "name: m\nstructs: [{name: A, fields: []}]\nenums: [{name: A, members: [{name: x}]}]\n",
        "the name is taken by a",
    );
}

#[test]
fn the_document_is_checked() {
    assert_problem("description: no name\n", "module: no name");
    assert_problem("name: m\nversion: 1.0\n", "quote it in YAML");
    assert_problem("name: m\nversion: \"one\"\n", "is not major.minor");
    assert_problem("name: m\nschema: apigear.module/2.0\n", "is not apigear.module/1.0");
    assert_problem(
        "name: m\ninterfaces:\n  - name: I\n    colour: red\n",
        "unknown field `colour`",
    );
    // A YAML error is placed where the reader stopped.
    assert_problem("name: m\n  - broken: [\n", "m.yaml:2:11: document:");
    // A problem in an element is placed at the element's name.
    assert_problem(
        "name: m\ninterfaces:\n  - name: I\n    properties:\n      - {name: p, type: Nope}\n",
        "m.yaml:5:10: interface I, property p:",
    );
}

#[test]
fn types_are_resolved_or_reported() {
    assert_problem(
        "name: m\ninterfaces:\n  - name: I\n    operations:\n      - name: f\n        params: [{name: p, type: Nope}]\n",
        "interface I, operation f, param p: unknown type Nope",
    );
    assert_problem(
        "name: m\ninterfaces:\n  - name: I\n    properties: [{name: p, type: Point, import: other}]\n",
        "comes from module other, which this module does not import",
    );
    assert_problem(
        "name: m\nimports: [{name: missing}]\n",
        "import missing: module missing is not among the modules loaded",
    );
    assert_problem(
        "name: m\ninterfaces:\n  - name: I\n    properties: [{name: p}]\n",
        "interface I, property p: no type",
    );
    assert_problem(
        "name: m\ninterfaces:\n  - name: I\n    properties: [{name: p, type: \"int[]\"}]\n",
        "arrays are written `array: true`",
    );
    assert_problem(
        "name: m\ninterfaces:\n  - name: I\n    properties: [{name: p, type: void}]\n",
        "void is only for operation returns",
    );
    // Imported and dotted names resolve; `return: int` is tolerated.
    assert!(problems(
        "name: m\nimports: [{name: other}]\ninterfaces:\n  - name: I\n    properties: [{name: p, type: Point, import: other}, {name: q, type: other.Point}]\n    operations: [{name: f, return: int}]\n"
    )
    .is_empty());
}

#[test]
fn enums_structs_and_extends_are_checked() {
    assert_problem(
        "name: m\nenums: [{name: E, members: [{name: a, value: 1}, {name: b, value: 1}]}]\n",
        "enum E, member b: value 1 is also a's",
    );
    assert_problem("name: m\nenums: [{name: E, members: [{name: a, value: -1}]}]\n", "is negative");
    assert_problem("name: m\nenums: [{name: E, members: []}]\n", "enum E: no members");
    assert_problem(
        "name: m\nstructs: [{name: A, fields: [{name: b, type: B}]}, {name: B, fields: [{name: a, type: A}]}]\n",
        "struct A: holds itself",
    );
    // In an array it is fine.
    assert!(
        problems("name: m\nstructs: [{name: A, fields: [{name: kids, type: A, array: true}]}]\n")
            .is_empty()
    );
    assert_problem(
        "name: m\ninterfaces:\n  - {name: A, extends: {name: B}}\n  - {name: B, extends: {name: A}}\n",
        "interface A: extends itself",
    );
    assert_problem(
        "name: m\nstructs: [{name: S, fields: []}]\ninterfaces:\n  - {name: A, extends: {name: S}}\n",
        "extends S, which is a struct",
    );
    assert_problem(
        "name: m\nenums: [{name: E, members: [{name: a, value: \"0x1z\"}]}]\n",
        "value \"0x1z\" is not a number",
    );
    assert!(
        problems("name: m\nenums: [{name: E, members: [{name: a, value: \"0x10\"}, {name: b}]}]\n")
            .is_empty()
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let all = problems(
        "name: m\ninterfaces:\n  - name: I\n    properties: [{name: p, type: Nope}, {name: q, type: Nada}]\n",
    );
    assert_eq!(all.len(), 2, "{all:#?}");
}

/// A name of a million characters once took `gen` 25 s and 240 MB; it is refused at once.
#[test]
fn sizes_past_the_limits_are_refused_at_once() {
    let huge = "a".repeat(1_000_000);
    assert_problem(&format!("name: m\ninterfaces:\n  - name: {huge}\n"), "names hold at most 256");
    let deep = format!("name: m\nx: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    assert_problem(&deep, "nested 100001 levels deep");
    // The error names the element without repeating the megabyte.
    assert!(
        problems(&format!("name: m\ninterfaces:\n  - name: {huge}\n"))
            .iter()
            .all(|p| p.len() < 1_000)
    );
}
