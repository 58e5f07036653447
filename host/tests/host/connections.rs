//! Connection slots and timeouts of `serve` over real sockets: clients without a token
//! cannot hold the slots a gateway needs, and each timeout does what the README says.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Result;
use crate::server::{GATEWAY_TOKEN, Server, start};

/// A request as a client writes it; `Connection` is left to HTTP/1.1's keep-alive.
fn request(method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nhost: portcullis\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one response (head and a `content-length` body): its status and body.
fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
            return Ok((status, body));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn exchange(stream: &mut TcpStream, request: &str) -> std::io::Result<(u16, String)> {
    stream.write_all(request.as_bytes())?;
    read_response(stream)
}

/// Whether the server closes the connection within `wait` (nothing sent meanwhile).
fn closed_within(stream: &mut TcpStream, wait: Duration) -> std::io::Result<bool> {
    stream.set_read_timeout(Some(wait))?;
    let mut buffer = [0u8; 256];
    let closed = match stream.read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    };
    stream.set_read_timeout(None)?;
    Ok(closed)
}

/// A seeded login the pipeline allows, under a transaction id of its own.
fn login(server: &Server, n: usize) -> Value {
    let mut login = server.login_with("allow", None);
    login["transaction_id"] = json!(format!(
        "{}-conn-{n}",
        login["transaction_id"].as_str().unwrap()
    ));
    login
}

fn address(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// The attack of issue #22 item 8: keep-alive connections that each ask for
/// `/healthz` every 300 ms (no token needed) take every slot, and token-less
/// `POST /v1/login`s trickle their bodies a byte at a time. The gateway's logins must
/// still be answered, and a trickler must be cut off long before the request timeout.
#[test]
fn unauthenticated_clients_cannot_hold_every_connection_slot() -> Result {
    let server = start(
        "[server]\nmax_connections = 32\nheader_timeout_ms = 1000\nidle_timeout_ms = 5000\nrequest_timeout_ms = 8000",
    );
    let addr = address(&server);
    let stop = Arc::new(AtomicBool::new(false));

    // Tricklers first, so they hold slots of their own: each records how long the
    // server let its request hang (still hanging when the attack ends counts too).
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut stream) = TcpStream::connect(&addr) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let head = "POST /v1/login HTTP/1.1\r\nhost: portcullis\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n";
                    if stream.write_all(head.as_bytes()).is_err() {
                        continue;
                    }
                    let started = Instant::now();
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut answer = [0u8; 512];
                    let ended = loop {
                        if stop.load(Ordering::SeqCst) {
                            break None;
                        }
                        if stream.write_all(b"{").is_err() {
                            break Some(String::new());
                        }
                        match stream.read(&mut answer) {
                            Ok(0) => break Some(String::new()),
                            Ok(n) => break Some(String::from_utf8_lossy(&answer[..n]).into_owned()),
                            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                            Err(_) => break Some(String::new()),
                        }
                    };
                    // Refused at the cap is not a slot held.
                    if !ended.as_deref().unwrap_or("").contains("too many open connections") {
                        held.push(started.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                held
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Every slot held with health checks, each connection reconnecting when cut off.
    let keepers: Vec<_> = (0..32)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answered = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut stream) = TcpStream::connect(&addr) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    while !stop.load(Ordering::SeqCst) {
                        match exchange(&mut stream, &request("GET", "/healthz", None, "")) {
                            Ok((200, _)) => answered += 1,
                            _ => {
                                std::thread::sleep(Duration::from_millis(50));
                                break;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));

    // The gateway opens new connections (as a pool does after its own were closed).
    let mut statuses = Vec::new();
    for n in 0..3 {
        let body = login(&server, n).to_string();
        let status = server.runtime.block_on(async {
            reqwest::Client::new()
                .post(format!("{}/v1/login", server.url))
                .bearer_auth(GATEWAY_TOKEN)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| format!("{e:?}"))
        });
        statuses.push(status);
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(2000));
    stop.store(true, Ordering::SeqCst);
    let answered: usize = keepers.into_iter().map(|k| k.join().unwrap()).sum();
    let held: Vec<Duration> = tricklers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();

    assert!(answered >= 100, "the attack ran: {answered} health checks");
    let longest = held.iter().max().copied().unwrap_or_default();
    assert!(
        statuses.iter().all(|s| s == &Ok(200))
            && !held.is_empty()
            && longest < Duration::from_secs(2),
        "the gateway's logins: {statuses:?}; the longest a token-less trickled login held its connection: {longest:?} ({} attempts; request timeout 8 s)",
        held.len()
    );
    Ok(())
}

/// A connection that has shown no token may stay only briefly: it closes
/// `header_timeout_ms` after its last request, and twice that after it opened, busy
/// or not. One that showed a caller's token keeps the usual idle timeout.
#[test]
fn a_connection_without_a_token_has_a_short_budget() -> Result {
    let server = start("[server]\nheader_timeout_ms = 300\nidle_timeout_ms = 3000");
    let addr = address(&server);
    let mut anonymous = TcpStream::connect(&addr)?;
    let mut gateway = TcpStream::connect(&addr)?;
    let opened = Instant::now();
    let health = request("GET", "/healthz", None, "");
    let health_with_token = request("GET", "/healthz", Some(GATEWAY_TOKEN), "");
    // Both busy, a health check every 100 ms, for 1.5 s: the anonymous one is cut off.
    let mut cut_after = None;
    while opened.elapsed() < Duration::from_millis(1500) {
        if cut_after.is_none() && exchange(&mut anonymous, &health).is_err() {
            cut_after = Some(opened.elapsed());
        }
        assert_eq!(
            exchange(&mut gateway, &health_with_token)?.0,
            200,
            "the gateway's connection after {:?}",
            opened.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut_after = cut_after.ok_or("a busy connection without a token was never closed")?;
    assert!(
        cut_after < Duration::from_millis(1200),
        "cut after {cut_after:?}"
    );

    // Idle: without a token, closed after the header timeout; with one, still usable.
    let mut anonymous = TcpStream::connect(&addr)?;
    assert_eq!(exchange(&mut anonymous, &health)?.0, 200);
    assert_eq!(exchange(&mut gateway, &health_with_token)?.0, 200);
    assert!(
        closed_within(&mut anonymous, Duration::from_millis(1000))?,
        "an idle connection without a token stays open"
    );
    assert_eq!(exchange(&mut gateway, &health_with_token)?.0, 200);
    Ok(())
}

/// Issue #22 item 9: an idle keep-alive connection lasts `idle_timeout_ms`, not
/// `header_timeout_ms`.
#[test]
fn an_idle_keep_alive_connection_lasts_the_idle_timeout() -> Result {
    let server = start("[server]\nheader_timeout_ms = 200\nidle_timeout_ms = 1500");
    let first = login(&server, 0).to_string();
    let second = login(&server, 1).to_string();
    let mut stream = TcpStream::connect(address(&server))?;
    assert_eq!(
        exchange(
            &mut stream,
            &request("POST", "/v1/login", Some(GATEWAY_TOKEN), &first)
        )?
        .0,
        200
    );
    std::thread::sleep(Duration::from_millis(800));
    let (status, body) = exchange(
        &mut stream,
        &request("POST", "/v1/login", Some(GATEWAY_TOKEN), &second),
    )
    .map_err(|e| format!("the connection after 800 ms idle: {e}"))?;
    assert_eq!(status, 200, "{body}");
    assert!(
        closed_within(&mut stream, Duration::from_millis(2000))?,
        "still open 2 s after its last request"
    );
    Ok(())
}

/// With the header deadline no longer hyper's (it ran between requests too), a
/// request head trickled on a kept connection is still cut off by it.
#[test]
fn a_trickled_request_head_on_a_kept_connection_is_cut_off() -> Result {
    let server = start("[server]\nheader_timeout_ms = 300\nidle_timeout_ms = 5000");
    let first = login(&server, 0).to_string();
    let mut stream = TcpStream::connect(address(&server))?;
    assert_eq!(
        exchange(
            &mut stream,
            &request("POST", "/v1/login", Some(GATEWAY_TOKEN), &first)
        )?
        .0,
        200
    );
    let started = Instant::now();
    let mut cut = false;
    for byte in
        b"GET /healthz HTTP/1.1\r\nhost: portcullis\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    {
        if stream.write_all(&[*byte]).is_err()
            || closed_within(&mut stream, Duration::from_millis(100))?
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a head trickled for {:?} was not cut off",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_millis(2000));
    Ok(())
}
