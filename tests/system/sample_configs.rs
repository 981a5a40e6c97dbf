//! The sample configs in `deploy/` stay true: each parses into the settings type it documents
//! and passes validation.

#[test]
fn deploy_origin_toml_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/origin.toml");
    let settings =
        ssepush_origin::settings::Settings::load(Some(&path)).expect("deploy/origin.toml");
    let defaults = ssepush_origin::settings::Settings::default();
    // The sample documents the defaults: loading it changes nothing.
    assert_eq!(
        serde_json::to_value(&settings).unwrap(),
        serde_json::to_value(&defaults).unwrap()
    );
}
