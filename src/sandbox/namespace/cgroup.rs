//! Resource limits for one sandbox as cgroups, on cgroup v1 (one hierarchy per controller) and
//! cgroup v2 (the unified hierarchy). Each sandbox gets its own cgroup *beneath the cgroup the
//! calling process is in*, never elsewhere; `remove` deletes them once the sandbox is empty.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sandbox::Resources;
use crate::{err, Context, Result};

/// pids limit when `resources` sets none: stops a fork bomb, roomy for real workers.
pub const DEFAULT_PIDS: u64 = 4096;
const CPU_PERIOD_US: u64 = 100_000;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The cgroup directories of one sandbox.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    /// Where OOM kills are counted: `memory.oom_control` (v1) or `memory.events` (v2).
    oom_file: Option<PathBuf>,
}

/// One mounted hierarchy: where it is mounted, and the path of our own cgroup in it.
#[derive(Debug)]
struct Hierarchy {
    own_dir: PathBuf,
}

impl Cgroup {
    /// Create the cgroups for sandbox `name` with `res` applied.
    pub fn create(name: &str, res: &Resources) -> Result<Cgroup> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let leaf = format!(
            "iii-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = Cgroup {
            dirs: Vec::new(),
            oom_file: None,
        };
        let pids = res.pids.unwrap_or(DEFAULT_PIDS);
        let v1 = |c: &str| v1_hierarchy(&mountinfo, &own, c);
        let any_v1 = ["memory", "pids", "cpu"].iter().any(|c| v1(c).is_some());
        let result = if any_v1 {
            cg.create_v1(&leaf, res, pids, v1)
        } else {
            match v2_hierarchy(&mountinfo, &own) {
                Some(h) => cg.create_v2(&h, &leaf, res, pids),
                None => Err(err!(
                    "no cgroup v1 controllers or cgroup v2 hierarchy is mounted"
                )),
            }
        };
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.remove().ok();
                Err(e.context_for(name))
            }
        }
    }

    fn create_v1(
        &mut self,
        leaf: &str,
        res: &Resources,
        pids: u64,
        find: impl Fn(&str) -> Option<Hierarchy>,
    ) -> Result<()> {
        if let Some(mem) = res.memory_bytes {
            let h = find("memory").context(
                "memory limit requested but the cgroup v1 memory controller is not mounted",
            )?;
            let dir = self.mkdir(&h.own_dir, leaf)?;
            write(&dir.join("memory.limit_in_bytes"), &mem.to_string())?;
            // Without swap accounting the limit could be dodged by swapping; ignore absence.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &mem.to_string())?;
            }
            self.oom_file = Some(dir.join("memory.oom_control"));
        }
        if let Some(cpus) = res.cpus {
            let h = find("cpu")
                .context("cpu limit requested but the cgroup v1 cpu controller is not mounted")?;
            let dir = self.mkdir(&h.own_dir, leaf)?;
            write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &cpu_quota(cpus).to_string())?;
        }
        match find("pids") {
            Some(h) => {
                let dir = self.mkdir(&h.own_dir, leaf)?;
                write(&dir.join("pids.max"), &pids.to_string())?;
            }
            None if res.pids.is_some() => {
                return Err(err!(
                    "pids limit requested but the cgroup v1 pids controller is not mounted"
                ))
            }
            None => {}
        }
        Ok(())
    }

    fn create_v2(&mut self, h: &Hierarchy, leaf: &str, res: &Resources, pids: u64) -> Result<()> {
        let available =
            fs::read_to_string(h.own_dir.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| available.split_whitespace().any(|x| x == c);
        let enabled =
            fs::read_to_string(h.own_dir.join("cgroup.subtree_control")).unwrap_or_default();
        let is_enabled = |c: &str| enabled.split_whitespace().any(|x| x == c);
        // (controller, explicitly requested)
        let mut wanted = vec![];
        if res.memory_bytes.is_some() {
            wanted.push(("memory", true));
        }
        if res.cpus.is_some() {
            wanted.push(("cpu", true));
        }
        if has("pids") || res.pids.is_some() {
            wanted.push(("pids", res.pids.is_some()));
        }
        let mut usable = vec![];
        for (c, requested) in wanted {
            if !has(c) {
                return Err(err!(
                    "{c} limit requested but cgroup {} does not offer the {c} controller",
                    h.own_dir.display()
                ));
            }
            if is_enabled(c) {
                usable.push(c);
                continue;
            }
            // A cgroup with processes of its own cannot delegate controllers (EBUSY) unless it
            // is the root: the caller must then run iii from a cgroup of its own. Only the
            // default pids limit may be skipped; a limit the user asked for may not.
            match write(&h.own_dir.join("cgroup.subtree_control"), &format!("+{c}")) {
                Ok(()) => usable.push(c),
                Err(_) if !requested => {}
                Err(e) => {
                    return Err(err!(
                        "{}; cgroup {} cannot delegate the {c} controller while it holds \
                         processes — run iii in a cgroup of its own (e.g. systemd-run --scope \
                         -p Delegate=yes)",
                        e.message(),
                        h.own_dir.display()
                    ))
                }
            }
        }
        let dir = self.mkdir(&h.own_dir, leaf)?;
        if let Some(mem) = res.memory_bytes {
            write(&dir.join("memory.max"), &mem.to_string())?;
            write(&dir.join("memory.swap.max"), "0").ok();
            self.oom_file = Some(dir.join("memory.events"));
        }
        if let Some(cpus) = res.cpus {
            write(
                &dir.join("cpu.max"),
                &format!("{} {CPU_PERIOD_US}", cpu_quota(cpus)),
            )?;
        }
        if usable.contains(&"pids") {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    fn mkdir(&mut self, parent: &Path, leaf: &str) -> Result<PathBuf> {
        sweep_stale(parent, leaf);
        let dir = parent.join(leaf);
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        self.dirs.push(dir.clone());
        Ok(dir)
    }

    /// Move process `pid` (and so everything it will fork) into every cgroup of the sandbox.
    pub fn add(&self, pid: u32) -> Result<()> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether sandboxes can get these limits here: creates and removes a probe cgroup.
    /// Tests use it to skip (with the reason) where cgroups cannot be delegated.
    pub fn probe(res: &Resources) -> Result<()> {
        Cgroup::create("probe", res).map(drop)
    }

    /// The cgroup directories (for tests and diagnostics).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// How many processes the kernel OOM-killed in this sandbox's memory cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(f) = &self.oom_file else { return 0 };
        let text = fs::read_to_string(f).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("oom_kill "))
            .filter_map(|n| n.trim().parse().ok())
            .next()
            .unwrap_or(0)
    }

    /// Delete the cgroups. They must be empty: the sandbox's processes are gone once init has
    /// been reaped, but the kernel may take a moment to notice, so busy is retried briefly.
    pub fn remove(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut first_err = None;
        for d in std::mem::take(&mut self.dirs) {
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => {
                        first_err.get_or_insert(err!("removing cgroup {}: {e}", d.display()));
                        break;
                    }
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.remove().ok();
    }
}

trait ContextFor {
    fn context_for(self, name: &str) -> crate::Error;
}

impl ContextFor for crate::Error {
    fn context_for(self, name: &str) -> crate::Error {
        err!("setting up cgroups for worker {name}: {}", self.message())
    }
}

/// Remove empty cgroups that earlier monitors of the same worker left behind when they were
/// killed before they could tear down (`iii-<name>-<pid>-<n>` whose monitor PID is gone).
/// rmdir refuses a cgroup that still has processes, so this never disturbs a live sandbox.
fn sweep_stale(parent: &Path, leaf: &str) {
    // leaf is "iii-<name>-<pid>-<n>": the prefix up to and including the name.
    let Some(prefix) = leaf.rsplitn(3, '-').nth(2) else {
        return;
    };
    let prefix = format!("{prefix}-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<i32>(), n.parse::<u64>()) else {
            continue;
        };
        if !crate::sys::pid::exists(pid) {
            fs::remove_dir(e.path()).ok();
        }
    }
}

fn cpu_quota(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// (mount root, mount point, fstype, super options) of every mountinfo line.
fn mounts(mountinfo: &str) -> impl Iterator<Item = (&str, &str, &str, &str)> {
    mountinfo.lines().filter_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        Some((*pre.get(3)?, *pre.get(4)?, *post.first()?, *post.get(2)?))
    })
}

/// The on-disk directory of our cgroup `path` in a hierarchy mounted at `mnt` from `root`.
fn own_dir(mnt: &str, root: &str, path: &str) -> PathBuf {
    let rel = if root == "/" {
        path
    } else {
        path.strip_prefix(root).unwrap_or(path)
    };
    Path::new(mnt).join(rel.trim_start_matches('/'))
}

fn v1_hierarchy(mountinfo: &str, own: &str, controller: &str) -> Option<Hierarchy> {
    let (root, mnt, _, _) = mounts(mountinfo).find(|(_, _, fstype, opts)| {
        *fstype == "cgroup" && opts.split(',').any(|o| o == controller)
    })?;
    let path = own.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        ctrls.split(',').any(|c| c == controller).then_some(path)
    })?;
    Some(Hierarchy {
        own_dir: own_dir(mnt, root, path),
    })
}

fn v2_hierarchy(mountinfo: &str, own: &str) -> Option<Hierarchy> {
    let (root, mnt, _, _) = mounts(mountinfo).find(|(_, _, fstype, _)| *fstype == "cgroup2")?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Hierarchy {
        own_dir: own_dir(mnt, root, path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 /ns /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
    const OWN: &str = "\
8:pids:/ns/a
4:memory:/process_api/x
2:cpu,cpuacct:/
0::/
";

    #[test]
    fn v1_hierarchies_resolve_to_our_own_cgroup_dirs() {
        let h = |c| v1_hierarchy(MOUNTINFO, OWN, c).map(|h| h.own_dir);
        assert_eq!(
            h("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/x")
        );
        assert_eq!(h("cpu").unwrap(), Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h("pids").unwrap(), Path::new("/sys/fs/cgroup/pids/a"));
        assert!(h("blkio").is_none());
        let v2 = v2_hierarchy(MOUNTINFO, OWN).unwrap();
        assert_eq!(v2.own_dir, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn stale_cgroups_of_dead_monitors_are_swept_and_others_kept() {
        let dir = std::env::temp_dir().join(format!("iii-cg-sweep-{}", std::process::id()));
        // A plain directory tree stands in for a hierarchy: rmdir semantics are the same for
        // empty directories.
        let dead = dir.join("iii-w-1-999999999-0");
        let other_worker = dir.join("iii-w-x-999999999-0");
        let live = dir.join(format!("iii-w-1-{}-5", std::process::id()));
        for d in [&dead, &other_worker, &live] {
            fs::create_dir_all(d).unwrap();
        }
        sweep_stale(&dir, &format!("iii-w-1-{}-6", std::process::id()));
        assert!(!dead.exists());
        assert!(other_worker.exists());
        assert!(live.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_quota_is_fraction_of_period_with_a_floor() {
        assert_eq!(cpu_quota(2.0), 200_000);
        assert_eq!(cpu_quota(0.5), 50_000);
        assert_eq!(cpu_quota(0.0001), 1000);
    }
}
