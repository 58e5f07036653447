//! The SMS providers of the MFA migration, as HTTP clients shaped like the real APIs,
//! and the `SecondFactors` service the gateway challenges users through.
//!
//! The login path holds only what sends and checks codes. The old provider's phone
//! export (3 per user per 30 days) has its own client in `legacy_sms::PhoneExport`,
//! which only the backfill job builds: nothing reachable from a login can spend it.
//! No client retries on the login path: sending again is the user's choice (and
//! counts against the provider's send limit); an outage denies with `retryable`.

pub mod legacy_sms;
pub mod sms;
pub mod verify;

use std::time::Duration;

/// How a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Down, timed out, a 5xx, or an answer that is not the API's: try later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// A 429: too many requests overall or for this user or number.
    #[error("provider rate limit (code {code}){}", retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        code: u32,
        retry_after: Option<Duration>,
    },
    /// The provider refused the request itself (an unknown user, a bad number).
    #[error("provider refused (code {code}): {message}")]
    Rejected { code: u32, message: String },
}

/// The blocking client both providers share: bounded by a timeout, no redirects
/// followed (a provider that redirects is not answering).
pub(crate) fn http_client(timeout_ms: u64) -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Reads a 4xx/5xx answer into a `ProviderError`, with the API's numeric code where
/// it gave one (`error_code` as text for the old provider, `code` for the new).
pub(crate) fn error_of(response: reqwest::blocking::Response) -> ProviderError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if status.is_server_error() {
        return ProviderError::Unavailable(format!("HTTP {status}"));
    }
    // Bounded: an error body is a few hundred bytes; anything else is not the API's.
    let body: serde_json::Value = response
        .bytes()
        .ok()
        .filter(|b| b.len() <= 16 * 1024)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let code = body["code"]
        .as_u64()
        .or_else(|| body["error_code"].as_str().and_then(|c| c.parse().ok()))
        .unwrap_or(0) as u32;
    let message = body["message"]
        .as_str()
        .unwrap_or("no message")
        .chars()
        .take(200)
        .collect();
    if status.as_u16() == 429 {
        return ProviderError::RateLimited { code, retry_after };
    }
    ProviderError::Rejected { code, message }
}

pub(crate) fn transport_error(error: reqwest::Error) -> ProviderError {
    // Without the URL: the old provider's verify URL holds the code the user typed.
    ProviderError::Unavailable(if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "cannot connect".into()
    } else {
        error.without_url().to_string()
    })
}

/// `+1 ***-***-1234`: where a code went, enough for the user to recognize the phone.
pub fn mask_phone(e164: &str) -> String {
    let digits: Vec<char> = e164.chars().filter(char::is_ascii_digit).collect();
    let last: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    // North American numbers (the default region) show their country code.
    let country = if e164.starts_with("+1") { "+1 " } else { "+" };
    if country == "+" {
        return format!("+** ***-{last}");
    }
    format!("{country}***-***-{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_last_four_digits_only() {
        assert_eq!(mask_phone("+14155552671"), "+1 ***-***-2671");
        assert_eq!(mask_phone("+447911123456"), "+** ***-3456");
        assert_eq!(mask_phone("12"), "+** ***-12");
    }
}
