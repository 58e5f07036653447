//! Outbox delivery against local receivers that fail, time out and succeed: every
//! message arrives, duplicates only under the same idempotency key, failures
//! dead-letter after the last attempt, and a dispatcher killed mid-delivery loses
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use portcullis::Effect;
use portcullis::config::OutboxSettings;
use portcullis::jobs::outbox::Dispatcher;
use portcullis::state::{EffectBatch, SqliteState, StateStore};

use crate::common::Result;

/// What a receiver does with one request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// 30% answer 500, 15% stall past the client's timeout, the rest succeed.
    Flaky,
    AlwaysFail,
    /// Succeed after a delay.
    Slow(Duration),
}

/// (idempotency key, body) of every request the receiver acknowledged.
type Received = Arc<Mutex<Vec<(String, String)>>>;

struct Receiver {
    url: String,
    received: Received,
    requests: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

fn receiver(behaviour: Behaviour) -> Receiver {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let received: Received = Arc::default();
    let requests = Arc::new(AtomicU64::new(0));
    let (log, count) = (received.clone(), requests.clone());
    let handler = move |headers: HeaderMap, body: String| {
        let (log, count) = (log.clone(), count.clone());
        async move {
            let n = count.fetch_add(1, Ordering::SeqCst);
            // A fixed pseudo-random sequence: the run is reproducible.
            let roll = (n.wrapping_mul(2_654_435_761) >> 7) % 100;
            match behaviour {
                Behaviour::AlwaysFail => return StatusCode::INTERNAL_SERVER_ERROR,
                Behaviour::Flaky if roll < 30 => return StatusCode::INTERNAL_SERVER_ERROR,
                Behaviour::Flaky if roll < 45 => {
                    tokio::time::sleep(Duration::from_millis(400)).await
                }
                Behaviour::Slow(delay) => tokio::time::sleep(delay).await,
                Behaviour::Flaky => {}
            }
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            log.lock().unwrap().push((key, body));
            StatusCode::OK
        }
    };
    let app = axum::Router::new().route("/{product}", axum::routing::post(handler));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url,
        received,
        requests,
        _runtime: runtime,
    }
}

fn settings(receiver: &Receiver) -> OutboxSettings {
    OutboxSettings {
        endpoints: ["paste", "collect", "transfer"]
            .iter()
            .map(|p| (p.to_string(), format!("{}/{p}", receiver.url)))
            .collect(),
        max_attempts: 40,
        backoff_base_ms: 5,
        backoff_max_ms: 40,
        timeout_ms: 150,
        lease_ms: 1_000,
        concurrency: 8,
        poll_ms: 10,
    }
}

/// Writes `count` outbox messages, as applied logins would.
fn enqueue(state: &dyn StateStore, count: usize) -> BTreeMap<String, String> {
    let mut expected = BTreeMap::new();
    for i in 0..count {
        let product = ["paste", "collect", "transfer"][i % 3];
        let key = format!("{product}:L{i:04}");
        let payload = format!("{{\"user_id\":\"usr_{i}\"}}");
        expected.insert(format!("id-propagation:{key}"), payload.clone());
        state
            .apply(&EffectBatch {
                transaction_id: format!("tx-outbox-{i}"),
                time_ms: 1,
                user_id: None,
                new_user_id: format!("usr_{i}"),
                effects: vec![Effect::EnqueueOutbox {
                    topic: "id-propagation".into(),
                    key,
                    payload,
                }],
                password_hash: None,
            })
            .unwrap();
    }
    expected
}

/// Every message arrived, and each idempotency key always came with the same body.
fn assert_all_arrived(received: &Received, expected: &BTreeMap<String, String>) {
    let received = received.lock().unwrap();
    let keys: BTreeSet<&String> = received.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, expected.keys().collect(), "every message arrives");
    for (key, body) in received.iter() {
        assert_eq!(
            Some(body),
            expected.get(key),
            "a duplicate carries its message's key"
        );
    }
}

#[test]
fn every_message_arrives_through_failures_and_timeouts() -> Result {
    let receiver = receiver(Behaviour::Flaky);
    let state: Arc<dyn StateStore> = Arc::new(SqliteState::in_memory()?);
    let expected = enqueue(state.as_ref(), 60);
    let dispatcher = Dispatcher::new(state.clone(), settings(&receiver));
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(dispatcher.run(true, std::future::pending()))?;
    assert_eq!(report.delivered, 60);
    assert!(
        report.retried > 0,
        "the receiver failed some deliveries: {report:?}"
    );
    assert_eq!(report.dead, 0);
    assert_all_arrived(&receiver.received, &expected);
    assert!(
        state
            .outbox_messages()?
            .iter()
            .all(|m| m.status == portcullis::state::outbox::OutboxStatus::Delivered)
    );
    assert_eq!(state.outbox_backlog()?, 0);
    Ok(())
}

#[test]
fn a_message_is_dead_lettered_after_its_last_attempt() -> Result {
    let receiver = receiver(Behaviour::AlwaysFail);
    let state: Arc<dyn StateStore> = Arc::new(SqliteState::in_memory()?);
    enqueue(state.as_ref(), 2);
    let dispatcher = Dispatcher::new(
        state.clone(),
        OutboxSettings {
            max_attempts: 3,
            ..settings(&receiver)
        },
    );
    let report =
        tokio::runtime::Runtime::new()?.block_on(dispatcher.run(true, std::future::pending()))?;
    assert_eq!((report.delivered, report.dead), (0, 2));
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        6,
        "three attempts each"
    );
    for message in state.outbox_messages()? {
        assert_eq!((message.status.name(), message.attempts), ("dead", 3));
    }
    Ok(())
}

/// An endpoint's URL may carry its credential (`?key=…`): a failed delivery's error,
/// logged and kept as the message's `last_error`, names neither it nor its address.
#[test]
fn a_failed_delivery_never_records_the_endpoint_url() -> Result {
    let state: Arc<dyn StateStore> = Arc::new(SqliteState::in_memory()?);
    enqueue(state.as_ref(), 1);
    let secret = "hook-secret-0123456789";
    let dispatcher = Dispatcher::new(
        state.clone(),
        OutboxSettings {
            // Port 9 (discard) refuses connections here.
            endpoints: ["paste", "collect", "transfer"]
                .iter()
                .map(|p| {
                    (
                        p.to_string(),
                        format!("http://127.0.0.1:9/{p}?key={secret}"),
                    )
                })
                .collect(),
            max_attempts: 1,
            backoff_base_ms: 5,
            backoff_max_ms: 40,
            timeout_ms: 150,
            lease_ms: 1_000,
            concurrency: 8,
            poll_ms: 10,
        },
    );
    let report =
        tokio::runtime::Runtime::new()?.block_on(dispatcher.run(true, std::future::pending()))?;
    assert_eq!(report.dead, 1);
    let requeued = state.outbox_requeue(&portcullis::state::outbox::RequeueFilter::default(), 0)?;
    let error = requeued.requeued[0].last_error.clone().unwrap_or_default();
    assert!(error.starts_with("request failed"), "{error}");
    assert!(
        !error.contains(secret) && !error.contains("127.0.0.1:9"),
        "{error}"
    );
    Ok(())
}

#[test]
fn backoff_grows_and_stays_capped() {
    let dispatcher = Dispatcher::new(
        Arc::new(SqliteState::in_memory().unwrap()),
        OutboxSettings {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..Default::default()
        },
    );
    for _ in 0..50 {
        let first = dispatcher.retry_delay_ms(1);
        let fourth = dispatcher.retry_delay_ms(4);
        let late = dispatcher.retry_delay_ms(30);
        assert!((50..=100).contains(&first), "{first}");
        assert!((400..=800).contains(&fourth), "{fourth}");
        assert!((500..=1_000).contains(&late), "{late}");
    }
}

#[test]
fn a_killed_dispatcher_loses_nothing() -> Result {
    let receiver = receiver(Behaviour::Slow(Duration::from_millis(150)));
    let dir = tempfile::tempdir()?;
    let expected = enqueue(&SqliteState::open(&dir.path().join("directory.db"))?, 40);
    let endpoints: String = ["paste", "collect", "transfer"]
        .iter()
        .map(|p| format!("{p} = \"{}/{p}\"\n", receiver.url))
        .collect();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[state]\ndirectory = \"sqlite://directory.db\"\n[outbox]\nlease_ms = 800\ntimeout_ms = 500\nconcurrency = 4\npoll_ms = 20\n\
             backoff_base_ms = 10\n[outbox.endpoints]\n{endpoints}\n{}",
            crate::common::rule("r", "add-claim", "")
        ),
    )?;
    let outbox_run = |until_empty: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.args(["outbox", "run", "--config", config.to_str().unwrap()]);
        if until_empty {
            command.arg("--until-empty");
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    };
    let mut first = outbox_run(false).spawn()?;
    // Kill it while deliveries are in flight (the receiver takes 150 ms each).
    while receiver.requests.load(Ordering::SeqCst) < 6 {
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill()?;
    first.wait()?;
    let delivered_before = receiver.received.lock().unwrap().len();
    assert!(
        delivered_before < expected.len(),
        "killed mid-way ({delivered_before} delivered)"
    );

    let second = outbox_run(true).status()?;
    assert!(second.success());
    assert_all_arrived(&receiver.received, &expected);
    Ok(())
}

/// `portcullis outbox ARGS --config CONFIG`: stdout, stderr and the exit code.
fn outbox_cli(config: &std::path::Path, args: &[&str]) -> (String, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("outbox")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PORTCULLIS_LOG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// Messages the simulator's product receivers took, by idempotency key.
fn taken_by_products(sim: &crate::common::Simulator) -> BTreeMap<String, serde_json::Value> {
    sim.get("/sim/products")["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["idempotency_key"].as_str().unwrap().to_owned(),
                m["body"].clone(),
            )
        })
        .collect()
}

/// Messages dead-lettered against an endpoint that answers 404 are put back by
/// `outbox requeue` (one by id, the rest by topic) and, the endpoint fixed, delivered
/// to the simulator's product receivers over HTTP. A down endpoint is a warning or two
/// per product, not one per message per attempt.
fn dead_letters_are_delivered_after_requeue(
    directory: &str,
    state: &dyn StateStore,
    dir: &std::path::Path,
) -> Result {
    let sim = crate::common::Simulator::start(&[]);
    let expected = enqueue(state, 6);
    let config = dir.join("pipeline.toml");
    let write_config = |base: &str| {
        let endpoints: String = ["paste", "collect", "transfer"]
            .iter()
            .map(|p| format!("{p} = \"{base}/{p}\"\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "[state]\ndirectory = \"{directory}\"\n[outbox]\nmax_attempts = 2\nbackoff_base_ms = 5\nbackoff_max_ms = 20\n\
                 poll_ms = 10\n[outbox.endpoints]\n{endpoints}\n{}",
                crate::common::rule("r", "add-claim", "")
            ),
        )
        .unwrap();
    };

    // A path the simulator does not serve: every delivery is a 404.
    write_config(&format!("{}/no-such-receiver", sim.url));
    let (out, err, code) = outbox_cli(&config, &["run", "--until-empty", "--json"]);
    assert_eq!(code, Some(1), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        (report["delivered"].as_u64(), report["dead"].as_u64()),
        (Some(0), Some(6))
    );
    assert!(err.contains("outbox requeue"), "{err}");
    let warnings = err.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        (3..=6).contains(&warnings),
        "one failing and one dead-letter warning per product at most, not one per attempt: {err}"
    );
    assert!(taken_by_products(&sim).is_empty());

    // The endpoint fixed: the products' receivers.
    write_config(&format!("{}/products", sim.url));
    let first = state.outbox_messages()?[0].clone();
    let (out, err, code) = outbox_cli(&config, &["requeue", "--id", &first.id.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    let requeued: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(requeued["requeued"], 1, "{requeued}");
    assert_eq!(requeued["messages"][0]["id"], first.id);
    assert_eq!(requeued["messages"][0]["attempts"], 2);
    assert!(
        requeued["messages"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("404"),
        "{requeued}"
    );
    assert_eq!(requeued["still_dead"], 5);
    let (out, err, code) = outbox_cli(&config, &["run", "--until-empty", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)?["delivered"],
        1
    );
    let taken = taken_by_products(&sim);
    assert_eq!(
        taken.keys().collect::<Vec<_>>(),
        vec![&format!("id-propagation:{}", first.key)]
    );

    let (out, err, code) = outbox_cli(&config, &["requeue", "--topic", "id-propagation"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)?["requeued"],
        5
    );
    let (_, err, code) = outbox_cli(&config, &["run", "--until-empty"]);
    assert_eq!(code, Some(0), "{err}");
    let taken = taken_by_products(&sim);
    assert_eq!(taken.len(), expected.len());
    for (key, payload) in &expected {
        assert_eq!(
            taken.get(key),
            Some(&serde_json::from_str::<serde_json::Value>(payload)?),
            "{key}"
        );
    }
    assert!(
        state
            .outbox_messages()?
            .iter()
            .all(|m| m.status == portcullis::state::outbox::OutboxStatus::Delivered)
    );

    // Nothing dead left: exit 1, and asking for what is not there is bad input.
    let (out, err, code) = outbox_cli(&config, &["requeue"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)?["requeued"],
        0
    );
    let (_, err, code) = outbox_cli(&config, &["requeue", "--id", &first.id.to_string()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("{} is delivered", first.id)), "{err}");
    let (out, err, code) = outbox_cli(&config, &["requeue", "--id", "999999"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        out.is_empty() && err.contains("no outbox message with id 999999"),
        "{err}"
    );
    let (_, err, code) = outbox_cli(&config, &["requeue", "--topic", "no-such-topic"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("\"no-such-topic\""), "{err}");
    Ok(())
}

#[test]
fn dead_letters_are_delivered_after_requeue_on_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let state = SqliteState::open(&dir.path().join("directory.db"))?;
    dead_letters_are_delivered_after_requeue("sqlite://directory.db", &state, dir.path())
}

#[test]
fn dead_letters_are_delivered_after_requeue_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("requeue") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let state = portcullis::state::PostgresState::connect(&url)?;
    dead_letters_are_delivered_after_requeue(&url, &state, dir.path())
}
