//! `/openapi.json` against the routes the server registers, and a client generated from it
//! (`tests/support/openapi_roundtrip.py`, openapi-python-client) running the seed pages' examples.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn document(app: &TestApp) -> Value {
    let reply = app.get("/openapi.json", "").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "the document is JSON"
    );
    reply.body
}

const METHODS: [&str; 5] = ["get", "post", "patch", "delete", "options"];

/// Every registered route is in the document with its method, and the document names nothing
/// the server does not answer; every operation has a unique id, a success answer, and the error
/// shape on its refusals.
#[actix_web::test]
async fn the_document_covers_every_registered_route() {
    let app = spawn_app(Db::Sqlite).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");

    let registered: BTreeSet<(String, String)> = avatar_supervisor::api::ROUTES
        .iter()
        .chain(avatar_supervisor::web::ROUTES)
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert!(registered.len() > 40, "{registered:?}");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect();
    let missing: Vec<_> = registered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json: {missing:?}"
    );
    let phantom: Vec<_> = documented.difference(&registered).collect();
    assert!(
        phantom.is_empty(),
        "documented but not registered: {phantom:?}"
    );

    let mut ids = HashSet::new();
    for (method, path) in &registered {
        let op = &paths[path][method];
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{method} {path} has no operationId");
        assert!(
            ids.insert(id.to_string()),
            "operationId `{id}` is used twice"
        );
        assert!(op["tags"][0].is_string(), "{method} {path} has no tag");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('1') || s.starts_with('2') || s.starts_with('3')),
            "{method} {path} documents no success"
        );
        for (status, response) in responses {
            let json = &response["content"]["application/json"]["schema"];
            if status.starts_with('4') || status.starts_with('5') {
                if json.is_null() {
                    // Pages answer their refusals in HTML or text.
                    assert!(
                        path.starts_with("/s/") || path.starts_with("/static/"),
                        "{method} {path} {status} has no body"
                    );
                } else {
                    assert_eq!(
                        json["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    // A route with a path parameter declares it; a JSON body is a named schema.
    for (method, path) in &registered {
        let op = &paths[path][method];
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let declared = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true);
            assert!(declared, "{method} {path} does not declare `{name}`");
        }
        let body = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        if !op["requestBody"]["content"]["application/json"].is_null() {
            let name = body.as_str().unwrap_or_default();
            let schema = name.rsplit('/').next().unwrap_or_default();
            assert!(
                doc["components"]["schemas"][schema].is_object(),
                "{method} {path}: request body `{name}` is not a component"
            );
        }
    }

    // The credentials each dialect uses are schemes of the document.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["name"], "x-api-key");
    assert_eq!(schemes["api_secret"]["name"], "api-secret");
    assert_eq!(schemes["jwt"]["name"], "Authorization");
    assert_eq!(schemes["participant_token"]["scheme"], "bearer");
    let start = &paths["/v1/links/start-session"]["post"];
    assert_eq!(
        start["security"],
        serde_json::json!([{}]),
        "the link is the credential"
    );
    assert!(start["responses"]["401"].is_null());
    assert!(!paths["/v1/links"]["post"]["responses"]["401"].is_null());
}

/// `/docs` is a page that draws `/openapi.json` with this server's own script.
#[actix_web::test]
async fn the_reference_page_is_served() {
    let app = spawn_app(Db::Sqlite).await;
    let page = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a script");
    assert!(script.starts_with("/static/docs.js?v="), "{script}");
    let js = app.client.get(app.url(script)).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().contains("/openapi.json"));
}

/// openapi-python-client generates a client from the document (no warning allowed), which runs
/// the seed pages' examples; every answer must parse into its generated model and write back
/// unchanged.
#[actix_web::test]
async fn a_generated_client_round_trips_the_seed_examples() {
    let app = spawn_app(Db::Sqlite).await;
    let acct = app.account(4, 30.0, 1000).await;
    let venv = assets().join("openapi-venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `make setup`",
        venv.display()
    );
    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("openapi.json");
    std::fs::write(&spec, document(&app).await.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/openapi_roundtrip.py");
    let run = tokio::process::Command::new(&venv)
        .arg(&script)
        .arg("--spec")
        .arg(&spec)
        .args(["--base", &app.base, "--key", &acct.key, "--work"])
        .arg(work.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the round trip finishes within 5 minutes")
        .expect("run the round-trip script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the generated client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: every example round-tripped"),
        "{stdout}"
    );
    for operation in [
        "start_session_with_link -> 200",
        "create_link -> 200",
        "generate_agent -> 200",
        "speak -> 200",
        "connect -> 200",
        "start_deployment_session -> 200",
    ] {
        assert!(
            stdout.contains(operation),
            "{operation} did not run:\n{stdout}"
        );
    }
}
