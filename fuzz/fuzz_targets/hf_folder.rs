//! A Hugging Face folder: config.json, tokenizer.json and model.safetensors, in the
//! length-prefixed layout of `leanlm_fuzz::split`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [config, tokenizer, weights] = leanlm_fuzz::split::<3>(data);
    let dir = leanlm_fuzz::scratch("hf");
    std::fs::create_dir_all(&dir).expect("scratch folder");
    for (name, bytes) in [
        ("config.json", config),
        ("tokenizer.json", tokenizer),
        ("model.safetensors", weights),
    ] {
        std::fs::write(dir.join(name), bytes).expect("scratch file");
    }
    if let Ok(loaded) = leanlm::model::load(&dir) {
        leanlm_fuzz::exercise(&loaded);
    }
});
