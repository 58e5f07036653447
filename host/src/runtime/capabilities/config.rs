use crate::runtime::bindings::v0_2::portcullis::rule::config::Host;
use crate::runtime::sandbox::RuleState;

impl Host for RuleState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.rule.config.get(&key).cloned())
    }
}
