//! Fuzz target `group`: what it feeds and asserts is documented on
//! `checks::group` in fuzz/checks.rs, shared with tests/decoders.rs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::group(data);
});
