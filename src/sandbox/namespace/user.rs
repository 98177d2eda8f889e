//! Resolving an image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the image's
//! own `/etc/passwd` and `/etc/group`, with docker's rules: a name must exist; a bare number
//! need not (gid 0 then, unless given); the passwd entry's group is the default group;
//! supplementary groups are the primary group plus those of `/etc/group` that list the user.

use std::path::Path;

use crate::sandbox::User;
use crate::{err, Result};

/// Read a file of the image, refusing symlinks (which would resolve against the host).
fn read_image_file(root: &Path, rel: &str) -> String {
    let p = root.join(rel);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_file() => std::fs::read_to_string(&p).unwrap_or_default(),
        _ => String::new(),
    }
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = Passwd<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some(Passwd {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
        })
    })
}

/// (name, gid, members) of each `/etc/group` line.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let members = f
            .get(3)
            .map_or(vec![], |m| m.split(',').filter(|s| !s.is_empty()).collect());
        Some((*f.first()?, f.get(2)?.parse().ok()?, members))
    })
}

/// Resolve `spec` (the image config's `User`; empty means root) in the image at `root`.
pub fn resolve(root: &Path, spec: &str) -> Result<User> {
    if spec.is_empty() {
        return Ok(User::default());
    }
    let passwd = read_image_file(root, "etc/passwd");
    let group = read_image_file(root, "etc/group");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd_entries(&passwd).find(|p| p.name == u || u.parse() == Ok(p.uid));
    // docker: a numeric uid without a passwd entry runs with gid 0 unless one is given.
    let (uid, mut gid, name) = match (&entry, u.parse::<u32>()) {
        (Some(p), _) => (p.uid, p.gid, Some(p.name)),
        (None, Ok(n)) => (n, 0, None),
        (None, Err(_)) => return Err(err!("user {u:?} not found in the image's /etc/passwd")),
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(&group)
                .find(|(n, _, _)| *n == g)
                .map(|(_, id, _)| id)
                .ok_or_else(|| err!("group {g:?} not found in the image's /etc/group"))?,
        };
    }
    // Like initgroups(3): the primary group, then every group that lists the user.
    let mut additional_gids = vec![gid];
    if let (Some(n), None) = (name, g) {
        for (_, id, members) in group_entries(&group) {
            if members.contains(&n) && !additional_gids.contains(&id) {
                additional_gids.push(id);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_groups_resolve_like_docker() {
        let dir = std::env::temp_dir().join(format!("iii-user-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,bob\nstaff:x:50:\n",
        )
        .unwrap();
        let r = |s| resolve(&dir, s);
        assert_eq!(r("").unwrap(), User::default());
        assert_eq!(
            r("app").unwrap(),
            User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![1000, 10]
            }
        );
        assert_eq!(r("1000").unwrap().gid, 1000);
        assert_eq!(r("app:staff").unwrap().gid, 50);
        assert_eq!(
            r("2000").unwrap(),
            User {
                uid: 2000,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        assert_eq!(r("2000:7").unwrap().gid, 7);
        assert!(r("nobody-here")
            .unwrap_err()
            .to_string()
            .contains("/etc/passwd"));
        assert!(r("app:nogroup")
            .unwrap_err()
            .to_string()
            .contains("/etc/group"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
