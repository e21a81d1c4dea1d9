//! TLS to a real Chef server (goiardi with `--use-ssl`): verification is on by default and a
//! private CA is trusted through the configured CA bundle.

mod common;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};
use vesemir_chef::{ChefInventory, ClientKey, ServerFlavor};
use vesemir_core::ports::Inventory;
use vesemir_testkit::conformance::inventory::selector;
use vesemir_testkit::goiardi::Goiardi;

/// A self-signed certificate for 127.0.0.1 and its key, both PEM.
fn self_signed() -> (Vec<u8>, Vec<u8>) {
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "vesemir test CA").expect("cn");
    let name = name.build();
    let mut builder = X509::builder().expect("builder");
    builder.set_version(2).expect("v3");
    builder
        .set_serial_number(&BigNum::from_u32(1).expect("bn").to_asn1_integer().expect("serial"))
        .expect("serial");
    builder.set_subject_name(&name).expect("subject");
    builder.set_issuer_name(&name).expect("issuer");
    builder.set_pubkey(&key).expect("pubkey");
    builder.set_not_before(&Asn1Time::days_from_now(0).expect("time")).expect("not before");
    builder.set_not_after(&Asn1Time::days_from_now(2).expect("time")).expect("not after");
    builder.append_extension(BasicConstraints::new().critical().ca().build().expect("bc")).expect("bc");
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&builder.x509v3_context(None, None))
        .expect("san");
    builder.append_extension(san).expect("san");
    builder.sign(&key, MessageDigest::sha256()).expect("sign");
    (builder.build().to_pem().expect("pem"), key.private_key_to_pem_pkcs8().expect("key pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_by_default_and_a_ca_bundle_is_trusted() {
    let (cert, key) = self_signed();
    let server = Goiardi::start_tls(&cert, &key);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let admin_key = || ClientKey::from_file(&server.admin_key_path).expect("admin key");

    let mut config = common::config(&server.url, "admin", admin_key());
    config.flavor = ServerFlavor::Goiardi;
    let untrusted = ChefInventory::new(config).expect("inventory");
    let error = untrusted.discover(&selector(&["shop"], &[], &[], None)).await.expect_err("unknown CA");
    assert!(error.is_unreachable(), "{}", error.chain());
    assert!(error.chain().to_lowercase().contains("certificate"), "{}", error.chain());

    let bundle = server.server.dir().join("ca.pem");
    std::fs::write(&bundle, &cert).expect("write bundle");
    let mut config = common::config(&server.url, "admin", admin_key());
    config.ca_bundle = Some(bundle);
    let trusted = ChefInventory::new(config).expect("inventory");
    let admin = trusted.client().clone();
    common::create_nodes(&admin, vec![common::Node::new("web-01", "10.0.0.1", &["shop"])], 1).await;
    let hosts = trusted.discover(&selector(&["shop"], &[], &[], None)).await.expect("trusted CA");
    assert_eq!(hosts.len(), 1);
}
