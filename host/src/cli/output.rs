//! Verdicts as the commands that evaluate logins print them.

use anyhow::Result;
use portcullis::Verdict;

use super::options::VerdictFormat;

/// One verdict as JSON on stdout, emails and phones redacted unless revealed.
pub fn print_verdict(verdict: &Verdict, format: &VerdictFormat) -> Result<()> {
    let mut json = serde_json::to_value(verdict)?;
    if !format.reveal_pii {
        portcullis::model::redact::redact_json(&mut json);
    }
    let text = if format.compact {
        serde_json::to_string(&json)?
    } else {
        serde_json::to_string_pretty(&json)?
    };
    println!("{text}");
    Ok(())
}
