//! The last few KiB the guest wrote to its serial console, kept on the way to the worker's
//! log. A guest that resets before its init reported the worker's exit has crashed; when its
//! kernel panicked, the panic line (`KERN_EMERG`, which the quiet console still prints) is
//! here, and the worker's state can say why it died instead of only that it did.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// How much of the console is kept: a panic's report (its line, a register dump, the stack
/// and the "end Kernel panic" line) fits.
const KEPT: usize = 8192;

/// A [`Write`] that passes everything to the worker's log and keeps the tail.
pub struct ConsoleTail {
    log: Box<dyn Write + Send>,
    tail: Arc<Mutex<Ring>>,
}

/// A reader of what a [`ConsoleTail`] kept.
#[derive(Clone)]
pub struct TailReader(Arc<Mutex<Ring>>);

struct Ring {
    /// Allocated once, up front: the writer runs on a vCPU thread whose seccomp filter
    /// does not expect the allocator to map memory.
    buf: Vec<u8>,
    /// Where the next byte goes; `full` once it has wrapped.
    at: usize,
    full: bool,
}

impl ConsoleTail {
    pub fn new(log: Box<dyn Write + Send>) -> (ConsoleTail, TailReader) {
        let ring = Arc::new(Mutex::new(Ring {
            buf: vec![0; KEPT],
            at: 0,
            full: false,
        }));
        (
            ConsoleTail {
                log,
                tail: ring.clone(),
            },
            TailReader(ring),
        )
    }
}

impl Write for ConsoleTail {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // What the log took is what the guest wrote (a log that fails loses bytes, the tail
        // keeps them all: it only serves the crash report).
        let n = self.log.write(data).unwrap_or(data.len());
        let mut r = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        for &b in &data[..n] {
            let at = r.at;
            r.buf[at] = b;
            r.at = (at + 1) % KEPT;
            r.full |= r.at == 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.log.flush()
    }
}

impl TailReader {
    /// The kept bytes, oldest first.
    fn bytes(&self) -> Vec<u8> {
        let r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if r.full {
            [&r.buf[r.at..], &r.buf[..r.at]].concat()
        } else {
            r.buf[..r.at].to_vec()
        }
    }

    /// The reason of the guest kernel's panic ("Attempted to kill init!", "Out of memory: …")
    /// if the console shows one.
    pub fn kernel_panic(&self) -> Option<String> {
        panic_reason(&String::from_utf8_lossy(&self.bytes()))
    }
}

fn panic_reason(console: &str) -> Option<String> {
    const MARK: &str = "Kernel panic - not syncing: ";
    let at = console.find(MARK)? + MARK.len();
    let line = console[at..].lines().next().unwrap_or("");
    let reason = line.trim_end_matches(|c: char| c == '\r' || c.is_whitespace());
    Some(reason.trim_end_matches(" ]---").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_reason_is_read_from_the_console_tail() {
        let (mut w, r) = ConsoleTail::new(Box::new(io::sink()));
        w.write_all(b"hello from w\n").unwrap();
        assert_eq!(r.kernel_panic(), None);
        // More than the ring holds first: only the tail is kept, in order.
        w.write_all(&vec![b'x'; KEPT + 100]).unwrap();
        w.write_all(b"\n[   12.3] Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled\r\n[   12.4] CPU: 0 PID: 1\n[   12.5] ---[ end Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled ]---\n").unwrap();
        assert_eq!(
            r.kernel_panic().as_deref(),
            Some("Out of memory: system-wide panic_on_oom is enabled")
        );
        let b = r.bytes();
        assert_eq!(b.len(), KEPT);
        assert!(b.ends_with(b"enabled ]---\n"));
        assert_eq!(
            panic_reason("---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009 ]---"),
            Some("Attempted to kill init! exitcode=0x00000009".into())
        );
    }

    #[test]
    fn everything_reaches_the_log() {
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, d: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(d);
                Ok(d.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let (mut w, _r) = ConsoleTail::new(Box::new(Shared(log.clone())));
        let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        w.write_all(&data).unwrap();
        assert_eq!(*log.lock().unwrap(), data);
    }
}
