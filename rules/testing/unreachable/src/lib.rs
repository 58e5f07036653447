//! Faulty on purpose: executes the wasm `unreachable` instruction, as a miscompiled or
//! hand-written rule might.

wit_bindgen::generate!({ path: "../../../wit", world: "portcullis:rule/rule" });

struct Unreachable;

impl Guest for Unreachable {
    fn on_login(_ctx: LoginContext) -> Result<Outcome, RuleError> {
        core::arch::wasm32::unreachable()
    }
}

export!(Unreachable);
