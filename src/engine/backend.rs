//! The monitor's two outside dependencies behind one seam: finding an installed image in the
//! store, and starting a sandbox with the chosen backend.

use std::path::PathBuf;

use crate::config::SandboxChoice;
use crate::sandbox::{Backend, Sandbox, SandboxSpec, Stdio};
use crate::Result;

/// What the engine needs from an installed image.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    pub manifest_digest: String,
    pub rootfs: PathBuf,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
}

/// The installed image for `image` (as written in config.yaml), or `None` if it was never added.
pub fn lookup_image(image: &str) -> Result<Option<ImageInfo>> {
    let home = crate::project::store_home()?;
    let store = crate::oci::Store::open(&home)?;
    Ok(store.lookup(image)?.map(|i| ImageInfo {
        manifest_digest: i.manifest_digest,
        rootfs: i.rootfs,
        entrypoint: i.config.entrypoint.unwrap_or_default(),
        cmd: i.config.cmd.unwrap_or_default(),
        env: i.config.env,
        working_dir: i.config.working_dir,
        user: i.config.user,
        stop_signal: i.config.stop_signal,
    }))
}

/// The backend `sandbox:` asks for on this host.
pub fn choose(choice: SandboxChoice) -> Backend {
    match choice {
        SandboxChoice::Vm => Backend::Vm,
        // `auto` picks `vm` only when it can boot a guest; until the vm backend lands that is
        // never, so `auto` means `namespace`.
        SandboxChoice::Auto | SandboxChoice::Namespace => Backend::Namespace,
    }
}

/// Start the sandbox with `backend`. Must be called from the thread that then waits on it:
/// the sandbox is torn down when that thread exits.
pub fn start(backend: Backend, spec: &SandboxSpec, stdio: Stdio) -> Result<Box<dyn Sandbox>> {
    match backend {
        Backend::Namespace => Ok(Box::new(crate::sandbox::namespace::start(spec, stdio)?)),
        Backend::Vm => Err(crate::err!(
            "the vm sandbox backend cannot run workers yet in this version of iii; \
             use `sandbox: namespace`"
        )),
    }
}

/// A signal by name (`SIGTERM`, `TERM`) or number, as an image's `StopSignal` gives it.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => {
            let off = name.strip_prefix("RTMIN+")?.parse::<i32>().ok()?;
            let n = libc::SIGRTMIN() + off;
            return (n <= libc::SIGRTMAX()).then_some(n);
        }
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse_like_docker() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("QUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("SIGBOGUS"), None);
        assert_eq!(parse_signal("0"), None);
    }
}
