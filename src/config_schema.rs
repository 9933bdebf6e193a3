//! `config.schema.json`: the JSON Schema of [`Config`], the source `scripts/gen-config.mjs`
//! derives every other description of the config from. This test fails when the file is stale;
//! `PIER_REGENERATE=1 cargo test --lib config_schema` (or `scripts/gen-config.sh`) rewrites it.

use crate::config::Config;

fn schema_text() -> String {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
        })
        .into_generator();
    let schema = generator.into_root_schema_for::<Config>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[test]
fn config_schema_json_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.schema.json");
    let wanted = schema_text();
    if std::env::var_os("PIER_REGENERATE").is_some() {
        std::fs::write(path, &wanted).expect("config.schema.json is writable");
        return;
    }
    let current = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        current == wanted,
        "config.schema.json is stale: run `bash scripts/gen-config.sh` and commit the result"
    );
}
