//! A checked module: names valid, types resolved, enum values assigned.

use std::path::PathBuf;

/// One ObjectAPI module.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    /// Dotted name (`tb.simple`): the first level of every topic.
    pub name: String,
    /// `major.minor[.patch]`, when given.
    pub version: Option<String>,
    /// Its documentation.
    pub description: Option<String>,
    /// The modules whose types it uses.
    pub imports: Vec<String>,
    /// Native types each language supplies.
    pub externs: Vec<Extern>,
    /// Its interfaces.
    pub interfaces: Vec<Interface>,
    /// Its structs.
    pub structs: Vec<Struct>,
    /// Its enums.
    pub enums: Vec<Enum>,
    /// The file it came from.
    pub file: PathBuf,
}

/// A native type (`meta` says what it is in each language; `rs.type` in Rust).
#[derive(Debug, Clone, PartialEq)]
pub struct Extern {
    /// Its name in the module.
    pub name: String,
    /// Its documentation.
    pub description: Option<String>,
    /// The template settings (`rs.type`, `py.name`, ...).
    pub meta: serde_json::Map<String, serde_json::Value>,
}

impl Extern {
    /// The Rust type path from `meta` (`rs.type`).
    pub fn rust_type(&self) -> Option<&str> {
        self.meta.get("rs.type").and_then(serde_json::Value::as_str)
    }
}

/// An interface: properties, operations and signals.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    /// Its name (the second level of its topics).
    pub name: String,
    /// Its documentation.
    pub description: Option<String>,
    /// The interface it extends, whose members it has too.
    pub extends: Option<Symbol>,
    /// Its own properties (with its bases', see [`ModuleSet::members`](super::ModuleSet::members)).
    pub properties: Vec<Property>,
    /// Its own operations.
    pub operations: Vec<Operation>,
    /// Its own signals.
    pub signals: Vec<Signal>,
}

/// A property.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// Its name, as on the wire.
    pub name: String,
    /// Its type.
    pub ty: TypeRef,
    /// No setter.
    pub readonly: bool,
    /// Its documentation.
    pub description: Option<String>,
}

/// An operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Its name, as on the wire.
    pub name: String,
    /// Its parameters, in order (they travel as a JSON array).
    pub params: Vec<Param>,
    /// Its result; `None` for a void operation.
    pub returns: Option<TypeRef>,
    /// Its documentation.
    pub description: Option<String>,
}

/// A signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Its name, as on the wire.
    pub name: String,
    /// Its arguments, in order.
    pub params: Vec<Param>,
    /// Its documentation.
    pub description: Option<String>,
}

/// A parameter or a struct field.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name (a struct field's JSON key).
    pub name: String,
    /// Its type.
    pub ty: TypeRef,
    /// Its documentation.
    pub description: Option<String>,
}

/// A struct.
#[derive(Debug, Clone, PartialEq)]
pub struct Struct {
    /// Its name.
    pub name: String,
    /// Its fields, in order.
    pub fields: Vec<Param>,
    /// Its documentation.
    pub description: Option<String>,
}

/// An enum; it travels as its members' integer values.
#[derive(Debug, Clone, PartialEq)]
pub struct Enum {
    /// Its name.
    pub name: String,
    /// Its members.
    pub members: Vec<EnumMember>,
    /// Its documentation.
    pub description: Option<String>,
}

/// An enum member.
#[derive(Debug, Clone, PartialEq)]
pub struct EnumMember {
    /// Its name.
    pub name: String,
    /// Its value: given, or one more than the member before (0 for the first).
    pub value: i64,
    /// Its documentation.
    pub description: Option<String>,
}

/// A type and whether it is an array of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeRef {
    /// The element type.
    pub ty: Type,
    /// A JSON array of it.
    pub array: bool,
}

/// A resolved type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Type {
    /// `bool`
    Bool,
    /// `int`, `int32`
    Int32,
    /// `int64`
    Int64,
    /// `float`, `float32`
    Float32,
    /// `float64`
    Float64,
    /// `string`
    String,
    /// `bytes`
    Bytes,
    /// `any`: whatever JSON.
    Any,
    /// An enum of some module.
    Enum(Symbol),
    /// A struct of some module.
    Struct(Symbol),
    /// An extern of some module.
    Extern(Symbol),
    /// An interface of some module, used as a type.
    Interface(Symbol),
}

/// A name in a module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Symbol {
    /// The module.
    pub module: String,
    /// The name in it.
    pub name: String,
}
