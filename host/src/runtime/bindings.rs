//! Host-side bindings of the `portcullis:rule` contract in `wit/`, one module per
//! version the host links (as Zed's extension host keeps its `since_v0_x` modules).
//! The host works in the newest version's types; an older rule's calls are adapted at
//! the boundary (see `capabilities::since_v0_1` and `contract`).

/// `portcullis:rule@0.2.0`, the current contract.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2.0",
        world: "portcullis:rule/rule",
        // Outer `wasmtime::Result` = trap the guest; inner `result` = an error it sees.
        imports: { default: trappable },
    });
}

/// `portcullis:rule@0.1.0`: rules built before second factors.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "portcullis:rule/rule",
        imports: { default: trappable },
    });
}

pub use self::v0_2::portcullis::rule::types as wit;
