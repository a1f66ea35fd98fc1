//! The ApiGear module parser on mutated module files: a module set or errors that say what
//! is wrong, never a panic (see `busbar_testkit::fuzz`).

use std::path::Path;

use busbar_apigear::module::ModuleSet;
use busbar_testkit::fuzz::Fuzz;

#[test]
fn fuzz_module() {
    Fuzz::new("apigear_module", concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/module"))
        .dictionary(&[
            "schema: apigear.module/1.0\n",
            "name: ",
            "interfaces:\n",
            "structs:\n",
            "enums:\n",
            "operations:\n",
            "properties:\n",
            "signals:\n",
            "params:\n",
            "type: ",
            "array: true",
            "import: ",
            "extends: ",
            "&a ",
            "*a",
        ])
        .run(|input| {
            let Ok(text) = std::str::from_utf8(input) else { return };
            let _ = ModuleSet::parse(&[(Path::new("fuzz.module.yaml"), text)]);
        });
}
