//! temporary
#[test]
fn repro() {
    let bytes = std::fs::read("/tmp/crash2").unwrap();
    let _ = rvscsi_tests::hostile::run(&bytes);
}
