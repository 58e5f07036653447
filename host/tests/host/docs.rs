//! The README and docs/ as a newcomer follows them: every relative link leads
//! somewhere, every example the docs show is a file of the repository, and the example
//! pipeline gives the example login the verdict docs/writing-rules.md describes.
//!
//! The marker for an example file: a line `<!-- example: PATH -->` (PATH from the
//! repository root) right before a fenced code block says that the block shows that
//! file whole, byte for byte. Every file under docs/examples/ must be shown somewhere,
//! so an example cannot drift out of the docs unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use portcullis::{Decision, Effect, Gateway, LoginAttempt, PipelineConfig};
use serde_json::{Value, json};

use crate::common::{self, Result, workspace_root};

const MARKER: (&str, &str) = ("<!-- example: ", " -->");

/// README.md and docs/*.md.
fn pages() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.insert(0, root.join("README.md"));
    pages
}

/// A page's lines outside fenced code blocks, with their numbers (from 1).
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((n + 1, line));
        }
    }
    lines
}

/// A heading's anchor as GitHub makes it: lower case, letters, digits, `-` and `_`
/// kept, spaces made `-`, everything else (backticks, punctuation) dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings; a repeated heading gets `-1`, `-2`, … as on GitHub.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose(text) {
        let level = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&level) || !line[level..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[level..]);
        let count = seen.entry(base.clone()).or_default();
        anchors.insert(match *count {
            0 => base.clone(),
            n => format!("{base}-{n}"),
        });
        *count += 1;
    }
    anchors
}

/// The targets of a page's inline links (`[text](target)`) outside code, with the line
/// each is on.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut links = Vec::new();
    for (n, line) in prose(text) {
        // Inline code is not a link, whatever brackets it holds.
        let line: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            links.push((n, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    links
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let dir = page.parent().unwrap();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            let at = format!("{}:{line}: {target}", page.display());
            if !file.exists() {
                broken.push(format!("{at}: no such file"));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            if file.extension().is_none_or(|e| e != "md") {
                broken.push(format!("{at}: an anchor into a file that is not markdown"));
            } else if !anchors(&std::fs::read_to_string(&file).unwrap()).contains(anchor) {
                broken.push(format!("{at}: no heading #{anchor} in {}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_finds_what_is_broken() {
    let page = "# A page\n## `portcullis serve`: the endpoints\n## Twice\n## Twice\n\
                see [x](#portcullis-serve-the-endpoints), [y](#twice-1), `[not](a-link)`\n\
                ```\n[nor](this)\n# not a heading\n```\n";
    assert_eq!(
        anchors(page),
        [
            "a-page",
            "portcullis-serve-the-endpoints",
            "twice",
            "twice-1"
        ]
        .map(String::from)
        .into(),
    );
    assert_eq!(
        links(page),
        vec![
            (5, "#portcullis-serve-the-endpoints".to_owned()),
            (5, "#twice-1".to_owned())
        ]
    );
}

/// Each marked block: (page and line, the file it names, what the block holds).
fn example_blocks() -> Vec<(String, String, String)> {
    let mut blocks = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(file) = line
                .strip_prefix(MARKER.0)
                .and_then(|l| l.strip_suffix(MARKER.1))
            else {
                continue;
            };
            let at = format!("{}:{}", page.display(), i + 1);
            assert!(
                lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
                "{at}: the example marker is not followed by a code block"
            );
            let end = lines[i + 2..]
                .iter()
                .position(|l| *l == "```")
                .unwrap_or_else(|| panic!("{at}: the code block does not end"));
            let shown: String = lines[i + 2..i + 2 + end]
                .iter()
                .map(|l| format!("{l}\n"))
                .collect();
            blocks.push((at, file.to_owned(), shown));
        }
    }
    blocks
}

#[test]
fn every_example_block_is_its_file_byte_for_byte() {
    let root = workspace_root();
    let mut differ = Vec::new();
    let mut shown = BTreeSet::new();
    for (at, file, block) in example_blocks() {
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            differ.push(format!("{at}: {file} does not exist"));
            continue;
        };
        if text != block {
            let first = text
                .lines()
                .zip(block.lines())
                .position(|(a, b)| a != b)
                .map_or("the length".to_owned(), |n| format!("line {}", n + 1));
            differ.push(format!("{at}: the block differs from {file} ({first})"));
        }
        shown.insert(file);
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    let mut files = Vec::new();
    collect_files(&root.join("docs/examples"), &mut files);
    let unshown: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| !shown.contains(f))
        .collect();
    assert!(
        unshown.is_empty(),
        "example files no page shows: {unshown:?}"
    );
    // The example rule's crate is shown too (it lives with the other rules).
    for file in ["rules/tag-client/Cargo.toml", "rules/tag-client/src/lib.rs"] {
        assert!(shown.contains(file), "no page shows {file}");
    }
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// docs/examples/pipeline.toml, its component where this build wrote it (the file
/// names `../../target/rules/…`, the default target directory).
fn example_config(extra: &str) -> PipelineConfig {
    let examples = workspace_root().join("docs/examples");
    let text = std::fs::read_to_string(examples.join("pipeline.toml")).unwrap();
    let written = "\"../../target/rules/rule_tag_client.wasm\"";
    assert!(text.contains(written), "the example names {written}");
    let component = common::core_rule_component("rule-tag-client");
    let text = text.replace(written, &format!("{:?}", component.display().to_string()));
    PipelineConfig::parse(&format!("{text}\n{extra}"), &examples).unwrap()
}

/// docs/examples/login.json as `run --now` takes it: at the host's clock.
fn example_login(transaction_id: &str, client_id: Option<&str>) -> LoginAttempt {
    let path = workspace_root().join("docs/examples/login.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["transaction_id"] = json!(transaction_id);
    if let Some(client_id) = client_id {
        json["client_id"] = json!(client_id);
    }
    let mut login = LoginAttempt::from_json(&json.to_string()).unwrap();
    login.time_ms = portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock);
    login
}

const CLAIM: &str = "https://portcullis.example/client";

#[test]
fn the_example_pipeline_gives_the_example_login_the_documented_verdict() -> Result {
    let gateway = Gateway::open(&example_config(""), common::runtime())?;

    // docs/writing-rules.md: allow, one claim naming the client as a JSON string, the
    // rule's trace clean. The directory is empty, so no metadata patch.
    let verdict = gateway.login(&example_login("tx-example-1", None))?;
    assert!(matches!(verdict.decision, Decision::Allow), "{verdict:?}");
    assert_eq!(verdict.faults().count(), 0, "{verdict:?}");
    assert_eq!(
        verdict.effects,
        vec![Effect::AddClaim {
            name: CLAIM.into(),
            value: json!("paste-web"),
        }]
    );

    // What `format!("{:?}")` got wrong: any client id comes back as the same string.
    let odd = "paste \"web\" \\ \u{1b} é";
    let verdict = gateway.login(&example_login("tx-example-2", Some(odd)))?;
    assert!(matches!(verdict.decision, Decision::Allow), "{verdict:?}");
    assert_eq!(
        verdict.effects,
        vec![Effect::AddClaim {
            name: CLAIM.into(),
            value: json!(odd),
        }]
    );

    // A user the directory has: the metadata patch too, granted, so the login is
    // allowed and the patch applied.
    let email = example_login("tx", None).email;
    common::create_user(gateway.state().as_ref(), "usr_example", &email)?;
    let verdict = gateway.login(&example_login("tx-example-3", None))?;
    assert!(matches!(verdict.decision, Decision::Allow), "{verdict:?}");
    assert_eq!(
        verdict.effects,
        vec![
            Effect::AddClaim {
                name: CLAIM.into(),
                value: json!("paste-web"),
            },
            Effect::SetAppMetadata {
                patch: json!({"last_client": "paste-web"}),
            },
        ]
    );
    assert!(
        verdict.applied.as_ref().is_some_and(|a| a.applied),
        "{verdict:?}"
    );
    Ok(())
}

#[test]
fn the_example_limits_load_with_the_example_pipeline() -> Result {
    let limits = std::fs::read_to_string(workspace_root().join("docs/examples/limits.toml"))?;
    let config = example_config(&limits);
    assert_eq!(config.login.max_clock_skew_seconds, 300);
    common::runtime().load(&config)?;
    Ok(())
}
