//! Faulty on purpose: recurses without end. The host's bounded wasm stack must stop it.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

struct DeepRecursion;

// Not a tail call and not an accumulator the optimiser can turn into a loop: every
// level keeps a frame on the wasm stack.
#[inline(never)]
fn descend(depth: u64, stop: u64) -> u64 {
    if depth == stop {
        return depth;
    }
    descend(depth + 1, stop)
        .wrapping_mul(3)
        .rotate_left(depth as u32)
        ^ depth
}

impl Guest for DeepRecursion {
    fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
        // A stop the compiler cannot see through, and that a login never reaches.
        let depth = descend(0, ctx.time_ms | (1 << 63));
        Err(RuleError {
            code: "unreachable".into(),
            message: depth.to_string(),
        })
    }
}

export!(DeepRecursion);
