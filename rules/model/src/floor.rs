//! The floor of per-rule isolation, for the benchmark only: the same rule logic as a
//! plain core module with one host import and a hand-written buffer ABI, no component
//! model. It is not a contract (nothing versions it, no host but the benchmark speaks
//! it); it exists so the components' cost can be stated against what wasmtime itself
//! needs for a fresh instance per rule.
//!
//! Values cross as bytes: integers little-endian, a string or list as a `u32` length
//! then its items, an option or result as one tag byte then the value. The guest
//! exports `alloc(len) -> ptr` and `on_login(ptr, len) -> (ptr << 32 | len)` (the
//! encoded `Result<Outcome, RuleError>`); the host exports one function,
//! `portcullis.call(op, ptr, len, out, cap) -> len`, answering into `out` when the
//! answer fits `cap`, else keeping it for an `OP_TAKE` call with a buffer that fits.

use crate::{
    CapabilityError, CapabilityErrorKind, ChallengeKind, Claim, Decision, DenyInfo, Effect,
    Identity, LegacyAccount, LegacyLink, LoginContext, NewUser, OutboxMessage, Outcome,
    RedirectInfo, Request, RuleError, User,
};

/// The answer that did not fit the caller's buffer.
pub const OP_TAKE: u32 = 0;
/// `(level: u8, message)` -> nothing.
pub const OP_LOG: u32 = 1;
/// `key` -> `Option<String>`.
pub const OP_CONFIG: u32 = 2;
/// `user_id` -> `Result<bool, CapabilityError>`.
pub const OP_VERIFY_DIRECTORY_PASSWORD: u32 = 3;
/// `email` -> `Result<Vec<LegacyAccount>, CapabilityError>`.
pub const OP_FIND_LEGACY_ACCOUNTS: u32 = 4;
/// `(product, legacy_id)` -> `Result<bool, CapabilityError>`.
pub const OP_VERIFY_LEGACY_PASSWORD: u32 = 5;

/// Bytes being decoded; every read is bounds-checked (`None` on short input).
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
}

/// A value with a wire form.
pub trait Wire: Sized {
    fn put(&self, out: &mut Vec<u8>);
    fn get(r: &mut Reader<'_>) -> Option<Self>;
}

/// `value`'s bytes.
pub fn encode<T: Wire>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    value.put(&mut out);
    out
}

/// The value in `bytes`, which must hold exactly one.
pub fn decode<T: Wire>(bytes: &[u8]) -> Option<T> {
    let mut r = Reader::new(bytes);
    let value = T::get(&mut r)?;
    r.bytes.is_empty().then_some(value)
}

impl Wire for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        match r.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

impl Wire for u8 {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        r.u8()
    }
}

impl Wire for u32 {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        Some(u32::from_le_bytes(r.take(4)?.try_into().ok()?))
    }
}

impl Wire for u64 {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        Some(u64::from_le_bytes(r.take(8)?.try_into().ok()?))
    }
}

impl Wire for String {
    fn put(&self, out: &mut Vec<u8>) {
        (self.len() as u32).put(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        let len = u32::get(r)? as usize;
        String::from_utf8(r.take(len)?.to_vec()).ok()
    }
}

impl<T: Wire> Wire for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        match r.u8()? {
            0 => Some(None),
            1 => Some(Some(T::get(r)?)),
            _ => None,
        }
    }
}

impl<T: Wire, E: Wire> Wire for Result<T, E> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Ok(v) => {
                out.push(0);
                v.put(out);
            }
            Err(e) => {
                out.push(1);
                e.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        match r.u8()? {
            0 => Some(Ok(T::get(r)?)),
            1 => Some(Err(E::get(r)?)),
            _ => None,
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        (self.len() as u32).put(out);
        for item in self {
            item.put(out);
        }
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        let len = u32::get(r)? as usize;
        // Every item is at least a byte: a length beyond the input is a lie.
        if len > r.bytes.len() {
            return None;
        }
        (0..len).map(|_| T::get(r)).collect()
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        Some((A::get(r)?, B::get(r)?))
    }
}

impl Wire for () {
    fn put(&self, _: &mut Vec<u8>) {}
    fn get(_: &mut Reader<'_>) -> Option<Self> {
        Some(())
    }
}

/// A record: its fields in order.
macro_rules! record {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl Wire for $ty {
            fn put(&self, out: &mut Vec<u8>) {
                $(self.$field.put(out);)*
            }
            fn get(r: &mut Reader<'_>) -> Option<Self> {
                Some($ty { $($field: Wire::get(r)?),* })
            }
        }
    };
}

record!(Identity {
    provider,
    user_id,
    connection
});
record!(User {
    id,
    email,
    email_verified,
    identities,
    app_metadata,
    user_metadata,
    created_at_ms,
    last_login_ms,
    logins_count
});
record!(Request { ip, user_agent });
record!(DenyInfo {
    code,
    message,
    retryable
});
record!(RedirectInfo { url, reason, state });
record!(Claim { name, value });
record!(NewUser {
    email,
    email_verified,
    app_metadata,
    user_metadata,
    password_from_login
});
record!(LegacyLink { product, legacy_id });
record!(OutboxMessage {
    topic,
    key,
    payload
});
record!(LoginContext {
    transaction_id,
    time_ms,
    connection,
    client_id,
    email,
    has_password,
    request,
    user,
    new_user_id,
    pending
});
record!(Outcome { decision, effects });
record!(RuleError { code, message });
record!(CapabilityError { kind, message });
record!(LegacyAccount {
    product,
    legacy_id,
    email,
    email_verified,
    created_at_ms,
    profile
});

/// An enum without payloads: its case's index.
macro_rules! cases {
    ($ty:ident { $($case:ident),* $(,)? }) => {
        impl Wire for $ty {
            fn put(&self, out: &mut Vec<u8>) {
                out.push(*self as u8);
            }
            fn get(r: &mut Reader<'_>) -> Option<Self> {
                let tag = r.u8()?;
                [$($ty::$case),*].into_iter().nth(tag as usize)
            }
        }
    };
}

cases!(ChallengeKind {
    Mfa,
    PasswordReset,
    EmailVerification,
    Captcha
});
cases!(CapabilityErrorKind {
    Unavailable,
    InvalidArgument,
    NotFound
});

impl Wire for Decision {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Decision::Continue => out.push(0),
            Decision::Deny(d) => {
                out.push(1);
                d.put(out);
            }
            Decision::Redirect(d) => {
                out.push(2);
                d.put(out);
            }
            Decision::Challenge(c) => {
                out.push(3);
                c.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        Some(match r.u8()? {
            0 => Decision::Continue,
            1 => Decision::Deny(Wire::get(r)?),
            2 => Decision::Redirect(Wire::get(r)?),
            3 => Decision::Challenge(Wire::get(r)?),
            _ => return None,
        })
    }
}

impl Wire for Effect {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Effect::SetAppMetadata(p) => {
                out.push(0);
                p.put(out);
            }
            Effect::SetUserMetadata(p) => {
                out.push(1);
                p.put(out);
            }
            Effect::AddClaim(c) => {
                out.push(2);
                c.put(out);
            }
            Effect::CreateUser(u) => {
                out.push(3);
                u.put(out);
            }
            Effect::LinkLegacyAccount(l) => {
                out.push(4);
                l.put(out);
            }
            Effect::EnqueueOutbox(m) => {
                out.push(5);
                m.put(out);
            }
            Effect::RequirePasswordReset => out.push(6),
        }
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        Some(match r.u8()? {
            0 => Effect::SetAppMetadata(Wire::get(r)?),
            1 => Effect::SetUserMetadata(Wire::get(r)?),
            2 => Effect::AddClaim(Wire::get(r)?),
            3 => Effect::CreateUser(Wire::get(r)?),
            4 => Effect::LinkLegacyAccount(Wire::get(r)?),
            5 => Effect::EnqueueOutbox(Wire::get(r)?),
            6 => Effect::RequirePasswordReset,
            _ => return None,
        })
    }
}

/// The same buffers through the component model (`floor-component` feature): one
/// `list<u8>` in and out of `on-login`, one `host.call(op, args) -> list<u8>` import.
/// What the component model costs over a core module, with the typed context out of
/// the way.
pub const FLOOR_COMPONENT_WIT: &str = "package portcullis:floor;
interface host { call: func(op: u32, args: list<u8>) -> list<u8>; }
world floor { import host; export on-login: func(ctx: list<u8>) -> list<u8>; }";

/// A [`crate::Host`] over a function answering `(op, encoded args)` with encoded
/// answers: the floor component's import (or any other transport).
pub struct CallHost<F: FnMut(u32, &[u8]) -> Vec<u8>>(pub F);

impl<F: FnMut(u32, &[u8]) -> Vec<u8>> CallHost<F> {
    fn call<A: Wire, R: Wire>(&mut self, op: u32, args: &A) -> R {
        decode(&(self.0)(op, &encode(args))).expect("the host's answer decodes")
    }
}

impl<F: FnMut(u32, &[u8]) -> Vec<u8>> crate::Host for CallHost<F> {
    fn log(&mut self, level: crate::LogLevel, message: &str) {
        self.call::<_, ()>(OP_LOG, &(level as u8, message.to_owned()))
    }
    fn config(&mut self, key: &str) -> Option<String> {
        self.call(OP_CONFIG, &key.to_owned())
    }
    fn verify_directory_password(&mut self, user_id: &str) -> Result<bool, CapabilityError> {
        self.call(OP_VERIFY_DIRECTORY_PASSWORD, &user_id.to_owned())
    }
    fn find_legacy_accounts(&mut self, email: &str) -> Result<Vec<LegacyAccount>, CapabilityError> {
        self.call(OP_FIND_LEGACY_ACCOUNTS, &email.to_owned())
    }
    fn verify_legacy_password(
        &mut self,
        product: &str,
        legacy_id: &str,
    ) -> Result<bool, CapabilityError> {
        self.call(
            OP_VERIFY_LEGACY_PASSWORD,
            &(product.to_owned(), legacy_id.to_owned()),
        )
    }
}

/// One `on-login` over buffers: decode the context, run the rule, encode its answer.
pub fn serve_login<F: FnMut(u32, &[u8]) -> Vec<u8>>(
    ctx: &[u8],
    call: F,
    rule: fn(&LoginContext, &mut CallHost<F>) -> Result<Outcome, RuleError>,
) -> Vec<u8> {
    let ctx: LoginContext = decode(ctx).expect("the host's context decodes");
    encode(&rule(&ctx, &mut CallHost(call)))
}

/// The guest side: the [`crate::Host`] over the one import, and the exports.
/// `export_rule!` expands to this when the crate is built with the `floor` feature.
#[cfg(target_arch = "wasm32")]
pub mod guest {
    use super::*;
    use crate::{Host, LogLevel};

    #[link(wasm_import_module = "portcullis")]
    unsafe extern "C" {
        fn call(op: u32, ptr: *const u8, len: usize, out: *mut u8, cap: usize) -> usize;
    }

    /// Room for most answers (a list of a few legacy accounts) in one call.
    const ANSWER_ROOM: usize = 1024;

    fn host_call<A: Wire, R: Wire>(op: u32, args: &A) -> R {
        let request = encode(args);
        let mut answer = Vec::<u8>::with_capacity(ANSWER_ROOM);
        // SAFETY: the host writes at most `cap` bytes at `out` and returns the length.
        let mut len = unsafe {
            call(
                op,
                request.as_ptr(),
                request.len(),
                answer.as_mut_ptr(),
                answer.capacity(),
            )
        };
        if len > answer.capacity() {
            answer = Vec::with_capacity(len);
            len = unsafe {
                call(
                    OP_TAKE,
                    core::ptr::null(),
                    0,
                    answer.as_mut_ptr(),
                    answer.capacity(),
                )
            };
        }
        // SAFETY: the host wrote `len` bytes (at most the capacity).
        unsafe { answer.set_len(len.min(answer.capacity())) };
        decode(&answer).expect("the host's answer decodes")
    }

    pub struct FloorHost;

    impl Host for FloorHost {
        fn log(&mut self, level: LogLevel, message: &str) {
            host_call::<_, ()>(OP_LOG, &(level as u8, message.to_owned()))
        }
        fn config(&mut self, key: &str) -> Option<String> {
            host_call(OP_CONFIG, &key.to_owned())
        }
        fn verify_directory_password(&mut self, user_id: &str) -> Result<bool, CapabilityError> {
            host_call(OP_VERIFY_DIRECTORY_PASSWORD, &user_id.to_owned())
        }
        fn find_legacy_accounts(
            &mut self,
            email: &str,
        ) -> Result<Vec<LegacyAccount>, CapabilityError> {
            host_call(OP_FIND_LEGACY_ACCOUNTS, &email.to_owned())
        }
        fn verify_legacy_password(
            &mut self,
            product: &str,
            legacy_id: &str,
        ) -> Result<bool, CapabilityError> {
            host_call(
                OP_VERIFY_LEGACY_PASSWORD,
                &(product.to_owned(), legacy_id.to_owned()),
            )
        }
    }

    /// The `alloc` export: room for the host to write the context into.
    pub fn alloc(len: usize) -> *mut u8 {
        let mut buffer = core::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(len));
        buffer.as_mut_ptr()
    }

    /// The `on_login` export around a rule's function.
    ///
    /// # Safety
    /// `ptr`/`len` is what the host wrote after `alloc(len)`.
    pub unsafe fn on_login(
        ptr: *const u8,
        len: usize,
        rule: fn(&LoginContext, &mut FloorHost) -> Result<Outcome, RuleError>,
    ) -> u64 {
        let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
        let ctx: LoginContext = decode(bytes).expect("the host's context decodes");
        let answer = core::mem::ManuallyDrop::new(encode(&rule(&ctx, &mut FloorHost)));
        ((answer.as_ptr() as u64) << 32) | answer.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_with_every_effect_survives_the_wire_and_short_input_is_refused() {
        let ctx = LoginContext {
            transaction_id: "t".into(),
            time_ms: 1 << 40,
            connection: "c".into(),
            client_id: "app".into(),
            email: "a@example.com".into(),
            has_password: true,
            request: Request {
                ip: "192.0.2.1".into(),
                user_agent: "ua".into(),
            },
            user: Some(User {
                id: "u".into(),
                email: None,
                email_verified: true,
                identities: vec![Identity {
                    provider: "p".into(),
                    user_id: "1".into(),
                    connection: "c".into(),
                }],
                app_metadata: "{}".into(),
                user_metadata: "{\"x\":1}".into(),
                created_at_ms: 7,
                last_login_ms: Some(9),
                logins_count: 3,
            }),
            new_user_id: "n".into(),
            pending: vec![
                Effect::SetAppMetadata("{}".into()),
                Effect::AddClaim(Claim {
                    name: "n".into(),
                    value: "1".into(),
                }),
                Effect::RequirePasswordReset,
                Effect::LinkLegacyAccount(LegacyLink {
                    product: "p".into(),
                    legacy_id: "l".into(),
                }),
            ],
        };
        let bytes = encode(&ctx);
        let back: LoginContext = decode(&bytes).expect("decodes");
        assert_eq!(format!("{back:?}"), format!("{ctx:?}"));
        assert!(decode::<LoginContext>(&bytes[..bytes.len() - 1]).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<LoginContext>(&longer).is_none());
    }
}
