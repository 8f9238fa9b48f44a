//! The SSRF guard: a tenant's site URL (a store, a WordPress site) must be https and resolve to
//! public addresses only — never loopback, private, link-local (the cloud metadata service),
//! shared, documentation or reserved ranges. Checked when saved and again on every call, whose
//! connection is then pinned to the checked addresses (no DNS rebinding in between). The local
//! stack switches the guard off (`CONNECTORS_ALLOW_PRIVATE_NETWORKS=true`): its fakes run on
//! 127.0.0.1.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use url::Url;

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    let s = ip.segments();
    let first = s.first().copied().unwrap_or_default();
    let nat64 = first == 0x64 && s.get(1) == Some(&0xff9b);
    if nat64 {
        let [_, _, _, _, _, _, hi, lo] = s;
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return public_v4(v4);
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && s.get(1) == Some(&0x0db8)))
}

pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

/// A site URL as stored: scheme and host (and port, path) only, no trailing slash. `Err` says
/// why not, in words for the user.
pub fn normalize_site_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    let mut url = Url::parse(raw.trim()).map_err(|_| "must be a URL such as https://shop.example.com".to_owned())?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err("must be an https:// URL".to_owned()),
    }
    if url.host_str().is_none_or(str::is_empty) || !url.username().is_empty() || url.password().is_some() {
        return Err("must be a URL with a host and no user name or password".to_owned());
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// The addresses `url`'s host resolves to, all public (unless the guard is off).
pub async fn resolve(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let host = url.host_str().ok_or_else(|| "the URL has no host".to_owned())?;
    let port = url.port_or_known_default().unwrap_or(443);
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_for_lookup, port))
        .await
        .map_err(|_| format!("{host} does not resolve to an address"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} does not resolve to an address"));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} points to a private or local address ({}); only public addresses can be connected",
            bad.ip()
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_metadata_and_reserved_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn site_urls_are_https_without_credentials() {
        assert_eq!(
            normalize_site_url(" https://shop.example.com/store/?x=1#y ", false)
                .unwrap()
                .as_str(),
            "https://shop.example.com/store"
        );
        for bad in [
            "http://shop.example.com",
            "ftp://x",
            "https://user:pw@shop.example.com",
            "shop.example.com",
            "",
        ] {
            assert!(normalize_site_url(bad, false).is_err(), "{bad}");
        }
        assert!(normalize_site_url("http://127.0.0.1:8080", true).is_ok());
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused() {
        let url = Url::parse("https://localhost/").unwrap();
        let err = resolve(&url, false).await.unwrap_err();
        assert!(err.contains("private or local"), "{err}");
        assert!(resolve(&url, true).await.is_ok());
        let metadata = Url::parse("http://169.254.169.254/latest/meta-data").unwrap();
        assert!(resolve(&metadata, false).await.is_err());
    }
}
