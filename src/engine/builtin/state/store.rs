//! Where `iii-state` keeps values: scopes of keys in memory, and for `file_based` a directory
//! holding `snapshot.json` (every value, written atomically) and `log.jsonl` (each change
//! since, one JSON line, appended before the change is acknowledged).
//!
//! Durability of `file_based`: a change is in the log (the kernel's page cache) before the
//! function that made it answers, so a killed engine (`kill -9`) loses nothing it
//! acknowledged. The log is fsynced every `save_interval_ms` and when the engine stops, so a
//! crash of the machine itself loses at most that interval. At start the snapshot is read and
//! the log replayed; a torn last line (a write cut short by the kill) is ignored. Log lines
//! carry final values, so replaying one twice changes nothing.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Context, Result};

type Scopes = BTreeMap<String, BTreeMap<String, Value>>;

/// Replayed log lines beyond which (and beyond twice the number of keys) the log is folded
/// into a new snapshot.
const COMPACT_AFTER: usize = 10_000;

#[derive(Serialize, Deserialize)]
struct LogLine {
    s: String,
    k: String,
    /// The new value; absent for a deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<Value>,
}

struct Disk {
    dir: PathBuf,
    log: File,
    lines: usize,
    unsynced: bool,
}

pub struct Store {
    data: Scopes,
    disk: Option<Disk>,
    keys: usize,
}

impl Store {
    pub fn in_memory() -> Store {
        Store {
            data: Scopes::new(),
            disk: None,
            keys: 0,
        }
    }

    /// Open (or create) the file-based store in `dir`, loading what it holds.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let snapshot = dir.join("snapshot.json");
        let mut data: Scopes = match std::fs::read(&snapshot) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", snapshot.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Scopes::new(),
            Err(e) => return Err(crate::err!("reading {}: {e}", snapshot.display())),
        };
        let log_path = dir.join("log.jsonl");
        let mut lines = 0;
        let mut valid_len: u64 = 0;
        if let Ok(f) = File::open(&log_path) {
            let mut r = BufReader::new(f);
            let mut line = String::new();
            loop {
                line.clear();
                let n = r
                    .read_line(&mut line)
                    .with_context(|| format!("reading {}", log_path.display()))?;
                if n == 0 {
                    break;
                }
                let Ok(l) = serde_json::from_str::<LogLine>(line.trim_end()) else {
                    if !line.ends_with('\n') {
                        break; // a write the kill cut short
                    }
                    return Err(crate::err!(
                        "{}: line {} is not a state change",
                        log_path.display(),
                        lines + 1
                    ));
                };
                if !line.ends_with('\n') {
                    break;
                }
                valid_len += n as u64;
                lines += 1;
                apply(&mut data, l);
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        // Drop a torn tail so the next line starts clean.
        if log.metadata().map(|m| m.len()).unwrap_or(0) != valid_len {
            log.set_len(valid_len)
                .with_context(|| format!("truncating {}", log_path.display()))?;
        }
        let keys = data.values().map(BTreeMap::len).sum();
        let mut s = Store {
            data,
            disk: Some(Disk {
                dir: dir.to_path_buf(),
                log,
                lines,
                unsynced: false,
            }),
            keys,
        };
        s.maybe_compact()?;
        Ok(s)
    }

    pub fn get(&self, scope: &str, key: &str) -> Option<&Value> {
        self.data.get(scope).and_then(|m| m.get(key))
    }

    /// Set `scope/key` to `value` (durably first, for `file_based`); the old value.
    pub fn put(&mut self, scope: &str, key: &str, value: Value) -> Result<Option<Value>> {
        self.record(scope, key, Some(&value))?;
        let old = self
            .data
            .entry(scope.to_string())
            .or_default()
            .insert(key.to_string(), value);
        if old.is_none() {
            self.keys += 1;
        }
        self.maybe_compact()?;
        Ok(old)
    }

    /// Delete `scope/key`; the value it had.
    pub fn delete(&mut self, scope: &str, key: &str) -> Result<Option<Value>> {
        if self.get(scope, key).is_none() {
            return Ok(None);
        }
        self.record(scope, key, None)?;
        let m = self.data.get_mut(scope).expect("checked above");
        let old = m.remove(key);
        if m.is_empty() {
            self.data.remove(scope);
        }
        self.keys -= 1;
        self.maybe_compact()?;
        Ok(old)
    }

    /// Every value of `scope`, by key.
    pub fn list(&self, scope: &str) -> Vec<Value> {
        self.data
            .get(scope)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every scope that holds a value, sorted.
    pub fn groups(&self) -> Vec<String> {
        self.data.keys().cloned().collect()
    }

    /// Make the log durable (the periodic save, and at stop).
    pub fn sync(&mut self) -> Result<()> {
        if let Some(d) = &mut self.disk {
            if d.unsynced {
                d.log
                    .sync_data()
                    .with_context(|| format!("syncing {}", d.dir.join("log.jsonl").display()))?;
                d.unsynced = false;
            }
        }
        Ok(())
    }

    /// At stop: fold the log into the snapshot.
    pub fn close(&mut self) -> Result<()> {
        if self.disk.as_ref().is_some_and(|d| d.lines > 0) {
            self.compact()?;
        }
        self.sync()
    }

    fn record(&mut self, scope: &str, key: &str, value: Option<&Value>) -> Result<()> {
        let Some(d) = &mut self.disk else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(&LogLine {
            s: scope.to_string(),
            k: key.to_string(),
            v: value.cloned(),
        })
        .context("encoding a state change")?;
        line.push(b'\n');
        d.log
            .write_all(&line)
            .with_context(|| format!("writing {}", d.dir.join("log.jsonl").display()))?;
        d.lines += 1;
        d.unsynced = true;
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<()> {
        let due = self
            .disk
            .as_ref()
            .is_some_and(|d| d.lines > COMPACT_AFTER && d.lines > 2 * self.keys);
        if due {
            self.compact()?;
        }
        Ok(())
    }

    /// Write every value to a new snapshot (temp file, fsync, rename), then empty the log.
    fn compact(&mut self) -> Result<()> {
        let Some(d) = &mut self.disk else {
            return Ok(());
        };
        let tmp = d.dir.join("snapshot.json.tmp");
        let snapshot = d.dir.join("snapshot.json");
        let bytes = serde_json::to_vec(&self.data).context("encoding the state snapshot")?;
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &snapshot)
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        if let Ok(dirf) = File::open(&d.dir) {
            let _ = dirf.sync_all();
        }
        // A crash here replays the old log over the new snapshot: the same values again.
        d.log
            .set_len(0)
            .with_context(|| format!("emptying {}", d.dir.join("log.jsonl").display()))?;
        d.lines = 0;
        d.unsynced = true;
        Ok(())
    }
}

fn apply(data: &mut Scopes, l: LogLine) {
    match l.v {
        Some(v) => {
            data.entry(l.s).or_default().insert(l.k, v);
        }
        None => {
            if let Some(m) = data.get_mut(&l.s) {
                m.remove(&l.k);
                if m.is_empty() {
                    data.remove(&l.s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("iii-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_reopen_and_a_torn_tail() {
        let dir = tmp("reopen");
        {
            let mut s = Store::open(&dir).unwrap();
            s.put("a", "k1", json!(1)).unwrap();
            s.put("a", "k2", json!({"x": [1]})).unwrap();
            s.put("b", "k", json!("v")).unwrap();
            assert_eq!(s.delete("a", "k1").unwrap(), Some(json!(1)));
            // No close: as after kill -9.
        }
        // A line cut short by the kill.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("log.jsonl"))
            .unwrap();
        f.write_all(br#"{"s":"a","k":"half"#).unwrap();
        let mut s = Store::open(&dir).unwrap();
        assert_eq!(s.get("a", "k2"), Some(&json!({"x": [1]})));
        assert_eq!(s.get("a", "k1"), None);
        assert_eq!(s.groups(), vec!["a", "b"]);
        s.put("a", "k3", json!(3)).unwrap();
        s.close().unwrap();
        assert_eq!(std::fs::metadata(dir.join("log.jsonl")).unwrap().len(), 0);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.list("a"), vec![json!({"x": [1]}), json!(3)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compacts_a_long_log() {
        let dir = tmp("compact");
        let mut s = Store::open(&dir).unwrap();
        for i in 0..(COMPACT_AFTER + 10) {
            s.put("c", "counter", json!(i)).unwrap();
        }
        let log_len = std::fs::metadata(dir.join("log.jsonl")).unwrap().len();
        assert!(log_len < 4096, "log was not compacted: {log_len} bytes");
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.get("c", "counter"), Some(&json!(COMPACT_AFTER + 9)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_middle_line_is_an_error_not_a_silent_loss() {
        let dir = tmp("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("log.jsonl"),
            "garbage\n{\"s\":\"a\",\"k\":\"b\",\"v\":1}\n",
        )
        .unwrap();
        let e = Store::open(&dir).err().unwrap().to_string();
        assert!(e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
