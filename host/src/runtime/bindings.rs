//! Host-side bindings of the `portcullis:rule@0.1.0` contract in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "portcullis:rule/rule",
    // Outer `wasmtime::Result` = trap the guest; inner `result` = an error it sees.
    imports: { default: trappable },
});

pub use self::portcullis::rule::types as wit;
