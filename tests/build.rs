//! Builds the C half of the StorPort simulator: the variadic exports, which stable Rust cannot
//! define.

fn main() {
    println!("cargo:rerun-if-changed=src/sim/variadic.c");
    cc::Build::new()
        .file("src/sim/variadic.c")
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-Werror")
        .compile("rvscsi_sim_variadic");
}
