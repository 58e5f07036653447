use crate::runtime::bindings::v0_2::portcullis::rule::log::{Host, Level};
use crate::runtime::sandbox::RuleState;

impl Host for RuleState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.push_log(format!("{level}: {message}"));
        Ok(())
    }
}
