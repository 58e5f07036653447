//! What a rule's logic needs, independent of where it runs: the contract's types
//! (generated from `wit/`, shared with every guest through wit-bindgen's `with`) and
//! the host capabilities as a trait. A rule crate writes its logic against these; its
//! guest wrapper implements [`Host`] with the component's imports
//! ([`guest_host!`]), and tests or benchmarks implement it natively.
//!
//! The crate root is contract 0.1.0 (the migration rules are built against it, and
//! keep running unchanged); [`v0_2`] is contract 0.2.0, with second factors.

wit_bindgen::generate!({ path: "../../wit/v0.1.0", world: "portcullis:rule/rule-types" });

pub mod v0_2;

pub use portcullis::rule::types::*;

#[cfg(target_arch = "wasm32")]
mod arena;
#[cfg(feature = "floor-abi")]
pub mod floor;
mod json_flag;
mod json_text;
#[cfg(target_arch = "wasm32")]
pub use arena::BumpAllocator;

/// How a rule built without WASI reports a panic: an `error` log line starting with
/// this, then the trap. The host puts that line in the fault.
pub const PANIC_PREFIX: &str = "panicked at ";
pub use json_flag::json_flag;
pub use json_text::{JsonText, json_text};

/// `value` (a `#[derive(Serialize)]` struct, a string) as JSON text: a claim's value, a
/// metadata patch, a redirect's state. Not through `serde_json::Value`, whose number
/// formatting would add ~20 KiB to the rule's data image (see `JsonText`).
pub fn to_json(value: &impl serde::Serialize) -> Result<String, RuleError> {
    serde_json::to_string(value).map_err(|e| RuleError {
        code: "json".into(),
        message: e.to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// The host capabilities a rule may call (each only if its grants allow the
/// interface; an unused method costs the component nothing).
pub trait Host {
    fn log(&mut self, level: LogLevel, message: &str);
    fn config(&mut self, key: &str) -> Option<String>;
    fn verify_directory_password(&mut self, user_id: &str) -> Result<bool, CapabilityError>;
    fn find_legacy_accounts(&mut self, email: &str) -> Result<Vec<LegacyAccount>, CapabilityError>;
    fn verify_legacy_password(
        &mut self,
        product: &str,
        legacy_id: &str,
    ) -> Result<bool, CapabilityError>;
}

/// Inside a guest module that ran `wit_bindgen::generate!` (with the types mapped to
/// this crate's): defines `GuestHost`, the [`Host`] backed by the component's imports.
/// `guest_host!(v0_2)` does the same for contract 0.2.0 ([`v0_2::Host`]).
#[macro_export]
macro_rules! guest_host {
    () => {
        $crate::guest_host!(@impl [$crate], {});
    };
    (v0_2) => {
        $crate::guest_host!(@impl [$crate::v0_2], {
            fn list_factors(
                &mut self,
                user_id: &str,
            ) -> Result<Vec<$crate::v0_2::FactorSummary>, $crate::v0_2::CapabilityError> {
                portcullis::rule::mfa::list_factors(user_id)
            }
            fn recovery_facts(
                &mut self,
                user_id: &str,
            ) -> Result<Option<$crate::v0_2::RecoveryFacts>, $crate::v0_2::CapabilityError> {
                portcullis::rule::recovery::facts(user_id)
            }
        });
    };
    // The capabilities every contract version has, over `$types` (the version's
    // module: its types and its `Host`), plus `$extra` methods.
    (@impl [$($types:tt)*], { $($extra:tt)* }) => {
        pub struct GuestHost;

        impl $($types)*::Host for GuestHost {
            fn log(&mut self, level: $crate::LogLevel, message: &str) {
                use portcullis::rule::log::{Level, log};
                let level = match level {
                    $crate::LogLevel::Debug => Level::Debug,
                    $crate::LogLevel::Info => Level::Info,
                    $crate::LogLevel::Warn => Level::Warn,
                    $crate::LogLevel::Error => Level::Error,
                };
                log(level, message)
            }
            fn config(&mut self, key: &str) -> Option<String> {
                portcullis::rule::config::get(key)
            }
            fn verify_directory_password(
                &mut self,
                user_id: &str,
            ) -> Result<bool, $($types)*::CapabilityError> {
                portcullis::rule::directory::verify_password(user_id)
            }
            fn find_legacy_accounts(
                &mut self,
                email: &str,
            ) -> Result<Vec<$($types)*::LegacyAccount>, $($types)*::CapabilityError> {
                portcullis::rule::legacy::find_accounts(email)
            }
            fn verify_legacy_password(
                &mut self,
                product: &str,
                legacy_id: &str,
            ) -> Result<bool, $($types)*::CapabilityError> {
                portcullis::rule::legacy::verify_password(product, legacy_id)
            }
            $($extra)*
        }
    };
}

/// The component wrapper of a rule crate living in `rules/<name>/`: generates the
/// bindings (the contract's types mapped to this crate's), implements [`Host`] over the
/// component's imports and exports the rule's functions. Compiles to nothing on other
/// targets, where the same functions are plain Rust.
///
/// ```ignore
/// rule_model::export_rule!(on_login: crate::on_login);
/// rule_model::export_rule!(on_login: crate::on_login, on_continue: crate::on_continue);
/// ```
#[cfg(not(any(feature = "floor", feature = "floor-component")))]
#[macro_export]
macro_rules! export_rule {
    (on_login: $on_login:path) => {
        $crate::export_rule!(@guest "../../wit/v0.1.0", "portcullis:rule/rule", V0_1, $on_login, {});
    };
    // A crate elsewhere than `rules/<name>/` names the contract's directory.
    (wit: $wit:literal, on_login: $on_login:path) => {
        $crate::export_rule!(@guest $wit, "portcullis:rule/rule", V0_1, $on_login, {});
    };
    (contract: "0.2.0", on_login: $on_login:path) => {
        $crate::export_rule!(@guest "../../wit/v0.2.0", "portcullis:rule/rule", V0_2, $on_login, {});
    };
    (contract: "0.2.0", on_login: $on_login:path, on_continue: $on_continue:path) => {
        $crate::export_rule!(@guest "../../wit/v0.2.0", "portcullis:rule/resumable-rule", V0_2, $on_login, {
            fn on_continue(ctx: LoginContext, resume: Resume) -> Result<Outcome, RuleError> {
                report_panics();
                $on_continue(&ctx, &resume, &mut GuestHost)
            }
        });
    };
    (on_login: $on_login:path, on_continue: $on_continue:path) => {
        $crate::export_rule!(@guest "../../wit/v0.1.0", "portcullis:rule/resumable-rule", V0_1, $on_login, {
            fn on_continue(ctx: LoginContext, resume: Resume) -> Result<Outcome, RuleError> {
                report_panics();
                $on_continue(&ctx, &resume)
            }
        });
    };
    (@guest $wit:literal, $world:literal, V0_1, $on_login:path, { $($more:tt)* }) => {
        $crate::export_rule!(@module {
            wit_bindgen::generate!({
                path: $wit,
                world: $world,
                with: { "portcullis:rule/types@0.1.0": ::rule_model::portcullis::rule::types },
            });
            ::rule_model::guest_host!();
        }, $on_login, { $($more)* });
    };
    (@guest $wit:literal, $world:literal, V0_2, $on_login:path, { $($more:tt)* }) => {
        $crate::export_rule!(@module {
            wit_bindgen::generate!({
                path: $wit,
                world: $world,
                with: { "portcullis:rule/types@0.2.0": ::rule_model::v0_2::portcullis::rule::types },
            });
            ::rule_model::guest_host!(v0_2);
        }, $on_login, { $($more)* });
    };
    (@module { $($bindings:tt)* }, $on_login:path, { $($more:tt)* }) => {
        #[cfg(target_arch = "wasm32")]
        mod guest {
            $($bindings)*

            struct Rule;

            impl Guest for Rule {
                fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
                    report_panics();
                    $on_login(&ctx, &mut GuestHost)
                }

                $($more)*
            }

            export!(Rule);

            // Without WASI, an instance lives for one call: bump-allocate it.
            #[cfg(target_os = "unknown")]
            #[global_allocator]
            static ALLOCATOR: ::rule_model::BumpAllocator = ::rule_model::BumpAllocator::new();

            /// Without WASI there is no stderr for a panic's message: it goes through the
            /// `log` capability (so a rule built this way imports `log`).
            fn report_panics() {
                #[cfg(target_os = "unknown")]
                std::panic::set_hook(Box::new(|info| {
                    use portcullis::rule::log::{Level, log};
                    let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
                    let message = info
                        .payload()
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("a panic");
                    log(
                        Level::Error,
                        &format!("{}{}: {message}", ::rule_model::PANIC_PREFIX, location.unwrap_or_default()),
                    );
                }));
            }
        }
    };
}

/// With the `floor` feature (the benchmark's floor build, never a rule's): the same
/// rule function exported as a plain core module over [`floor`]'s buffer ABI and one
/// host import. Contract 0.1.0 rules only, `on_login` only.
#[cfg(all(feature = "floor", not(feature = "floor-component")))]
#[macro_export]
macro_rules! export_rule {
    ($(wit: $wit:literal,)? on_login: $on_login:path $(, on_continue: $on_continue:path)?) => {
        #[cfg(target_arch = "wasm32")]
        mod floor_guest {
            #[global_allocator]
            static ALLOCATOR: ::rule_model::BumpAllocator = ::rule_model::BumpAllocator::new();

            #[unsafe(no_mangle)]
            extern "C" fn portcullis_alloc(len: usize) -> *mut u8 {
                ::rule_model::floor::guest::alloc(len)
            }

            /// # Safety
            /// The host's side of the floor ABI.
            #[unsafe(no_mangle)]
            unsafe extern "C" fn portcullis_on_login(ptr: *const u8, len: usize) -> u64 {
                unsafe { ::rule_model::floor::guest::on_login(ptr, len, |c, h| $on_login(c, h)) }
            }
        }
    };
}

/// With the `floor-component` feature (the benchmark's, never a rule's): the same rule
/// function as a component over [`floor::FLOOR_COMPONENT_WIT`]: buffers in and out,
/// one host function.
#[cfg(feature = "floor-component")]
#[macro_export]
macro_rules! export_rule {
    ($(wit: $wit:literal,)? on_login: $on_login:path $(, on_continue: $on_continue:path)?) => {
        #[cfg(target_arch = "wasm32")]
        mod floor_component {
            wit_bindgen::generate!({
                inline: "package portcullis:floor;
interface host { call: func(op: u32, args: list<u8>) -> list<u8>; }
world floor { import host; export on-login: func(ctx: list<u8>) -> list<u8>; }",
            });

            #[global_allocator]
            static ALLOCATOR: ::rule_model::BumpAllocator = ::rule_model::BumpAllocator::new();

            struct Floor;

            impl Guest for Floor {
                fn on_login(ctx: Vec<u8>) -> Vec<u8> {
                    ::rule_model::floor::serve_login(
                        &ctx,
                        |op, args| portcullis::floor::host::call(op, args),
                        |c, h| $on_login(c, h),
                    )
                }
            }

            export!(Floor);
        }
    };
}
