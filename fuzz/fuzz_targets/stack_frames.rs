//! See `zcstack_tests::fuzz::stack` (tests/common/fuzz/stack.rs) for what this
//! target feeds and checks; docs/fuzzing.md for how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zcstack_tests::fuzz::stack::run(data));
