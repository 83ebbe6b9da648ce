//! Which `Host` names an instance answers for: the defence against DNS rebinding.
//!
//! A page on `evil.example` whose name is re-pointed at 127.0.0.1 is, for the browser, on the
//! same origin as the instance, so `Sec-Fetch-Site` and `Origin` both look like our own pages;
//! only the `Host` header still says `evil.example`. An instance therefore serves only requests
//! whose host name (the port is ignored) is a loopback name or address, the address it is bound
//! to, or a name listed in `[serve] allowed_hosts`. The set is built once; checking a request
//! compares bytes and allocates nothing, since it runs on every request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host names and addresses an instance answers for, besides the loopback ones.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// The address the instance is bound to, unless it is a wildcard (0.0.0.0, ::).
    bound: Option<IpAddr>,
    /// Names from `allowed_hosts`, lowercase, without a trailing dot.
    names: Box<[Box<str>]>,
    /// Addresses from `allowed_hosts`.
    addrs: Box<[IpAddr]>,
}

impl HostPolicy {
    /// The loopback names and addresses, `bound` (the listening address) and `allowed`
    /// (`serve.allowed_hosts`, validated by `config`).
    pub fn new(bound: IpAddr, allowed: &[String]) -> Self {
        let mut names = Vec::new();
        let mut addrs = Vec::new();
        for entry in allowed {
            match parse_ip(entry.as_bytes()) {
                Some(ip) => addrs.push(ip),
                None => names.push(normalize_name(entry).into()),
            }
        }
        Self {
            bound: (!bound.is_unspecified()).then_some(bound.to_canonical()),
            names: names.into(),
            addrs: addrs.into(),
        }
    }

    /// True when a request for `authority` (a `Host` value: `name[:port]`) is served here.
    pub fn allows(&self, authority: &[u8]) -> bool {
        let host = strip_port(authority);
        if let Some(ip) = parse_ip(host) {
            return ip.is_loopback() || Some(ip) == self.bound || self.addrs.contains(&ip);
        }
        let name = host.strip_suffix(b".").unwrap_or(host);
        is_localhost(name)
            || self
                .names
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(name))
    }
}

/// `localhost` and any name under it (RFC 6761: they always resolve to loopback).
fn is_localhost(name: &[u8]) -> bool {
    const LOCALHOST: &[u8] = b"localhost";
    let n = name.len();
    n >= LOCALHOST.len()
        && name[n - LOCALHOST.len()..].eq_ignore_ascii_case(LOCALHOST)
        && (n == LOCALHOST.len() || name[n - LOCALHOST.len() - 1] == b'.')
}

/// `[::1]:3001` → `[::1]`, `host:3001` → `host`, `host` → `host`.
fn strip_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => &authority[..colon],
        None => authority,
    }
}

/// An IPv4 address, or an IPv6 address with or without brackets. IPv4-mapped IPv6 addresses
/// count as the IPv4 address they carry.
fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    if let Some(inner) = text.strip_prefix('[') {
        return inner
            .strip_suffix(']')?
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    if text.starts_with(|c: char| c.is_ascii_digit())
        && let Ok(ip) = text.parse::<Ipv4Addr>()
    {
        return Some(IpAddr::V4(ip));
    }
    // Bare IPv6 is only accepted in the configuration; a Host header must bracket it.
    if !text.contains(':') {
        return None;
    }
    text.parse::<Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bound: &str, allowed: &[&str]) -> HostPolicy {
        let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        HostPolicy::new(bound.parse().expect("an address"), &allowed)
    }

    #[test]
    fn loopback_names_and_addresses_are_always_served() {
        let p = policy("127.0.0.1", &[]);
        for host in [
            "127.0.0.1:3001",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost:3001",
            "LOCALHOST",
            "localhost.",
            "app.localhost:3001",
            "[::1]:3001",
            "[::1]",
            "[::ffff:127.0.0.1]:3001",
        ] {
            assert!(p.allows(host.as_bytes()), "{host}");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        let p = policy("0.0.0.0", &[]);
        for host in [
            "evil.example:3001",
            "evil.example",
            "notlocalhost:3001",
            "localhost.evil.example",
            "10.0.0.5:3001",
            "[fe80::1]:3001",
            "0.0.0.0:3001",
            "",
            "[::1",
            "127.0.0.1.evil.example",
        ] {
            assert!(!p.allows(host.as_bytes()), "{host}");
        }
    }

    #[test]
    fn the_bound_address_and_the_allowed_hosts_are_served() {
        let p = policy(
            "192.168.1.5",
            &["notes.example.com", "Wiki.Example.", "10.0.0.7", "fe80::1"],
        );
        for host in [
            "192.168.1.5:3001",
            "notes.example.com:3001",
            "NOTES.example.com",
            "notes.example.com.:80",
            "wiki.example",
            "10.0.0.7:3001",
            "[fe80::1]:3001",
        ] {
            assert!(p.allows(host.as_bytes()), "{host}");
        }
        for host in ["192.168.1.6:3001", "sub.notes.example.com", "example.com"] {
            assert!(!p.allows(host.as_bytes()), "{host}");
        }
    }
}
