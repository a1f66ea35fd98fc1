//! The module document as written (`apigear.module/1.0`, YAML or JSON): serde types that
//! refuse unknown keys, as the schema does (`additionalProperties: false`).

use serde::Deserialize;

/// A whole module file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    pub schema: Option<String>,
    pub name: Option<String>,
    pub version: Option<Scalar>,
    pub description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub imports: Vec<Import>,
    #[serde(default)]
    pub externs: Vec<Extern>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub structs: Vec<Struct>,
    #[serde(default)]
    pub enums: Vec<Enum>,
}

/// A version or an enum value: YAML makes `1.0` a number and `0x2` a string, so both are
/// taken and checked later.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Import {
    pub name: String,
    #[serde(rename = "description")]
    _description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Extern {
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub meta: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Interface {
    pub name: String,
    pub description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
    pub extends: Option<Extends>,
    #[serde(default)]
    pub properties: Vec<NamedType>,
    #[serde(default)]
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub signals: Vec<Signal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Extends {
    pub name: String,
    pub import: Option<String>,
}

/// A property, parameter or field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedType {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    #[serde(default)]
    pub array: bool,
    pub import: Option<String>,
    #[serde(default)]
    pub readonly: bool,
    pub description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
}

/// An operation's `return`: `{type: int}`, or the shorthand `int` the schema's example uses.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Return {
    Short(String),
    Full(ReturnType),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReturnType {
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    #[serde(default)]
    pub array: bool,
    pub import: Option<String>,
    #[serde(rename = "description")]
    _description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Operation {
    pub name: String,
    pub description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub params: Vec<NamedType>,
    #[serde(rename = "return")]
    pub returns: Option<Return>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Signal {
    pub name: String,
    pub description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub params: Vec<NamedType>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Struct {
    pub name: String,
    pub description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub fields: Vec<NamedType>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Enum {
    pub name: String,
    pub description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub members: Vec<EnumMember>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnumMember {
    pub name: String,
    pub value: Option<Scalar>,
    pub description: Option<String>,
    /// Template settings, free-form; busbar reads only externs' `meta`.
    #[serde(rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
}
