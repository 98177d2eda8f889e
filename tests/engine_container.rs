//! A real iii worker as a user runs one: the Python worker in `examples/sdk-worker/` (PyPI
//! `iii-sdk`, installed by scripts/install-sdks.sh) built into an image by
//! scripts/push-sdk-worker-image.sh, pushed to a real `docker-registry`, `iii worker add`ed and
//! run by `iii` in a namespace sandbox. Through the sandbox's engine link it registers an HTTP
//! route and functions: the route answers over `iii-http`, a function over `iii trigger`,
//! another makes an outbound HTTP request from the sandbox to a "remote host" (a network
//! namespace of the test's own), `iii worker exec` sees the sandbox's network, and `remove`
//! takes it away.

#[path = "common/engine.rs"]
mod engine;
#[path = "common/http.rs"]
mod http;
#[path = "common/netns.rs"]
mod netns;
#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use engine::Engine;
use support::registry::{Auth, Registry};
use support::TempDir;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn iii(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iii"));
    c.arg("-c")
        .arg(dir.join("config.yaml"))
        .args(args)
        .current_dir(dir)
        .env("III_HOME", dir.join("store"))
        .env_remove("III_URL")
        .env_remove("III_CONFIG_PATH");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    iii(dir, args).output().expect("running iii")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_python_sdk_worker_image_serves_http_and_functions_from_its_sandbox() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip!("the namespace sandbox needs root");
        return;
    }
    if !Path::new("/dev/net/tun").exists() {
        skip!("/dev/net/tun is missing: the worker's default egress network needs a TAP device");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !repo.join("target/sdk/py/bin/python").exists() {
        skip!("the Python iii-sdk is not installed (scripts/install-sdks.sh)");
        return;
    }
    let Some(registry) = Registry::start(Auth::None) else {
        return;
    };
    let built = Command::new(repo.join("scripts/push-sdk-worker-image.sh"))
        .args([&registry.host, "test/greeter", "1.0"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "building the image: {}",
        text(&built.stderr)
    );

    // The "remote host" the worker's outbound request goes to: a network namespace of this
    // test's own, reachable from the host over a veth pair (never a real outside address).
    let lab = match netns::Lab::new("sdkc") {
        Ok(l) => l,
        Err(why) => {
            skip!("{why}");
            return;
        }
    };
    let _remote = lab.serve_http(9080);

    let dir = TempDir::new("sdk-container");
    let d = dir.path();
    let http_port = free_port();
    std::fs::write(
        d.join("config.yaml"),
        format!(
            "workers:\n  - name: iii-worker-manager\n    config: {{port: 0}}\n  - name: iii-http\n    config: {{port: {http_port}}}\n"
        ),
    )
    .unwrap();
    let image = format!("{}/test/greeter:1.0", registry.host);
    let out = run(d, &["worker", "add", &image]);
    assert!(out.status.success(), "add: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "greeter\n");

    let mut engine = Engine::spawn(iii(d, &[]), d.join("engine.log"));
    // The worker is up when its functions are registered with the engine.
    let t = Instant::now();
    loop {
        let out = run(d, &["trigger", "engine::functions::list"]);
        if text(&out.stdout).contains("greeter::add") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the worker never registered: {}\nworker log: {}",
            engine.stderr(),
            text(&run(d, &["worker", "logs", "greeter"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The engine knows the connection came from this worker (over its engine link).
    let out = run(d, &["worker", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["name"], "greeter", "{rows}");
    assert_eq!(rows[0]["sdk_connected"], true, "{rows}");
    assert_eq!(rows[0]["functions"], 3, "{rows}");
    let table = text(&run(d, &["worker", "list"]).stdout);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains(" connected ") && l.ends_with(" 3")),
        "{table}"
    );

    // The HTTP route it registered, served by iii-http, answered from inside the sandbox.
    let r = http::get(http_port, "/hello/doc?shout=1");
    assert_eq!(r.status, 200, "{}", text(&r.body));
    assert_eq!(
        r.header("x-served-by"),
        Some("greeter"),
        "the sandbox's hostname"
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"message": "HELLO, DOC!", "worker": "greeter"})
    );
    // A function it serves, called through the engine.
    let out = run(d, &["trigger", "greeter::add", "a=2", "b=40"]);
    assert!(out.status.success(), "trigger: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"sum": 42}));

    // The same SDK process makes an outbound HTTP request through its sandbox's NIC.
    let url = format!("url=http://{}:9080/from-the-sandbox", lab.remote_ip);
    let out = run(d, &["trigger", "greeter::fetch", &url]);
    assert!(out.status.success(), "fetch: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"status": 200, "body": "hello from the remote host /from-the-sandbox"})
    );

    // exec runs as the image's user, in the sandbox with its own NIC and resolver.
    let out = run(
        d,
        &[
            "worker",
            "exec",
            "greeter",
            "--",
            "sh",
            "-c",
            "id -un; ip route; cat /etc/resolv.conf",
        ],
    );
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(o.starts_with("worker\n"), "{o}");
    assert!(o.contains("default via 10.0.2.2 dev eth0"), "{o}");
    assert!(o.contains("nameserver 10.0.2.2"), "{o}");

    let out = run(d, &["worker", "remove", "greeter"]);
    assert!(out.status.success(), "remove: {}", text(&out.stderr));
    let config = std::fs::read_to_string(d.join("config.yaml")).unwrap();
    assert!(!config.contains("greeter"), "{config}");
    assert!(
        config.contains("iii-http"),
        "built-in entries stay: {config}"
    );
    // Once removed its function is gone from the engine.
    let t = Instant::now();
    while text(&run(d, &["trigger", "engine::functions::list"]).stdout).contains("greeter::add") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "greeter::add outlived remove"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = engine.terminate();
    assert!(status.is_some_and(|s| s.success()), "{}", engine.stderr());
}
