//! `cargo xtask`: project chores written in Rust.
fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1);
    anyhow::bail!("unknown task {task:?}; tasks: new-pipeline NAME, bench [engine|chunk|step|pipeline]")
}
