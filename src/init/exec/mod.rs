//! The exec server inside a sandbox: runs one command per exec stream and pumps its stdin,
//! stdout and stderr (or its pseudo-terminal) with credit-based flow control.
//!
//! Each [`ExecSession`] has its own thread with a `mio` loop over the command's pipes (or pty
//! master) and a waker for frames from the host. Init (or any owner of the byte stream) routes
//! the host's frames for the stream to [`ExecSession::deliver`] and sends what the session
//! emits through its [`Sink`] — or hands a whole byte stream to [`serve_connection`]. Init
//! reaps every child as PID 1 and passes exec commands' statuses to [`child_exited`]; an owner
//! that is not a reaper sets [`ExecContext::own_reaper`] instead.
//!
//! The command runs in its own process group (pipe mode) or its own session with the pty as
//! controlling terminal (TTY mode); signals go to that group, and when the host closes the
//! stream or goes away the group is killed, so no exec leaves orphans behind.

//!
//! Files: `start` (environment, pipes or pty, the launch), `pump` (moving bytes),
//! [`reaper`] (exits), [`server`] (a whole connection).

mod pump;
pub mod reaper;
pub mod server;
mod start;

use std::sync::{mpsc, Arc};

use mio::{Poll, Token, Waker};

use crate::harden::Hardening;
pub use crate::init::spawn::StartFailure;
use crate::protocol::exec::{encode, ExecFrame, ExecMessage, ExecRequest, ExecStatus};
use crate::protocol::mux::Mux;
use crate::protocol::{InitConfig, Setup};
pub use reaper::{child_exited, reaped};
pub use server::{serve_connection, serve_stream, serve_stream_on};

/// The session thread's waker token.
const WAKER: Token = Token(0);

/// Where an exec'd command runs and as whom: the worker's environment and user.
#[derive(Clone)]
pub struct ExecContext {
    /// The worker's environment; the request's `-e` values go on top.
    pub env: Vec<(String, String)>,
    /// Switch to this uid, gid and supplementary groups (`None`: stay as init's user).
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// The pty multiplexer of the sandbox's devpts.
    pub ptmx: String,
    /// Reap the command with a thread of our own (for owners that are not PID 1's reaper).
    pub own_reaper: bool,
    /// The worker's restrictions (capabilities, no_new_privs, seccomp), as `docker exec` runs
    /// a command under the container's profile.
    pub hardening: Option<Arc<Hardening>>,
}

impl ExecContext {
    /// Execs into the worker init runs: its environment, user and hardening, the sandbox's
    /// `/dev/ptmx`, and init's reaper reporting exits through [`reaped`].
    pub fn from_init(cfg: &InitConfig) -> Self {
        let p = &cfg.process;
        ExecContext {
            env: p.env.clone(),
            user: Some((p.uid, p.gid, p.additional_gids.clone())),
            hardening: match cfg.setup {
                Setup::Namespace { .. } => Some(Arc::new(Hardening::namespace_default())),
                // The VM is the boundary; the worker there runs without these, and so do execs.
                Setup::Vm => None,
            },
            ..Default::default()
        }
    }
}

/// For init's event loop: serve the exec stream the host opened as `stream` (on a thread of its
/// own), or refuse it when that cannot even start.
pub fn attach(mux: &mut Mux, registry: &mio::Registry, stream: u32, ctx: &ExecContext) {
    let r = serve_stream(ctx.clone()).and_then(|s| {
        s.set_nonblocking(true)?;
        mux.attach(
            registry,
            stream,
            Box::new(mio::net::UnixStream::from_std(s)),
        )
    });
    if let Err(e) = r {
        mux.reject(stream, format!("exec: {e}"));
    }
}

impl Default for ExecContext {
    fn default() -> Self {
        ExecContext {
            env: Vec::new(),
            user: None,
            ptmx: "/dev/ptmx".into(),
            own_reaper: false,
            hardening: None,
        }
    }
}

/// Where a session's frames for the host go, encoded (see `protocol::exec`); `false` means the
/// host is gone.
pub type Sink = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// What reaches a session's thread besides the command's own fds.
enum Event {
    Frame(ExecFrame),
    Exited(ExecStatus),
}

/// One running exec: a command and the thread that pumps its streams.
pub struct ExecSession {
    pid: i32,
    tx: mpsc::Sender<Event>,
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ExecSession {
    /// Start `req` in `ctx`. On success the session has already sent `Started` through `sink`.
    pub fn start(
        ctx: &ExecContext,
        req: &ExecRequest,
        mut sink: Sink,
    ) -> Result<ExecSession, StartFailure> {
        let poll = Poll::new().map_err(start::setup_failure)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(start::setup_failure)?);
        let (tx, rx) = mpsc::channel();
        // Held from before the fork until the PID is registered, so the reaper's
        // `child_exited` cannot look for the PID before it is there.
        let mut registry = (!ctx.own_reaper).then(reaper::lock_registry);
        let spawned = start::start(ctx, req)?;
        let pid = spawned.pid;
        if let Some(r) = registry.as_mut() {
            r.push((pid, tx.clone(), waker.clone()));
        }
        drop(registry);
        if ctx.own_reaper {
            reaper::watch(pid, tx.clone(), waker.clone());
        }
        let mut started = Vec::new();
        encode(
            &mut started,
            &ExecFrame::Message(ExecMessage::Started { pid: pid as u32 }),
        );
        sink(&started);
        let pump = pump::Pump::new(spawned, poll, rx, sink).map_err(start::setup_failure)?;
        let thread = std::thread::Builder::new()
            .name(format!("exec-{pid}"))
            .spawn(move || pump.run())
            .map_err(start::setup_failure)?;
        Ok(ExecSession {
            pid,
            tx,
            waker,
            thread: Some(thread),
        })
    }

    /// The command's PID (in the sandbox's PID namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A frame from the host for this stream.
    pub fn deliver(&self, frame: ExecFrame) {
        let _ = self.tx.send(Event::Frame(frame));
        let _ = self.waker.wake();
    }

    /// Whether the session has sent its last frame.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Wait until the session has sent its last frame.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Dropped without joining: the owner lost interest, which means the host is gone.
            self.deliver(ExecFrame::Close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::exec::{Decoder, Output, Side, INITIAL_CREDIT};
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    fn session(ctx: &ExecContext, args: &[&str]) -> (ExecSession, mpsc::Receiver<ExecFrame>) {
        let (tx, rx) = mpsc::channel();
        let mut decoder = Decoder::new(Side::Client);
        let sink: Sink = Box::new(move |bytes| {
            decoder.feed(bytes);
            while let Some(f) = decoder.next_frame().unwrap() {
                if tx.send(f).is_err() {
                    return false;
                }
            }
            true
        });
        let req = ExecRequest {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            tty: None,
        };
        let s = ExecSession::start(ctx, &req, sink).unwrap();
        (s, rx)
    }

    fn next(rx: &mpsc::Receiver<ExecFrame>) -> ExecFrame {
        rx.recv_timeout(Duration::from_secs(10)).expect("a frame")
    }

    #[test]
    fn init_reaper_hands_the_status_over() {
        let ctx = ExecContext {
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            ..Default::default()
        };
        let (s, rx) = session(&ctx, &["sh", "-c", "exit 5"]);
        assert!(matches!(
            next(&rx),
            ExecFrame::Message(ExecMessage::Started { .. })
        ));
        // Play init's reaper for this one child.
        let mut status = 0;
        // SAFETY: waiting for our own child by PID.
        assert_eq!(unsafe { libc::waitpid(s.pid(), &mut status, 0) }, s.pid());
        let status = ExecStatus::from_wait_status(status);
        assert!(child_exited(s.pid(), status));
        assert!(!child_exited(s.pid(), status), "handed over once");
        assert_eq!(
            next(&rx),
            ExecFrame::Message(ExecMessage::Exited(ExecStatus::Code(5)))
        );
        assert_eq!(next(&rx), ExecFrame::Close);
        s.join();
    }

    #[test]
    fn output_stops_at_the_granted_credit() {
        let ctx = ExecContext {
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            own_reaper: true,
            ..Default::default()
        };
        let total = 3 * INITIAL_CREDIT as usize;
        let (s, rx) = session(&ctx, &["head", "-c", &total.to_string(), "/dev/zero"]);
        let mut got = 0usize;
        let mut frames = 0;
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(ExecFrame::Output(Output::Stdout, b)) => {
                    got += b.len();
                    frames += 1;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        assert_eq!(got, INITIAL_CREDIT as usize, "sent beyond the credit");
        assert!(frames > 1);
        // Granting credit lets the rest through, then the exit.
        s.deliver(ExecFrame::Window((total - got) as u32));
        let mut exited = None;
        while exited.is_none() {
            match next(&rx) {
                ExecFrame::Output(_, b) => got += b.len(),
                ExecFrame::Message(ExecMessage::Exited(st)) => exited = Some(st),
                _ => {}
            }
        }
        assert_eq!(got, total);
        assert_eq!(exited, Some(ExecStatus::Code(0)));
        s.join();
    }

    #[test]
    fn closing_the_stream_kills_the_group() {
        let ctx = ExecContext {
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            own_reaper: true,
            ..Default::default()
        };
        let (s, rx) = session(&ctx, &["sleep", "60"]);
        assert!(matches!(
            next(&rx),
            ExecFrame::Message(ExecMessage::Started { .. })
        ));
        let pid = s.pid();
        let t = Instant::now();
        s.deliver(ExecFrame::Close);
        s.join();
        assert!(t.elapsed() < Duration::from_secs(5));
        // Reaped by now: probing the PID finds nothing.
        // SAFETY: signal 0 only checks for existence.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
        assert!(rx.try_iter().all(|f| !matches!(f, ExecFrame::Output(..))));
    }

    #[test]
    fn a_stream_served_on_a_socket_pair_runs_the_command() {
        let ctx = ExecContext {
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            own_reaper: true,
            ..Default::default()
        };
        let mut host = serve_stream(ctx).unwrap();
        let mut wire = Vec::new();
        let req = ExecRequest {
            args: vec!["sh".into(), "-c".into(), "cat; echo err >&2; exit 3".into()],
            env: vec![],
            cwd: "/".into(),
            tty: None,
        };
        encode(&mut wire, &ExecFrame::Message(ExecMessage::Open(req)));
        encode(&mut wire, &ExecFrame::Stdin(b"in\0put".to_vec()));
        encode(&mut wire, &ExecFrame::StdinEof);
        host.write_all(&wire).unwrap();
        let mut d = Decoder::new(Side::Client);
        let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
        let mut buf = [0u8; 4096];
        'read: loop {
            let n = host.read(&mut buf).unwrap();
            assert!(n > 0, "stream ended early");
            d.feed(&buf[..n]);
            while let Some(f) = d.next_frame().unwrap() {
                match f {
                    ExecFrame::Output(Output::Stdout, b) => out.extend(b),
                    ExecFrame::Output(Output::Stderr, b) => err.extend(b),
                    ExecFrame::Message(ExecMessage::Exited(st)) => exit = Some(st),
                    ExecFrame::Close => break 'read,
                    _ => {}
                }
            }
        }
        assert_eq!(out, b"in\0put");
        assert_eq!(err, b"err\n");
        assert_eq!(exit, Some(ExecStatus::Code(3)));
    }
}
