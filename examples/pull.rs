//! Bench entry for `scripts/bench-add.sh`: pull one image into the store at `III_HOME`,
//! with plain progress on stderr, and print the extracted rootfs path.
//!
//! `cargo run --release --example pull -- localhost:5000/bench/debian:1`

fn main() {
    let image = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: pull IMAGE");
        std::process::exit(2)
    });
    let result = iii::project::store_home()
        .and_then(|home| iii::oci::Store::open(&home))
        .and_then(|store| {
            let mut progress = iii::oci::progress::for_stderr();
            iii::oci::pull(&image, &store, progress.as_mut())
        });
    match result {
        Ok(installed) => println!("{}", installed.rootfs.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}
