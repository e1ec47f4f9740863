//! A recipe's TOML text, as `leanlm recipe check` reads it: parsing, every field's checks,
//! stage references, the plan, the files it names, and `--tiny`'s shrinking.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.toml");
    if let Ok(mut plan) = leanlm::recipe::parse(text, file) {
        let _ = leanlm::recipe::check_files(&plan, text, file);
        plan.shrink();
    }
});
