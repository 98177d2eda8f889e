//! The engine: `iii` with no subcommand. One process that supervises the container workers of
//! `config.yaml` and serves the port they connect to.

use crate::config::Config;
use crate::file_lock::{self, FileLock};
use crate::project::Project;
use crate::supervisor::Supervisor;
use crate::{Context, Result};

/// Run the engine in the foreground until SIGINT/SIGTERM; returns the exit status.
pub fn run(project: &Project) -> Result<i32> {
    let config_path = std::path::absolute(&project.config_path)
        .with_context(|| format!("resolving {}", project.config_path.display()))?;
    let project = Project::at(config_path);
    let config = Config::load(&project.config_path)?;
    project.ensure_state_dir()?;
    let lock_file = project.engine_lock();
    let mut engine_lock = FileLock::try_acquire(&lock_file)?.ok_or_else(|| {
        let who = file_lock::holder_pid(&lock_file)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        crate::err!(
            "another iii engine is already running for {}{who}; stop it before starting a new one",
            project.config_path.display()
        )
    })?;
    engine_lock.write_pid()?;

    let port = config.worker_port()?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("reserving the engine port 127.0.0.1:{port}"))?;
    let port = listener
        .local_addr()
        .context("reading the engine port")?
        .port();
    // Signals are taken before any worker starts, so none is lost to a default action.
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
            .context("installing signal handlers")?;
    let sock_path = project.engine_socket();
    let sock = crate::supervisor::control::bind(&sock_path)?;
    eprintln!(
        "iii engine: ws://127.0.0.1:{port}, {} worker(s) from {}",
        config.workers.len(),
        project.config_path.display()
    );

    let supervisor = Supervisor::new(project, port);
    supervisor.start_all(&config);
    supervisor.serve_control(sock);
    for sig in signals.forever() {
        if sig == libc::SIGHUP {
            supervisor.reload();
            continue;
        }
        eprintln!("iii engine: stopping every worker");
        supervisor.shutdown();
        break;
    }
    let _ = std::fs::remove_file(&sock_path);
    drop(listener);
    drop(engine_lock);
    eprintln!("iii engine: stopped");
    Ok(0)
}
