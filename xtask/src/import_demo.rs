//! `cargo xtask demo-import [--people N] [--lazy N] [--directory postgres://…]`: the
//! bulk import beside lazy migration, end to end. Three products (paste on
//! PostgreSQL, collect on MariaDB, transfer on SQLite) are seeded with N people; their
//! users are exported to Auth0 files; `serve` takes the import through its users-imports
//! API while a few thousand seeded logins migrate lazily through `/v1/login` at the same
//! time; the unified ids are backfilled into the products; `import verify` says where
//! everyone stands, and one person imported with a single product's bcrypt hash signs
//! in with their old password. Every step's JSON report is kept in target/demo-import/.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cargo, run, shown, workspace_root};

const TOKEN: &str = "demo-import-api-token-0123456789abcdef";
const GATEWAY: &str = "demo-gateway-token-0123456789abcdef";

fn json_of(mut command: Command) -> Result<Value> {
    let shown = shown(&command);
    eprintln!("xtask: running {shown}");
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !output.status.success() {
        bail!("{shown} failed with {}", output.status);
    }
    serde_json::from_slice(&output.stdout).with_context(|| format!("{shown} printed no JSON"))
}

struct Args {
    people: usize,
    lazy: usize,
    directory: Option<String>,
}

fn parse_args(extra: &[String]) -> Result<Args> {
    let mut parsed = Args {
        people: 100_000,
        lazy: 3_000,
        directory: None,
    };
    let mut args = extra.iter();
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--people", Some(n)) => {
                parsed.people = n.parse().context("--people needs a number")?
            }
            ("--lazy", Some(n)) => parsed.lazy = n.parse().context("--lazy needs a number")?,
            ("--directory", Some(url)) => parsed.directory = Some(url.clone()),
            _ => bail!("usage: cargo xtask demo-import [--people N] [--lazy N] [--directory URL]"),
        }
    }
    Ok(parsed)
}

/// The demo pipeline with its stores in `dir`, the products on the test servers, and
/// the import API on.
fn write_config(root: &Path, dir: &Path, directory: Option<&str>) -> Result<PathBuf> {
    let postgres = std::env::var("PORTCULLIS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mysql = std::env::var("PORTCULLIS_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let mut text = std::fs::read_to_string(root.join("fixtures/pipeline.toml"))?
        .replace("../target/demo-state/", "./")
        .replace("\"../target/", "\"../");
    let line = |text: &str, key: &str| -> Result<String> {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .map(str::to_owned)
            .with_context(|| format!("fixtures/pipeline.toml has no {key} line"))
    };
    for (key, url) in [("paste", postgres.as_str()), ("collect", mysql.as_str())]
        .into_iter()
        .chain(directory.map(|url| ("directory", url)))
    {
        let old = line(&text, key)?;
        text = text.replace(&old, &format!("{key} = \"{url}\""));
    }
    // The import API seals users files at rest under the [mfa] keys: the demo's.
    text.push_str(&format!(
        "\n[mfa]\nkeys_file = {:?}\n",
        root.join("fixtures/demo-mfa.keys").display().to_string()
    ));
    text.push_str("\n[server.import_api]\ntoken_file = \"import-token\"\n");
    let config = dir.join("pipeline.toml");
    std::fs::write(&config, text)?;
    Ok(config)
}

/// The demo's commands, each a `portcullis` run from the workspace root.
struct Demo {
    portcullis: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    config: String,
}

impl Demo {
    fn step(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.portcullis);
        command
            .current_dir(&self.root)
            .args(args)
            .args(["--config", &self.config]);
        command
    }

    fn path(&self, name: &str) -> Result<String> {
        Ok(self
            .dir
            .join(name)
            .to_str()
            .context("a UTF-8 path")?
            .to_owned())
    }

    /// `serve` on a free port; the URL it says it listens on.
    fn serve(&self) -> Result<(Child, String)> {
        let mut server = Command::new(&self.portcullis)
            .current_dir(&self.root)
            .env("PORTCULLIS_GATEWAY_TOKEN", GATEWAY)
            // The demo pipeline's outbox endpoints are the simulator's, not started
            // here: no delivery warnings.
            .env("PORTCULLIS_LOG", "error")
            .args(["serve", "--listen", "127.0.0.1:0", "--config", &self.config])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut first = String::new();
        std::io::BufReader::new(server.stdout.take().context("server stdout")?)
            .read_line(&mut first)?;
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .map(|at| format!("http://{at}"));
        match url {
            Some(url) => Ok((server, url)),
            None => {
                let _ = server.kill();
                bail!("serve did not say where it listens")
            }
        }
    }

    /// Lazy migration and the import at once, then the unified ids, `verify`, and the
    /// old-password check.
    fn import_beside_lazy(&self, args: &Args, export: Value, url: &str) -> Result<Value> {
        let script = self.root.join("fixtures/bench/import-demo.py");
        let logins = self.dir.join("logins");
        let lazy_logins = Command::new("python3")
            .arg(&script)
            .args(["lazy", url, GATEWAY])
            .arg(&logins)
            .args([&args.lazy.to_string(), "4"])
            .stdout(Stdio::piped())
            .spawn()
            .context("python3 runs the lazy logins")?;
        let imported = json_of(self.step(&[
            "import",
            "run",
            "--dir",
            &self.path("export")?,
            "--target",
            url,
            "--token-file",
            &self.path("import-token")?,
        ]))?;
        let lazy_output = lazy_logins.wait_with_output()?;
        let lazy_report: Value = serde_json::from_slice(&lazy_output.stdout)
            .context("the lazy logins printed no JSON")?;
        let ids = json_of(self.step(&["import", "backfill-ids"]))?;
        let verify = json_of(self.step(&["import", "verify"]))?;
        // The check reads the SQLite directory's stored hashes.
        let check: Value = if args.directory.is_some() {
            serde_json::json!({"skipped": "the directory is not the SQLite file"})
        } else {
            let output = Command::new("python3")
                .arg(&script)
                .args(["check", url, GATEWAY])
                .arg(&logins)
                .arg(self.dir.join("export"))
                .arg(self.dir.join("directory.db"))
                .output()?;
            serde_json::from_slice(&output.stdout).context("the check printed no JSON")?
        };
        Ok(serde_json::json!({
            "people": args.people,
            "export": export,
            "lazy_migration": lazy_report,
            "import": imported,
            "backfill_ids": ids,
            "verify": verify,
            "old_password_check": check,
        }))
    }
}

pub fn demo_import(extra: &[String]) -> Result<()> {
    let args = parse_args(extra)?;
    crate::build_rules()?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "portcullis"]);
    run(build)?;
    let root = workspace_root();
    let dir = root.join("target/demo-import");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("import-token"), TOKEN)?;
    let config = write_config(&root, &dir, args.directory.as_deref())?;
    let demo = Demo {
        portcullis: root.join("target/release/portcullis"),
        config: config.to_str().context("a UTF-8 path")?.to_owned(),
        root,
        dir,
    };
    run(demo.step(&[
        "seed",
        "--users",
        &args.people.to_string(),
        "--logins",
        &(args.lazy + 500).to_string(),
        "--logins-dir",
        &demo.path("logins")?,
    ]))?;
    let export = json_of(demo.step(&["import", "export", "--out", &demo.path("export")?]))?;
    std::fs::write(
        demo.dir.join("export-report.json"),
        serde_json::to_vec_pretty(&export)?,
    )?;
    let (mut server, url) = demo.serve()?;
    let outcome = demo.import_beside_lazy(&args, export, &url);
    let _ = server.kill();
    let _ = server.wait();
    let report = outcome?;
    std::fs::write(
        demo.dir.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    summarize(&report, &demo.dir)
}

fn summarize(report: &Value, dir: &Path) -> Result<()> {
    let verify = &report["verify"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    println!(
        "people {}: {} with a directory user, {} without; product rows {}: {} with their unified id, \
         {} awaiting ownership proof, {} other",
        n(&verify["legacy_people"]),
        n(&verify["with_directory_user"]),
        n(&verify["without_directory_user"]),
        n(&verify["rows"]),
        n(&verify["rows_with_unified_id"]),
        n(&verify["rows_unlinked_ownership_unproven"]),
        n(&verify["rows_linked_without_id"])
            + n(&verify["rows_with_other_id"])
            + n(&verify["rows_of_people_not_in_directory"]),
    );
    println!(
        "export {:.0} users/s, {:.1} MB/s; import {:.0} users/s ({} inserted, {} duplicates reconciled); \
         backfill {:.0} rows/s; lazy logins {}",
        report["export"]["users_per_second"].as_f64().unwrap_or(0.0),
        report["export"]["megabytes_per_second"]
            .as_f64()
            .unwrap_or(0.0),
        report["import"]["users_per_second"].as_f64().unwrap_or(0.0),
        n(&report["import"]["inserted"]),
        n(&report["import"]["duplicates"]),
        report["backfill_ids"]["rows_per_second"]
            .as_f64()
            .unwrap_or(0.0),
        report["lazy_migration"]["verdicts"],
    );
    println!("report: {}", dir.join("report.json").display());
    let check = &report["old_password_check"];
    if n(&verify["without_directory_user"]) > 0
        || n(&verify["rows_linked_without_id"]) > 0
        || (check.get("skipped").is_none() && check["signed_in_with_old_bcrypt_password"] != true)
    {
        bail!("the import left people or rows behind (see the report)");
    }
    Ok(())
}
