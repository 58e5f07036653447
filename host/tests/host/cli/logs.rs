//! Logs: RUST_LOG honoured, no colour into a pipe, a reload logged.

use std::process::Command;

use crate::common::{Result, workspace_root};

/// Logs: `PORTCULLIS_LOG`, else `RUST_LOG`, else warnings; no colour codes when stderr
/// is not a terminal (a newcomer's redirected log was full of them).
#[test]
fn logs_honour_rust_log_and_carry_no_colour_into_a_pipe() -> Result {
    let with = |vars: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .current_dir(workspace_root())
            .args(["check", "--config", "fixtures/pipeline.toml"])
            .env_remove("PORTCULLIS_LOG")
            .env_remove("RUST_LOG");
        for (k, v) in vars {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let traced = with(&[("RUST_LOG", "trace")]);
    assert!(
        traced.contains("TRACE") || traced.contains("DEBUG"),
        "RUST_LOG=trace was honoured: {traced}"
    );
    assert!(!traced.contains('\u{1b}'), "no escape codes in a pipe");
    let quiet = with(&[("RUST_LOG", "trace"), ("PORTCULLIS_LOG", "error")]);
    assert!(
        !quiet.contains("TRACE") && !quiet.contains("DEBUG"),
        "PORTCULLIS_LOG wins over RUST_LOG: {quiet}"
    );
    Ok(())
}

/// A reload `serve` did is one line in its log at the default level, saying what it
/// loaded (it said nothing before: reloads logged below the default level).
#[test]
fn serve_logs_a_reload_by_default() -> Result {
    use std::io::BufRead;
    let (_dir, config) = crate::common::seeded_dir(20, 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("PORTCULLIS_GATEWAY_TOKEN", "t".repeat(40))
        .env_remove("PORTCULLIS_LOG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    assert!(line.starts_with("listening on "), "{line:?}");
    let (lines, logged) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            let _ = lines.send(line);
        }
    });
    // Without its last rule.
    let text = std::fs::read_to_string(&config)?;
    let last = text.rfind("[[rule]]").unwrap();
    std::fs::write(&config, &text[..last])?;
    // SAFETY: kill(2) on the child this test started and still holds.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let reloaded = (|| loop {
        match logged.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(line) if line.contains("reloaded") => return Some(line),
            Ok(_) => continue,
            Err(_) => return None,
        }
    })();
    let _ = child.kill();
    let _ = child.wait();
    let reloaded = reloaded.expect("a line saying the pipeline was reloaded");
    assert!(reloaded.contains("INFO"), "{reloaded}");
    assert!(
        reloaded.contains(&format!("pipeline reloaded from {}", config.display()))
            && reloaded
                .contains("3 rule(s) (bulk-imported-skip, migrate-on-login, ownership-check)")
            && reloaded.contains("removed id-propagation"),
        "{reloaded}"
    );
    Ok(())
}
