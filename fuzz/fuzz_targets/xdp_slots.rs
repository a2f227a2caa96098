//! See `zcstack_tests::fuzz::slots` (tests/common/fuzz/slots.rs) for what this
//! target feeds and checks; docs/fuzzing.md for how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zcstack_tests::fuzz::slots::run(data));
