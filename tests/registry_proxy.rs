//! HTTPS_PROXY / NO_PROXY: a registry known by a host name that only an HTTP CONNECT proxy
//! (in the test, on loopback) can reach. Its TLS certificate names that host and is trusted
//! through SSL_CERT_FILE.
//!
//! Proxy and certificate variables are process-wide: this file holds one test.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use iii::oci::{pull, NoProgress, Store};
use support::image::busybox_image;
use support::registry::{Auth, Registry};
use support::tree::{assert_tree, busybox_tree};
use support::TempDir;

/// A name under the reserved `.test` TLD: it resolves nowhere, so only the proxy gets there.
const NAME: &str = "registry.iii.test";

/// A CONNECT proxy that sends every tunnel to `upstream` and records what was asked.
struct ConnectProxy {
    port: u16,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConnectProxy {
    fn start(upstream: String) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (a, up) = (a.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = tunnel(conn, &up, &a);
                });
            }
        });
        ConnectProxy {
            port,
            asked,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tunnel(client: TcpStream, upstream: &str, asked: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    asked.lock().unwrap().push(line.trim().to_string());
    let mut client_w = client.try_clone()?;
    if !line.starts_with("CONNECT ") {
        client_w.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    }
    let server = TcpStream::connect(upstream)?;
    client_w.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut s_r, mut s_w) = (server.try_clone()?, server);
    // Bytes the client sent right after the CONNECT head are in the BufReader.
    let buffered = reader.buffer().to_vec();
    s_w.write_all(&buffered)?;
    let up = std::thread::spawn(move || {
        let mut c_r = client;
        let _ = std::io::copy(&mut c_r, &mut s_w);
        let _ = s_w.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut s_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

#[test]
fn https_proxy_is_used_and_no_proxy_bypasses_it() {
    let Some(reg) = Registry::start_tls_named(Auth::None, Some(NAME)) else {
        return;
    };
    let Some(img) = busybox_image() else { return };
    img.push(&reg, "proxied/busybox", Some("1"));
    let port = reg.host.rsplit(':').next().unwrap().to_string();
    let proxy = ConnectProxy::start(reg.host.clone());
    std::env::set_var("SSL_CERT_FILE", reg.tls_cert.as_ref().unwrap());
    std::env::set_var("HTTPS_PROXY", format!("http://127.0.0.1:{}", proxy.port));
    std::env::set_var("NO_PROXY", "example.invalid");

    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    let image = format!("{NAME}:{port}/proxied/busybox:1");
    let installed = pull(&image, &store, &mut NoProgress).unwrap();
    assert_tree(&installed.rootfs, &busybox_tree());
    let asked = proxy.asked.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .any(|l| l.starts_with(&format!("CONNECT {NAME}:{port} "))),
        "went through the proxy: {asked:?}"
    );

    // Listed in NO_PROXY: a direct connection, which cannot resolve the name.
    std::env::set_var("NO_PROXY", NAME);
    let before = proxy.asked.lock().unwrap().len();
    let home2 = TempDir::new("home");
    let store2 = Store::open(home2.path()).unwrap();
    let e = pull(&image, &store2, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains(NAME), "{e}");
    assert_eq!(proxy.asked.lock().unwrap().len(), before, "proxy bypassed");
}
