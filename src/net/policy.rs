//! Who a worker may reach: its egress policy.
//!
//! By default a worker reaches any address the host can, except the host itself: host
//! loopback and the host's own addresses are closed, but for the engine port and the ports
//! `network.host_ports` lists, which the worker reaches at its gateway address. With
//! `network.allow`, only what the list names is reachable:
//!
//! - `10.1.0.0/16`, `192.0.2.7` — addresses (a CIDR or one address), any port;
//! - `api.example.com`, `*.example.com` — names, matched against what the worker looked up
//!   through its gateway's DNS (an address it never resolved to that name is not let through);
//! - `db.example.com:5432`, `10.0.0.0/8:443`, `*:53` — any of those, on one port only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;

/// One `allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    target: Target,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Any,
    Net {
        addr: u32,
        prefix: u8,
    },
    /// Lower case; `*.` at the front matches any subdomain.
    Name(String),
}

impl Rule {
    /// Parse one `allow` entry; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Rule, String> {
        let s = s.trim();
        let (target, port) = match s.rsplit_once(':') {
            Some((t, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?}: {p:?} is not a port"))?;
                (t, Some(port))
            }
            None => (s, None),
        };
        let target = if target == "*" {
            Target::Any
        } else if let Some((a, p)) = target.split_once('/') {
            let addr: Ipv4Addr = a
                .parse()
                .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
            let prefix: u8 = p
                .parse()
                .ok()
                .filter(|p| *p <= 32)
                .ok_or_else(|| format!("{s:?}: /{p} is not a prefix length (0-32)"))?;
            Target::Net {
                addr: u32::from(addr) & mask(prefix),
                prefix,
            }
        } else if let Ok(addr) = target.parse::<Ipv4Addr>() {
            Target::Net {
                addr: u32::from(addr),
                prefix: 32,
            }
        } else {
            let name = target.to_ascii_lowercase();
            let bare = name.strip_prefix("*.").unwrap_or(&name);
            let ok = !bare.is_empty()
                && bare.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(format!(
                    "{s:?}: not a CIDR, an address or a host name (optionally with :PORT)"
                ));
            }
            Target::Name(name)
        };
        Ok(Rule { target, port })
    }

    fn matches(&self, ip: Ipv4Addr, port: u16, names: &[String]) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.target {
            Target::Any => true,
            Target::Net { addr, prefix } => u32::from(ip) & mask(*prefix) == *addr,
            Target::Name(n) => names.iter().any(|have| match n.strip_prefix("*.") {
                Some(suffix) => have.ends_with(&format!(".{suffix}")) || have == suffix,
                None => have == n,
            }),
        }
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// What to do with a connection (or datagram) the worker starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Open it to this address.
    Allow,
    /// Open it to host loopback at this port (the worker addressed its gateway).
    HostLoopback(u16),
    /// Refuse it, for this reason (logged once per destination).
    Deny(String),
}

/// Names the worker's DNS lookups returned for each address (bounded: the oldest are
/// forgotten first).
#[derive(Default)]
struct Names {
    by_ip: HashMap<Ipv4Addr, Vec<String>>,
    order: VecDeque<Ipv4Addr>,
}

const MAX_NAMED_ADDRESSES: usize = 4096;

/// A worker's egress policy, and what it learnt from the worker's DNS lookups.
pub struct Policy {
    allow: Option<Vec<Rule>>,
    host_ports: Vec<u16>,
    engine_port: u16,
    gateway: Ipv4Addr,
    names: Names,
    told: HashSet<(Ipv4Addr, u16)>,
}

impl Policy {
    pub fn new(
        allow: Option<Vec<Rule>>,
        host_ports: Vec<u16>,
        engine_port: u16,
        gateway: Ipv4Addr,
    ) -> Policy {
        Policy {
            allow,
            host_ports,
            engine_port,
            gateway,
            names: Names::default(),
            told: HashSet::new(),
        }
    }

    /// The worker's DNS lookup of `name` answered `ips`.
    pub fn learn(&mut self, name: &str, ips: &[Ipv4Addr]) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        for ip in ips {
            let names = self.names.by_ip.entry(*ip).or_default();
            if names.is_empty() {
                self.names.order.push_back(*ip);
            }
            if !names.contains(&name) && names.len() < 16 {
                names.push(name.clone());
            }
        }
        while self.names.order.len() > MAX_NAMED_ADDRESSES {
            if let Some(old) = self.names.order.pop_front() {
                self.names.by_ip.remove(&old);
            }
        }
    }

    /// May the worker open a connection to `ip:port`?
    pub fn check(&self, ip: Ipv4Addr, port: u16) -> Verdict {
        if ip == self.gateway {
            return if port == self.engine_port || self.host_ports.contains(&port) {
                Verdict::HostLoopback(port)
            } else {
                Verdict::Deny(format!(
                    "port {port} of the host is not open to workers (network.host_ports)"
                ))
            };
        }
        if ip.is_loopback() || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Verdict::Deny(format!("{ip} is not a destination a worker may use"));
        }
        let Some(rules) = &self.allow else {
            return Verdict::Allow;
        };
        let names = self.names.by_ip.get(&ip).map(Vec::as_slice).unwrap_or(&[]);
        if rules.iter().any(|r| r.matches(ip, port, names)) {
            Verdict::Allow
        } else {
            let known = match names.first() {
                Some(n) => format!(" ({n})"),
                None => String::new(),
            };
            Verdict::Deny(format!("{ip}:{port}{known} is not in network.allow"))
        }
    }

    /// Whether the host's own address `ip` may be reached: only when `allow` names it.
    pub fn host_address_allowed(&self, ip: Ipv4Addr, port: u16) -> bool {
        let names = self.names.by_ip.get(&ip).map(Vec::as_slice).unwrap_or(&[]);
        self.allow.as_ref().is_some_and(|rules| {
            rules
                .iter()
                .any(|r| r.target != Target::Any && r.matches(ip, port, names))
        })
    }

    /// True the first time a refusal of `ip:port` is to be told (the log gets one line each).
    pub fn first_refusal(&mut self, ip: Ipv4Addr, port: u16) -> bool {
        if self.told.len() >= 1024 {
            return false;
        }
        self.told.insert((ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    fn policy(allow: &[&str]) -> Policy {
        let rules = allow.iter().map(|r| Rule::parse(r).unwrap()).collect();
        Policy::new(Some(rules), vec![5432], 49134, GW)
    }

    #[test]
    fn rules_parse_and_refuse_nonsense() {
        for good in [
            "10.0.0.0/8",
            "192.0.2.7",
            "api.example.com",
            "*.example.com:443",
            "*:53",
            "10.1.0.0/16:80",
        ] {
            Rule::parse(good).unwrap();
        }
        for bad in [
            "10.0.0.0/33",
            "300.1.1.1/8",
            "host:99999",
            "a..b",
            "exa mple.com",
            "x:0",
            "",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_lists_addresses_names_and_ports() {
        let mut p = policy(&["10.9.0.0/16", "api.example.com:443", "*.cdn.example:80"]);
        assert_eq!(p.check(Ipv4Addr::new(10, 9, 3, 4), 1), Verdict::Allow);
        assert!(matches!(
            p.check(Ipv4Addr::new(10, 10, 0, 1), 1),
            Verdict::Deny(_)
        ));
        let api = Ipv4Addr::new(192, 0, 2, 10);
        assert!(
            matches!(p.check(api, 443), Verdict::Deny(_)),
            "not looked up yet"
        );
        p.learn("API.example.com.", &[api]);
        assert_eq!(p.check(api, 443), Verdict::Allow);
        assert!(matches!(p.check(api, 80), Verdict::Deny(_)));
        p.learn("img.cdn.example", &[Ipv4Addr::new(192, 0, 2, 11)]);
        assert_eq!(p.check(Ipv4Addr::new(192, 0, 2, 11), 80), Verdict::Allow);
    }

    #[test]
    fn the_host_is_closed_but_for_the_engine_and_listed_ports() {
        let p = Policy::new(None, vec![5432], 49134, GW);
        assert_eq!(p.check(Ipv4Addr::new(203, 0, 113, 5), 443), Verdict::Allow);
        assert_eq!(p.check(GW, 49134), Verdict::HostLoopback(49134));
        assert_eq!(p.check(GW, 5432), Verdict::HostLoopback(5432));
        assert!(matches!(p.check(GW, 22), Verdict::Deny(_)));
        assert!(matches!(p.check(Ipv4Addr::LOCALHOST, 80), Verdict::Deny(_)));
        assert!(!p.host_address_allowed(Ipv4Addr::new(192, 168, 1, 5), 80));
        let p = policy(&["192.168.1.5"]);
        assert!(p.host_address_allowed(Ipv4Addr::new(192, 168, 1, 5), 80));
    }
}
