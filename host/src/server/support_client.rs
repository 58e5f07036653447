//! `portcullis support`: the support console as one agent, a client of `serve`'s
//! admin API (the agent's own token, from the environment). It holds no database
//! access of its own: the guardrails are the server's.

use serde_json::{Value, json};

/// One console command, as the API takes it.
pub enum ConsoleCall {
    Lookup {
        email: String,
    },
    Request {
        body: Value,
    },
    Step {
        id: String,
        step: &'static str,
        body: Value,
    },
    Act {
        user: String,
        action: &'static str,
        body: Value,
    },
}

/// Sends the call; returns the HTTP status and the answer's JSON.
pub fn send(server: &str, token: &str, call: ConsoleCall) -> Result<(u16, Value), String> {
    let base = server.trim_end_matches('/');
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let request = match call {
        ConsoleCall::Lookup { email } => {
            let mut url = url::Url::parse(&format!("{base}/admin/support/users"))
                .map_err(|e| format!("--server: {e}"))?;
            url.query_pairs_mut().append_pair("email", &email);
            client.get(url)
        }
        ConsoleCall::Request { body } => client
            .post(format!("{base}/admin/support/requests"))
            .json(&body),
        ConsoleCall::Step { id, step, body } => client
            .post(format!("{base}/admin/support/requests/{id}/{step}"))
            .json(&body),
        ConsoleCall::Act { user, action, body } => client
            .post(format!("{base}/admin/support/users/{user}/{action}"))
            .json(&body),
    };
    let response = request
        .bearer_auth(token)
        .send()
        .map_err(|e| format!("{base}: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().map_err(|e| e.to_string())?;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": text}));
    Ok((status, value))
}
