#![no_main]

use std::cell::RefCell;
use std::path::Path;

use portcullis::fuzzing::RecordingTarget;

thread_local! {
    // One engine and one compiled pipeline for the whole run: each input replays
    // through fresh sandboxes, as `portcullis replay` does.
    static TARGET: RefCell<RecordingTarget> = RefCell::new(RecordingTarget::new(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pipeline.toml"),
    ));
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| TARGET.with(|t| t.borrow_mut().run(data)));
