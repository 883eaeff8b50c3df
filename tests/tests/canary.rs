//! The canary of `cargo xtask vm --canary PREFIX`, the VM matrix's own test: it fails on the
//! kernels whose release starts with PREFIX, so that the matrix is seen to fail on the right
//! kernel, naming this test. It passes everywhere else (and on the host, where the variable is not
//! set).

#[test]
fn vm_canary() {
    let Ok(prefix) = std::env::var("PORT25_VM_CANARY") else {
        return;
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("a kernel release");
    assert!(
        !release.starts_with(&prefix),
        "canary: failing on kernel {} as --canary {prefix} asked",
        release.trim()
    );
}
