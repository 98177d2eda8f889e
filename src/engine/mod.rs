//! The engine: `iii` with no subcommand. One process that serves the worker port (SDK workers
//! connect, register functions and triggers, and call each other through it), runs the
//! built-in workers config.yaml names, and supervises its container workers.
//!
//! - [`wire`]: the protocol's messages; [`port`]: the WebSocket server and its event loop;
//!   [`router`]: who serves what, and where each call and answer goes.
//! - [`ids`]: worker ids, reattach tokens, invocation ids.

pub mod builtin;
pub mod client;
pub mod ids;
pub mod port;
pub mod router;
pub mod wire;

/// The largest protocol message accepted (as the SDKs: 64 MiB, fragmented or not).
pub const MAX_MESSAGE: usize = 64 << 20;

use std::time::Duration;

use crate::config::Config;
use crate::file_lock::{self, FileLock};
use crate::project::Project;
use crate::supervisor::control::{self, Reply, Request};
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

    let host = config.worker_host()?;
    let port = config.worker_port()?;
    let handshake_timeout = Duration::from_millis(config.handshake_timeout_ms()?);
    let listener = std::net::TcpListener::bind((host.as_str(), port))
        .with_context(|| format!("listening on the worker port {host}:{port}"))?;
    let port = listener
        .local_addr()
        .context("reading the worker port")?
        .port();
    let link_path = project.engine_link();
    let link = control::bind(&link_path)?;
    // Signals are taken before any worker starts, so none is lost to a default action.
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
            .context("installing signal handlers")?;
    let sock_path = project.engine_socket();
    let sock = control::bind(&sock_path)?;

    let supervisor = Supervisor::new(project.clone(), port);
    let who = {
        let s = supervisor.clone();
        Box::new(move |pid| s.worker_of_monitor(pid))
    };
    let (handle, port_thread) = port::spawn(
        vec![port::Listener::Tcp(listener), port::Listener::Unix(link)],
        port::Settings {
            handshake_timeout,
            who,
        },
    )?;
    let mut builtins = match builtin::start(&config, &handle, &project) {
        Ok(b) => b,
        Err(e) => {
            handle.shutdown();
            let _ = port_thread.join();
            return Err(e);
        }
    };
    let names = builtins.names();
    crate::say!(
        "iii engine: ws://{host}:{port}, {} container worker(s){} from {}",
        config.workers.len(),
        if names.is_empty() {
            String::new()
        } else {
            format!(", built-in {}", names.join(" "))
        },
        project.config_path.display()
    );
    supervisor.start_all(&config);
    let queries = handle.clone();
    supervisor.serve_control(
        sock,
        Box::new(move |req| match req {
            Request::Connections => {
                let list = queries.query(|r| r.connections())?;
                let mut reply = Reply::ok(format!("{} connection(s)", list.len()));
                reply.connections = serde_json::to_value(list).ok();
                Some(reply)
            }
            _ => None,
        }),
    );
    for sig in signals.forever() {
        if sig == libc::SIGHUP {
            supervisor.reload();
            continue;
        }
        crate::say!("iii engine: stopping every worker");
        supervisor.shutdown();
        break;
    }
    builtins.stop();
    handle.shutdown();
    let _ = port_thread.join();
    builtins.join();
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(&link_path);
    drop(engine_lock);
    crate::say!("iii engine: stopped");
    Ok(0)
}
