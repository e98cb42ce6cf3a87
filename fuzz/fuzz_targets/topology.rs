//! Arbitrary bytes as a topology file: parsed, validated and, when valid, planned. Nothing may
//! panic, whatever the input (`cargo xtask fuzz`; crashes are kept in
//! dvnet/tests/fixtures/fuzz/ and replayed by the library's unit tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topology) = dvnet::topology::Topology::from_json(text, "fuzz.json") {
        let _ = dvnet::plan::Plan::build(&topology, dvnet::plan::PlanOptions::default());
    }
});
