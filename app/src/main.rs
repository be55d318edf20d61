//! The `hello` binary.
fn main() {}
