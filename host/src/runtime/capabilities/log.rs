//! The `log` capability. Its message is read out of the guest by the host's own lift
//! ([`GuestText`]), never by the canonical ABI's: that would copy the whole string
//! into the host (a 100 MB line cost 190 MB of host memory) before the host kept
//! 1 KiB of it. The linker's `log` is replaced by [`link`]; the trait impls that
//! `bindgen!` asks for stay for its type checks and are never called by a guest.

use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use crate::runtime::bindings::v0_1::portcullis::rule::log as v0_1;
use crate::runtime::bindings::v0_2::portcullis::rule::log::{Host, Level};
use crate::runtime::lift::GuestText;
use crate::runtime::sandbox::{MAX_LOG_LINE, RuleState};

/// A log message as the host reads it: no more than a kept line.
type Message = GuestText<MAX_LOG_LINE>;

fn name(level: Level) -> &'static str {
    match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

fn from_v0_1(level: v0_1::Level) -> Level {
    match level {
        v0_1::Level::Debug => Level::Debug,
        v0_1::Level::Info => Level::Info,
        v0_1::Level::Warn => Level::Warn,
        v0_1::Level::Error => Level::Error,
    }
}

/// Links `log` of every contract version with the bounded read, over what
/// `bindgen!`'s `add_to_linker` linked.
pub(crate) fn link(linker: &mut Linker<RuleState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance("portcullis:rule/log@0.2.0")?.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, RuleState>, (level, message): (Level, Message)| {
            store.data_mut().push_guest_log(name(level), message);
            Ok(())
        },
    )?;
    linker.instance("portcullis:rule/log@0.1.0")?.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, RuleState>, (level, message): (v0_1::Level, Message)| {
            store
                .data_mut()
                .push_guest_log(name(from_v0_1(level)), message);
            Ok(())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl Host for RuleState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.push_log(format!("{}: {message}", name(level)));
        Ok(())
    }
}
