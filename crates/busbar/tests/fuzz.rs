//! The configuration file parser on mutated files: a configuration or an error that says
//! what is wrong, never a panic (see `busbar_testkit::fuzz`).

use busbar::Config;
use busbar_testkit::fuzz::Fuzz;

#[test]
fn fuzz_config() {
    Fuzz::new("config", concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/config"))
        .dictionary(&[
            "brokers:\n",
            "bridges:\n",
            "  - ",
            "${X}",
            "${X:-y}",
            "&a ",
            "*a",
            "<<: ",
            "!!str ",
            "{",
            "[",
            "url: ",
            "tls:",
            "token:",
            "oidc:",
        ])
        .run(|input| {
            let Ok(text) = std::str::from_utf8(input) else { return };
            let _ = Config::parse(text, "fuzz.yaml", |name| (name == "X").then(|| "1".to_owned()));
        });
}
