//! Faulty on purpose: never returns. The host's epoch deadline must stop it.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

struct InfiniteLoop;

impl Guest for InfiniteLoop {
    fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
        let mut spins = ctx.time_ms;
        loop {
            // black_box keeps the optimiser from proving the loop has no effect.
            spins = std::hint::black_box(spins.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export!(InfiniteLoop);
