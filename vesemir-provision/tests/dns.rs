//! The DNS adapter against a real BIND 9 named (vesemir-testkit's harness): records added with
//! a TSIG-signed update resolve both ways, an existing name is never taken over, a bad key is
//! refused as unauthorized and changes nothing, removal leaves nothing.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::net::Ipv4Addr;

use vesemir_core::provision::{Dns, DnsZone, Fqdn};
use vesemir_core::PortError;
use vesemir_provision::{DnsConfig, NsupdateDns};
use vesemir_testkit::named::{Named, DNSUTILS_PACKAGE};
use vesemir_testkit::process::require_binary;

fn fqdn(text: &str) -> Fqdn {
    text.parse().unwrap()
}

#[tokio::test]
async fn records_are_added_resolved_refused_and_removed() {
    require_binary("nsupdate", DNSUTILS_PACKAGE);
    require_binary("dig", DNSUTILS_PACKAGE);
    let named = Named::start("lab.test", "55.127.in-addr.arpa");
    let config =
        DnsConfig::new(named.address(), named.key_file(), DnsZone::new(named.reverse_zone()).unwrap());
    let dns = NsupdateDns::new(config.clone());
    let vm = fqdn("vm1.lab.test");
    let address = Ipv4Addr::new(127, 55, 0, 7);

    assert!(dns.resolve(&vm).await.unwrap().is_empty());
    dns.add_records(&vm, address).await.unwrap();
    assert_eq!(dns.resolve(&vm).await.unwrap(), vec![address]);
    assert_eq!(dns.reverse(address).await.unwrap(), vec!["vm1.lab.test".to_owned()]);

    // A name that exists is never taken over.
    let other = Ipv4Addr::new(127, 55, 0, 8);
    let error = dns.add_records(&vm, other).await.unwrap_err();
    assert!(matches!(error, PortError::Rejected { .. }), "{error}");
    assert_eq!(dns.resolve(&vm).await.unwrap(), vec![address]);
    assert!(dns.reverse(other).await.unwrap().is_empty());

    // A wrong key is refused as unauthorized and changes nothing.
    let bad_key = named.dir().join("bad.key");
    let secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";
    std::fs::write(
        &bad_key,
        format!("key \"vesemir-test\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n"),
    )
    .unwrap();
    let bad = NsupdateDns::new(DnsConfig { key_file: bad_key, ..config.clone() });
    let vm2 = fqdn("vm2.lab.test");
    let error = bad.add_records(&vm2, other).await.unwrap_err();
    assert!(matches!(error, PortError::Unauthorized { .. }), "{error}");
    assert!(dns.resolve(&vm2).await.unwrap().is_empty());

    // Removal leaves nothing, and removing again is no error.
    dns.remove_records(&vm, Some(address)).await.unwrap();
    assert!(dns.resolve(&vm).await.unwrap().is_empty());
    assert!(dns.reverse(address).await.unwrap().is_empty());
    dns.remove_records(&vm, Some(address)).await.unwrap();
    dns.remove_records(&vm, None).await.unwrap();
}
