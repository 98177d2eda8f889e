//! Building a worker's process from its image and config entry, independent of the
//! sandbox backend: docker's Entrypoint + Cmd rule, the environment layering, the engine URL
//! rewriting, and `User` resolved in the image's own `/etc/passwd` and `/etc/group`.

use std::path::Path;

use crate::sandbox::User;
use crate::Result;

/// The engine URL a worker sees: init listens on this address inside the sandbox and tunnels
/// to the host engine on the same port.
pub fn engine_url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}")
}

/// argv with docker semantics: Entrypoint followed by Cmd (Cmd alone when there is no
/// Entrypoint), then every `--url <v>` / `--url=<v>` pointed at the engine (seed §6: binary
/// workers take the engine address on their command line).
pub fn process_args(
    image: &str,
    entrypoint: &[String],
    cmd: &[String],
    engine_url: &str,
) -> Result<Vec<String>> {
    let mut args: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if args.is_empty() {
        return Err(crate::err!(
            "image {image} has neither Entrypoint nor Cmd: nothing to run"
        ));
    }
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--url" && i + 1 < args.len() {
            args[i + 1] = engine_url.to_string();
            i += 2;
            continue;
        }
        if args[i].starts_with("--url=") {
            args[i] = format!("--url={engine_url}");
        }
        i += 1;
    }
    Ok(args)
}

/// The environment: image `Env` ← flattened `config:` ← `III_WORKER_NAME`; then `III_URL` and
/// `III_ENGINE_URL` default to the engine URL, and any of the two that points at
/// `localhost`/`127.0.0.1` is rewritten to the engine's port (the worker's loopback is its
/// own, where init serves the engine link). Order: first appearance wins the position.
pub fn environment(
    image_env: &[String],
    config_env: &[(String, String)],
    worker_name: &str,
    engine_url: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in image_env {
        match kv.split_once('=') {
            Some((k, v)) => set(k, v),
            // Docker keeps a bare `KEY` as an empty variable.
            None => set(kv, ""),
        }
    }
    for (k, v) in config_env {
        set(k, v);
    }
    set("III_WORKER_NAME", worker_name);
    for key in ["III_URL", "III_ENGINE_URL"] {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => {
                if let Some(rewritten) = rewrite_local_url(&slot.1, engine_url) {
                    slot.1 = rewritten;
                }
            }
            None => env.push((key.to_string(), engine_url.to_string())),
        }
    }
    env
}

/// `ws://localhost:1234/path` → `ws://127.0.0.1:<engine port>/path`; `None` when the URL is
/// not a loopback URL (a remote engine is left alone).
fn rewrite_local_url(url: &str, engine_url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    if host != "localhost" && host != "127.0.0.1" {
        return None;
    }
    let engine_authority = engine_url.split_once("://").map_or(engine_url, |(_, a)| a);
    Some(format!("{scheme}://{engine_authority}{path}"))
}

/// The working directory: the image's `WorkingDir`, else `/`.
pub fn working_dir(image_working_dir: Option<&str>) -> String {
    match image_working_dir {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => "/".to_string(),
    }
}

/// Resolve the image's `User` (`name`, `uid`, `name:group`, `uid:gid`, empty = root) against
/// the image's `/etc/passwd` and `/etc/group`, docker style: a named user must exist; a
/// numeric uid need not (its gid is then 0); the supplementary groups are the primary group
/// and, unless `User` names a group, the groups listing the user by name.
pub fn resolve_user(rootfs: &Path, image: &str, user: Option<&str>) -> Result<User> {
    let spec = user.unwrap_or("").trim();
    if spec.is_empty() {
        return Ok(User::default());
    }
    let passwd = read_image_file(rootfs, "etc/passwd");
    let group = read_image_file(rootfs, "etc/group");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd
        .lines()
        .filter_map(parse_passwd)
        .find(|p| p.name == user_part || user_part.parse::<u32>() == Ok(p.uid));
    let (uid, mut gid, name) = match (entry, user_part.parse::<u32>()) {
        (Some(p), _) => (p.uid, p.gid, Some(p.name.to_string())),
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) => {
            return Err(crate::err!(
                "image {image}: user {user_part:?} is not in the image's /etc/passwd"
            ))
        }
    };
    let groups: Vec<(&str, u32, Vec<&str>)> = group.lines().filter_map(parse_group).collect();
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match groups.iter().find(|(n, _, _)| *n == g) {
            Some((_, id, _)) => *id,
            None => g.parse::<u32>().map_err(|_| {
                crate::err!("image {image}: group {g:?} is not in the image's /etc/group")
            })?,
        };
    }
    // Docker's rule: the process's groups are its primary group, plus, when the image's
    // `User` names no group, every group of /etc/group that lists the user.
    let mut additional_gids = vec![gid];
    if let (Some(n), None | Some("")) = (&name, group_part) {
        for (_, id, members) in &groups {
            if members.contains(&n.as_str()) && !additional_gids.contains(id) {
                additional_gids.push(*id);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

fn parse_passwd(line: &str) -> Option<PasswdEntry<'_>> {
    let mut f = line.split(':');
    let name = f.next()?;
    let _pw = f.next()?;
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    Some(PasswdEntry { name, uid, gid })
}

fn parse_group(line: &str) -> Option<(&str, u32, Vec<&str>)> {
    let mut f = line.split(':');
    let name = f.next()?;
    let _pw = f.next()?;
    let gid = f.next()?.parse().ok()?;
    let members = f
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|m| !m.is_empty())
        .collect();
    Some((name, gid, members))
}

/// A file of the image, read only when it is a regular file: a symlink could point at the
/// host's own `/etc/passwd`, which says nothing about the image.
fn read_image_file(rootfs: &Path, rel: &str) -> String {
    let path = rootfs.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => std::fs::read_to_string(&path).unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    const URL: &str = "ws://127.0.0.1:5555";

    #[test]
    fn entrypoint_then_cmd() {
        let a = process_args("i", &s(&["/bin/app", "-v"]), &s(&["serve"]), URL).unwrap();
        assert_eq!(a, s(&["/bin/app", "-v", "serve"]));
        let a = process_args("i", &[], &s(&["sh", "-c", "echo hi"]), URL).unwrap();
        assert_eq!(a, s(&["sh", "-c", "echo hi"]));
        let a = process_args("i", &s(&["/init"]), &[], URL).unwrap();
        assert_eq!(a, s(&["/init"]));
        let e = process_args("img:1", &[], &[], URL).unwrap_err();
        assert!(e.to_string().contains("img:1"), "{e}");
    }

    #[test]
    fn url_flag_is_pointed_at_the_engine() {
        let a = process_args(
            "i",
            &s(&["/w"]),
            &s(&["--url", "ws://localhost:49134", "--x", "--url=ws://a:1"]),
            URL,
        )
        .unwrap();
        assert_eq!(a, s(&["/w", "--url", URL, "--x", &format!("--url={URL}")]));
        // A trailing `--url` with no value, and argv[0] itself, are left alone.
        let a = process_args("i", &s(&["--url"]), &s(&["--url"]), URL).unwrap();
        assert_eq!(a, s(&["--url", "--url"]));
    }

    #[test]
    fn environment_layers_image_config_name() {
        let env = environment(
            &s(&["PATH=/bin", "A=image", "B=image", "BARE"]),
            &[("B".into(), "config".into()), ("C".into(), "x=y".into())],
            "w1",
            URL,
        );
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("A"), Some("image"));
        assert_eq!(get("B"), Some("config"));
        assert_eq!(get("C"), Some("x=y"));
        assert_eq!(get("BARE"), Some(""));
        assert_eq!(get("III_WORKER_NAME"), Some("w1"));
        assert_eq!(get("III_URL"), Some(URL));
        assert_eq!(get("III_ENGINE_URL"), Some(URL));
        // Config cannot override the worker name.
        let env = environment(&[], &[("III_WORKER_NAME".into(), "x".into())], "w1", URL);
        assert!(env.contains(&("III_WORKER_NAME".into(), "w1".into())));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "III_WORKER_NAME").count(),
            1
        );
    }

    #[test]
    fn local_engine_urls_are_rewritten_remote_kept() {
        let env = environment(
            &s(&["III_URL=ws://localhost:49134"]),
            &[("III_ENGINE_URL".into(), "wss://remote.example:443/x".into())],
            "w",
            URL,
        );
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.clone());
        assert_eq!(get("III_URL").unwrap(), URL);
        assert_eq!(get("III_ENGINE_URL").unwrap(), "wss://remote.example:443/x");
        assert_eq!(
            rewrite_local_url("ws://127.0.0.1:1/path?q", URL).unwrap(),
            "ws://127.0.0.1:5555/path?q"
        );
        assert_eq!(
            rewrite_local_url("http://localhost", URL).unwrap(),
            "http://127.0.0.1:5555"
        );
        assert!(rewrite_local_url("ws://localhostx:1", URL).is_none());
        assert!(rewrite_local_url("not a url", URL).is_none());
    }

    #[test]
    fn working_dir_defaults_to_root() {
        assert_eq!(working_dir(None), "/");
        assert_eq!(working_dir(Some("")), "/");
        assert_eq!(working_dir(Some("/app")), "/app");
    }

    fn image_with_users(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("iii-spec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(
            d.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:other\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn users_resolve_like_docker() {
        let d = image_with_users("users");
        let r = |u: &str| resolve_user(&d, "img", Some(u));
        assert_eq!(r("").unwrap(), User::default());
        assert_eq!(resolve_user(&d, "img", None).unwrap(), User::default());
        let app = User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![1000, 10],
        };
        assert_eq!(r("app").unwrap(), app);
        assert_eq!(r("1000").unwrap(), app);
        assert_eq!(
            r("app:wheel").unwrap(),
            User {
                uid: 1000,
                gid: 10,
                additional_gids: vec![10]
            }
        );
        assert_eq!(
            r("4242:77").unwrap(),
            User {
                uid: 4242,
                gid: 77,
                additional_gids: vec![77]
            }
        );
        assert_eq!(
            r("4242").unwrap(),
            User {
                uid: 4242,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        let e = r("nobody").unwrap_err().to_string();
        assert!(e.contains("img") && e.contains("nobody"), "{e}");
        let e = r("app:nogroup").unwrap_err().to_string();
        assert!(e.contains("nogroup"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn passwd_symlink_is_not_followed() {
        let d = image_with_users("symlink");
        std::fs::remove_file(d.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("etc/passwd")).unwrap();
        // The host's root exists, but the image's passwd is a symlink: only numeric works.
        assert!(resolve_user(&d, "img", Some("root")).is_err());
        assert_eq!(resolve_user(&d, "img", Some("0")).unwrap().uid, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
