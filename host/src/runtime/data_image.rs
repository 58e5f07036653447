//! How many bytes of data segments a component's core modules hold: the image the
//! pooling allocator copies back into a rule's memory whenever one of its stores is
//! dropped, so once per rule per login (BENCHMARKS.md, "Issue 25, third pass").
//! `check` shows it, so a rule author sees what a dependency added.

/// The bytes of every data segment in `component`'s core modules (nested modules
/// included); `None` when the bytes do not parse.
pub fn data_image_bytes(component: &[u8]) -> Option<u64> {
    let mut total = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let wasmparser::Payload::DataSection(segments) = payload.ok()? {
            for segment in segments {
                total += segment.ok()?.data.len() as u64;
            }
        }
    }
    Some(total)
}
