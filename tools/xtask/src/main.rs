//! xtask: the project's jobs, runnable the same way locally and in CI (`cargo xtask <job>`).
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(2);
}
