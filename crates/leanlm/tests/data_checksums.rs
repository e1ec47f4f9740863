//! The benchmark texts in data/ are the published files byte for byte: every figure in
//! docs/benchmarks.md depends on it. The sums are read from data/SHA256SUMS, and each file
//! listed there must exist and match.

use sha2::{Digest, Sha256};

mod common;

#[test]
fn data_files_match_their_sha256_sums() {
    let sums = std::fs::read_to_string(common::data_file("SHA256SUMS")).expect("data/SHA256SUMS");
    let mut checked = 0;
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (want, name) = line.split_once("  ").expect("sha256sum line: HASH  NAME");
        let bytes =
            std::fs::read(common::data_file(name)).unwrap_or_else(|e| panic!("data/{name}: {e}"));
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            got, want,
            "data/{name} differs from its SHA-256 in data/SHA256SUMS"
        );
        checked += 1;
    }
    // The four files the tests, recipes and docs use.
    assert_eq!(
        checked, 4,
        "data/SHA256SUMS lists {checked} files, expected 4"
    );
}
