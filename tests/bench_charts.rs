//! The bench's chart drawing, compiled here so that its tests run with `cargo test`: the
//! tests of an example run only when it is named (`cargo test --example bench`).

#[path = "../examples/bench/charts.rs"]
mod charts;
