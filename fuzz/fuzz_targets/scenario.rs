//! Simulator scenarios (`sim/src/scenario.rs`): any bytes through
//! `Scenario::from_json` (what `Scenario::load` does after reading the file: parse,
//! resolve paths, `validate`, which checks every device, profile and event).
//! Checks: no panic; an accepted scenario's events and device profiles are accepted
//! again by `event_actions` and `profile_of`, with actions in time order.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use syncstream_sim::scenario::Scenario;

fuzz_target!(|data: &[u8]| {
    // Relative paths resolve under a folder that does not exist: a profile file named
    // by the input is "not found", never read from the machine.
    let s = match Scenario::from_json("fuzz.json", data, Path::new("/nonexistent/fuzz")) {
        Ok(s) => s,
        Err(e) => {
            let _ = format!("{e:#}");
            return;
        }
    };
    let actions = s
        .event_actions()
        .expect("an accepted scenario's events are valid");
    assert!(actions.windows(2).all(|w| w[0].0 <= w[1].0));
    for d in &s.devices {
        let p = s.profile_of(d).expect("an accepted device has a profile");
        p.validate().expect("its profile is valid");
    }
    assert!(s.growth_limit_ms() >= s.playout_delay_ms);
});
