#!/bin/sh
# Boot-latency and memory benchmark of the `vm` backend's VMM (not a test).
#
# Builds tests/guests/basic.c, then a small release-mode harness (in target/bench-vm) that
# boots it N times and prints, per boot: VMM start -> first guest instruction (progress port
# mark 1, the guest's first act), VMM start -> "init reached" (mark 2), and the VMM's RSS
# beside the guest memory size (guest RAM is mapped lazily: RSS counts touched pages only),
# and the cost of one port-I/O and one MMIO exit handled by the VMM.
# Then images a directory tree (IMAGE_DIR, default /usr/share) with iii's ext2 writer, beside
# `mke2fs -t ext2 -d` on the same tree as the anchor (page cache warm for both).
# Anchor measured in the same run: fork+exec of a static binary (busybox true).
#
# Usage: scripts/bench-vm.sh [RUNS] [MEMORY_MIB]
set -eu
RUNS=${1:-20}
MEM=${2:-512}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B="$ROOT/target/bench-vm"
mkdir -p "$B/src"

gcc -O2 -ffreestanding -fno-builtin -nostdlib -static -fno-pic -no-pie -fno-stack-protector \
    -fno-asynchronous-unwind-tables -mno-red-zone -mgeneral-regs-only -Wl,--build-id=none \
    -Wl,-T,"$ROOT/tests/guests/guest.ld" -o "$B/basic.elf" "$ROOT/tests/guests/basic.c" 2>/dev/null

cat > "$B/Cargo.toml" <<TOML
[package]
name = "bench-vm"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
iii = { path = "$ROOT" }
[profile.release]
debug = false
[workspace]
TOML

cat > "$B/src/main.rs" <<'RS'
use std::time::{Duration, Instant};
use iii::sandbox::vm::{Vm, VmConfig};

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kernel = args.next().unwrap();
    let runs: usize = args.next().unwrap().parse().unwrap();
    let mem: u64 = args.next().unwrap().parse().unwrap();
    let (mut first, mut init, mut build, mut rss) = (vec![], vec![], vec![], vec![]);
    let (mut pio, mut mmio) = (vec![], vec![]);
    let base_rss = rss_kib();
    for _ in 0..runs {
        let mut cfg = VmConfig::new(kernel.clone().into());
        cfg.memory_mib = mem;
        cfg.cmdline = "bench".into();
        let t0 = Instant::now();
        let vm = Vm::build(cfg).expect("build");
        let built = t0.elapsed();
        let progress = vm.progress();
        let stop = vm.stop_handle();
        let runner = std::thread::spawn(move || vm.run());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let marks = progress.lock().unwrap().clone();
            let at = |n: u32| marks.iter().find(|m| m.0 == n).map(|m| m.1);
            if let (Some(a), Some(b), Some(c), Some(d)) = (at(1), at(2), at(3), at(4)) {
                first.push((a - t0).as_secs_f64() * 1e3);
                init.push((b - t0).as_secs_f64() * 1e3);
                pio.push((c - b).as_secs_f64() * 1e6 / 100000.0);
                mmio.push((d - c).as_secs_f64() * 1e6 / 100000.0);
                break;
            }
            assert!(Instant::now() < deadline, "guest did not reach init");
            std::thread::sleep(Duration::from_micros(200));
        }
        rss.push(rss_kib() as f64); // sampled while the guest is still running (halted)
        stop.stop();
        runner.join().unwrap().expect("run");
        build.push(built.as_secs_f64() * 1e3);
    }
    let mut spawn = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        std::process::Command::new("/bin/busybox").arg("true").status().unwrap();
        spawn.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (b, f, i, s) = (median(&mut build), median(&mut first), median(&mut init), median(&mut spawn));
    println!("runs: {runs}, guest memory: {mem} MiB (median of runs)");
    println!("VMM start -> VM built:                 {b:8.3} ms");
    println!("VMM start -> first guest instruction:  {f:8.3} ms");
    println!("VMM start -> init reached:             {i:8.3} ms");
    println!("anchor: fork+exec busybox true:        {s:8.3} ms  (init reached = {:.1}x)", i / s);
    println!("port-I/O exit to the VMM and back:     {:8.2} us", median(&mut pio));
    println!("MMIO exit to the VMM and back:         {:8.2} us", median(&mut mmio));
    if let Some(dir) = args.next() {
        let img = std::path::PathBuf::from(args.next().unwrap());
        let t = Instant::now();
        iii::sandbox::microvm::ext2::build_image(dir.as_ref(), &img, "bench", 0, 0).expect("ext2 image");
        let ours = t.elapsed().as_secs_f64();
        let size = std::fs::metadata(&img).unwrap().len();
        let _ = std::fs::remove_file(&img);
        let t = Instant::now();
        let ok = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext2", "-b", "4096", "-i", "4096", "-d", &dir])
            .arg(&img)
            .arg(format!("{}k", size / 1024 + size / 1024 / 5))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let theirs = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&img);
        println!("ext2 image of {dir} ({} MiB): iii {ours:.2} s", size >> 20);
        if ok {
            println!("anchor: mke2fs -t ext2 -d same tree:  {theirs:.2} s  (iii = {:.2}x)", ours / theirs);
        }
    }
    let r = median(&mut rss);
    println!("VMM RSS while guest runs: {:.1} MiB (process before first VM: {:.1} MiB), guest memory {mem} MiB", r / 1024.0, base_rss as f64 / 1024.0);
}
RS

CARGO_TARGET_DIR="$B/target" cargo build --quiet --release --manifest-path "$B/Cargo.toml"
IMAGE_DIR=${IMAGE_DIR:-/usr/share}
cat "$IMAGE_DIR" >/dev/null 2>&1 || true
du -s "$IMAGE_DIR" >/dev/null 2>&1 || true  # warm the dentry cache for both imagers
"$B/target/release/bench-vm" "$B/basic.elf" "$RUNS" "$MEM" "$IMAGE_DIR" "$B/image.ext2"
