//! Host-side bindings of the `portcullis:rule` contract in `wit/`, one module per
//! version the host links (as Zed's extension host keeps its `since_v0_x` modules).
//! The host works in the newest version's types; an older rule's calls are adapted at
//! the boundary (see `capabilities::since_v0_1` and `contract`).

/// `portcullis:rule@0.2.0`, the current contract.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2.0",
        world: "portcullis:rule/rule",
        // Outer `wasmtime::Result` = trap the guest; inner `result` = an error it sees.
        imports: { default: trappable },
    });
}

/// `portcullis:rule@0.1.0`: rules built before second factors.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "portcullis:rule/rule",
        imports: { default: trappable },
    });
}

pub use self::v0_2::portcullis::rule::types as wit;

// The domain's login and user as the contract's types (inherent impls live beside
// the bindings, so the model knows nothing of the contract).
impl crate::model::LoginAttempt {
    /// The context handed to the first rule (no pending effects yet).
    pub fn to_context(&self) -> wit::LoginContext {
        wit::LoginContext {
            transaction_id: self.transaction_id.clone(),
            time_ms: self.time_ms,
            connection: self.connection.clone(),
            client_id: self.client_id.clone(),
            email: self.email.clone(),
            has_password: self.password.is_some(),
            request: wit::Request {
                ip: self.request.ip.clone(),
                user_agent: self.request.user_agent.clone(),
            },
            user: self.user.as_ref().map(crate::model::DirectoryUser::to_wit),
            new_user_id: self.new_user_id(),
            pending: Vec::new(),
        }
    }
}

impl crate::model::DirectoryUser {
    pub fn to_wit(&self) -> wit::User {
        wit::User {
            id: self.id.clone(),
            email: self.email.clone(),
            email_verified: self.email_verified,
            identities: self
                .identities
                .iter()
                .map(|i| wit::Identity {
                    provider: i.provider.clone(),
                    user_id: i.user_id.clone(),
                    connection: i.connection.clone(),
                })
                .collect(),
            app_metadata: self.app_metadata.to_string(),
            user_metadata: self.user_metadata.to_string(),
            created_at_ms: self.created_at_ms,
            last_login_ms: self.last_login_ms,
            logins_count: self.logins_count,
        }
    }
}
