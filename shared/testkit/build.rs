//! `sqlx::migrate!` embeds migrations/ at compile time: a new migration must rebuild testkit
//! (its tests' databases and `portal-dev migrate` apply what was embedded).
fn main() {
    println!("cargo::rerun-if-changed=../../migrations");
}
