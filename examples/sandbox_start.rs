//! Start-latency benchmark driver for the `namespace` backend (run by scripts/bench-start.sh):
//! starts a worker running `/bin/true` from IMAGE_DIR N times and prints, per run, the time
//! until `start` returned (entrypoint exec'd) and until `wait` returned (exited, torn down).
//!
//! Usage: sandbox_start IMAGE_DIR WORK_DIR N

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Instant;

use iii::sandbox::namespace::{self, Options};
use iii::sandbox::{Network, ProcessSpec, Resources, Sandbox, SandboxSpec, Stdio, User};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 4 {
        eprintln!("usage: sandbox_start IMAGE_DIR WORK_DIR N");
        std::process::exit(2);
    }
    let n: usize = a[3].parse().expect("N is a number");
    let spec = SandboxSpec {
        name: "bench".into(),
        image_root: PathBuf::from(&a[1]),
        worker_dir: PathBuf::from(&a[2]),
        process: ProcessSpec {
            args: vec!["/bin/true".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            user: User::default(),
        },
        resources: Resources::default(),
        network: Network::Isolated,
        engine_addr: "127.0.0.1:49134".parse().expect("address"),
        engine_link: None,
    };
    // The example is its own binary: init is the iii binary built beside it.
    let exe = std::env::current_exe().expect("own path");
    let init = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("iii"))
        .expect("target dir");
    let opts = Options {
        init_exe: Some(init),
    };
    for _ in 0..n {
        let stdio = Stdio {
            stdout: std::io::stdout().as_fd().try_clone_to_owned().expect("dup"),
            stderr: std::io::stderr().as_fd().try_clone_to_owned().expect("dup"),
        };
        let t = Instant::now();
        let mut sb = namespace::start_with(&spec, stdio, &opts).expect("start");
        let started = t.elapsed();
        let exit = sb.wait().expect("wait");
        let done = t.elapsed();
        assert_eq!(exit, iii::sandbox::WorkerExit::Code(0));
        println!(
            "{:.3} {:.3}",
            started.as_secs_f64() * 1e3,
            done.as_secs_f64() * 1e3
        );
    }
}
