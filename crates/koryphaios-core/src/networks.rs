//! Where a credential of ours may be used from: the `allowedCidrs` of API keys and agent tokens.
//!
//! A list of IPv4/IPv6 networks; empty means anywhere. The client address it is checked against
//! is the one the server resolved through its trusted proxies, never a raw header.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::validation::FieldError;

/// The most networks one key or token may list.
pub const MAX_NETWORKS: usize = 20;

/// The networks a caller may come from (empty: anywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Vec<IpNet>);

impl AllowedNetworks {
    /// Checks a client-supplied list: at most [`MAX_NETWORKS`] CIDRs (`10.0.0.0/8`,
    /// `2001:db8::/32`; a bare address means just that host). Host bits are cleared, so
    /// `10.1.2.3/8` is stored as `10.0.0.0/8`.
    pub fn parse(field: &str, raw: &[String]) -> Result<Self, FieldError> {
        if raw.len() > MAX_NETWORKS {
            return Err(FieldError::new(
                field,
                format!("must list at most {MAX_NETWORKS} networks"),
            ));
        }
        raw.iter()
            .enumerate()
            .map(|(index, text)| {
                let text = text.trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        FieldError::new(
                            format!("{field}[{index}]"),
                            "must be an IPv4 or IPv6 CIDR such as 10.0.0.0/8 or 2001:db8::/32",
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether the list restricts anything.
    pub fn is_unrestricted(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a client at `ip` may use the credential. An IPv4 client seen as an IPv4-mapped
    /// IPv6 address (`::ffff:10.0.0.1`, a dual-stack listener) is checked as IPv4.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether every network here lies inside `outer` (a token minted by a restricted key may
    /// narrow the key's networks, never widen them). Anything lies inside an unrestricted list.
    pub fn is_within(&self, outer: &Self) -> bool {
        outer.is_unrestricted()
            || (!self.is_unrestricted()
                && self
                    .0
                    .iter()
                    .all(|net| outer.0.iter().any(|o| o.contains(net))))
    }

    /// The networks as text (`10.0.0.0/8`), in order.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// The stored form: space-separated CIDRs, `None` when unrestricted.
    pub fn to_stored(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.to_strings().join(" "))
    }

    /// Reads the stored form back.
    pub fn from_stored(stored: Option<&str>) -> Result<Self, String> {
        stored
            .unwrap_or_default()
            .split_whitespace()
            .map(|net| net.parse::<IpNet>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(raw: &[&str]) -> AllowedNetworks {
        let raw: Vec<String> = raw.iter().map(|s| (*s).to_owned()).collect();
        AllowedNetworks::parse("allowedCidrs", &raw).unwrap()
    }

    #[test]
    fn lists_parse_normalise_and_allow() {
        let list = nets(&["10.1.2.3/8", "2001:db8::/32", "192.0.2.7"]);
        assert_eq!(
            list.to_strings(),
            ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]
        );
        assert!(list.allows("10.200.0.1".parse().unwrap()));
        assert!(list.allows("::ffff:10.0.0.1".parse().unwrap()));
        assert!(list.allows("2001:db8::1".parse().unwrap()));
        assert!(list.allows("192.0.2.7".parse().unwrap()));
        assert!(!list.allows("192.0.2.8".parse().unwrap()));
        assert!(!list.allows("11.0.0.1".parse().unwrap()));
        assert!(AllowedNetworks::default().allows("203.0.113.1".parse().unwrap()));
        let stored = list.to_stored();
        assert_eq!(
            AllowedNetworks::from_stored(stored.as_deref()).unwrap(),
            list
        );
        assert_eq!(AllowedNetworks::default().to_stored(), None);
    }

    #[test]
    fn bad_lists_name_the_entry() {
        for bad in ["10.0.0.0/33", "not-an-ip", "10.0.0.0/8; drop", ""] {
            let error = AllowedNetworks::parse("allowedCidrs", &[bad.to_owned()]).unwrap_err();
            assert_eq!(error.field, "allowedCidrs[0]", "{bad:?}");
        }
        let many = vec!["10.0.0.0/8".to_owned(); MAX_NETWORKS + 1];
        assert!(AllowedNetworks::parse("allowedCidrs", &many).is_err());
    }

    #[test]
    fn narrowing_is_within_and_widening_is_not() {
        let key = nets(&["10.0.0.0/8"]);
        assert!(nets(&["10.1.0.0/16"]).is_within(&key));
        assert!(!nets(&["10.0.0.0/7"]).is_within(&key));
        assert!(!AllowedNetworks::default().is_within(&key));
        assert!(nets(&["192.0.2.0/24"]).is_within(&AllowedNetworks::default()));
    }
}
