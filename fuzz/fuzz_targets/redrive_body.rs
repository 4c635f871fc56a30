#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidewater_fuzz::redrive_body(data));
