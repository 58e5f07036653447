//! The wire formats of the systems we imitate, driven by their official clients (which
//! nobody here wrote): the `authy` and `twilio` Python clients against the provider
//! simulator, our own providers' clients against it, and `/metrics` read by promtool
//! and the Prometheus Python client's OpenMetrics parser.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::{Result, Simulator, clients_python, not_run, workspace_root};

/// Runs one script of host/tests/clients with the clients' python; its JSON output.
fn run_client(script: &str, args: &[&str], env: &[(&str, &str)]) -> Option<Value> {
    let python = match clients_python() {
        Ok(python) => python,
        Err(why) => {
            not_run(&why);
            return None;
        }
    };
    let output = Command::new(python)
        .arg(workspace_root().join("host/tests/clients").join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}: {stderr}");
    Some(serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{script}: {e}")))
}

#[test]
fn the_official_authy_client_sends_verifies_and_reads_a_users_status() -> Result {
    let sim = Simulator::start(&["--seed-legacy", "3"]);
    let id = portcullis::jobs::seed::legacy_sms_id(1);
    let Some(seen) = run_client(
        "authy_sim.py",
        &[&sim.url, &id],
        &[("AUTHY_API_KEY", "sim-legacy-key")],
    ) else {
        return Ok(());
    };
    assert_eq!(seen["sms"]["ok"], true, "{seen}");
    assert_eq!(seen["sms"]["cellphone"], "+1-XXX-XXX-XX01");
    // A wrong token: 401 with the API's error code, which the client reads as errors.
    assert_eq!(seen["wrong"]["ok"], false);
    assert_eq!(seen["wrong"]["status"], 401);
    assert_eq!(seen["wrong"]["content"]["error_code"], "60020");
    assert_eq!(
        seen["wrong"]["errors"],
        json!({"message": "Token is invalid"})
    );
    assert_eq!(seen["right"]["ok"], true, "{seen}");
    // Numeric ids, which the client insists on.
    assert_eq!(
        seen["non_numeric_id"],
        "Invalid Authy id. Only digits accepted."
    );
    let status = &seen["status"]["content"]["status"];
    assert_eq!(seen["status"]["ok"], true);
    assert_eq!(status["authy_id"], json!(id.parse::<u64>()?));
    assert_eq!(status["phone_number"], "XXX-XXX-0001");
    assert_eq!(status["country_code"], 1);
    assert_eq!(seen["missing"]["status"], 404);
    assert_eq!(
        seen["missing"]["errors"],
        json!({"message": "User not found."})
    );
    // What the simulator does not serve answers the API's JSON error, not an empty 404.
    for route in ["request_call", "phones_info"] {
        assert_eq!(seen["unknown"][route]["status"], 404, "{seen}");
        assert_eq!(seen["unknown"][route]["error_code"], "60000", "{seen}");
        assert!(seen["unknown"][route]["errors"]["message"].is_string());
    }
    Ok(())
}

#[test]
fn unknown_old_provider_routes_answer_the_apis_json_error() -> Result {
    let sim = Simulator::start(&[]);
    let client = reqwest::blocking::Client::new();
    for (method, path) in [
        ("POST", "/protected/json/users/new"),
        ("POST", "/protected/json/phones/verification/start"),
        ("GET", "/protected/json/phones/info"),
        ("GET", "/protected/json/call/1000000"),
    ] {
        let response = client
            .request(method.parse()?, format!("{}{path}", sim.url))
            .header("X-Authy-API-Key", "sim-legacy-key")
            .send()?;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json()?;
        assert_eq!(body["success"], false, "{path}");
        assert_eq!(body["error_code"], "60000", "{path}");
        assert!(body["errors"]["message"].is_string(), "{path}");
    }
    Ok(())
}

#[test]
fn the_official_twilio_client_creates_checks_fetches_and_cancels() -> Result {
    let sim = Simulator::start(&[]);
    let to = "+14155552671";
    let Some(seen) = run_client(
        "twilio_verify_sim.py",
        &[&sim.url, "VAsim", to],
        &[
            ("TWILIO_ACCOUNT_SID", "ACsim"),
            ("TWILIO_AUTH_TOKEN", "sim-verify-token"),
        ],
    ) else {
        return Ok(());
    };
    let sms = &seen["sms"];
    assert_eq!(sms["status"], "pending", "{seen}");
    assert_eq!(sms["account_sid"], "ACsim");
    assert!(sms["sid"].as_str().unwrap().starts_with("VE"));
    assert!(sms["date_created"].is_string(), "{seen}");
    assert!(
        sms["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/Verifications/{}", sms["sid"].as_str().unwrap()))
    );
    assert_eq!(sms["send_code_attempts"][0]["channel"], "sms");
    assert_eq!(seen["check_wrong_by_to"]["status"], "pending");
    assert_eq!(seen["check_right_by_to"]["status"], "approved");
    assert_eq!(seen["check_right_by_to"]["valid"], true);
    assert_eq!(seen["check_again"], json!({"status": 404, "code": 20404}));

    assert_eq!(seen["call"]["channel"], "call", "{seen}");
    assert_eq!(seen["fetched"]["sid"], seen["call"]["sid"]);
    assert_eq!(seen["fetched"]["status"], "pending");
    assert_eq!(seen["check_right_by_sid"]["status"], "approved", "{seen}");
    assert_eq!(seen["check_right_by_sid"]["sid"], seen["call"]["sid"]);

    assert_eq!(seen["canceled"]["status"], "canceled", "{seen}");
    assert_eq!(
        seen["check_canceled"],
        json!({"status": 404, "code": 20404})
    );
    assert_eq!(seen["cancel_again"], json!({"status": 404, "code": 20404}));
    // The call went out as a call.
    let inbox = sim.get("/sim/inbox?to=%2B14155552671");
    let providers: Vec<&str> = inbox
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["verify", "verify-call", "verify"]);
    Ok(())
}

#[test]
fn our_verify_client_cancels_a_pending_verification() -> Result {
    use portcullis::providers::verify::{Channel, VerifyClient};
    let sim = Simulator::start(&[]);
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, "sim-verify-token")?;
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let client = VerifyClient::new(&portcullis::config::VerifySettings {
        url: sim.url.clone(),
        service_sid: "VAsim".into(),
        account_sid: "ACsim".into(),
        auth_token_env: None,
        auth_token_file: Some(token),
        timeout_ms: 5_000,
    })?;
    let to = "+14155550123";
    let sid = client.start_via(to, Channel::Call)?;
    assert!(sid.starts_with("VE"), "{sid}");
    let code = secrecy::SecretString::from(sim.last_code(to));
    client.cancel(&sid)?;
    // Its code no longer works, and cancelling again is not an error.
    assert_eq!(
        client.check(to, &code)?,
        portcullis::model::CodeCheck::Expired
    );
    client.cancel(&sid)?;
    Ok(())
}

#[test]
fn metrics_are_openmetrics_when_asked_and_prometheus_text_otherwise() -> Result {
    let server = crate::server::start("");
    let get = |accept: Option<&str>| -> (String, String) {
        server.runtime.block_on(async {
            let mut request = server.client.get(format!("{}/metrics", server.url));
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            let response = request.send().await.unwrap();
            let kind = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (kind, response.text().await.unwrap())
        })
    };
    // What Prometheus itself sends when it scrapes.
    let (kind, openmetrics) = get(Some(
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ));
    assert_eq!(
        kind,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(openmetrics.ends_with("# EOF\n"));
    let (kind, text) = get(None);
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE portcullis_evaluations_total counter\n"),
        "{text}"
    );
    assert_eq!(get(Some("text/plain")).1, text);

    // The OpenMetrics body through the official Python client's strict parser.
    if let Some(families) = run_client_stdin("openmetrics_check.py", &openmetrics) {
        assert_eq!(
            families["portcullis_evaluations"]["type"], "counter",
            "{families}"
        );
        assert_eq!(
            families["portcullis_evaluations"]["samples"],
            json!(["portcullis_evaluations_total"])
        );
        assert_eq!(families["portcullis_outbox_backlog"]["type"], "gauge");
    }
    // The 0.0.4 body through promtool (its parser and its lint).
    let Ok(promtool) = which("promtool") else {
        not_run("promtool is not installed (apt-get install --no-install-recommends prometheus)");
        return Ok(());
    };
    let checked = pipe(&promtool, &["check", "metrics"], &text);
    assert!(checked.0, "promtool: {}", checked.1);
    // And it refuses the OpenMetrics body it cannot read: the check can fail.
    assert!(!pipe(&promtool, &["check", "metrics"], &openmetrics).0);
    Ok(())
}

fn which(tool: &str) -> std::result::Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
        .ok_or(())
}

/// Runs `program args` with `input` on stdin: whether it succeeded, and what it said.
fn pipe(program: &std::path::Path, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn run_client_stdin(script: &str, input: &str) -> Option<Value> {
    let python = match clients_python() {
        Ok(python) => python,
        Err(why) => {
            not_run(&why);
            return None;
        }
    };
    let script_path = workspace_root().join("host/tests/clients").join(script);
    let (ok, said) = pipe(&python, &[script_path.to_str().unwrap()], input);
    assert!(ok, "{script}: {said}");
    Some(serde_json::from_str(&said).unwrap_or_else(|e| panic!("{script}: {e}: {said}")))
}
