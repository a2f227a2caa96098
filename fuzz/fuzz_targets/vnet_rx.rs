//! See `zcstack_tests::fuzz::vnet` (tests/common/fuzz/vnet.rs) for what this
//! target feeds and checks; docs/fuzzing.md for how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zcstack_tests::fuzz::vnet::run(data));
