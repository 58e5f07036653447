//! Faulty on purpose: executes the wasm `unreachable` instruction, as a miscompiled or
//! hand-written rule might.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

struct Unreachable;

impl Guest for Unreachable {
    fn on_login(_ctx: LoginContext) -> Result<Outcome, RuleError> {
        core::arch::wasm32::unreachable()
    }
}

export!(Unreachable);
