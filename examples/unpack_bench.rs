//! Benchmark (not a test): `apply_layer` against `tar -xzf` on the same gzip layer.
//!
//! cargo run --release --example unpack_bench -- LAYER.tar.gz [SCRATCH_DIR] [RUNS]
//!
//! Runs alternate which extractor goes first, each into a fresh directory under
//! SCRATCH_DIR (default: the system temp dir); prints each time, the medians and the ratio.
//! The layer used for the figures in the unpack report: `tar -cf - -C / usr/lib/python3.11
//! usr/lib/python3 usr/share/perl usr/include | gzip -6` (54 MB gzip, 237 MB, 15k entries).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use iii::oci::unpack::{apply_layer, decompress, Compression, UnpackOptions};

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

fn ours(layer: &Path, dir: &Path) -> Duration {
    fresh(dir);
    let start = Instant::now();
    let mut f = BufReader::with_capacity(256 * 1024, File::open(layer).unwrap());
    let mut head = [0u8; 4];
    f.read_exact(&mut head).unwrap();
    let c = Compression::sniff(&head);
    let blob = io::Cursor::new(head).chain(f);
    let opts = UnpackOptions {
        // SAFETY: geteuid has no preconditions.
        privileged: unsafe { libc::geteuid() } == 0,
    };
    apply_layer(decompress(blob, c).unwrap(), dir, &opts).unwrap();
    start.elapsed()
}

fn tar(layer: &Path, dir: &Path) -> Duration {
    fresh(dir);
    let start = Instant::now();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(layer)
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
    start.elapsed()
}

fn gunzip_only(layer: &Path) -> Duration {
    let start = Instant::now();
    let f = BufReader::with_capacity(256 * 1024, File::open(layer).unwrap());
    io::copy(
        &mut decompress(f, Compression::Gzip).unwrap(),
        &mut io::sink(),
    )
    .unwrap();
    start.elapsed()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let layer = PathBuf::from(args.get(1).expect("usage: unpack_bench LAYER [DIR] [RUNS]"));
    let scratch = args
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let runs: usize = args.get(3).map(|r| r.parse().unwrap()).unwrap_or(5);
    let (a, b) = (
        scratch.join("iii-bench-ours"),
        scratch.join("iii-bench-tar"),
    );
    let (mut t_ours, mut t_tar, mut t_gz) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let (o, t) = if i % 2 == 0 {
            let o = ours(&layer, &a);
            (o, tar(&layer, &b))
        } else {
            let t = tar(&layer, &b);
            (ours(&layer, &a), t)
        };
        let g = gunzip_only(&layer);
        println!("run {i}: apply_layer {o:.3?}  tar -xzf {t:.3?}  gunzip only {g:.3?}");
        t_ours.push(o);
        t_tar.push(t);
        t_gz.push(g);
    }
    let (o, t, g) = (median(&mut t_ours), median(&mut t_tar), median(&mut t_gz));
    println!(
        "median: apply_layer {o:.3?}  tar -xzf {t:.3?}  gunzip only {g:.3?}  ratio {:.2}",
        o.as_secs_f64() / t.as_secs_f64()
    );
    // III_BENCH_KEEP=1 leaves both trees for comparing them (e.g. with find -printf).
    if std::env::var_os("III_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }
}
