//! The `portcullis` binary: exit 0 with JSON for any verdict, exit 2 with one clear
//! line for bad input, never a panic. A module per part; here, what they share.

use std::process::{Command, Output};

use crate::common::{Result, workspace_root};

mod check;
mod commands;
mod exits;
mod logs;

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

fn assert_bad_input(output: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "nothing printed on bad input");
    assert!(
        stderr.contains(mentions),
        "{stderr:?} should mention {mentions:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

// Exit codes, the same for every command (README, "Exit codes"): 0 done, 1 done with
// failures or differences, 2 bad input or configuration.

/// `portcullis ARGS --config CONFIG`.
fn with_config(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// How many rows an SQLite table (and condition) holds.
fn count_rows(db: &std::path::Path, table: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// The products' legacy stores of `mfa_config` in `dir`, empty: the tests about the
/// directory have them there (without them `check` is exit 2 for `run`'s sake).
fn empty_legacy_stores(dir: &std::path::Path) -> Result {
    std::fs::create_dir_all(dir.join("mfa"))?;
    for product in ["collect", "paste", "transfer"] {
        rusqlite::Connection::open(dir.join(format!("mfa/legacy-{product}.db")))?;
    }
    Ok(())
}

/// The leaf commands under `portcullis` (e.g. `mfa status`), from `--help`.
fn leaf_commands(path: &[&str]) -> Vec<Vec<String>> {
    let help = portcullis(&[path, &["--help"]].concat());
    let text = String::from_utf8_lossy(&help.stdout).into_owned();
    let Some(list) = text.split("Commands:\n").nth(1) else {
        return vec![path.iter().map(|s| s.to_string()).collect()];
    };
    let mut leaves = Vec::new();
    for line in list.lines().take_while(|l| l.starts_with("  ")) {
        // A command's line, not a wrapped description's.
        if line[2..].starts_with(' ') {
            continue;
        }
        let name = line.split_whitespace().next().unwrap();
        if name == "help" {
            continue;
        }
        leaves.extend(leaf_commands(&[path, &[name]].concat()));
    }
    leaves
}
