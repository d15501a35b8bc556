//! Which of the machine's addresses to register: the one peers on other nodes can reach.
//!
//! Seed 004's bug: a Swarm task attached to the ingress network (`10.255.0.0/16`) and an app
//! overlay registered its ingress address, which no other node can route to. The choice here, in
//! order: `FLOTILLA_ADVERTISE_ADDR` as given; else the address in `FLOTILLA_ADVERTISE_NETWORK` (a
//! CIDR or an interface name; an error if there is none, never a guess); else the address the
//! service is bound to, if it is a specific one; else the first IPv4 address (then IPv6) that is
//! neither loopback, link-local nor in the ingress network.

use std::net::IpAddr;

use ipnet::IpNet;

/// Docker Swarm's default ingress network, never reachable from other nodes' tasks.
const INGRESS: &str = "10.255.0.0/16";

/// `FLOTILLA_ADVERTISE_NETWORK`: a network or an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    Cidr(IpNet),
    Interface(String),
}

impl Network {
    pub fn parse(value: &str) -> Result<Network, String> {
        let value = value.trim();
        if value.contains('/') {
            return value
                .parse()
                .map(Network::Cidr)
                .map_err(|_| "a network such as 10.0.9.0/24, or an interface name".to_string());
        }
        if value.is_empty()
            || value.len() > 15
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        {
            return Err(
                "a network such as 10.0.9.0/24, or an interface name such as eth1".to_string(),
            );
        }
        Ok(Network::Interface(value.to_string()))
    }
}

/// The machine's interface addresses, as (interface name, address).
pub fn interfaces() -> Vec<(String, IpAddr)> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addresses
        .filter_map(|entry| {
            let address = entry.address?;
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(address.as_sockaddr_in6()?.ip())
            };
            Some((entry.interface_name, ip))
        })
        .collect()
}

/// Chooses the address to register, from this machine's interfaces.
pub fn choose(
    addr: Option<IpAddr>,
    network: Option<&Network>,
    bound: IpAddr,
) -> Result<IpAddr, String> {
    choose_from(addr, network, bound, &interfaces())
}

/// [`choose`], from the given interface addresses.
pub fn choose_from(
    addr: Option<IpAddr>,
    network: Option<&Network>,
    bound: IpAddr,
    interfaces: &[(String, IpAddr)],
) -> Result<IpAddr, String> {
    if let Some(addr) = addr {
        return Ok(addr);
    }
    let listed = || {
        interfaces
            .iter()
            .map(|(name, ip)| format!("{name} {ip}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match network {
        Some(Network::Cidr(net)) => {
            return interfaces
                .iter()
                .map(|(_, ip)| *ip)
                .find(|ip| net.contains(ip))
                .ok_or_else(|| {
                    format!(
                        "no address of this machine is in {net} (it has: {})",
                        listed()
                    )
                });
        }
        Some(Network::Interface(name)) => {
            let on = interfaces
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, ip)| *ip);
            let mut on: Vec<IpAddr> = on.collect();
            on.sort_by_key(|ip| ip.is_ipv6());
            return on.into_iter().find(|ip| !is_link_local(ip)).ok_or_else(|| {
                format!(
                    "interface {name} has no usable address (this machine has: {})",
                    listed()
                )
            });
        }
        None => {}
    }
    if !bound.is_unspecified() {
        return Ok(bound);
    }
    let ingress: IpNet = INGRESS.parse().expect("a valid network");
    let usable = |ip: &&IpAddr| !ip.is_loopback() && !is_link_local(ip) && !ingress.contains(*ip);
    let candidates: Vec<&IpAddr> = interfaces.iter().map(|(_, ip)| ip).filter(usable).collect();
    candidates
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| candidates.first())
        .map(|ip| **ip)
        .ok_or_else(|| {
            format!(
                "this machine has no address other than loopback or ingress ({})",
                listed()
            )
        })
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Swarm task on the ingress network and an app overlay, in the order Docker attaches them.
    fn swarm_task() -> Vec<(String, IpAddr)> {
        [
            ("lo", "127.0.0.1"),
            ("eth0", "10.255.0.7"),
            ("eth1", "172.18.0.4"),
            ("eth2", "10.0.9.5"),
            ("eth2", "fe80::1"),
        ]
        .into_iter()
        .map(|(n, ip)| (n.to_string(), ip.parse().unwrap()))
        .collect()
    }

    fn unspecified() -> IpAddr {
        "0.0.0.0".parse().unwrap()
    }

    #[test]
    fn the_ingress_address_is_never_chosen() {
        let chosen = choose_from(None, None, unspecified(), &swarm_task()).unwrap();
        assert_ne!(chosen.to_string(), "10.255.0.7");
        let network = Network::parse("10.0.9.0/24").unwrap();
        let chosen = choose_from(None, Some(&network), unspecified(), &swarm_task()).unwrap();
        assert_eq!(chosen.to_string(), "10.0.9.5");
        let interface = Network::parse("eth2").unwrap();
        let chosen = choose_from(None, Some(&interface), unspecified(), &swarm_task()).unwrap();
        assert_eq!(chosen.to_string(), "10.0.9.5");
    }

    #[test]
    fn an_explicit_address_or_a_specific_bind_wins_and_a_missing_network_is_an_error() {
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            choose_from(Some(addr), None, unspecified(), &swarm_task()),
            Ok(addr)
        );
        let bound: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(choose_from(None, None, bound, &swarm_task()), Ok(bound));
        let elsewhere = Network::parse("10.0.42.0/24").unwrap();
        let error = choose_from(None, Some(&elsewhere), unspecified(), &swarm_task()).unwrap_err();
        assert!(
            error.contains("10.0.42.0/24") && error.contains("eth2 10.0.9.5"),
            "{error}"
        );
        let missing = Network::parse("eth9").unwrap();
        assert!(choose_from(None, Some(&missing), unspecified(), &swarm_task()).is_err());
        assert!(Network::parse("10.0.9.0/99").is_err());
        assert!(Network::parse("eth 1").is_err());
    }
}
