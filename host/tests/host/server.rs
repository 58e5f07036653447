//! The HTTP sidecar, in process: login and continue, client mistakes as 400/413 with
//! JSON bodies, health and metrics, reload and rollback.

use std::sync::Arc;

use portcullis::server::{AppState, router};
use serde_json::{Value, json};

use crate::common::{Result, login_files, seeded_dir};

pub struct Server {
    pub url: String,
    app: Arc<AppState>,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    pub runtime: tokio::runtime::Runtime,
    pub client: reqwest::Client,
}

/// The bearer token of the test gateway (it does not vouch for password-less logins).
pub const GATEWAY_TOKEN: &str = "test-gateway-token-0123456789abcdef";
/// The bearer token of a gateway that vouches (an SSO front).
pub const VOUCHING_TOKEN: &str = "test-sso-gateway-token-0123456789abcd";

pub fn start(extra_config: &str) -> Server {
    let (dir, config) = seeded_dir(150, 60);
    // The fixture's caller reads its token from the environment; tests use files.
    let (gateway_file, sso_file) = (
        dir.path().join("gateway-token"),
        dir.path().join("sso-token"),
    );
    std::fs::write(&gateway_file, format!("{GATEWAY_TOKEN}\n")).unwrap();
    std::fs::write(&sso_file, VOUCHING_TOKEN).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "token_env = \"PORTCULLIS_GATEWAY_TOKEN\"",
        &format!(
            "token_file = \"{}\"\n\n[[server.caller]]\nname = \"sso\"\ntoken_file = \"{}\"\nvouches = true",
            gateway_file.display(),
            sso_file.display()
        ),
    );
    std::fs::write(&config, format!("{text}\n{extra_config}\n")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = Arc::new(AppState::load(&config).unwrap());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Served as `portcullis serve` serves: with its connection bounds.
    let served = router(app.clone());
    let limits = {
        let config = portcullis::PipelineConfig::load(&config).unwrap();
        portcullis::server::ConnectionLimits::from(&config.server)
    };
    runtime.spawn(async move {
        portcullis::server::serve_connections(
            listener,
            served,
            limits,
            std::future::pending(),
            std::time::Duration::from_secs(1),
        )
        .await
    });
    Server {
        url,
        app,
        dir,
        config,
        runtime,
        client: reqwest::Client::new(),
    }
}

impl Server {
    fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        token: Option<&str>,
    ) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut request = self.client.post(format!("{}{path}", self.url)).body(body);
            // The login endpoints need a caller's token; the admin ones an admin's.
            match (token, path.starts_with("/v1/")) {
                (Some(token), _) => request = request.bearer_auth(token),
                (None, true) => request = request.bearer_auth(GATEWAY_TOKEN),
                (None, false) => {}
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        })
    }

    fn get(&self, path: &str) -> String {
        self.runtime.block_on(async {
            self.client
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    }

    /// The first seeded login whose dry verdict has this decision type (and reason).
    pub fn login_with(&self, decision: &str, reason: Option<&str>) -> Value {
        let dry = portcullis::Gateway::open(
            &portcullis::PipelineConfig::load(&self.config).unwrap(),
            crate::common::runtime(),
        )
        .unwrap()
        .without_applying();
        for file in login_files(self.dir.path()) {
            let text = std::fs::read_to_string(&file).unwrap();
            let attempt = portcullis::LoginAttempt::from_json(&text).unwrap();
            let verdict = serde_json::to_value(dry.login(&attempt).unwrap()).unwrap();
            if verdict["decision"]["type"] == decision
                && reason.is_none_or(|r| verdict["decision"]["reason"] == r)
            {
                return serde_json::from_str(&text).unwrap();
            }
        }
        panic!("no seeded login with {decision} {reason:?}");
    }
}

#[test]
fn login_over_http_and_client_mistakes() -> Result {
    let server = start("");
    let login = server.login_with("allow", None);
    let (status, verdict) = server.post("/v1/login", login.to_string(), None);
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["decision"]["type"], "allow");
    assert_eq!(verdict["trace"].as_array().unwrap().len(), 4);

    let (status, body) = server.post("/v1/login", "{not json", None);
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid login JSON"),
        "{body}"
    );
    let (status, body) = server.post(
        "/v1/login",
        json!({"transaction_id": "t"}).to_string(),
        None,
    );
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("missing field"),
        "{body}"
    );
    let (status, body) = server.post("/v1/login", "x".repeat(100 * 1024), None);
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].is_string());
    let (status, body) = server.post("/v1/continue", "[]", None);
    assert_eq!(status, 400, "{body}");

    let health: Value = serde_json::from_str(&server.get("/healthz"))?;
    assert_eq!(health, json!({"status": "ok", "rules": 4}));
    let metrics = server.get("/metrics");
    for needle in [
        "portcullis_evaluations_total 1",
        "portcullis_verdicts_total{decision=\"allow\"} 1",
        "portcullis_rule_duration_seconds_count{rule=\"migrate-on-login\"} 1",
        "portcullis_outbox_backlog",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    Ok(())
}

#[test]
fn redirect_then_continue_over_http() -> Result {
    let server = start("");
    let login = server.login_with("redirect", Some("several_products"));
    let (status, redirected) = server.post("/v1/login", login.to_string(), None);
    assert_eq!(status, 200);
    let token = redirected["resume_token"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    let request = json!({
        "token": token,
        "transaction_id": login["transaction_id"],
        "result": {"verified": true},
    });
    let (status, resumed) = server.post("/v1/continue", request.to_string(), None);
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["decision"]["type"], "allow");
    assert!(resumed["applied"]["created_user"].as_bool().unwrap());
    let (status, again) = server.post("/v1/continue", request.to_string(), None);
    assert_eq!(status, 403);
    assert_eq!(again["refused"], "replayed");
    Ok(())
}

#[test]
fn reload_swaps_atomically_and_rollback_restores() -> Result {
    // SAFETY: this variable is read by this test's server only; no other thread of
    // the test binary reads or writes it.
    unsafe {
        std::env::set_var(
            "PORTCULLIS_TEST_ADMIN_TOKEN",
            "an-admin-token-for-the-reload-test-0123",
        )
    };
    let server = start("[server]\nadmin_token_env = \"PORTCULLIS_TEST_ADMIN_TOKEN\"");
    let token = Some("an-admin-token-for-the-reload-test-0123");
    assert_eq!(server.post("/admin/reload", "", None).0, 401);
    assert_eq!(
        server
            .post(
                "/admin/reload",
                "",
                Some("wrong-token-wrong-token-wrong-token-00")
            )
            .0,
        401
    );

    let before = server.app.gateway();
    let original = std::fs::read_to_string(&server.config)?;
    // Drop the last rule (id-propagation) and reload.
    let cut = original.rfind("[[rule]]").unwrap();
    let server_section = original.find("[server]").unwrap();
    let three_rules = format!("{}{}", &original[..cut], &original[server_section..]);
    std::fs::write(&server.config, &three_rules)?;
    let (status, body) = server.post("/admin/reload", "", token);
    assert_eq!((status, body["rules"].as_u64()), (200, Some(3)), "{body}");
    assert_eq!(server.app.gateway().pipeline().rules().len(), 3);
    // A login that started before the reload keeps its pipeline.
    assert_eq!(before.pipeline().rules().len(), 4);

    std::fs::write(
        &server.config,
        "[[rule]]\nname = \"broken\"\ncomponent = \"/nonexistent.wasm\"\n",
    )?;
    let (status, body) = server.post("/admin/reload", "", token);
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nonexistent.wasm"));
    assert_eq!(
        server.app.gateway().pipeline().rules().len(),
        3,
        "a failed reload keeps the running pipeline"
    );

    let (status, body) = server.post("/admin/rollback", "", token);
    assert_eq!((status, body["rules"].as_u64()), (200, Some(4)), "{body}");
    let metrics = server.get("/metrics");
    assert!(
        metrics.contains("portcullis_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn admin_endpoints_are_off_without_a_token() {
    let server = start("");
    assert_eq!(server.post("/admin/reload", "", Some("anything")).0, 404);
    assert_eq!(server.post("/admin/rollback", "", None).0, 404);
}

#[test]
fn the_login_endpoints_need_a_callers_token_and_metrics_do_not() -> Result {
    let server = start("");
    let login = server.login_with("allow", None);
    for token in [None, Some("not-a-caller-token-not-a-caller-token")] {
        let status = server.runtime.block_on(async {
            let mut request = server
                .client
                .post(format!("{}/v1/login", server.url))
                .body(login.to_string());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send().await.unwrap().status().as_u16()
        });
        assert_eq!(status, 401, "token {token:?}");
    }
    let continued = server.runtime.block_on(async {
        server
            .client
            .post(format!("{}/v1/continue", server.url))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(continued, 401);
    assert!(
        server
            .get("/metrics")
            .contains("portcullis_evaluations_total")
    );
    assert_eq!(server.post("/v1/login", login.to_string(), None).0, 200);
    Ok(())
}

#[test]
fn only_a_vouching_caller_may_send_a_login_without_a_password() -> Result {
    let server = start("");
    let mut login = server.login_with("allow", None);
    login.as_object_mut().unwrap().remove("password");
    let (status, body) = server.post("/v1/login", login.to_string(), None);
    assert_eq!(status, 403, "{body}");
    let (status, body) = server.post("/v1/login", login.to_string(), Some(VOUCHING_TOKEN));
    assert_eq!(status, 200, "{body}");
    Ok(())
}

#[test]
fn a_caller_cannot_supply_the_user_or_the_time_of_a_resume() -> Result {
    let server = start("");
    let mut login = server.login_with("allow", None);
    login["user"] = json!({"id": "usr_attacker", "email": login["email"], "email_verified": true});
    let (status, body) = server.post("/v1/login", login.to_string(), None);
    assert_eq!(status, 400, "{body}");
    let request = json!({"token": "x.y", "transaction_id": "t", "result": {}, "time_ms": 0});
    let (status, body) = server.post("/v1/continue", request.to_string(), None);
    assert_eq!(status, 400, "{body}");
    let seeded = server.login_with("allow", None);
    let now = seeded["time_ms"].as_u64().unwrap();
    let request =
        json!({"token": "x.y", "transaction_id": "t", "result": {}, "time_ms": now + 3_600_000});
    let (status, body) = server.post("/v1/continue", request.to_string(), None);
    assert_eq!(status, 400, "a continue from the future: {body}");
    for (time_ms, says) in [(1, "the past"), (now + 3_600_000, "the future")] {
        let mut far = seeded.clone();
        far["time_ms"] = json!(time_ms);
        let (status, body) = server.post("/v1/login", far.to_string(), None);
        assert_eq!(status, 400, "a time far in {says}: {body}");
    }
    Ok(())
}

#[test]
fn half_open_connections_are_capped_and_closed_while_logins_go_on() -> Result {
    use std::io::Read;
    let server =
        start("[server]\nmax_connections = 64\nheader_timeout_ms = 1500\nidle_timeout_ms = 1500");
    let addr = server.url.trim_start_matches("http://").to_owned();
    let login = server.login_with("allow", None);
    let mut again = login.clone();
    again["transaction_id"] = json!(format!(
        "{}-again",
        again["transaction_id"].as_str().unwrap()
    ));
    // Half-open connections, never a byte sent, past the cap of 64.
    let mut idle: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The oldest silent ones made room (closed long before the header deadline)…
    let mut evicted = 0;
    for stream in &mut idle[..30] {
        stream.set_read_timeout(Some(std::time::Duration::from_millis(200)))?;
        let mut buffer = [0u8; 16];
        evicted += matches!(stream.read(&mut buffer), Ok(0)) as usize;
    }
    assert!(evicted >= 20, "{evicted} of the 30 oldest evicted");
    // …and a real client's new connection gets in during the attack.
    assert_eq!(server.post("/v1/login", login.to_string(), None).0, 200);
    // The half-open ones are closed once the header deadline passes.
    for mut stream in idle {
        stream.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
        let mut buffer = [0u8; 16];
        assert_eq!(stream.read(&mut buffer)?, 0, "closed by the server");
    }
    let mut again = server.login_with("allow", None);
    again["transaction_id"] = json!(format!(
        "{}-again",
        again["transaction_id"].as_str().unwrap()
    ));
    assert_eq!(server.post("/v1/login", again.to_string(), None).0, 200);
    Ok(())
}
