//! Project chores. `cargo xtask tidy` checks the architecture's invariants;
//! the same checks run as tests under `cargo test`.

fn main() {}
