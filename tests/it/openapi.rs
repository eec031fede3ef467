//! docs/openapi.yaml against the router: every route of
//! `sluice::http::paths()` is in the spec with the scope it really needs
//! (the spec's `x-scope`), and every path of the spec is a route.
//!
//! The spec is read by a small line reader instead of a YAML library (the
//! usual one, serde_yaml, is unmaintained): it knows only the shape of the
//! `paths:` block, two-space indentation, and refuses anything else there,
//! so a spec it cannot read fails the test instead of passing it.

use std::collections::BTreeMap;
use std::path::Path;

/// The spec's name of a scope: the variant of `auth::Access`, in lower case
/// (the type is crate-private, so it is read through `Debug`; a renamed
/// variant fails the test below, it cannot pass it).
fn scope_name(access: impl std::fmt::Debug) -> String {
    format!("{access:?}").to_lowercase()
}

/// The spec's path of a router path. Two differ, on purpose:
/// - axum cannot capture `{model}:predict` in one segment, so the router has
///   `/v1/models/{model_action}` and the handler splits on ':'; the spec
///   names the one action that exists;
/// - server metadata is `/v2/` in the Open Inference Protocol's own spec,
///   and the spec keeps its spelling (the server trims the slash).
fn spec_path(router_path: &str) -> &str {
    match router_path {
        "/v1/models/{model_action}" => "/v1/models/{model}:predict",
        "/v2" => "/v2/",
        other => other,
    }
}

/// The `paths:` of an OpenAPI document in block style with two-space
/// indentation, each with its `x-scope`. Errors name the line.
fn spec_paths(yaml: &str) -> Result<BTreeMap<String, String>, String> {
    let mut lines = yaml.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut found_paths = false;
    for (_, line) in lines.by_ref() {
        if line.trim_end() == "paths:" {
            found_paths = true;
            break;
        }
    }
    if !found_paths {
        return Err("no top-level `paths:` line".into());
    }
    let mut paths: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in lines {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if line.starts_with('\t') || body.starts_with('\t') {
            return Err(format!("line {n}: a tab in the indentation"));
        }
        match indent {
            // The next top-level key ends the block.
            0 => break,
            2 => {
                let key = body
                    .strip_suffix(':')
                    .ok_or_else(|| format!("line {n}: expected `  /path:`, got {line:?}"))?;
                let key = unquote(key);
                if !key.starts_with('/') {
                    return Err(format!("line {n}: a path must start with '/', got {key:?}"));
                }
                if paths.insert(key.to_string(), None).is_some() {
                    return Err(format!("line {n}: path {key} appears twice"));
                }
                current = Some(key.to_string());
            }
            4 if body.starts_with("x-scope:") => {
                let path = current
                    .as_ref()
                    .ok_or_else(|| format!("line {n}: x-scope outside a path"))?;
                let scope = body.strip_prefix("x-scope:").unwrap_or_default().trim();
                let slot = paths.get_mut(path).expect("inserted above");
                if slot.replace(scope.to_string()).is_some() {
                    return Err(format!("line {n}: a second x-scope for {path}"));
                }
            }
            // The rest of a path item (its parameters and operations), which
            // the router check does not need.
            4.. => {}
            _ => return Err(format!("line {n}: indentation of {indent} in `paths:`")),
        }
    }
    paths
        .into_iter()
        .map(|(path, scope)| match scope {
            Some(scope) => Ok((path, scope)),
            None => Err(format!("{path} has no x-scope")),
        })
        .collect()
}

fn unquote(key: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = key.strip_prefix(q).and_then(|k| k.strip_suffix(q)) {
            return inner;
        }
    }
    key
}

#[test]
fn openapi_spec_lists_every_route_with_its_scope() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let spec = spec_paths(&yaml).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let router: BTreeMap<String, String> = sluice::http::paths()
        .into_iter()
        .map(|(path, access)| (spec_path(path).to_string(), scope_name(access)))
        .collect();
    assert_eq!(
        router.len(),
        sluice::http::paths().len(),
        "two router paths map to one spec path"
    );
    let missing: Vec<_> = router.keys().filter(|p| !spec.contains_key(*p)).collect();
    let extra: Vec<_> = spec.keys().filter(|p| !router.contains_key(*p)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/openapi.yaml and the router disagree:\n  routes not in the spec: {missing:?}\n  \
         spec paths that are not routes: {extra:?}"
    );
    for (path, scope) in &router {
        assert_eq!(
            &spec[path], scope,
            "x-scope of {path} in docs/openapi.yaml (the router says {scope})"
        );
    }
    eprintln!(
        "openapi: {} routes, each in the spec with its scope",
        router.len()
    );
}

#[test]
fn the_spec_reader_refuses_what_it_cannot_read() {
    let ok = "openapi: 3.0.3\npaths:\n  # a comment\n  '/a/{x}':\n    x-scope: infer\n    get:\n      x-scope: not-this-one\n\n  /b:\n    x-scope: admin\ncomponents:\n  /not-a-path:\n";
    let paths = spec_paths(ok).unwrap();
    assert_eq!(paths.len(), 2);
    assert_eq!(paths["/a/{x}"], "infer");
    assert_eq!(paths["/b"], "admin");

    for (bad, why) in [
        (
            "paths:\n  /a:\n    x-scope: infer\n  /a:\n    x-scope: infer\n",
            "twice",
        ),
        ("paths:\n  /a:\n    get: {}\n", "no x-scope"),
        ("paths:\n  a:\n    x-scope: infer\n", "must start with '/'"),
        ("paths:\n   /a:\n    x-scope: infer\n", "indentation of 3"),
        ("paths:\n  /a: {}\n", "expected"),
        (
            "paths:\n  /a:\n    x-scope: infer\n    x-scope: admin\n",
            "second x-scope",
        ),
        ("openapi: 3.0.3\n", "no top-level"),
    ] {
        let e = spec_paths(bad).unwrap_err();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}
