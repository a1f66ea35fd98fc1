//! Structs and enums.

use super::{Gen, Out, names};
use crate::module::{Enum, Struct, Type};

/// An enum that travels as its members' integer values.
pub(crate) fn enumeration(out: &mut Out, e: &Enum) {
    let name = names::camel(&e.name);
    out.blank();
    match &e.description {
        Some(d) => out.doc(d),
        None => out.line(&format!("/// The enum `{}`.", e.name)),
    }
    out.line("///");
    out.line("/// It travels as its integer value; a value it does not have is refused.");
    out.line("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]");
    out.line(&format!("pub enum {name} {{"));
    for (i, m) in e.members.iter().enumerate() {
        match &m.description {
            Some(d) => out.doc(d),
            None => out.line(&format!("/// `{}` ({})", m.name, m.value)),
        }
        if i == 0 {
            out.line("#[default]");
        }
        out.line(&format!("{},", names::camel(&m.name)));
    }
    out.line("}");
    out.blank();
    out.line(&format!("impl {name} {{"));
    out.line("/// Its value on the wire.");
    out.line("pub const fn value(self) -> i64 {");
    out.line("match self {");
    for m in &e.members {
        out.line(&format!("Self::{} => {},", names::camel(&m.name), m.value));
    }
    out.line("}");
    out.line("}");
    out.blank();
    out.line("/// The member with `value`, if there is one.");
    out.line("pub const fn from_value(value: i64) -> Option<Self> {");
    out.line("match value {");
    for m in &e.members {
        out.line(&format!("{} => Some(Self::{}),", m.value, names::camel(&m.name)));
    }
    out.line("_ => None,");
    out.line("}");
    out.line("}");
    out.line("}");
    out.blank();
    out.line(&format!("impl serde::Serialize for {name} {{"));
    out.line("fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {");
    out.line("s.serialize_i64(self.value())");
    out.line("}");
    out.line("}");
    out.blank();
    out.line(&format!("impl<'de> serde::Deserialize<'de> for {name} {{"));
    out.line("fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {");
    out.line("let value = <i64 as serde::Deserialize>::deserialize(d)?;");
    out.line(&format!(
        "Self::from_value(value).ok_or_else(|| <D::Error as serde::de::Error>::custom(format!(\"{{value}} is not a value of {}\")))",
        e.name
    ));
    out.line("}");
    out.line("}");
    out.blank();
    out.line(&format!("impl rt::Finite for {name} {{"));
    out.line("fn is_finite(&self) -> bool {");
    out.line("true");
    out.line("}");
    out.line("}");
}

/// A struct whose JSON keys are the IDL field names.
pub(crate) fn structure(out: &mut Out, tn: &Gen<'_>, s: &Struct) {
    let name = names::camel(&s.name);
    out.blank();
    match &s.description {
        Some(d) => out.doc(d),
        None => out.line(&format!("/// The struct `{}`.", s.name)),
    }
    out.line("#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]");
    out.line("#[serde(crate = \"busbar_apigear::serde\", default)]");
    out.line(&format!("pub struct {name} {{"));
    for f in &s.fields {
        match &f.description {
            Some(d) => out.doc(d),
            None => out.line(&format!("/// `{}`", f.name)),
        }
        out.line(&format!("#[serde(rename = {:?})]", f.name));
        out.line(&format!("pub {}: {},", names::snake(&f.name), tn.ty(&f.ty)));
    }
    out.line("}");
    out.blank();
    // Externs cannot be looked into: their numbers are taken as finite.
    let checked: Vec<String> = s
        .fields
        .iter()
        .filter(|f| !matches!(f.ty.ty, Type::Extern(_)))
        .map(|f| format!("rt::Finite::is_finite(&self.{})", names::snake(&f.name)))
        .collect();
    out.line(&format!("impl rt::Finite for {name} {{"));
    out.line("fn is_finite(&self) -> bool {");
    out.line(&if checked.is_empty() { "true".to_owned() } else { checked.join(" && ") });
    out.line("}");
    out.line("}");
}
