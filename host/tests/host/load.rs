//! The sidecar under load from another process, with a faulty rule in the pipeline:
//! no crash, every request answered, memory flat between two equal rounds; and
//! SIGTERM lets in-flight evaluations finish.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Result, login_files, migration_config, seeded_dir};

struct Sidecar {
    child: Child,
    url: String,
}

/// The sidecars' gateway token, handed to them in their environment.
pub const TOKEN: &str = "load-test-gateway-token-0123456789abc";

impl Sidecar {
    /// Starts `serve` on `config`, with a gateway caller added if it names none.
    fn start(config: &std::path::Path) -> Sidecar {
        let text = std::fs::read_to_string(config).unwrap();
        if !text.contains("[[server.caller]]") {
            std::fs::write(
                config,
                format!("{text}\n[[server.caller]]\nname = \"load\"\ntoken_env = \"PORTCULLIS_GATEWAY_TOKEN\"\n"),
            )
            .unwrap();
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .env("PORTCULLIS_GATEWAY_TOKEN", TOKEN)
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = crate::common::listening_address(&mut child, "serve");
        Sidecar {
            child,
            url: format!("http://{addr}"),
        }
    }

    fn resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends every login `rounds` times (fresh transaction ids) with `concurrency`
/// requests in flight; returns (answered 200 with a verdict, requests, seconds).
fn drive(
    url: &str,
    logins: &[Value],
    rounds: usize,
    tag: &str,
    concurrency: usize,
) -> (usize, usize, f64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let bodies: Vec<String> = (0..rounds)
        .flat_map(|round| {
            logins.iter().map(move |login| {
                let mut login = login.clone();
                login["transaction_id"] = format!(
                    "{}-{tag}-{round}",
                    login["transaction_id"].as_str().unwrap()
                )
                .into();
                login.to_string()
            })
        })
        .collect();
    let started = Instant::now();
    let answered = runtime.block_on(async {
        let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = Vec::new();
        for body in bodies.iter().cloned() {
            let (client, url, permit) = (
                client.clone(),
                format!("{url}/v1/login"),
                semaphore.clone().acquire_owned(),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = permit.await.unwrap();
                let response = client
                    .post(url)
                    .bearer_auth(TOKEN)
                    .body(body)
                    .send()
                    .await
                    .ok()?;
                let ok = response.status() == 200;
                let verdict: Value = response.json().await.ok()?;
                (ok && verdict["decision"]["type"].is_string()).then_some(())
            }));
        }
        let mut answered = 0;
        for task in tasks {
            answered += task.await.unwrap().is_some() as usize;
        }
        answered
    });
    (answered, bodies.len(), started.elapsed().as_secs_f64())
}

#[test]
fn the_sidecar_answers_every_request_under_load_with_a_faulty_rule() -> Result {
    let (dir, _) = seeded_dir(300, 100);
    let config = migration_config(dir.path(), "pipeline-fail-open.toml");
    let logins: Vec<Value> = login_files(dir.path())
        .iter()
        .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect();
    let sidecar = Sidecar::start(&config);

    // Round one migrates whoever can be; rounds two and three are the steady state.
    let (answered, sent, _) = drive(&sidecar.url, &logins, 1, "warm", 32);
    assert_eq!(answered, sent);
    let (answered, sent, seconds) = drive(&sidecar.url, &logins, 3, "one", 32);
    assert_eq!(answered, sent, "every request answered");
    let after_first = sidecar.resident_kib();
    let (answered, sent, _) = drive(&sidecar.url, &logins, 3, "two", 32);
    assert_eq!(answered, sent, "every request answered");
    let after_second = sidecar.resident_kib();
    eprintln!(
        "load: {sent} logins in {seconds:.2} s ({:.0}/s) with 32 in flight; server RSS {after_first} KiB then {after_second} KiB",
        sent as f64 / seconds
    );
    assert!(
        after_second <= after_first + 32 * 1024,
        "RSS grew from {after_first} to {after_second} KiB"
    );

    let metrics = reqwest::blocking::get(format!("{}/metrics", sidecar.url))?.text()?;
    assert!(
        metrics
            .contains("portcullis_rule_faults_total{rule=\"buggy-profile-check\",kind=\"trap\"}"),
        "the faulty rule's faults are counted:\n{metrics}"
    );
    Ok(())
}

#[test]
fn sigterm_lets_in_flight_evaluations_finish() -> Result {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("slow.toml");
    // A rule that spins until its 1.5 s deadline, failing open: a slow evaluation.
    std::fs::write(
        &config,
        crate::common::rule(
            "slow",
            "infinite-loop",
            "deadline_ms = 1500\non_error = \"skip\"",
        ),
    )?;
    let mut sidecar = Sidecar::start(&config);
    let url = format!("{}/v1/login", sidecar.url);
    let in_flight = std::thread::spawn(move || {
        let body = crate::common::login_json_now("tx-slow");
        let response = reqwest::blocking::Client::new()
            .post(url)
            .bearer_auth(TOKEN)
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let exit = sidecar.terminate();
    let (status, verdict) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["trace"][0]["fault"]["kind"], "deadline");
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    Ok(())
}
