//! Recordings of each recovery path replay to their verdicts.

use std::path::PathBuf;

use portcullis::flows::clock::Clock;

use crate::common::Result;
use secrecy::ExposeSecret;

use super::{Env, cli};

#[test]
fn recordings_of_each_recovery_path_replay() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let codes = env.gateway.recovery().issue_codes(&user)?.unwrap();
    let write = |name: &str, recovery: serde_json::Value| -> PathBuf {
        let file = env.dir.path().join(format!("{name}.json"));
        let mut json = serde_json::json!({
            "transaction_id": format!("tx-rec-{name}"),
            "time_ms": portcullis::flows::clock::SystemClock.now_ms(),
            "connection": login.connection, "client_id": login.client_id, "email": login.email,
            "password": login.password.as_ref().unwrap().expose_secret(),
            "request": {"ip": "203.0.113.99", "user_agent": "attacker-laptop"},
        });
        if !recovery.is_null() {
            json["recovery"] = recovery;
        }
        std::fs::write(&file, json.to_string()).unwrap();
        file
    };
    let _ = factor;
    let mut seen = Vec::new();
    for (name, recovery) in [
        ("wait", serde_json::json!(true)),
        (
            "code",
            serde_json::json!({"code": codes[0].expose_secret()}),
        ),
        ("plain", serde_json::Value::Null),
    ] {
        let login_file = write(name, recovery);
        let recording = env.dir.path().join(format!("rec-{name}.json"));
        let (out, status) = crate::common::cli_logging(
            &env.config,
            &[
                "run",
                "--login",
                login_file.to_str().unwrap(),
                "--record",
                recording.to_str().unwrap(),
            ],
            Some("trace"),
        );
        assert!(status.success(), "{out}");
        let code = codes[0].expose_secret();
        assert!(
            !out.contains(code) && !out.contains(&code.replace('-', "")),
            "the code is in the output (trace logs on)"
        );
        let text = std::fs::read_to_string(&recording)?;
        assert!(text.contains("recovery.facts") || name == "plain", "{text}");
        assert!(
            !text.contains(codes[0].expose_secret()),
            "the code is not recorded"
        );
        let (out, status) = cli(&env.config, &["replay", recording.to_str().unwrap()]);
        assert!(status.success(), "{name}: {out}");
        seen.push(out);
    }
    assert!(seen[0].contains("recover:wait"), "{}", seen[0]);
    assert!(seen[1].contains("recover:use_code"), "{}", seen[1]);
    assert!(seen[2].contains("challenge:mfa"), "{}", seen[2]);
    Ok(())
}
