//! Faulty on purpose: allocates and touches 1 MiB blocks until memory runs out. The
//! host's per-store memory cap must stop it before the process feels it.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

struct MemoryBomb;

impl Guest for MemoryBomb {
    fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![ctx.time_ms as u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export!(MemoryBomb);
