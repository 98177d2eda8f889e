//! Where things live: the project (its `config.yaml` and `.iii/` state directory) and the
//! per-user content-addressed store (`III_HOME`, default `~/.iii`).

use std::path::{Path, PathBuf};

use crate::{Context, Result};

/// One project: a `config.yaml` and the `.iii/` directory beside it.
#[derive(Debug, Clone)]
pub struct Project {
    /// The declarative list of workers.
    pub config_path: PathBuf,
    /// `.iii/` beside the config file: runtime state per worker.
    pub state_dir: PathBuf,
}

impl Project {
    /// The project named by `-c`, else `III_CONFIG_PATH`, else `./config.yaml`.
    pub fn locate(explicit: Option<&Path>) -> Project {
        let config_path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("III_CONFIG_PATH") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => PathBuf::from("config.yaml"),
            },
        };
        Project::at(config_path)
    }

    /// The project whose config file is `config_path`.
    pub fn at(config_path: PathBuf) -> Project {
        let dir = match config_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Project {
            state_dir: dir.join(".iii"),
            config_path,
        }
    }

    /// `iii.lock` beside config.yaml: the pins of this project's workers.
    pub fn lock_path(&self) -> PathBuf {
        crate::lockfile::Lock::path_for(&self.config_path)
    }

    /// The directory config.yaml is in (where `iii.lock` and `iii.worker.yaml` live).
    pub fn dir(&self) -> PathBuf {
        match self.config_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// `.iii/workers/<name>/`: pid, control socket, logs and writable layer of one worker.
    pub fn worker_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("workers").join(name)
    }

    /// `.iii/engine.sock`: the running engine's control socket (start/stop/status requests).
    pub fn engine_socket(&self) -> PathBuf {
        self.state_dir.join("engine.sock")
    }

    /// `.iii/link.sock`: the worker port as container workers' engine links reach it.
    pub fn engine_link(&self) -> PathBuf {
        self.state_dir.join("link.sock")
    }

    /// `.iii/engine.lock`: held by the one engine running for this project.
    pub fn engine_lock(&self) -> PathBuf {
        self.state_dir.join("engine.lock")
    }

    /// Create `.iii/` (mode 0700) if needed and return it.
    pub fn ensure_state_dir(&self) -> Result<&Path> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.state_dir)
            .with_context(|| format!("creating {}", self.state_dir.display()))?;
        Ok(&self.state_dir)
    }
}

/// The per-user store root: `III_HOME`, else `$HOME/.iii`.
pub fn store_home() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("III_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither III_HOME nor HOME is set; cannot locate the image store")?;
    Ok(PathBuf::from(home).join(".iii"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_sits_beside_config() {
        let p = Project::at(PathBuf::from("/srv/app/config.yaml"));
        assert_eq!(p.state_dir, PathBuf::from("/srv/app/.iii"));
        assert_eq!(p.worker_dir("w"), PathBuf::from("/srv/app/.iii/workers/w"));
        let bare = Project::at(PathBuf::from("config.yaml"));
        assert_eq!(bare.state_dir, PathBuf::from("./.iii"));
    }
}
