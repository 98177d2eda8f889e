//! Authentication against the real registry: Basic (htpasswd) and bearer tokens (an
//! in-test token issuer), with credentials from III_REGISTRY_AUTH and docker config.json.
//!
//! Credentials come from the environment, which is process-wide: every test here holds
//! ENV_LOCK while it sets variables and pulls, so they never see each other's values.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use iii::oci::{pull, NoProgress, Store};
use support::image::*;
use support::registry::{Auth, Registry};
use support::tree::{assert_tree, busybox_tree};
use support::TempDir;

static ENV_LOCK: Mutex<()> = Mutex::new(());

fn with_env<T>(vars: &[(&str, Option<&str>)], f: impl FnOnce() -> T) -> T {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let saved: Vec<_> = vars
        .iter()
        .map(|(k, _)| (*k, std::env::var_os(k)))
        .collect();
    for (k, v) in vars {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    let out = f();
    for (k, v) in saved {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    out
}

/// Push busybox as `repo:1`; the image reference to pull it.
fn pushed_busybox(reg: &Registry, repo: &str) -> Option<String> {
    let img = busybox_image()?;
    img.push(reg, repo, Some("1"));
    Some(format!("{}/{repo}:1", reg.host))
}

fn expect_busybox(rootfs: &std::path::Path) {
    assert_tree(rootfs, &busybox_tree());
}

#[test]
fn basic_auth_from_env_and_docker_config() {
    let Some(reg) = Registry::start(Auth::basic("alice", "s3cret")) else {
        return;
    };
    let Some(image) = pushed_busybox(&reg, "private/busybox") else {
        return;
    };
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    let no_docker = TempDir::new("nodocker");
    let nd = no_docker.path().to_str().unwrap().to_string();

    // No credentials: a clear refusal naming the image and what was tried.
    let e = with_env(
        &[("III_REGISTRY_AUTH", None), ("DOCKER_CONFIG", Some(&nd))],
        || {
            pull(&image, &store, &mut NoProgress)
                .unwrap_err()
                .to_string()
        },
    );
    assert!(e.contains(&image) && e.contains("anonymous"), "{e}");

    // Wrong password: says which credentials were tried.
    let wrong = format!("{}=alice:nope", reg.host);
    let e = with_env(
        &[
            ("III_REGISTRY_AUTH", Some(&wrong)),
            ("DOCKER_CONFIG", Some(&nd)),
        ],
        || {
            pull(&image, &store, &mut NoProgress)
                .unwrap_err()
                .to_string()
        },
    );
    assert!(
        e.contains("user `alice` from III_REGISTRY_AUTH") && e.contains(&image),
        "{e}"
    );
    assert!(!e.contains("nope"), "password leaked: {e}");
    assert!(store.lookup(&image).unwrap().is_none());

    // Right password from III_REGISTRY_AUTH.
    let right = format!("other.example=x:y,{}=alice:s3cret", reg.host);
    let installed = with_env(
        &[
            ("III_REGISTRY_AUTH", Some(&right)),
            ("DOCKER_CONFIG", Some(&nd)),
        ],
        || pull(&image, &store, &mut NoProgress).unwrap(),
    );
    expect_busybox(&installed.rootfs);

    // From docker's config.json, into a fresh store.
    let docker = TempDir::new("docker");
    let cfg = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        reg.host,
        STANDARD.encode(b"alice:s3cret")
    );
    std::fs::write(docker.path().join("config.json"), cfg).unwrap();
    let home2 = TempDir::new("home");
    let store2 = Store::open(home2.path()).unwrap();
    let dc = docker.path().to_str().unwrap().to_string();
    let installed = with_env(
        &[("III_REGISTRY_AUTH", None), ("DOCKER_CONFIG", Some(&dc))],
        || pull(&image, &store2, &mut NoProgress).unwrap(),
    );
    expect_busybox(&installed.rootfs);
}

#[test]
fn bearer_tokens_anonymous_and_with_credentials() {
    let Some(reg) = Registry::start(Auth::bearer("bob", "t0ken")) else {
        return;
    };
    let Some(image) = pushed_busybox(&reg, "public/busybox") else {
        return;
    };
    let no_docker = TempDir::new("nodocker");
    let nd = no_docker.path().to_str().unwrap().to_string();

    // Anonymous: the token service hands out pull tokens, as Docker Hub does.
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    let before = reg.token_requests();
    let installed = with_env(
        &[("III_REGISTRY_AUTH", None), ("DOCKER_CONFIG", Some(&nd))],
        || pull(&image, &store, &mut NoProgress).unwrap(),
    );
    expect_busybox(&installed.rootfs);
    assert!(reg.token_requests() > before, "a token was fetched");

    // With credentials (sent to the token service as Basic).
    let home2 = TempDir::new("home");
    let store2 = Store::open(home2.path()).unwrap();
    let creds = format!("{}=bob:t0ken", reg.host);
    let installed = with_env(
        &[
            ("III_REGISTRY_AUTH", Some(&creds)),
            ("DOCKER_CONFIG", Some(&nd)),
        ],
        || pull(&image, &store2, &mut NoProgress).unwrap(),
    );
    expect_busybox(&installed.rootfs);

    // Wrong credentials: the token service refuses, and the error says who we were.
    let home3 = TempDir::new("home");
    let store3 = Store::open(home3.path()).unwrap();
    let bad = format!("{}=bob:wrong", reg.host);
    let e = with_env(
        &[
            ("III_REGISTRY_AUTH", Some(&bad)),
            ("DOCKER_CONFIG", Some(&nd)),
        ],
        || {
            pull(&image, &store3, &mut NoProgress)
                .unwrap_err()
                .to_string()
        },
    );
    assert!(
        e.contains("user `bob` from III_REGISTRY_AUTH") && e.contains(&image),
        "{e}"
    );
}
