//! Where device threads are born. A device starts when the guest's driver writes its status
//! register — on a vCPU thread, which is confined ([`super::seccomp`]) and so may not create
//! threads or descriptors. It hands the job to this spawner instead: one thread per running
//! VM that reads no guest data, creates the device thread, and returns its handle. The new
//! thread confines itself before it reads anything (see `DeviceWorker`).

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::{err, Result};

type Body = Box<dyn FnOnce() + Send + 'static>;

enum Request {
    Spawn {
        name: String,
        body: Body,
        reply: mpsc::SyncSender<Result<JoinHandle<()>>>,
    },
    Quit,
}

/// A handle to a VM's spawner; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Spawner {
    tx: mpsc::Sender<Request>,
}

/// The receiving end, kept by the VM until it runs.
pub struct SpawnerQueue {
    rx: mpsc::Receiver<Request>,
    tx: mpsc::Sender<Request>,
}

/// A spawner and its (not yet served) queue.
pub fn channel() -> (Spawner, SpawnerQueue) {
    let (tx, rx) = mpsc::channel();
    (Spawner { tx: tx.clone() }, SpawnerQueue { rx, tx })
}

impl Spawner {
    /// Run `body` on a new thread named `name`. Blocks until the thread exists (or could not
    /// be created); fails once the VM has stopped serving requests.
    pub fn spawn(
        &self,
        name: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<JoinHandle<()>> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Request::Spawn {
                name: name.to_string(),
                body: Box::new(body),
                reply,
            })
            .map_err(|_| err!("spawning {name} thread: the VM is not running"))?;
        answer
            .recv()
            .map_err(|_| err!("spawning {name} thread: the spawner has gone"))?
    }
}

/// The spawner thread of a running VM; stops (and is joined) when dropped.
pub struct SpawnerThread {
    tx: mpsc::Sender<Request>,
    handle: Option<JoinHandle<()>>,
}

impl SpawnerQueue {
    /// Start serving requests on a thread of its own.
    pub fn serve(self) -> Result<SpawnerThread> {
        let SpawnerQueue { rx, tx } = self;
        let handle = std::thread::Builder::new()
            .name("vm-spawner".to_string())
            .spawn(move || {
                while let Ok(Request::Spawn { name, body, reply }) = rx.recv() {
                    let made = std::thread::Builder::new()
                        .name(name.clone())
                        .spawn(body)
                        .map_err(|e| err!("spawning {name} thread: {e}"));
                    let _ = reply.send(made);
                }
            })
            .map_err(|e| err!("spawning the VM's spawner thread: {e}"))?;
        Ok(SpawnerThread {
            tx,
            handle: Some(handle),
        })
    }
}

impl Drop for SpawnerThread {
    fn drop(&mut self) {
        let _ = self.tx.send(Request::Quit);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
