//! Arbitrary bytes as a topology file: parsed, validated and, when valid, planned (the whole
//! lab, and each machine's share of a lab placed on several). Nothing may
//! panic, whatever the input (`cargo xtask fuzz`; crashes are kept in
//! dvnet/tests/fixtures/fuzz/ and replayed by the library's unit tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topology) = dvnet::topology::Topology::from_json(text, "fuzz.json") {
        let options = dvnet::plan::PlanOptions::default();
        let _ = dvnet::plan::Plan::build(&topology, options);
        for m in 0..topology.machines.len() {
            let _ = dvnet::plan::Plan::build_share(&topology, options, m);
        }
    }
});
