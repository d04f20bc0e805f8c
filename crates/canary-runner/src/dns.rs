//! The lab network's DNS for outside names. A lab network is internal: Docker's resolver answers
//! the lab's own names (the forge, the stub) at once, but a lookup of any outside name waits ~20 s
//! for upstream servers it cannot reach, and CLIs that look one up (Codex does) stall for it.
//! `canary-runner lab-dns` answers every query it gets "no such name" at once; case containers
//! name it as their DNS server, so Docker's resolver still answers lab names itself and forwards
//! only outside names here. No CLI timeout is shortened; the lookups just fail fast.

/// The answer to one DNS query: the same id and question, NXDOMAIN, recursion available.
/// `None` for what is not a query (too short, or a response).
pub fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    // The question section: names (labels) then type and class, for each question.
    let mut i = 12;
    for _ in 0..qdcount {
        loop {
            let len = *query.get(i)? as usize;
            if len == 0 {
                i += 1;
                break;
            }
            if len & 0xC0 != 0 {
                // No compression in a question we did not write: refuse to guess.
                return None;
            }
            i += 1 + len;
        }
        i += 4;
        if i > query.len() {
            return None;
        }
    }
    let mut out = Vec::with_capacity(i);
    out.extend_from_slice(&query[..2]);
    // QR=1, opcode copied, RD copied; RA=1, RCODE=3 (NXDOMAIN).
    out.push(0x80 | (query[2] & 0x79));
    out.push(0x83);
    out.extend_from_slice(&query[4..6]);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&query[12..i]);
    Some(out)
}

/// Serves [`answer`] on `addr` (UDP) until the process ends.
pub fn serve(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        if let Some(reply) = answer(&buf[..n]) {
            let _ = socket.send_to(&reply, from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `example.com` A, id 0xbeef, recursion desired.
    fn query() -> Vec<u8> {
        let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["example", "com"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn every_query_gets_no_such_name_with_its_id_and_question() {
        let q = query();
        let a = answer(&q).unwrap();
        assert_eq!(&a[..2], &[0xbe, 0xef]);
        assert_eq!(a[2] & 0x80, 0x80, "a response");
        assert_eq!(a[2] & 0x01, 0x01, "recursion desired is echoed");
        assert_eq!(a[3] & 0x0f, 3, "NXDOMAIN");
        assert_eq!(&a[4..6], &[0, 1], "one question");
        assert_eq!(&a[6..12], &[0; 6], "no answers");
        assert_eq!(&a[12..], &q[12..], "the question echoed");
    }

    #[test]
    fn what_is_not_a_well_formed_query_gets_nothing() {
        assert!(answer(&[0; 5]).is_none());
        let mut response = query();
        response[2] |= 0x80;
        assert!(answer(&response).is_none());
        let mut cut = query();
        cut.truncate(20);
        assert!(answer(&cut).is_none());
        let mut pointer = query();
        pointer[12] = 0xC0;
        assert!(answer(&pointer).is_none());
    }
}
