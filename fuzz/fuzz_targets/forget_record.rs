//! Fuzz target `forget_record`: what it feeds and asserts is documented on
//! `checks::forget_record` in fuzz/checks.rs, shared with tests/decoders.rs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::forget_record(data);
});
