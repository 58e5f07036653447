//! Faulty on purpose: a rule bug that panics. The panic message goes to stderr (which
//! the host captures into the trace) and the guest traps.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

struct Panics;

impl Guest for Panics {
    fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
        let user = ctx
            .user
            .expect("rule bug: assumed every login has a directory user");
        Err(RuleError {
            code: "unreachable".into(),
            message: user.id,
        })
    }
}

export!(Panics);
