//! HTTPS: a registry serving TLS on 127.0.0.1 with a self-signed certificate that the
//! client trusts through SSL_CERT_FILE. Loopback registries are tried over HTTPS first, so
//! this is the same path a remote registry takes.
//!
//! SSL_CERT_FILE is read once per process: this file holds the only test that sets it.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use iii::oci::{pull, NoProgress, Store};
use support::image::busybox_image;
use support::registry::{Auth, Registry};
use support::tree::{assert_tree, busybox_tree};
use support::TempDir;

#[test]
fn pulls_over_https_trusting_ssl_cert_file() {
    let Some(reg) = Registry::start_tls(Auth::basic("tls", "pw")) else {
        return;
    };
    let Some(img) = busybox_image() else { return };
    img.push(&reg, "secure/busybox", Some("1"));
    let cert = reg.tls_cert.clone().unwrap();
    std::env::set_var("SSL_CERT_FILE", &cert);
    std::env::set_var("III_REGISTRY_AUTH", format!("{}=tls:pw", reg.host));
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    let image = format!("{}/secure/busybox:1", reg.host);
    let installed = pull(&image, &store, &mut NoProgress).unwrap();
    assert_tree(&installed.rootfs, &busybox_tree());
    // (The registry speaks only TLS, so that pull went over HTTPS.)

    // A second registry, whose certificate is not in SSL_CERT_FILE: refused, with advice,
    // and no silent fall back to plain HTTP.
    let Some(other) = Registry::start_tls(Auth::None) else {
        return;
    };
    img.push(&other, "secure/busybox", Some("1"));
    let image = format!("{}/secure/busybox:1", other.host);
    let e = pull(&image, &store, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not trusted") && e.contains("SSL_CERT_FILE") && e.contains(&image),
        "{e}"
    );
}
