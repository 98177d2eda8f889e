//! The DNS server at the worker's gateway: it answers each query by resolving the name on the
//! host the way the host's own programs do (the C library's resolver: `/etc/hosts`, then the
//! nameservers of `/etc/resolv.conf`), so a name the host can resolve resolves in the worker
//! too. Only IPv4 addresses (`A`) are answered; `AAAA` gets an empty answer (the worker has no
//! IPv6 route) and other types "not implemented".
//!
//! Lookups block, so they run on two resolver threads; the network loop hands them queries and
//! gets answers back through a channel (and its waker). Messages are parsed and built with the
//! `simple-dns` crate.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, Question, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};

/// Queries waiting for a resolver thread beyond this are answered SERVFAIL at once.
pub const MAX_PENDING: usize = 64;
const TTL: u32 = 30;

/// A name and the addresses it resolved to.
pub type Learned = Option<(String, Vec<Ipv4Addr>)>;

/// A query from the worker, and who asked (its UDP port).
pub struct Job {
    pub port: u16,
    pub query: Vec<u8>,
}

/// The answer to a [`Job`], and what the lookup taught the egress policy.
pub struct Answer {
    pub port: u16,
    pub reply: Vec<u8>,
    pub learned: Learned,
}

/// The resolver threads.
pub struct Resolver {
    jobs: mpsc::Sender<Job>,
    pub answers: mpsc::Receiver<Answer>,
    pub pending: usize,
}

impl Resolver {
    /// Start the threads; `wake` is called after each answer is queued.
    pub fn start(wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Resolver> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, answers) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..2 {
            let (rx, tx, wake) = (job_rx.clone(), done_tx.clone(), wake.clone());
            std::thread::Builder::new()
                .name(format!("dns {i}"))
                .spawn(move || loop {
                    let job = match rx.lock().map(|r| r.recv()) {
                        Ok(Ok(j)) => j,
                        _ => return,
                    };
                    let (reply, learned) = answer(&job.query, &|name| lookup(name));
                    if let Some(reply) = reply {
                        if tx
                            .send(Answer {
                                port: job.port,
                                reply,
                                learned,
                            })
                            .is_err()
                        {
                            return;
                        }
                        wake();
                    }
                })?;
        }
        Ok(Resolver {
            jobs,
            answers,
            pending: 0,
        })
    }

    /// Hand a query to the threads (or answer SERVFAIL when too many wait already).
    pub fn submit(&mut self, job: Job) -> Option<Vec<u8>> {
        if self.pending >= MAX_PENDING {
            return failure(&job.query, RCODE::ServerFailure);
        }
        self.pending += 1;
        let _ = self.jobs.send(job);
        None
    }
}

/// The host's IPv4 addresses for `name` (`None`: it does not resolve).
fn lookup(name: &str) -> Option<Vec<Ipv4Addr>> {
    let addrs = (name, 0u16).to_socket_addrs().ok()?;
    let mut v: Vec<Ipv4Addr> = Vec::new();
    for a in addrs {
        if let SocketAddr::V4(a) = a {
            if !v.contains(a.ip()) {
                v.push(*a.ip());
            }
        }
    }
    Some(v)
}

/// A reply to `query` with no answers and `rcode`.
fn failure(query: &[u8], rcode: RCODE) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    let mut r = Packet::new_reply(q.id());
    r.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
    *r.rcode_mut() = rcode;
    r.questions = q.questions.clone();
    r.build_bytes_vec().ok()
}

/// Answer one query with `resolve`; `None` for what is not a query at all (dropped).
pub fn answer(
    query: &[u8],
    resolve: &dyn Fn(&str) -> Option<Vec<Ipv4Addr>>,
) -> (Option<Vec<u8>>, Learned) {
    let Ok(q) = Packet::parse(query) else {
        return (None, None);
    };
    if q.has_flags(PacketFlag::RESPONSE) {
        return (None, None);
    }
    let mut r = Packet::new_reply(q.id());
    r.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
    let mut learned = None;
    match q.questions.as_slice() {
        [question] => {
            let question: Question = question.clone();
            let name = question.qname.to_string();
            match question.qtype {
                QTYPE::TYPE(TYPE::A) => match resolve(&name) {
                    Some(ips) => {
                        for ip in &ips {
                            r.answers.push(ResourceRecord::new(
                                question.qname.clone(),
                                CLASS::IN,
                                TTL,
                                RData::A(A {
                                    address: u32::from(*ip),
                                }),
                            ));
                        }
                        learned = Some((name, ips));
                    }
                    None => *r.rcode_mut() = RCODE::NameError,
                },
                QTYPE::TYPE(TYPE::AAAA) => {
                    if resolve(&name).is_none() {
                        *r.rcode_mut() = RCODE::NameError;
                    }
                }
                _ => *r.rcode_mut() = RCODE::NotImplemented,
            }
            r.questions.push(question);
        }
        _ => *r.rcode_mut() = RCODE::FormatError,
    }
    (r.build_bytes_vec().ok(), learned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::Name;

    fn query(name: &str, ty: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(0x1234);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(ty),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    fn hosts(name: &str) -> Option<Vec<Ipv4Addr>> {
        (name == "remote.test").then(|| vec![Ipv4Addr::new(10, 201, 0, 2)])
    }

    #[test]
    fn a_records_nxdomain_and_the_rest() {
        let (reply, learned) = answer(&query("remote.test", TYPE::A), &hosts);
        let p = Packet::parse(reply.as_ref().unwrap()).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert_eq!(p.rcode(), RCODE::NoError);
        match &p.answers[0].rdata {
            RData::A(a) => assert_eq!(Ipv4Addr::from(a.address), Ipv4Addr::new(10, 201, 0, 2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(learned.unwrap().0, "remote.test");
        let (reply, _) = answer(&query("nope.test", TYPE::A), &hosts);
        assert_eq!(
            Packet::parse(&reply.unwrap()).unwrap().rcode(),
            RCODE::NameError
        );
        let (reply, _) = answer(&query("remote.test", TYPE::AAAA), &hosts);
        let p = Packet::parse(reply.as_ref().unwrap()).unwrap();
        assert!(p.answers.is_empty() && p.rcode() == RCODE::NoError);
        let (reply, _) = answer(&query("remote.test", TYPE::MX), &hosts);
        assert_eq!(
            Packet::parse(&reply.unwrap()).unwrap().rcode(),
            RCODE::NotImplemented
        );
        assert!(answer(b"\x00\x01garbage", &hosts).0.is_none());
    }

    #[test]
    fn the_host_resolver_is_used() {
        // localhost resolves through /etc/hosts on any machine.
        let ips = lookup("localhost").unwrap_or_default();
        assert!(ips.contains(&Ipv4Addr::LOCALHOST), "{ips:?}");
        assert!(lookup("no-such-name.invalid").is_none());
    }
}
