//! IDL names as Rust names: `propInt` -> `prop_int`, `value0` -> `Value0`, `tb.simple` ->
//! `tb_simple`; Rust keywords get a raw prefix.

/// `propInt` -> `prop_int`, `extern_vectorArray` -> `extern_vector_array`, `funcInt64` ->
/// `func_int64`.
pub fn snake(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                None | Some('_') => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                // The end of an acronym: `HTTPServer` -> `http_server`.
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(char::is_ascii_lowercase),
                Some(_) => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(*c);
        }
    }
    keyword_safe(out)
}

/// `value0` -> `Value0`, `my_type` -> `MyType`.
pub fn camel(name: &str) -> String {
    let mut out = String::new();
    for word in name.split('_').filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.push_str(chars.as_str());
        }
    }
    keyword_safe(out)
}

/// `tb.simple` -> `tb_simple`.
pub fn module(name: &str) -> String {
    keyword_safe(name.replace('.', "_").to_ascii_lowercase())
}

const KEYWORDS: [&str; 51] = [
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try",
];

fn keyword_safe(name: String) -> String {
    match name.as_str() {
        // These cannot be raw identifiers.
        "self" | "Self" | "super" | "crate" => format!("{name}_"),
        n if KEYWORDS.contains(&n) || n == "gen" => format!("r#{name}"),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert() {
        assert_eq!(snake("propInt"), "prop_int");
        assert_eq!(snake("funcInt64"), "func_int64");
        assert_eq!(snake("extern_vectorArray"), "extern_vector_array");
        assert_eq!(snake("propReadOnlyString"), "prop_read_only_string");
        assert_eq!(snake("HTTPServer"), "http_server");
        assert_eq!(snake("type"), "r#type");
        assert_eq!(snake("self"), "self_");
        assert_eq!(camel("value0"), "Value0");
        assert_eq!(camel("my_type"), "MyType");
        assert_eq!(camel("Vector3D"), "Vector3D");
        assert_eq!(module("tb.simple"), "tb_simple");
    }
}
