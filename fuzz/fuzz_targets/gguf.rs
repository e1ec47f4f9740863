//! A GGUF file, as `leanlm info/generate` load it: header, metadata, tensor table, model
//! construction, the vocabulary; a model that loads is then run briefly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = leanlm_fuzz::scratch_file("model.gguf", data);
    if let Ok(loaded) = leanlm::model::load(&path) {
        leanlm_fuzz::exercise(&loaded);
    }
});
