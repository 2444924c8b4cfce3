//! One scenario, two clocks: the simulator on virtual time and `demo --scenario` in
//! real time (real TCP, HTTP and MQTT through proxies that delay them as the scenario
//! says, each receiver on its own drifting crystal) run the same receiver core, so they
//! end with the same offsets. Asserted on 75 s of `scenarios/sim-vs-demo-10min.json`;
//! the full ten minutes is `scripts/compare-sim-demo.sh`.

mod common;

use std::path::Path;

use syncstream_protocol::wire::Codec;
use syncstream_sim::demo::scenario_world;
use syncstream_sim::{run_scenario, run_world, DemoConfig, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_simulator_and_the_real_time_demo_agree() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/sim-vs-demo-10min.json");
    let mut sc = Scenario::load(&path).unwrap();
    sc.duration_s = 75.0;
    let sim = {
        let sc = sc.clone();
        tokio::task::spawn_blocking(move || run_scenario(&sc, &mut |_, _| {}))
            .await
            .unwrap()
            .unwrap()
    };
    let cfg = DemoConfig {
        audio: sc.audio.clone(),
        duration_s: Some(sc.duration_s),
        broker: None,
        codec: Codec::Opus,
        seed: sc.seed,
        live_table: false,
        http_port: 0,
        state_dir: None,
        streams: Vec::new(),
        key: None,
    };
    let demo = run_world(cfg, scenario_world(&sc).unwrap()).await.unwrap();
    let both = format!(
        "sim:\n{}\ndemo:\n{}",
        serde_json::to_string_pretty(&sim.devices).unwrap(),
        serde_json::to_string_pretty(&demo.devices).unwrap()
    );
    assert!(sim.converged && demo.converged, "{both}");
    for (s, d) in sim.devices.iter().zip(&demo.devices) {
        assert_eq!(s.name, d.name);
        assert!(
            (s.final_offset_ms - d.final_offset_ms).abs() <= 0.1,
            "{}: sim {} ms, demo {} ms\n{both}",
            s.name,
            s.final_offset_ms,
            d.final_offset_ms
        );
        assert_eq!(d.underruns, 0, "{both}");
    }
    for r in [&sim, &demo] {
        assert!(r.pairwise_ms.unwrap().p95 <= 0.2, "{both}");
    }
}
