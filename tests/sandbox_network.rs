//! Networks of real namespace sandboxes: `egress` workers reach a "remote host" (a network
//! namespace of the test's own, joined to the host by a veth pair on a private /30) through
//! their NIC and the user-mode stack, resolve names at their gateway, are held to their
//! allow list and kept off the host's loopback; `none` workers have no route out.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/busybox_sandbox.rs"]
mod busybox_sandbox;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/tempdir.rs"]
mod tempdir;

use busybox_sandbox::{busybox_root, can_run, run, section, spec};
use iii::net::policy::Rule;
use iii::sandbox::{Egress, Network, WorkerExit};
use tempdir::TempDir;

fn lab(tag: &str) -> Option<netns::Lab> {
    if !can_run() {
        return None;
    }
    match netns::Lab::new(tag) {
        Ok(l) => Some(l),
        Err(why) => {
            skip!("{why}");
            None
        }
    }
}

#[test]
fn an_egress_worker_reaches_the_remote_host_and_resolves_names() {
    let Some(lab) = lab("egress") else { return };
    let _srv = lab.serve_http(9080);
    let dir = TempDir::new("net-egress");
    let image = busybox_root(&dir.0);
    let remote = lab.remote_ip;
    let script = format!(
        "echo '== nics'; ls /sys/class/net; \
         echo '== route'; ip route; \
         echo '== http'; wget -q -O- http://{remote}:9080/hi; echo; \
         echo '== resolv'; cat /etc/resolv.conf; \
         echo '== dns'; nslookup localhost 2>&1 | grep -A1 -i '^name' | grep -i address; \
         echo '== hosts'; grep -c egress-w /etc/hosts"
    );
    let mut s = spec(&dir.0, &image, "egress-w", &["sh", "-c", &script]);
    s.network = Network::Egress(Egress::default());
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "{out}{err}");
    assert_eq!(section(&out, "nics"), ["eth0", "lo"], "{out}");
    assert!(
        section(&out, "route")
            .iter()
            .any(|l| l.starts_with("default via 10.0.2.2")),
        "{out}"
    );
    assert_eq!(
        section(&out, "http"),
        ["hello from the remote host /hi"],
        "{out}{err}"
    );
    assert!(
        section(&out, "resolv").contains(&"nameserver 10.0.2.2"),
        "{out}"
    );
    assert!(
        section(&out, "dns").iter().any(|l| l.contains("127.0.0.1")),
        "{out}{err}"
    );
    assert_eq!(section(&out, "hosts"), ["1"], "{out}");
    // The image's own /etc stays as it was in the shared tree.
    assert!(!image.join("etc/resolv.conf").exists());
}

#[test]
fn a_none_worker_has_no_route_out() {
    let Some(lab) = lab("none") else { return };
    let _srv = lab.serve_http(9080);
    let dir = TempDir::new("net-none");
    let image = busybox_root(&dir.0);
    let script = format!(
        "echo '== nics'; ls /sys/class/net; \
         echo '== http'; wget -q -T 3 -O- http://{}:9080/ >/dev/null 2>&1 && echo REACHED || echo unreachable",
        lab.remote_ip
    );
    let (exit, out, err) = run(&spec(&dir.0, &image, "none-w", &["sh", "-c", &script]));
    assert_eq!(exit, WorkerExit::Code(0), "{out}{err}");
    assert_eq!(section(&out, "nics"), ["lo"]);
    assert_eq!(section(&out, "http"), ["unreachable"]);
}

#[test]
fn the_allow_list_and_the_host_loopback_rules_hold_in_a_sandbox() {
    let Some(lab) = lab("policy") else { return };
    let _a = lab.serve_http(9080);
    let _b = lab.serve_http(9081);
    let engine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (ep, op) = (
        engine.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    // Whatever does get through is answered with a close, so `nc` finishes at once.
    for l in [&engine, &other] {
        let l = l.try_clone().unwrap();
        std::thread::spawn(move || l.incoming().for_each(drop));
    }
    let dir = TempDir::new("net-policy");
    let image = busybox_root(&dir.0);
    let r = lab.remote_ip;
    let script = format!(
        "try() {{ if timeout 6 nc -w 3 $1 $2 </dev/null >/dev/null 2>&1; then echo open; else echo refused; fi; }}; \
         echo '== allowed'; try {r} 9080; \
         echo '== other'; try {r} 9081; \
         echo '== engine'; try 10.0.2.2 {ep}; \
         echo '== host port'; try 10.0.2.2 {op}"
    );
    let mut s = spec(&dir.0, &image, "policy-w", &["sh", "-c", &script]);
    s.engine_addr = format!("127.0.0.1:{ep}").parse().unwrap();
    s.network = Network::Egress(Egress {
        allow: Some(vec![Rule::parse(&format!("{r}:9080")).unwrap()]),
        host_ports: vec![],
    });
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "{out}{err}");
    assert_eq!(section(&out, "allowed"), ["open"], "{out}");
    assert_eq!(section(&out, "other"), ["refused"], "{out}");
    assert_eq!(section(&out, "engine"), ["open"], "{out}");
    assert_eq!(section(&out, "host port"), ["refused"], "{out}");
    // Each refused destination is told once in the worker's log.
    assert!(
        err.contains(&format!("connection to {r}:9081 refused")),
        "{err}"
    );
    assert!(err.contains(&format!("10.0.2.2:{op} refused")), "{err}");
    drop((engine, other));
}
