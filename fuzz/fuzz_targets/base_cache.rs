//! The base model's cached top-k log-probabilities (`eval --base-cache`), then the KL
//! divergence of a uniform model against each position it holds.
#![no_main]

use leanlm::measure::kld::{kld_top_k, BaseLogits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = leanlm_fuzz::scratch_file("base.kld", data);
    if let Ok(base) = BaseLogits::load(&path) {
        // A real vocabulary is at most a few hundred thousand ids; the harness's own row
        // stays small so that a large claimed vocabulary costs nothing here.
        if base.vocab <= 1 << 16 {
            let lq = vec![-(base.vocab as f32).ln(); base.vocab];
            for p in base.positions.iter().take(64) {
                let _ = kld_top_k(p, &lq);
            }
        }
    }
});
