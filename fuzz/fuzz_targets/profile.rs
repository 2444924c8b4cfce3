//! Device profiles (`shared/src/profile.rs`): any bytes through
//! `DeviceProfile::from_json` (what `DeviceProfile::load` reads from a file).
//! Checks: no panic; an accepted profile passes `validate`, and the JSON the product
//! writes for it (`save` writes `to_vec_pretty`) is accepted again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncstream_shared::profile::DeviceProfile;

fuzz_target!(|data: &[u8]| {
    match DeviceProfile::from_json("fuzz.json", data) {
        Ok(p) => {
            p.validate().expect("an accepted profile is valid");
            assert!(p.mic_delay_ms().is_finite());
            let text = serde_json::to_vec_pretty(&p).expect("a profile serializes");
            DeviceProfile::from_json("again.json", &text).expect("a saved profile loads");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
