//! Start-latency benchmark driver (run by scripts/bench-start.sh and scripts/bench-vm-start.sh):
//! starts a worker running `/bin/true` from IMAGE_DIR N times and prints, per run, the time
//! until `start` returned (the worker running: init has exec'd its entrypoint and said so) and
//! until `wait` returned (exited, sandbox torn down), in milliseconds. The worker's output
//! goes to WORK_DIR/worker.log.
//!
//! Usage: sandbox_start [--vm KERNEL GUEST_INIT] IMAGE_DIR WORK_DIR N
//!   default: the `namespace` backend (init: the iii binary built beside this example);
//!   --vm: the `vm` backend, booting KERNEL with GUEST_INIT (a static iii) as the guest's init.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Instant;

use iii::sandbox::{microvm, namespace};
use iii::sandbox::{Network, ProcessSpec, Resources, Sandbox, SandboxSpec, Stdio, User};

fn usage() -> ! {
    eprintln!("usage: sandbox_start [--vm KERNEL GUEST_INIT] IMAGE_DIR WORK_DIR N");
    std::process::exit(2);
}

fn main() {
    let mut a: Vec<String> = std::env::args().skip(1).collect();
    let vm = if a.first().map(String::as_str) == Some("--vm") {
        if a.len() < 3 {
            usage();
        }
        let mut o = microvm::Options::new(PathBuf::from(&a[1]));
        o.init_exe = Some(PathBuf::from(&a[2]));
        a.drain(..3);
        Some(o)
    } else {
        None
    };
    let [image, work, n] = a.as_slice() else {
        usage()
    };
    let n: usize = n.parse().expect("N is a number");
    let spec = SandboxSpec {
        name: "bench".into(),
        image_root: PathBuf::from(image),
        worker_dir: PathBuf::from(work),
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
    // The namespace backend's init: the iii binary built beside this example.
    let exe = std::env::current_exe().expect("own path");
    let init = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("iii"))
        .expect("target dir");
    let ns_opts = namespace::Options {
        init_exe: Some(init),
    };
    // The worker's output (and a guest's console) into WORK_DIR/worker.log, not among the
    // timings on stdout.
    std::fs::create_dir_all(work).expect("work dir");
    let log = std::fs::File::create(PathBuf::from(work).join("worker.log")).expect("worker.log");
    for _ in 0..n {
        let stdio = Stdio {
            stdout: log.as_fd().try_clone_to_owned().expect("dup"),
            stderr: log.as_fd().try_clone_to_owned().expect("dup"),
        };
        let t = Instant::now();
        let mut sb: Box<dyn Sandbox> = match &vm {
            Some(o) => Box::new(microvm::start(&spec, stdio, o).expect("start")),
            None => Box::new(namespace::start_with(&spec, stdio, &ns_opts).expect("start")),
        };
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
