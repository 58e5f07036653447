//! Outbox delivery: at least once, to each product's endpoint, with an idempotency key
//! so a product can drop the duplicates a retry may cause. Runs inside `serve` and
//! standalone (`portcullis outbox run`); any number of dispatchers may share a store,
//! because a claim reserves a message for one of them at a time.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;

use crate::config::OutboxSettings;
use crate::state::outbox::OutboxMessage;
use crate::state::{StateStore, StoreError};

/// What one round of delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RoundReport {
    pub claimed: usize,
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
    /// Results not recorded because the lease ran out first (another dispatcher
    /// holds the message now and records its own result).
    pub lease_lost: usize,
}

pub struct Dispatcher {
    state: Arc<dyn StateStore>,
    settings: OutboxSettings,
    client: reqwest::Client,
    /// Opens a phone for an SMS notice at delivery time (see `notice_body`).
    phone_keys: Option<Arc<crate::mfa::sealed::KeyRing>>,
    /// Where `audit-checkpoint` messages are appended (`[audit] checkpoint_file`).
    checkpoint_file: Option<std::path::PathBuf>,
    /// Products whose endpoint is failing, and whether their dead letters were
    /// reported yet: a down endpoint is one warning (and one for its dead letters),
    /// not one per message per attempt.
    failing: std::sync::Mutex<std::collections::BTreeMap<String, bool>>,
}

/// The product a message goes to: its key's prefix.
fn product_of(message: &OutboxMessage) -> &str {
    message
        .key
        .split_once(':')
        .map(|(p, _)| p)
        .unwrap_or(&message.key)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The idempotency key a product sees: the same for every attempt at one message.
pub fn idempotency_key(message: &OutboxMessage) -> String {
    format!("{}:{}", message.topic, message.key)
}

impl Dispatcher {
    pub fn new(state: Arc<dyn StateStore>, settings: OutboxSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()
            .unwrap_or_default();
        Self {
            state,
            settings,
            client,
            phone_keys: None,
            checkpoint_file: None,
            failing: Default::default(),
        }
    }

    /// Appends the audit chain's checkpoints to this file as they are delivered.
    pub fn with_audit_checkpoints(mut self, file: Option<std::path::PathBuf>) -> Self {
        self.checkpoint_file = file;
        self
    }

    /// The keys that open factors' phones, so SMS notices reach them (`[mfa]`).
    pub fn with_phone_keys(mut self, keys: Option<Arc<crate::mfa::sealed::KeyRing>>) -> Self {
        self.phone_keys = keys;
        self
    }

    /// An SMS notice is stored naming the factor, never the phone: the phone is opened
    /// here, for the one request to the notification endpoint, and goes nowhere else.
    /// A factor whose phone only the old provider holds cannot be texted a notice:
    /// it is sent with `to: null` and the reason, so the notifier can count it.
    async fn notice_body(&self, message: &OutboxMessage) -> Result<String, String> {
        if message.topic != "notify" {
            return Ok(message.payload.clone());
        }
        let mut notice: serde_json::Value =
            serde_json::from_str(&message.payload).map_err(|e| format!("notice: {e}"))?;
        if notice["channel"] != "sms" {
            return Ok(message.payload.clone());
        }
        let user = notice["user_id"].as_str().unwrap_or_default().to_owned();
        let factor_id = notice["to"].as_str().unwrap_or_default().to_owned();
        let lookup = user.clone();
        let factor = self
            .store(move |s| s.factors_of(&lookup))
            .await
            .map_err(|e| format!("factor of an SMS notice: {e}"))?
            .into_iter()
            .find(|f| f.id == factor_id);
        notice["factor_id"] = factor_id.clone().into();
        match (factor.and_then(|f| f.phone), &self.phone_keys) {
            (Some(sealed), Some(keys)) => {
                let phone = keys
                    .open(&sealed, &user, &factor_id)
                    .map_err(|e| format!("opening the notice's phone: {e}"))?;
                notice["to"] = phone.as_str().into();
            }
            _ => {
                notice["to"] = serde_json::Value::Null;
                notice["undeliverable"] =
                    "no phone on file for this factor (the old provider keeps it)".into();
            }
        }
        Ok(notice.to_string())
    }

    async fn store<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn StateStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || call(state.as_ref()))
            .await
            .map_err(|e| StoreError::Backend(format!("store task: {e}")))?
    }

    /// When a message that failed its `attempts`th try goes again: exponential, capped,
    /// with jitter so a fleet of retries does not arrive in step.
    pub fn retry_delay_ms(&self, attempts: u32) -> u64 {
        let exponent = attempts.saturating_sub(1).min(30);
        let ceiling = self
            .settings
            .backoff_base_ms
            .saturating_mul(1 << exponent)
            .min(self.settings.backoff_max_ms);
        ceiling / 2 + rand::rng().random_range(0..=ceiling / 2)
    }

    /// A checkpoint goes to the file (then it counts as delivered unless an `audit`
    /// endpoint is configured too, which gets it as any other message).
    fn write_checkpoint(&self, message: &OutboxMessage) -> Result<bool, String> {
        let Some(path) = &self.checkpoint_file else {
            return Ok(false);
        };
        let checkpoint: crate::state::audit::Checkpoint =
            serde_json::from_str(&message.payload).map_err(|e| format!("checkpoint: {e}"))?;
        crate::state::audit::write_checkpoint(path, &checkpoint)
            .map_err(|e| format!("writing {}: {}", path.display(), e.kind()))?;
        Ok(true)
    }

    async fn deliver(&self, message: &OutboxMessage) -> Result<(), String> {
        let product = product_of(message);
        let in_file = message.topic == crate::state::audit::CHECKPOINT_TOPIC
            && self.write_checkpoint(message)?;
        let url = match self.settings.endpoints.get(product) {
            Some(url) => url,
            None if in_file => return Ok(()),
            None => return Err(format!("no outbox endpoint for product {product:?}")),
        };
        let body = self.notice_body(message).await?;
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key(message))
            .header("x-portcullis-topic", &message.topic)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    // With its cause: "connection refused" says more than "error
                    // sending request". Without the URL: an endpoint's may carry
                    // its credential, and this text is logged and stored.
                    let e = e.without_url();
                    let mut text = format!("request failed: {e}");
                    let mut source = std::error::Error::source(&e);
                    while let Some(cause) = source {
                        let part = cause.to_string();
                        if !text.contains(&part) {
                            text.push_str(&format!(": {part}"));
                        }
                        source = cause.source();
                    }
                    text
                }
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("endpoint answered {}", response.status()))
        }
    }

    /// An endpoint that failed answered: say so once.
    fn answered(&self, product: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.remove(product).is_some() {
            tracing::info!("outbox delivery to {product} works again");
        }
    }

    /// A failed delivery: the first failure of an endpoint that worked (or of a
    /// dispatcher's first round) and its first dead letter are warnings; the rest are
    /// details, at debug level, until it answers again.
    fn failed(&self, message: &OutboxMessage, dead: bool, error: &str) {
        let product = product_of(message);
        let (id, key, attempts) = (message.id, &message.key, message.attempts);
        tracing::debug!(id, %key, attempts, dead, "outbox delivery failed: {error}");
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let dead_reported = match failing.get(product) {
            None => {
                tracing::warn!(
                    "outbox delivery to {product} failing: {error}; retrying with backoff (each further failure is logged at debug level until it answers)"
                );
                failing.insert(product.to_owned(), false);
                false
            }
            Some(reported) => *reported,
        };
        if dead && !dead_reported {
            tracing::warn!(
                "outbox messages to {product} are being dead-lettered after {} attempts (the first: id {id}); `portcullis outbox requeue` puts them back once the endpoint works",
                self.settings.max_attempts
            );
            failing.insert(product.to_owned(), true);
        }
    }

    /// Claims due messages, delivers them concurrently, and records each result.
    pub async fn round(&self) -> Result<RoundReport, StoreError> {
        let (lease, limit) = (self.settings.lease_ms, self.settings.concurrency);
        let claimed = self
            .store(move |s| s.claim_outbox(now_ms(), lease, limit))
            .await?;
        let mut report = RoundReport {
            claimed: claimed.len(),
            ..Default::default()
        };
        let results = futures::future::join_all(claimed.iter().map(|m| self.deliver(m))).await;
        let ended = results.iter().zip(&claimed).any(|(result, message)| {
            result.is_ok() || message.attempts >= self.settings.max_attempts
        });
        for (message, result) in claimed.into_iter().zip(results) {
            let id = message.id;
            let lease = message.lease.clone().unwrap_or_default();
            match result {
                Ok(()) => {
                    self.answered(product_of(&message));
                    if self.store(move |s| s.outbox_delivered(id, &lease)).await? {
                        report.delivered += 1;
                    } else {
                        tracing::warn!(id, "outbox delivery finished after its lease ran out");
                        report.lease_lost += 1;
                    }
                }
                Err(error) => {
                    let dead = message.attempts >= self.settings.max_attempts;
                    let retry_at =
                        (!dead).then(|| now_ms() + self.retry_delay_ms(message.attempts));
                    self.failed(&message, dead, &error);
                    if !self
                        .store(move |s| s.outbox_failed(id, &lease, &error, retry_at))
                        .await?
                    {
                        report.lease_lost += 1;
                    } else if dead {
                        report.dead += 1
                    } else {
                        report.retried += 1
                    }
                }
            }
        }
        if ended {
            self.store(|s| s.forget_scrubbed()).await?;
        }
        Ok(report)
    }

    /// Delivers until `stop` resolves; idles `poll_ms` when nothing is due. With
    /// `until_empty`, returns once nothing is pending or being delivered.
    pub async fn run(
        &self,
        until_empty: bool,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<RoundReport, StoreError> {
        tokio::pin!(stop);
        let mut total = RoundReport::default();
        loop {
            let round = self.round().await?;
            total.claimed += round.claimed;
            total.delivered += round.delivered;
            total.retried += round.retried;
            total.dead += round.dead;
            total.lease_lost += round.lease_lost;
            if round.claimed > 0 {
                tracing::debug!(?round, "outbox round");
                continue;
            }
            if until_empty && self.store(|s| s.outbox_backlog()).await? == 0 {
                return Ok(total);
            }
            tokio::select! {
                _ = &mut stop => return Ok(total),
                _ = tokio::time::sleep(Duration::from_millis(self.settings.poll_ms)) => {}
            }
        }
    }
}
