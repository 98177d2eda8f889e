//! Frames the stack writes itself rather than through a smoltcp socket: a TCP reset for a
//! refused connection, an ICMP "unreachable" for one that cannot be made, and UDP datagrams
//! relayed back from the host. Built with smoltcp's wire types.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable,
    Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket,
    TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr, ETHERNET_HEADER_LEN,
};

/// The link-layer addresses of a frame to the worker.
#[derive(Debug, Clone, Copy)]
pub struct Macs {
    pub gateway: EthernetAddress,
    pub worker: EthernetAddress,
}

/// An Ethernet + IPv4 frame whose payload `emit` writes (`len` bytes).
fn ipv4_frame(
    macs: Macs,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    len: usize,
    emit: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len: len,
        hop_limit: 64,
    };
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + ip.buffer_len() + len];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: macs.gateway,
        dst_addr: macs.worker,
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    let mut ipp = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut ipp, &ChecksumCapabilities::default());
    emit(ipp.payload_mut());
    buf
}

/// The reset that refuses a worker's SYN (`seq` is the SYN's sequence number): the worker's
/// connect fails with "connection refused".
pub fn tcp_reset(
    macs: Macs,
    worker: (Ipv4Addr, u16),
    remote: (Ipv4Addr, u16),
    seq: TcpSeqNumber,
) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: remote.1,
        dst_port: worker.1,
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(0),
        ack_number: Some(seq + 1),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let (src, dst) = (IpAddress::Ipv4(remote.0), IpAddress::Ipv4(worker.0));
    ipv4_frame(
        macs,
        remote.0,
        worker.0,
        IpProtocol::Tcp,
        tcp.buffer_len(),
        |b| {
            tcp.emit(
                &mut TcpPacket::new_unchecked(b),
                &src,
                &dst,
                &ChecksumCapabilities::default(),
            )
        },
    )
}

/// An ICMP destination-unreachable about `original` (the worker's IPv4 packet), from the
/// gateway: the worker's connect or send fails with that reason.
pub fn unreachable(
    macs: Macs,
    gateway: Ipv4Addr,
    reason: Icmpv4DstUnreachable,
    original: &[u8],
) -> Option<Vec<u8>> {
    let orig = Ipv4Packet::new_checked(original).ok()?;
    let header = Ipv4Repr::parse(&orig, &ChecksumCapabilities::ignored()).ok()?;
    let data = &orig.payload()[..orig.payload().len().min(8)];
    let icmp = Icmpv4Repr::DstUnreachable {
        reason,
        header,
        data,
    };
    Some(ipv4_frame(
        macs,
        gateway,
        header.src_addr,
        IpProtocol::Icmp,
        icmp.buffer_len(),
        |b| {
            icmp.emit(
                &mut Icmpv4Packet::new_unchecked(b),
                &ChecksumCapabilities::default(),
            )
        },
    ))
}

/// A UDP datagram from `from` to the worker's `to`.
pub fn udp(macs: Macs, from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: from.1,
        dst_port: to.1,
    };
    let (src, dst) = (IpAddress::Ipv4(from.0), IpAddress::Ipv4(to.0));
    ipv4_frame(
        macs,
        from.0,
        to.0,
        IpProtocol::Udp,
        repr.header_len() + payload.len(),
        |b| {
            repr.emit(
                &mut UdpPacket::new_unchecked(b),
                &src,
                &dst,
                payload.len(),
                |p| p.copy_from_slice(payload),
                &ChecksumCapabilities::default(),
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACS: Macs = Macs {
        gateway: EthernetAddress([0x52, 0x55, 10, 0, 2, 2]),
        worker: EthernetAddress([0x52, 0x55, 10, 0, 2, 15]),
    };
    const W: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    const R: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    #[test]
    fn frames_parse_back_with_valid_checksums() {
        let f = tcp_reset(MACS, (W, 40000), (R, 80), TcpSeqNumber(1000));
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(&IpAddress::Ipv4(R), &IpAddress::Ipv4(W)));
        assert!(tcp.rst() && tcp.ack());
        assert_eq!(tcp.ack_number(), TcpSeqNumber(1001));
        assert_eq!((tcp.src_port(), tcp.dst_port()), (80, 40000));

        let u = udp(MACS, (R, 53), (W, 5353), b"hello");
        let eth = EthernetFrame::new_checked(&u[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let p = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(p.verify_checksum(&IpAddress::Ipv4(R), &IpAddress::Ipv4(W)));
        assert_eq!(p.payload(), b"hello");

        let orig = &f[ETHERNET_HEADER_LEN..];
        let i = unreachable(
            MACS,
            Ipv4Addr::new(10, 0, 2, 2),
            Icmpv4DstUnreachable::HostUnreachable,
            orig,
        )
        .unwrap();
        let eth = EthernetFrame::new_checked(&i[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(ip.dst_addr(), R, "sent back to the original sender");
    }
}
