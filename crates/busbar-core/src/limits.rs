//! Bounds on the files busbar reads whole: configuration, gateway rules, interface modules.
//!
//! They come from the operator, not from the network, but a mistaken or mangled one (a file
//! nested a hundred thousand levels deep, a name of a million characters) once took minutes
//! and hundreds of megabytes before any error. Past these bounds the reader refuses at once,
//! saying which bound and what was found; real files stay far below them.

/// The largest file read: 16 MiB.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// The deepest nesting of a YAML or JSON document.
pub const MAX_NESTING: usize = 100;

/// The longest name (an interface, an operation, a property) in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Refuses a document over [`MAX_FILE_BYTES`] or nested deeper than [`MAX_NESTING`],
/// before a parser spends time on it. The depth is read off the text (indentation,
/// compact `- ` sequences, and `[`/`{` outside quotes and comments), which can only
/// overstate the depth a parser would find.
pub fn check_document(text: &str) -> Result<(), String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!("the file is {} bytes; at most {MAX_FILE_BYTES} are read", text.len()));
    }
    let depth = nesting(text);
    if depth > MAX_NESTING {
        return Err(format!(
            "the document is nested {depth} levels deep; at most {MAX_NESTING} are read"
        ));
    }
    Ok(())
}

/// Reads the file at `path` as text, never more than one byte past [`MAX_FILE_BYTES`]
/// (which [`check_document`] then refuses), whatever its size.
pub fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_FILE_BYTES as u64 + 1).read_to_string(&mut text)?;
    Ok(text)
}

/// Refuses a name longer than [`MAX_NAME_BYTES`].
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("a name of {} bytes; names hold at most {MAX_NAME_BYTES}", name.len()));
    }
    Ok(())
}

/// The deepest nesting in `text`, over-estimated rather than under.
fn nesting(text: &str) -> usize {
    let mut deepest = 0;
    // Indentations of the enclosing block lines.
    let mut blocks: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    for line in text.lines() {
        let mut block = 0;
        if quote.is_none() && flow == 0 {
            let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
            let rest = &line[indent..];
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            while blocks.last().is_some_and(|&i| i >= indent) {
                blocks.pop();
            }
            blocks.push(indent);
            // `- - - x` nests one sequence per dash on a single line.
            let mut items = rest;
            while let Some(after) = items.strip_prefix("- ").or_else(|| items.strip_prefix("-\t")) {
                block += 1;
                items = after.trim_start_matches([' ', '\t']);
            }
            block += blocks.len();
        }
        let mut previous = ' ';
        for c in line.chars() {
            match quote {
                Some(q) if c == q && previous != '\\' => quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\'' => quote = Some(c),
                    '#' if previous == ' ' || previous == '\t' => break,
                    '[' | '{' => {
                        flow += 1;
                        deepest = deepest.max(block + flow);
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
        }
        // A quote left open at the end of a line continues only inside double quotes or
        // flow collections; plain lines never carry one over.
        if quote == Some('\'') && flow == 0 {
            quote = None;
        }
        deepest = deepest.max(block + flow);
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass() {
        let yaml = "brokers:\n  local:\n    url: mem://\n    topics: [a, b]\n  x:\n    - a\n    - b: {c: [1, 2]}\n";
        assert!(check_document(yaml).is_ok());
        assert!(nesting(yaml) < 10, "{}", nesting(yaml));
        assert!(check_document("{\"a\": [\"]]]]\", {\"b\": 1}]}").is_ok());
        assert!(check_document("name: 'it''s [not' # [[[[ a comment\n").is_ok());
    }

    #[test]
    fn deep_documents_are_refused_at_once() {
        let flow = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = check_document(&flow).expect_err("flow nesting");
        assert!(err.contains("100001 levels"), "{err}");
        let dashes = format!("{}x\n", "- ".repeat(1_000));
        assert!(check_document(&dashes).is_err());
        let mut blocks = String::new();
        for level in 0..200 {
            blocks.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
        }
        assert!(check_document(&blocks).is_err());
        assert!(check_document(&"x".repeat(MAX_FILE_BYTES + 1)).is_err());
    }

    #[test]
    fn long_names_are_refused() {
        assert!(check_name("Counter").is_ok());
        let err = check_name(&"a".repeat(1_000_000)).expect_err("a huge name");
        assert!(err.contains("1000000 bytes"), "{err}");
    }
}
