//! The host's recovery policy: its settings and key, the attempt limits per user,
//! device and network, the keyed digests of where a login comes from, and who is told.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::config::RecoverySettings;
use crate::mfa::recovery_codes;
use crate::model::FactorStatus;
use crate::state::factors::Factor;
use crate::state::rate_windows::{self, Limit};
use crate::state::recovery::{Notice, Throttle};

/// The host's recovery settings, key and attempt limits.
pub(crate) struct RecoveryPolicy {
    pub(crate) settings: RecoverySettings,
    pub(super) key: SecretString,
}

impl RecoveryPolicy {
    pub(crate) fn new(settings: RecoverySettings) -> Result<Self, String> {
        let key = settings.key()?;
        Ok(Self { settings, key })
    }

    pub(super) fn throttle(&self) -> Throttle {
        Throttle {
            max_failures: i64::from(self.settings.max_code_failures),
            free_failures: i64::from(self.settings.free_code_failures),
            max_delay_ms: i64::try_from(self.settings.max_code_delay_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        }
    }

    /// Both the address's and the user's hourly allowance, counted in the shared state
    /// on the host's clock (so every gateway instance shares them), the address first,
    /// so one address cannot use up a user's allowance without using its own. The
    /// address is kept as a keyed digest, like the sightings. A recognised device
    /// (`device`: its id) has the user's allowance to itself, so attempts others made
    /// with the password do not use it up.
    pub(super) fn allow(
        &self,
        store: &dyn crate::state::portable::SqlStore,
        user_id: &str,
        device: Option<&str>,
        ip: &str,
        now_ms: u64,
    ) -> Result<bool, crate::state::StoreError> {
        let ip_key = format!("recovery-ip:{}", self.keyed("ip", ip));
        let user_key = match device {
            Some(device) => format!("recovery-device:{device}"),
            None => format!("recovery-user:{user_id}"),
        };
        rate_windows::hit(
            store,
            &[
                Limit {
                    key: &ip_key,
                    max: self.settings.max_attempts_per_ip_per_hour,
                },
                Limit {
                    key: &user_key,
                    max: self.settings.max_attempts_per_user_per_hour,
                },
            ],
            now_ms,
        )
    }

    fn keyed(&self, kind: &str, value: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.expose_secret().as_bytes())
                .expect("HMAC takes a key of any length");
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Keyed digests of where a login comes from: the device (user agent), the
    /// network (an IPv4 /24 or IPv6 /48) and the country, when the gateway says.
    pub(crate) fn sightings(
        &self,
        request: &crate::model::RequestInfo,
    ) -> Vec<(&'static str, String)> {
        let network = match request.ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => {
                let [a, b, c, _] = v4.octets();
                format!("{a}.{b}.{c}.0/24")
            }
            Ok(IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
            Err(_) => request.ip.clone(),
        };
        let mut sightings = vec![
            ("device", self.keyed("device", &request.user_agent)),
            ("network", self.keyed("network", &network)),
        ];
        if let Some(country) = &request.country {
            sightings.push((
                "country",
                self.keyed("country", &country.to_ascii_uppercase()),
            ));
        }
        sightings
    }

    pub(crate) fn code_digest(&self, user_id: &str, code: &SecretString) -> [u8; 32] {
        // A malformed code is checked as a digest no code has: same work, a failure.
        match recovery_codes::normalize(code.expose_secret()) {
            Some(normalized) => recovery_codes::digest(&self.key, user_id, &normalized),
            None => [0; 32],
        }
    }
}

/// Where the notices go: the email on file and each active factor, each saying how to
/// dispute it (`DISPUTE` for the user's own requests). The outbox key names the
/// channel by kind and factor id, never the address: keys are logged.
pub(in crate::flows) fn notices(
    user: &crate::model::DirectoryUser,
    factors: &[Factor],
    key: &str,
    event: &str,
    message: &str,
    cancel_url: Option<&str>,
    dispute: &str,
) -> Vec<Notice> {
    let mut out = Vec::new();
    let base = |channel: &str, id: &str, to: &str| Notice {
        key: format!("notify:{key}:{event}:{channel}:{id}"),
        user_id: user.id.clone(),
        channel: channel.into(),
        to: to.into(),
        event: event.into(),
        message: message.into(),
        cancel_url: cancel_url.map(str::to_owned),
        enrol_url: None,
        dispute: dispute.into(),
    };
    if let Some(email) = &user.email {
        out.push(base("email", "primary", email));
    }
    for factor in factors.iter().filter(|f| f.status == FactorStatus::Active) {
        out.push(base("sms", &factor.id, &factor.id));
    }
    out
}
