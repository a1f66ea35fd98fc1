//! Python's `%(name)s` formatting, as CSTBox topic formats and event names use it.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// `%(name)X`: a constant pattern.
static PARAMETER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"%\(([A-Za-z0-9_]+)\)([sfdx])").expect("a valid constant pattern")
});

/// The `%(name)X` parameters of a format, `X` one of `s f d x`.
pub fn parameters(format: &str) -> Vec<String> {
    parameter_re().captures_iter(format).map(|c| c[1].to_owned()).collect()
}

fn parameter_re() -> &'static Regex {
    &PARAMETER
}

/// Fills `format` from `values`: `%(n)s` is the text, `%(n)d` and `%(n)x` need a whole
/// number, `%(n)f` a number (six decimals, as Python). A value that does not fit its
/// conversion leaves the format unfilled, as CSTBox does on a `TypeError`; `None` when a
/// parameter has no value at all.
pub fn fill(format: &str, values: &HashMap<String, String>) -> Option<String> {
    let mut out = String::with_capacity(format.len());
    let mut last = 0;
    for c in parameter_re().captures_iter(format) {
        let whole = c.get(0)?;
        out.push_str(&format[last..whole.start()]);
        let value = values.get(&c[1])?;
        let converted = match &c[2] {
            "s" => Some(value.clone()),
            "d" => value.parse::<i64>().ok().map(|n| n.to_string()),
            "x" => value.parse::<i64>().ok().map(|n| format!("{n:x}")),
            _ => value.parse::<f64>().ok().map(|f| format!("{f:.6}")),
        };
        match converted {
            Some(v) => out.push_str(&v),
            None => return Some(format.to_owned()),
        }
        last = whole.end();
    }
    out.push_str(&format[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fill_as_python_does() {
        let v: HashMap<String, String> =
            [("which".to_owned(), "kitchen".to_owned()), ("n".to_owned(), "7".to_owned())].into();
        assert_eq!(fill("/usage_%(which)s", &v).as_deref(), Some("/usage_kitchen"));
        assert_eq!(fill("%(n)d/%(n)x/%(n)f", &v).as_deref(), Some("7/7/7.000000"));
        // A string where a number is due: the raw format, as CSTBox's TypeError fallback.
        assert_eq!(fill("n_%(which)d", &v).as_deref(), Some("n_%(which)d"));
        assert_eq!(fill("%(missing)s", &v), None);
        assert_eq!(parameters("/a/%(x)s/%(y_1)d"), ["x", "y_1"]);
    }
}
