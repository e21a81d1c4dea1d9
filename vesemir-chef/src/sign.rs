//! The Mixlib authentication protocol (the `X-Ops-*` headers every Chef API request carries):
//! version 1.3 (SHA-256 signature) by default, 1.0 (SHA-1, RSA "private encrypt") for older
//! servers.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use openssl::hash::{hash, MessageDigest};
use openssl::rsa::Padding;
use openssl::sign::Signer;
use serde::{Deserialize, Serialize};

use crate::key::ClientKey;

/// The Chef server API version sent in `X-Ops-Server-API-Version` (and signed by 1.3).
/// Version 1 is the current one on Chef Infra Server; goiardi ignores the header.
pub const SERVER_API_VERSION: &str = "1";

/// Which Mixlib authentication protocol version signs requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignVersion {
    /// Protocol 1.0: SHA-1 hashes, the canonical request RSA-encrypted with the private key.
    /// For Chef servers older than 12.
    #[serde(rename = "1.0")]
    V1_0,
    /// Protocol 1.3: SHA-256 hashes and an RSA PKCS#1 v1.5 SHA-256 signature.
    #[default]
    #[serde(rename = "1.3")]
    V1_3,
}

impl SignVersion {
    fn digest(self) -> MessageDigest {
        match self {
            SignVersion::V1_0 => MessageDigest::sha1(),
            SignVersion::V1_3 => MessageDigest::sha256(),
        }
    }

    /// The `X-Ops-Sign` header's value.
    pub fn header(self) -> &'static str {
        match self {
            SignVersion::V1_0 => "algorithm=sha1;version=1.0;",
            SignVersion::V1_3 => "algorithm=sha256;version=1.3",
        }
    }
}

/// One request to sign.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// The URL's path, without the query string (e.g. `/organizations/acme/search/node`).
    pub path: &'a str,
    /// The request body (empty for `GET`).
    pub body: &'a [u8],
    /// The client's name (`X-Ops-Userid`).
    pub client_name: &'a str,
    /// The time of the request, `YYYY-MM-DDTHH:MM:SSZ` in UTC.
    pub timestamp: &'a str,
}

/// The signing headers for `request`, as (name, value) pairs.
pub fn sign(
    key: &ClientKey,
    version: SignVersion,
    request: &RequestToSign<'_>,
) -> Result<Vec<(String, String)>, openssl::error::ErrorStack> {
    let digest = version.digest();
    let content_hash = base64_hash(digest, request.body)?;
    let path = canonical_path(request.path);
    let method = request.method.to_ascii_uppercase();
    let canonical = canonical_request(version, &method, &path, &content_hash, request)?;
    let signature = match version {
        SignVersion::V1_0 => {
            let mut out = vec![0u8; key.rsa().size() as usize];
            let len = key.rsa().private_encrypt(canonical.as_bytes(), &mut out, Padding::PKCS1)?;
            out.truncate(len);
            out
        }
        SignVersion::V1_3 => {
            let mut signer = Signer::new(MessageDigest::sha256(), key.pkey())?;
            signer.update(canonical.as_bytes())?;
            signer.sign_to_vec()?
        }
    };
    let mut headers = vec![
        ("X-Ops-Sign".to_owned(), version.header().to_owned()),
        ("X-Ops-Userid".to_owned(), request.client_name.to_owned()),
        ("X-Ops-Timestamp".to_owned(), request.timestamp.to_owned()),
        ("X-Ops-Content-Hash".to_owned(), content_hash),
        ("X-Ops-Server-API-Version".to_owned(), SERVER_API_VERSION.to_owned()),
    ];
    let encoded = STANDARD.encode(signature);
    // Base64 is ASCII, so splitting its bytes into 60-byte chunks yields valid UTF-8.
    for (index, line) in encoded.as_bytes().chunks(60).enumerate() {
        headers
            .push((format!("X-Ops-Authorization-{}", index + 1), String::from_utf8_lossy(line).into_owned()));
    }
    Ok(headers)
}

/// The text that is signed, as Mixlib defines it for `version`.
fn canonical_request(
    version: SignVersion,
    method: &str,
    path: &str,
    content_hash: &str,
    request: &RequestToSign<'_>,
) -> Result<String, openssl::error::ErrorStack> {
    Ok(match version {
        SignVersion::V1_0 => format!(
            "Method:{method}\nHashed Path:{}\nX-Ops-Content-Hash:{content_hash}\nX-Ops-Timestamp:{}\nX-Ops-UserId:{}",
            base64_hash(MessageDigest::sha1(), path.as_bytes())?,
            request.timestamp,
            request.client_name,
        ),
        SignVersion::V1_3 => format!(
            "Method:{method}\nPath:{path}\nX-Ops-Content-Hash:{content_hash}\nX-Ops-Sign:version=1.3\n\
             X-Ops-Timestamp:{}\nX-Ops-UserId:{}\nX-Ops-Server-API-Version:{SERVER_API_VERSION}",
            request.timestamp, request.client_name,
        ),
    })
}

/// The path as Mixlib signs it: repeated slashes squeezed, no trailing slash (except `/`).
pub fn canonical_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `X-Ops-Timestamp` for now: UTC, second precision.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn base64_hash(digest: MessageDigest, data: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    Ok(STANDARD.encode(hash(digest, data)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_path("/organizations//acme/search/node/"), "/organizations/acme/search/node");
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("//"), "/");
    }
    /// A throwaway key made for this test only (`openssl genrsa -traditional 2048`).
    const TEST_KEY: &str = include_str!("../tests/fixtures/test-client.pem");

    fn signature(headers: &[(String, String)]) -> String {
        headers
            .iter()
            .filter(|(n, _)| n.starts_with("X-Ops-Authorization-"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    const REQUEST: RequestToSign<'static> = RequestToSign {
        method: "post",
        path: "/organizations/acme/search/node/",
        body: br#"{"name":["name"]}"#,
        client_name: "vesemir",
        timestamp: "2026-11-21T12:00:00Z",
    };

    // The expected values were computed independently with the openssl command line over the
    // canonical strings written out by hand from the Mixlib specification:
    //   1.3: printf 'Method:POST\nPath:...\nX-Ops-Content-Hash:...\nX-Ops-Sign:version=1.3\n
    //        X-Ops-Timestamp:...\nX-Ops-UserId:vesemir\nX-Ops-Server-API-Version:1'
    //        | openssl dgst -sha256 -sign test-client.pem | base64
    //   1.0: printf 'Method:POST\nHashed Path:...\nX-Ops-Content-Hash:...\nX-Ops-Timestamp:...
    //        \nX-Ops-UserId:vesemir' | openssl rsautl -sign -inkey test-client.pem | base64
    #[test]
    fn version_1_3_signature_is_pinned() {
        let key = ClientKey::from_pem(TEST_KEY.as_bytes()).expect("test key");
        let headers = sign(&key, SignVersion::V1_3, &REQUEST).expect("sign");
        assert_eq!(header(&headers, "X-Ops-Sign"), "algorithm=sha256;version=1.3");
        assert_eq!(header(&headers, "X-Ops-Content-Hash"), "MDDlo9ardMNf1Bm9/y914cxaWItW5WOvLa+2yeTjhzA=");
        assert_eq!(signature(&headers), "hFnCIu/ECYglrwESi/I4deifmg3tM2aI2+wCrwn4MnATbheJLf+KvPE/HRWtDU3WAAdYQ7Gw1jVu+JSYn44+cEsfo/P1xKuJdyRoPLAEhUOTmUVkWQQFD+6bFI+w2PS6iiHTpImBg+ChZeUQufKsc8V5S/GVwFvsrPMUcCGpafpuPpdLtpOAo1XgZwAbzbz753Llv0ZJEIIK8I92s5XfqwZQuPW7DwYsnH6unqovY5a2UHh2sldZGxCcsbXK7FB25Jxf2/Jg7RrOHWp0AGtnRJamu6bQ0k68buM/p23jcwL2z6Ekralc4eUrJOutUY7ADOf3LoJHzFvIQf970VPouw==");
        assert!(headers
            .iter()
            .filter(|(n, _)| n.starts_with("X-Ops-Authorization-"))
            .all(|(_, v)| v.len() <= 60));
        assert_eq!(header(&headers, "X-Ops-Authorization-6").len(), 44);
    }

    #[test]
    fn version_1_0_signature_is_pinned() {
        let key = ClientKey::from_pem(TEST_KEY.as_bytes()).expect("test key");
        let headers = sign(&key, SignVersion::V1_0, &REQUEST).expect("sign");
        assert_eq!(header(&headers, "X-Ops-Sign"), "algorithm=sha1;version=1.0;");
        assert_eq!(header(&headers, "X-Ops-Content-Hash"), "JL//osRfg/rX53PGPVFw0qp2UvY=");
        assert_eq!(signature(&headers), "TQ3MO9Dq4aFwwCV7PN2v5LddYwknSj4WfABoRJWXn2/Xt/3ZVm4+18lQOGBsGXw2eJfbI6ver16EpL9p5bdN3NKPOjH5yoclw3U6PfZAtJMM6qmLSwZTgAM6DQJG+ryHEnmKMlL77qcGPNoFKctDtfAshKHtS0fEeTpN1OF4tDethdJtR2pp/73gfPPP5rqj2G9BZOwSSna6D0/mSX2tM8iHwRsVITmwHbezhORWpg4lqHOpjKZdWmW+tLh40LBZMAu8cmEYhemTcvhSthxNsPW/l2FlyiJGlPjA5v0rBuK4vb/rOo0AcPZKZjb3NxhO7v/OILPg7okWOLBbWhlxHQ==");
    }

    #[test]
    fn key_debug_is_redacted() {
        let key = ClientKey::from_pem(TEST_KEY.as_bytes()).expect("test key");
        let shown = format!("{key:?}");
        assert_eq!(shown, "ClientKey(RSA 2048 bits, redacted)");
        let refused = ClientKey::from_pem(
            b"-----BEGIN RSA PRIVATE KEY-----\nMIIsecretbytes\n-----END RSA PRIVATE KEY-----\n",
        );
        let message = refused.expect_err("not a key").to_string();
        assert!(!message.contains("secretbytes"), "{message}");
    }
}
