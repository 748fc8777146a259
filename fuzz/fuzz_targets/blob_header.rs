//! Fuzz target `blob_header`: what it feeds and asserts is documented on
//! `checks::blob_header` in fuzz/checks.rs, shared with tests/decoders.rs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::blob_header(data);
});
