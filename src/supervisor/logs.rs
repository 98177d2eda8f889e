//! Worker logs: the worker's stdout and stderr, one line per record with its arrival time,
//! kept in `.iii/workers/<name>/log` and rotated to `log.1` at a bounded size.
//!
//! On disk each record is `<RFC 3339 UTC timestamp> <text>\n`, so `logs --timestamps` can show
//! when a line arrived and plain `logs` strips the prefix. The monitor appends (the file
//! survives worker restarts and restarts of iii); readers tail and follow it, crossing
//! rotations by noticing that `log` is a new inode.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Context, Result};

/// Default size at which `log` is rotated to `log.1` (so at most about twice this is kept).
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// A line longer than this is cut into several records (keeps the monitor's memory bounded).
const MAX_LINE: usize = 16 * 1024;

/// How long a partial line (no newline yet) waits before it is written as its own record, so a
/// prompt without a newline still shows up in `logs -f`.
const PARTIAL_FLUSH: Duration = Duration::from_millis(500);

pub fn current_path(worker_dir: &Path) -> PathBuf {
    worker_dir.join("log")
}

pub fn rotated_path(worker_dir: &Path) -> PathBuf {
    worker_dir.join("log.1")
}

/// The rotation size: `III_LOG_MAX_BYTES` when set (documented in iii-worker-logs(1)), else
/// [`DEFAULT_MAX_BYTES`].
pub fn max_bytes_from_env() -> u64 {
    std::env::var("III_LOG_MAX_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n >= 1024)
        .unwrap_or(DEFAULT_MAX_BYTES)
}

/// Format a time as RFC 3339 UTC with microseconds: `2026-11-28T16:46:29.123456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (the era-based algorithm: 400-year eras of 146097 days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Appends timestamped records to `log`, rotating to `log.1` when the next record would push
/// it past the size bound.
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

impl LogWriter {
    pub fn open(worker_dir: &Path, max_bytes: u64) -> Result<LogWriter> {
        let path = current_path(worker_dir);
        let file = open_append(&path)?;
        let size = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        Ok(LogWriter {
            dir: worker_dir.to_path_buf(),
            file,
            size,
            max_bytes,
        })
    }

    /// Write one record: `text` must not contain a newline.
    pub fn record(&mut self, at: SystemTime, text: &[u8]) -> Result<()> {
        let mut rec = Vec::with_capacity(text.len() + 29);
        rec.extend_from_slice(rfc3339(at).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(text);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        // One write per record: a reader never sees half a record from a well-behaved writer.
        self.file
            .write_all(&rec)
            .with_context(|| format!("writing {}", current_path(&self.dir).display()))?;
        self.size += rec.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let cur = current_path(&self.dir);
        let old = rotated_path(&self.dir);
        std::fs::rename(&cur, &old)
            .with_context(|| format!("rotating {} to {}", cur.display(), old.display()))?;
        self.file = open_append(&cur)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Read the worker's combined output from `fd` until EOF, writing one record per line.
/// A partial line is written after `PARTIAL_FLUSH` of silence, or when it reaches
/// `MAX_LINE`, so nothing is held back indefinitely.
pub fn pump(fd: OwnedFd, writer: &mut LogWriter) -> Result<()> {
    let mut file = File::from(fd);
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if !pending.is_empty() && !readable_within(file.as_raw_fd(), PARTIAL_FLUSH) {
            writer.record(SystemTime::now(), &pending)?;
            pending.clear();
            continue;
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(crate::err!("reading worker output: {e}")),
        };
        let now = SystemTime::now();
        for &b in &buf[..n] {
            if b == b'\n' {
                writer.record(now, &pending)?;
                pending.clear();
            } else {
                pending.push(b);
                if pending.len() >= MAX_LINE {
                    writer.record(now, &pending)?;
                    pending.clear();
                }
            }
        }
        if pending.capacity() > MAX_LINE * 2 && pending.is_empty() {
            pending = Vec::new();
        }
    }
    if !pending.is_empty() {
        writer.record(SystemTime::now(), &pending)?;
    }
    Ok(())
}

/// Whether `fd` becomes readable (or hung up) within `timeout`.
fn readable_within(fd: i32, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is a valid pollfd array of length 1 that outlives the call.
        let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return r != 0;
    }
}

/// How `logs` prints records.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    pub tail: Option<usize>,
    pub timestamps: bool,
}

/// Write one stored record to `out` as `logs` shows it.
fn emit(out: &mut dyn Write, record: &[u8], timestamps: bool) -> io::Result<()> {
    if timestamps {
        out.write_all(record)?;
    } else {
        // Strip "<timestamp> "; a record without one (hand-edited file) is shown whole.
        let body = match record.iter().position(|&b| b == b' ') {
            Some(i) if record[..i].ends_with(b"Z") => &record[i + 1..],
            _ => record,
        };
        out.write_all(body)?;
    }
    if !record.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Where the last `n` records of the first `len` bytes of `file` begin, and how many records
/// that is (fewer than `n` when the file holds fewer). Reads backwards in chunks, so a large
/// log is not read whole.
fn tail_offset(file: &mut File, len: u64, n: usize) -> io::Result<(u64, usize)> {
    if n == 0 || len == 0 {
        return Ok((len, 0));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    let mut found = 0usize;
    // The newline ending the last record does not start a record.
    let mut skip_final = true;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for i in (0..chunk.len()).rev() {
            if chunk[i] != b'\n' {
                skip_final = false;
                continue;
            }
            if skip_final {
                skip_final = false;
                continue;
            }
            found += 1;
            if found == n {
                return Ok((start + i as u64 + 1, found));
            }
        }
        end = start;
    }
    // Reached the start: the first record counts too.
    Ok((0, found + usize::from(!skip_final)))
}

/// Print the records in `file[from..to]`.
fn stream(
    file: &mut File,
    from: u64,
    to: u64,
    timestamps: bool,
    out: &mut dyn Write,
) -> Result<()> {
    use std::io::BufRead;
    file.seek(SeekFrom::Start(from))
        .context("reading the log")?;
    let mut r = io::BufReader::new(file.take(to - from));
    let mut rec = Vec::new();
    loop {
        rec.clear();
        if r.read_until(b'\n', &mut rec).context("reading the log")? == 0 {
            return Ok(());
        }
        emit(out, &rec, timestamps).context("writing logs to stdout")?;
    }
}

fn open_with_len(path: &Path) -> Result<Option<(File, u64)>> {
    match File::open(path) {
        Ok(f) => {
            let len = f
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            Ok(Some((f, len)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::err!("opening {}: {e}", path.display())),
    }
}

/// Print the stored log (rotated part first), honouring `--tail` and `--timestamps`.
pub fn print(worker_dir: &Path, opts: ReadOptions, out: &mut dyn Write) -> Result<()> {
    let mut cur = open_with_len(&current_path(worker_dir))?;
    print_upto(worker_dir, cur.as_mut().map(|(f, l)| (f, *l)), opts, out)
}

/// Print the rotated log and the first `len` bytes of the already opened current log.
fn print_upto(
    worker_dir: &Path,
    cur: Option<(&mut File, u64)>,
    opts: ReadOptions,
    out: &mut dyn Write,
) -> Result<()> {
    let mut old = open_with_len(&rotated_path(worker_dir))?;
    let want = opts.tail.unwrap_or(usize::MAX);
    let mut cur = cur;
    let (cur_from, have) = match cur.as_mut() {
        Some((f, len)) => tail_offset(f, *len, want).context("reading the log")?,
        None => (0, 0),
    };
    if have < want {
        if let Some((f, len)) = old.as_mut() {
            let (from, _) = tail_offset(f, *len, want - have).context("reading the log")?;
            stream(f, from, *len, opts.timestamps, out)?;
        }
    }
    if let Some((f, len)) = cur {
        stream(f, cur_from, len, opts.timestamps, out)?;
    }
    out.flush().context("writing logs to stdout")?;
    Ok(())
}

/// `logs --follow`: print what is stored (as [`print()`]), then follow `log` across worker
/// restarts and rotations until `keep_going` returns false (the CLI runs until Ctrl-C).
/// Nothing written between the two steps is lost or shown twice: both read one open file.
pub fn follow_from(
    worker_dir: &Path,
    opts: ReadOptions,
    out: &mut dyn Write,
    keep_going: &dyn Fn() -> bool,
) -> Result<()> {
    let path = current_path(worker_dir);
    let mut open = match open_with_len(&path)? {
        Some((mut f, len)) => {
            let id = f
                .metadata()
                .map(|m| (m.dev(), m.ino()))
                .with_context(|| format!("reading {}", path.display()))?;
            print_upto(worker_dir, Some((&mut f, len)), opts, out)?;
            f.seek(SeekFrom::Start(len))
                .with_context(|| format!("reading {}", path.display()))?;
            Some((f, id))
        }
        None => {
            print_upto(worker_dir, None, opts, out)?;
            None
        }
    };
    let timestamps = opts.timestamps;
    let mut partial: Vec<u8> = Vec::new();
    while keep_going() {
        let mut progressed = match open.as_mut() {
            Some((file, _)) => drain(file, &path, &mut partial, timestamps, out)?,
            None => false,
        };
        // Rotation (or a fresh `.iii/`): `log` is now another file. Read the old one to its
        // end once more (the writer may have appended just before renaming it), then switch
        // and read the new one from its start.
        let id_now = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
        let id_open = open.as_ref().map(|(_, id)| *id);
        if let Some(id) = id_now.filter(|id| Some(*id) != id_open) {
            if let Some((file, _)) = open.as_mut() {
                drain(file, &path, &mut partial, timestamps, out)?;
            }
            partial.clear();
            open = File::open(&path).ok().map(|f| (f, id));
            progressed = true;
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Read `file` to its current end, printing every complete record; returns whether anything
/// was read.
fn drain(
    file: &mut File,
    path: &Path,
    partial: &mut Vec<u8>,
    timestamps: bool,
    out: &mut dyn Write,
) -> Result<bool> {
    let mut buf = [0u8; 8192];
    let mut any = false;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        any = true;
        partial.extend_from_slice(&buf[..n]);
        while let Some(i) = partial.iter().position(|&b| b == b'\n') {
            let rec: Vec<u8> = partial.drain(..=i).collect();
            emit(out, &rec, timestamps).context("writing logs to stdout")?;
        }
    }
    if any {
        out.flush().context("writing logs to stdout")?;
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "iii-logs-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn printed(dir: &Path, tail: Option<usize>, timestamps: bool) -> String {
        let mut out = Vec::new();
        print(dir, ReadOptions { tail, timestamps }, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 5_000);
        // 2024-02-29 (leap day) 12:34:56 UTC.
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000005Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59.000000Z");
    }

    #[test]
    fn records_print_with_and_without_timestamps_and_tail() {
        let d = tempdir("print");
        let mut w = LogWriter::open(&d, DEFAULT_MAX_BYTES).unwrap();
        for i in 0..5 {
            w.record(UNIX_EPOCH, format!("line {i}").as_bytes())
                .unwrap();
        }
        assert_eq!(
            printed(&d, None, false),
            "line 0\nline 1\nline 2\nline 3\nline 4\n"
        );
        assert_eq!(printed(&d, Some(2), false), "line 3\nline 4\n");
        assert_eq!(printed(&d, Some(0), false), "");
        assert_eq!(
            printed(&d, Some(1), true),
            "1970-01-01T00:00:00.000000Z line 4\n"
        );
        // Text that itself contains spaces and looks like a timestamp is kept intact.
        w.record(UNIX_EPOCH, b"a b Z c").unwrap();
        assert_eq!(printed(&d, Some(1), false), "a b Z c\n");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotation_bounds_the_size_and_tail_spans_both_files() {
        let d = tempdir("rotate");
        let mut w = LogWriter::open(&d, 2048).unwrap();
        for i in 0..1000 {
            w.record(
                SystemTime::now(),
                format!("record number {i:04}").as_bytes(),
            )
            .unwrap();
        }
        let cur = std::fs::metadata(current_path(&d)).unwrap().len();
        let old = std::fs::metadata(rotated_path(&d)).unwrap().len();
        assert!(cur <= 2048 && old <= 2048, "cur {cur} old {old}");
        assert!(!d.join("log.2").exists());
        let all = printed(&d, None, false);
        assert!(all.ends_with("record number 0999\n"));
        let lines: Vec<&str> = all.lines().collect();
        // Consecutive records: nothing lost or reordered inside what is kept.
        let first: usize = lines[0]["record number ".len()..].parse().unwrap();
        for (k, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("record number {:04}", first + k));
        }
        // A tail longer than `log` reaches into `log.1`.
        let cur_lines = printed(&d, Some(10_000), false).lines().count();
        assert_eq!(cur_lines, lines.len());
        let n = lines.len() - 3;
        let t = printed(&d, Some(n), false);
        assert_eq!(t.lines().count(), n);
        assert!(t.ends_with("record number 0999\n"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tail_reads_across_chunk_boundaries() {
        let d = tempdir("chunks");
        let mut w = LogWriter::open(&d, DEFAULT_MAX_BYTES).unwrap();
        let long = "x".repeat(1000);
        for i in 0..300 {
            w.record(UNIX_EPOCH, format!("{i} {long}").as_bytes())
                .unwrap();
        }
        let t = printed(&d, Some(150), false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 150);
        assert_eq!(lines[0], format!("150 {long}"));
        assert_eq!(lines[149], format!("299 {long}"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pump_splits_lines_and_flushes_partial_at_eof() {
        let d = tempdir("pump");
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors were just created by pipe2 and are owned by nothing else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let writer = std::thread::spawn(move || {
            let mut f = File::from(w);
            f.write_all(b"one\ntwo\nthr").unwrap();
            f.write_all(b"ee\nno newline").unwrap();
        });
        let mut lw = LogWriter::open(&d, DEFAULT_MAX_BYTES).unwrap();
        pump(r, &mut lw).unwrap();
        writer.join().unwrap();
        assert_eq!(printed(&d, None, false), "one\ntwo\nthree\nno newline\n");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn follow_crosses_rotation() {
        let d = tempdir("follow");
        let mut w = LogWriter::open(&d, 1024).unwrap();
        w.record(UNIX_EPOCH, b"before").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (dir2, stop2) = (d.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            follow_from(
                &dir2,
                ReadOptions {
                    tail: Some(0),
                    timestamps: false,
                },
                &mut out,
                &|| !stop2.load(std::sync::atomic::Ordering::SeqCst),
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        for i in 0..100 {
            w.record(UNIX_EPOCH, format!("after {i:03}").as_bytes())
                .unwrap();
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(120));
            }
        }
        std::thread::sleep(Duration::from_millis(400));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let got = reader.join().unwrap();
        let expect: String = (0..100).map(|i| format!("after {i:03}\n")).collect();
        assert_eq!(got, expect);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
