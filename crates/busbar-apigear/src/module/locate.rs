//! Where a problem is written: the line and column of the element a [`ModuleError`] names.
//!
//! The module is read into typed documents that keep no positions, so an element
//! (`interface Counter, operation increment, param step`) is found again in the text: each
//! named part is the first `name: <it>` (YAML, or `"name": "<it>"` in JSON) after the part
//! before it, which is where a reader of the file looks for it too. A part that cannot be
//! found leaves the problem without a position rather than at a wrong one.

use std::path::Path;

use super::ModuleError;

/// Fills in the position of every problem of `errors` about `file`, whose text is `text`.
pub(super) fn place(errors: &mut [ModuleError], file: &Path, text: &str) {
    for e in errors.iter_mut().filter(|e| e.at.is_none() && e.file == file) {
        e.at = locate(text, &e.element);
    }
}

/// Line and column (from 1) of the last named part of `element` in `text`.
pub(super) fn locate(text: &str, element: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found = None;
    for part in element.split(", ") {
        // `return`, or a bare kind (`interface Foo, property` for a list): nothing to find.
        let Some((kind, name)) = part.split_once(' ') else { continue };
        let (line, column) = (from..lines.len()).find_map(|i| {
            named(lines[i], name)
                .or_else(|| (kind == "import").then(|| listed(lines[i], name)).flatten())
                .map(|column| (i, column))
        })?;
        from = line + 1;
        found = Some((line + 1, column + 1));
    }
    found
}

/// The column of the key when `line` names `name` (`name: x`, `- name: x`,
/// `- { name: x, ... }`, `"name": "x"` anywhere in a JSON line).
fn named(line: &str, name: &str) -> Option<usize> {
    line.match_indices("name").find_map(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = &line[at + "name".len()..];
        let (column, value) = match before {
            Some('"') => (at - 1, after.strip_prefix("\":")?),
            None | Some(' ' | '{' | '-' | ',') => (at, after.strip_prefix(':')?),
            Some(_) => return None,
        };
        let value = value.split([',', '}', '#']).next().unwrap_or_default().trim();
        (value.trim_matches(['"', '\'']) == name).then_some(column)
    })
}

/// The column of `name` when `line` is the list item `- name` (an import).
fn listed(line: &str, name: &str) -> Option<usize> {
    let trimmed = line.trim_start();
    let item = trimmed.strip_prefix("- ")?.split('#').next().unwrap_or_default().trim();
    (item.trim_matches(['"', '\'']) == name).then_some(line.len() - trimmed.len() + 2)
}

#[cfg(test)]
mod tests {
    use super::locate;

    const MODULE: &str = "schema: apigear.module/1.0
name: counter
imports:
  - custom_types
interfaces:
  - name: Other
    operations:
      - name: increment
  - name: Counter
    properties:
      - name: count
        type: int
    operations:
      - name: increment
        params:
          - { name: step, type: nope }
";

    #[test]
    fn elements_are_found_where_a_reader_looks_for_them() {
        // The second `increment`: the one after `Counter`.
        assert_eq!(locate(MODULE, "interface Counter, operation increment"), Some((14, 9)));
        assert_eq!(
            locate(MODULE, "interface Counter, operation increment, param step"),
            Some((16, 15))
        );
        assert_eq!(locate(MODULE, "interface Counter, property count"), Some((11, 9)));
        assert_eq!(locate(MODULE, "import custom_types"), Some((4, 5)));
        assert_eq!(locate(MODULE, "interface Counter, operation increment, return"), Some((14, 9)));
        // What is not there has no position (never a wrong one).
        assert_eq!(locate(MODULE, "interface Counter, signal changed"), None);
        assert_eq!(locate(MODULE, "module"), None);
        let json = "{\"name\": \"m\", \"interfaces\": [\n  {\"name\": \"I\",\n   \"properties\": [{\"name\": \"p\", \"type\": \"x\"}]}]}";
        assert_eq!(locate(json, "interface I, property p"), Some((3, 20)));
    }
}
