//! Fuzz target: any bytes given to the spec parser must give a result or
//! diagnostics, never a panic, and rendering them must not panic either.
//!
//!     cargo +nightly fuzz run spec_parse fuzz/corpus/spec_parse
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = hatoba_spec::parse_bytes(data);
    let text = String::from_utf8_lossy(data);
    let _ = hatoba_spec::render("fuzz.yaml", &text, &parsed.diagnostics);
});
