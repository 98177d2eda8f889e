//! Textual editing of `config.yaml`: `add` and `remove` touch only the lines of one
//! entry, so comments, order, quoting and blank lines elsewhere stay byte-for-byte.
//!
//! The file is read, edited and re-validated under an exclusive lock on its directory, then
//! written atomically (temp file in the same directory, fsync, rename, fsync of the directory),
//! so concurrent `add`s both land and a crash never leaves a half-written file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde_yaml::Value;

use super::{quantity, Config, NetworkChoice, SandboxChoice};
use crate::{err, Context, Result};

/// A worker entry to write.
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    pub name: String,
    /// `None`: a bare entry (a built-in or registry-managed worker).
    pub image: Option<String>,
    /// `config:` in order; nested values are written in flow style.
    pub config: Vec<(String, Value)>,
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub sandbox: Option<SandboxChoice>,
    pub network: Option<NetworkChoice>,
}

/// Lock the config's directory, read the file (empty if missing), apply `edit`, check that the
/// result is a valid config, and replace the file atomically. Returns what `edit` returned.
pub fn update_file<T>(
    path: &Path,
    edit: impl FnOnce(&str, &Config) -> Result<(String, T)>,
) -> Result<T> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let _lock = crate::file_lock::FileLock::acquire_dir(dir)?;

    let (text, mode) = match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| err!("{}: not valid UTF-8", path.display()))?;
            let mode = fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o7777)
                .with_context(|| format!("reading {}", path.display()))?;
            (text, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644),
        Err(e) => return Err(err!("reading {}: {e}", path.display())),
    };
    // Lenient, so that `remove` can take out an entry that does not validate.
    let current = Config::parse_lenient(&text, path)?;
    let (new_text, out) = edit(&text, &current)?;
    // Never write a file iii itself could not read back, nor one with more invalid entries.
    let edited = Config::parse_lenient(&new_text, path).map_err(|e| {
        err!("internal error: edited config would not parse ({e}); nothing written")
    })?;
    if edited.invalid.len() > current.invalid.len() {
        return Err(err!(
            "internal error: the edit would make an entry of {} invalid ({}); nothing written",
            path.display(),
            edited.invalid[0].error
        ));
    }
    write_atomic(path, new_text.as_bytes(), mode)?;
    Ok(out)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path.file_name().context("config path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.iii-tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(err!("writing {}: {e}", path.display()));
    }
    Ok(())
}

/// Append `entry` to `workers:` (creating the key, or turning `workers: []` into a list).
pub fn add_entry(text: &str, entry: &NewEntry) -> Result<String> {
    let doc = Document::scan(text)?;
    let Some(list) = doc.workers else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("workers:\n");
        out.push_str(&render(entry, 2));
        return Ok(out);
    };
    let mut lines: Vec<String> = doc.lines.iter().map(|s| s.to_string()).collect();
    let rendered = render(entry, list.item_indent.unwrap_or(2));
    let insert_at = match list.items.last() {
        Some(last) => last.end,
        None => {
            if list.empty_flow {
                lines[list.key_line] = drop_empty_flow(&lines[list.key_line]);
            }
            list.key_line + 1
        }
    };
    lines.insert(insert_at, rendered.trim_end_matches('\n').to_string());
    Ok(join(&lines, text))
}

/// Remove the entry named `name`; the last one out leaves `workers: []`.
pub fn remove_entry(text: &str, config: &Config, name: &str) -> Result<String> {
    let doc = Document::scan(text)?;
    let (list, index) = locate(&doc, config, name)?;
    let item = &list.items[index];
    let mut lines: Vec<String> = doc.lines.iter().map(|s| s.to_string()).collect();
    lines.drain(item.start..item.end);
    if list.items.len() == 1 {
        lines[list.key_line] = add_empty_flow(&lines[list.key_line]);
    }
    Ok(join(&lines, text))
}

/// Replace the entry named `name` with `entry` (used by `add --force`).
pub fn replace_entry(text: &str, config: &Config, name: &str, entry: &NewEntry) -> Result<String> {
    let doc = Document::scan(text)?;
    let (list, index) = locate(&doc, config, name)?;
    let item = &list.items[index];
    let mut lines: Vec<String> = doc.lines.iter().map(|s| s.to_string()).collect();
    let rendered = render(entry, list.item_indent.unwrap_or(2));
    lines.splice(
        item.start..item.end,
        [rendered.trim_end_matches('\n').to_string()],
    );
    Ok(join(&lines, text))
}

fn locate<'d>(doc: &'d Document, config: &Config, name: &str) -> Result<(&'d WorkerList, usize)> {
    let index = config
        .position_of(name)
        .ok_or_else(|| err!("no worker named {name:?} in config.yaml"))?;
    let list = doc
        .workers
        .as_ref()
        .context("config.yaml has no workers: list")?;
    if list.items.len() != config.workers.len() + config.invalid.len() + config.builtins.len() {
        return Err(err!(
            "cannot edit config.yaml as text: workers is not a block list iii can follow; \
             edit the entry for {name:?} by hand"
        ));
    }
    Ok((list, index))
}

/// Re-join edited lines, keeping the original's final-newline convention.
fn join(lines: &[String], original: &str) -> String {
    let mut out = lines.join("\n");
    if original.ends_with('\n') || original.is_empty() {
        out.push('\n');
    }
    out
}

/// `workers: []  # c` → `workers:  # c`
fn drop_empty_flow(line: &str) -> String {
    let colon = line.find(':').unwrap_or(line.len());
    let (head, tail) = line.split_at(colon + 1);
    let tail = tail.trim_start();
    let rest = tail.strip_prefix("[]").unwrap_or(tail);
    format!("{head}{rest}")
}

/// `workers:  # c` → `workers: []  # c`
fn add_empty_flow(line: &str) -> String {
    let colon = line.find(':').unwrap_or(line.len());
    let (head, tail) = line.split_at(colon + 1);
    format!("{head} []{tail}")
}

/// Render one entry as block YAML whose `-` sits at column `indent`.
fn render(e: &NewEntry, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut s = format!("{pad}- name: {}\n", scalar(&e.name));
    if let Some(image) = &e.image {
        s += &format!("{pad}  image: {}\n", scalar(image));
    }
    if !e.config.is_empty() {
        s += &format!("{pad}  config:\n");
        for (k, v) in &e.config {
            s += &format!("{pad}    {}: {}\n", scalar(k), value(v));
        }
    }
    if e.cpus.is_some() || e.memory.is_some() {
        s += &format!("{pad}  resources:\n");
        if let Some(c) = e.cpus {
            s += &format!("{pad}    cpus: {c}\n");
        }
        if let Some(m) = e.memory {
            s += &format!("{pad}    memory: {}\n", quantity::format_bytes(m));
        }
    }
    if let Some(sb) = e.sandbox.filter(|s| *s != SandboxChoice::Auto) {
        let v = if sb == SandboxChoice::Vm {
            "vm"
        } else {
            "namespace"
        };
        s += &format!("{pad}  sandbox: {v}\n");
    }
    match &e.network {
        Some(NetworkChoice::Host) => s += &format!("{pad}  network: host\n"),
        Some(NetworkChoice::None) => s += &format!("{pad}  network: none\n"),
        Some(NetworkChoice::Egress(p)) if p.allow.is_some() || !p.host_ports.is_empty() => {
            s += &format!("{pad}  network:\n");
            if let Some(allow) = &p.allow {
                s += &format!("{pad}    allow:\n");
                for r in allow {
                    s += &format!("{pad}      - {}\n", scalar(r));
                }
            }
            if !p.host_ports.is_empty() {
                let ports: Vec<String> = p.host_ports.iter().map(u16::to_string).collect();
                s += &format!("{pad}    host_ports: [{}]\n", ports.join(", "));
            }
        }
        Some(NetworkChoice::Egress(_)) | None => {}
    }
    s
}

/// A string as a YAML scalar: plain when unambiguous, else quoted (never a multi-line block).
fn scalar(s: &str) -> String {
    let y = serde_yaml::to_string(&Value::String(s.to_string())).unwrap_or_default();
    let y = y.trim_end_matches('\n');
    if !y.contains('\n') && !y.is_empty() {
        y.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// Any config value: scalars as YAML, collections as compact JSON (valid YAML flow style).
fn value(v: &Value) -> String {
    match v {
        Value::String(s) => scalar(s),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_json::to_string(other).unwrap_or_else(|_| "null".into()),
    }
}

// --- a line-level view of the document, just enough to find entries ---

struct Document<'t> {
    lines: Vec<&'t str>,
    workers: Option<WorkerList>,
}

struct WorkerList {
    key_line: usize,
    empty_flow: bool,
    /// Column of the items' `-` (None when the list has no items yet).
    item_indent: Option<usize>,
    items: Vec<Item>,
}

/// Lines `start..end` of one entry: its `-` line through its last content line.
struct Item {
    start: usize,
    end: usize,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_neutral(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

fn strip_comment(s: &str) -> &str {
    match s.find(" #") {
        Some(i) => &s[..i],
        None if s.trim_start().starts_with('#') => "",
        None => s,
    }
}

impl<'t> Document<'t> {
    fn scan(text: &'t str) -> Result<Document<'t>> {
        let lines: Vec<&str> = if text.is_empty() {
            Vec::new()
        } else {
            text.strip_suffix('\n')
                .unwrap_or(text)
                .split('\n')
                .collect()
        };
        let key_line = lines.iter().position(|l| {
            l.strip_prefix("workers:")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        });
        let Some(key_line) = key_line else {
            return Ok(Document {
                lines,
                workers: None,
            });
        };
        let value = strip_comment(&lines[key_line]["workers:".len()..]).trim();
        let empty_flow = value == "[]";
        if !value.is_empty() && !empty_flow && value != "~" && value != "null" {
            return Err(err!(
                "config.yaml:{}: workers is written in flow style; iii edits block lists only \
                 (one `- name: …` entry per item)",
                key_line + 1
            ));
        }
        let mut item_indent = None;
        let mut items: Vec<Item> = Vec::new();
        let mut i = key_line + 1;
        while i < lines.len() {
            let line = lines[i];
            if is_neutral(line) {
                i += 1;
                continue;
            }
            let ind = indent_of(line);
            let body = &line[ind..];
            let is_dash = body == "-" || body.starts_with("- ");
            let ends_region = match item_indent {
                None => !(is_dash || ind > 0),
                Some(ii) => ind < ii || (ind == ii && !is_dash),
            };
            if ends_region || body.starts_with("---") || body.starts_with("...") {
                break;
            }
            if item_indent.is_none() {
                if !is_dash {
                    return Err(err!(
                        "config.yaml:{}: expected a `- ` list item under workers:",
                        i + 1
                    ));
                }
                item_indent = Some(ind);
            }
            if is_dash && Some(ind) == item_indent {
                items.push(Item {
                    start: i,
                    end: i + 1,
                });
            } else if let Some(last) = items.last_mut() {
                last.end = i + 1;
            }
            i += 1;
        }
        Ok(Document {
            lines,
            workers: Some(WorkerList {
                key_line,
                empty_flow,
                item_indent,
                items,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> NewEntry {
        NewEntry {
            name: name.into(),
            image: Some(format!("localhost:5000/{name}:1.0")),
            ..Default::default()
        }
    }

    fn cfg(t: &str) -> Config {
        Config::parse(t, Path::new("config.yaml")).unwrap()
    }

    #[test]
    fn add_to_empty_and_missing() {
        assert_eq!(
            add_entry("", &entry("a")).unwrap(),
            "workers:\n  - name: a\n    image: localhost:5000/a:1.0\n"
        );
        assert_eq!(
            add_entry("# top\nengine: {port: 1}", &entry("a")).unwrap(),
            "# top\nengine: {port: 1}\nworkers:\n  - name: a\n    image: localhost:5000/a:1.0\n"
        );
        assert_eq!(
            add_entry("workers: [] # none yet\nx: 1\n", &entry("a")).unwrap(),
            "workers: # none yet\n  - name: a\n    image: localhost:5000/a:1.0\nx: 1\n"
        );
    }

    #[test]
    fn add_keeps_everything_else_and_follows_indent() {
        let t = "# my workers\nworkers:\n- name: a   # first\n  image: 'x/a'\n\n  # trailing note\nengine:\n  port: 7\n";
        let out = add_entry(t, &entry("b")).unwrap();
        assert_eq!(
            out,
            "# my workers\nworkers:\n- name: a   # first\n  image: 'x/a'\n- name: b\n  image: localhost:5000/b:1.0\n\n  # trailing note\nengine:\n  port: 7\n"
        );
        assert_eq!(cfg(&out).workers.len(), 2);
    }

    #[test]
    fn remove_middle_and_last() {
        let t = "workers:\n  - name: a\n    image: x/a\n  # about b\n  - name: b\n    image: x/b\n    config:\n      K: v\n\n  - name: c\n    image: x/c\n# end\n";
        let out = remove_entry(t, &cfg(t), "b").unwrap();
        assert_eq!(
            out,
            "workers:\n  - name: a\n    image: x/a\n  # about b\n\n  - name: c\n    image: x/c\n# end\n"
        );
        let one = "workers:   # list\n  - name: a\n    image: x/a\nother: 1\n";
        assert_eq!(
            remove_entry(one, &cfg(one), "a").unwrap(),
            "workers: []   # list\nother: 1\n"
        );
        assert!(remove_entry(one, &cfg(one), "zz").is_err());
    }

    #[test]
    fn built_in_entries_around_a_worker_do_not_block_remove_or_replace() {
        let t = "workers:\n  - name: iii-http\n    config: {port: 3111}\n  - name: a\n    image: x/a\n  - name: iii-cron\n";
        assert_eq!(
            remove_entry(t, &cfg(t), "a").unwrap(),
            "workers:\n  - name: iii-http\n    config: {port: 3111}\n  - name: iii-cron\n"
        );
        let out = replace_entry(t, &cfg(t), "a", &entry("a")).unwrap();
        assert!(
            out.starts_with(
                "workers:\n  - name: iii-http\n    config: {port: 3111}\n  - name: a\n"
            ),
            "{out}"
        );
        assert!(out.ends_with("  - name: iii-cron\n"), "{out}");
    }

    #[test]
    fn render_quotes_what_needs_quoting() {
        let mut e = entry("a");
        e.config = vec![
            ("VERSION".into(), Value::String("1.0".into())),
            ("MSG".into(), Value::String("a: b # c".into())),
            ("MULTI".into(), Value::String("l1\nl2".into())),
            (
                "DB".into(),
                serde_yaml::from_str("{host: db, port: 1}").unwrap(),
            ),
        ];
        e.memory = Some(512 << 20);
        e.cpus = Some(0.5);
        let out = add_entry("", &e).unwrap();
        let c = cfg(&out);
        let env = c.workers[0].environment(&|_| None).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("VERSION"), "1.0");
        assert_eq!(get("MSG"), "a: b # c");
        assert_eq!(get("MULTI"), "l1\nl2");
        assert_eq!(get("DB_HOST"), "db");
        assert_eq!(c.workers[0].resources.memory, Some(512 << 20));
        assert_eq!(c.workers[0].resources.cpus, Some(0.5));
    }

    #[test]
    fn replace_touches_only_that_entry() {
        let t = "workers:\n  - name: a  # keep me\n    image: x/a\n  - name: b\n    image: x/b\n    config: {K: old}\n";
        let mut e = entry("b");
        e.config = vec![("K".into(), Value::String("old".into()))];
        let out = replace_entry(t, &cfg(t), "b", &e).unwrap();
        assert!(
            out.starts_with("workers:\n  - name: a  # keep me\n    image: x/a\n"),
            "{out}"
        );
        assert_eq!(
            cfg(&out).workers[1].image.as_deref(),
            Some("localhost:5000/b:1.0")
        );
    }

    #[test]
    fn flow_style_list_is_refused_clearly() {
        let t = "workers: [{name: a, image: x/a}]\n";
        assert!(add_entry(t, &entry("b"))
            .unwrap_err()
            .to_string()
            .contains("flow style"));
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("iii-edit-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn concurrent_adds_all_land() {
        let dir = temp_dir("concurrent");
        let path = dir.join("config.yaml");
        fs::write(&path, "# keep\nworkers: []\n").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    update_file(&path, |text, _| {
                        Ok((add_entry(text, &entry(&format!("w{i}")))?, ()))
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# keep\nworkers:\n"), "{text}");
        let mut names: Vec<_> = cfg(&text).workers.into_iter().map(|w| w.name).collect();
        names.sort();
        assert_eq!(names, (0..8).map(|i| format!("w{i}")).collect::<Vec<_>>());
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "temp files left: {leftovers:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broken_file_is_reported_and_left_unchanged() {
        let dir = temp_dir("broken");
        let path = dir.join("config.yaml");
        let broken = "workers:\n  - name: a\n    image: [oops\n";
        fs::write(&path, broken).unwrap();
        let e = update_file(&path, |text, _| Ok((add_entry(text, &entry("b"))?, ()))).unwrap_err();
        assert!(e.to_string().contains("config.yaml:"), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), broken);
        fs::remove_dir_all(&dir).unwrap();
    }
}
