//! The host side of a lab network. Docker's `internal` networks stop forwarding to the outside
//! world, but a container on one still routes to its bridge's address on the host, and through
//! it to every service the host listens on (seen on Docker 20.10 with the conformance suite:
//! `canary engine check`). Each lab network gets a bridge interface the lab names, and one
//! firewall rule refuses new connections from that interface to the host; connections the host
//! opens to containers (and their replies) are untouched.

use sha2::{Digest, Sha256};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// The bridge interface of lab network `network`: `cl` and 12 hex digits of its name's hash
/// (interface names are at most 15 bytes).
pub fn bridge_name(network: &str) -> String {
    format!("cl{}", &hex::encode(Sha256::digest(network.as_bytes()))[..12])
}

fn rule(iface: &str) -> [&str; 13] {
    [
        "INPUT",
        "-i",
        iface,
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-m",
        "comment",
        "--comment",
        "canary-lab",
        "-j",
        "REJECT",
    ]
}

fn iptables(op: &str, iface: &str) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(rule(iface))
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Refuses new connections from `iface` to the host. When the rule cannot be added (no
/// iptables, not root), says so once: the lab still runs, with the host reachable.
pub fn close(iface: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = iptables("-I", iface) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!(
                "canary: warning: containers on lab networks can reach services on this host: the firewall rule that refuses them could not be added ({}); run the lab as root to close it",
                crate::text::clean(&e)
            );
        }
    }
}

/// Removes the rule for `iface` (every copy), if any.
pub fn open(iface: &str) {
    for _ in 0..8 {
        if iptables("-D", iface).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_an_interface_name_and_differ_per_network() {
        let a = bridge_name("canary-lab-run-1");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("cl") && a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, bridge_name("canary-lab-run-2"));
    }
}
