//! TLS listeners over real sockets: HTTP/2 and HTTP/1.1 by ALPN, `X-Forwarded-Proto: https`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::helpers::{Backend, one_upstream, server, spawn_gateway_with};

/// A self-signed certificate for `localhost`, written as PEM files in `dir`.
fn certificate(dir: &std::path::Path) -> (String, String, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let der = generated.cert.der().clone();
    (
        cert.to_str().unwrap().into(),
        key.to_str().unwrap().into(),
        der,
    )
}

/// A TLS connection to `addr` trusting only `trust`, offering `alpn`.
async fn connect(
    addr: std::net::SocketAddr,
    trust: &CertificateDer<'static>,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// GET `path` over TLS, offering `alpn`: the protocol agreed and the JSON answer.
async fn get(
    addr: std::net::SocketAddr,
    trust: &CertificateDer<'static>,
    alpn: &[u8],
    path: &str,
) -> (Vec<u8>, Value) {
    let stream = connect(addr, trust, alpn).await.unwrap();
    let agreed = stream
        .get_ref()
        .1
        .alpn_protocol()
        .unwrap_or_default()
        .to_vec();
    let io = TokioIo::new(stream);
    let request = http::Request::get(format!("https://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if agreed == b"h2" {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().unwrap();
        parts
            .headers
            .insert(http::header::HOST, "localhost".parse().unwrap());
        sender
            .send_request(http::Request::from_parts(parts, body))
            .await
            .unwrap()
    };
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (agreed, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn a_tls_listener_speaks_h2_and_http1_by_alpn_and_forwards_https() {
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    let gateway = spawn_gateway_with(
        &format!("tls = {{ cert = {cert:?}, key = {key:?} }}"),
        &one_upstream(&[server(backend.addr, "")], ""),
    )
    .await;

    let (agreed, seen) = get(gateway.addr, &der, b"h2", "/over/h2").await;
    assert_eq!(agreed, b"h2");
    assert_eq!(seen["uri"], "/over/h2");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    let (agreed, seen) = get(gateway.addr, &der, b"http/1.1", "/over/h1").await;
    assert_eq!(agreed, b"http/1.1");
    assert_eq!(seen["uri"], "/over/h1");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let answer = crate::proxying::raw(
        gateway.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(backend.hits(), 2);
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections() {
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, old) = certificate(dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "access_log = \"off\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = {cert:?}, key = {key:?} }}\n{}",
            one_upstream(&[server(backend.addr, "")], "")
        ),
    )
    .unwrap();
    let gateway = crate::helpers::spawn_gateway_from_file(config.to_str().unwrap()).await;
    get(gateway.addr, &old, b"h2", "/before").await;
    let kept = connect(gateway.addr, &old, b"http/1.1").await.unwrap();

    // New files in place, then a reload: new connections get the new certificate.
    let other = tempfile::tempdir().unwrap();
    let (new_cert, new_key, new) = certificate(other.path());
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let reload = |gateway: &crate::helpers::TestGateway| {
        gateway
            .client
            .post(format!("http://{}/reload", gateway.admin))
            .header("x-flotilla-admin", "1")
            .send()
    };
    assert_eq!(reload(&gateway).await.unwrap().status(), 200);
    let (_, seen) = get(gateway.addr, &new, b"h2", "/after").await;
    assert_eq!(seen["uri"], "/after");
    assert!(
        connect(gateway.addr, &old, b"h2").await.is_err(),
        "the old certificate is gone"
    );
    drop(kept);

    // A key that does not belong to the certificate: the reload fails and nothing changes.
    let stray = tempfile::tempdir().unwrap();
    let (stray_cert, _, _) = certificate(stray.path());
    std::fs::copy(&stray_cert, &cert).unwrap();
    let refused = reload(&gateway).await.unwrap();
    assert_eq!(refused.status(), 422, "{}", refused.text().await.unwrap());
    get(gateway.addr, &new, b"h2", "/still").await;
}

#[test]
fn certificates_are_read_again_on_reload_and_a_bad_pair_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path());
    let tls = platform::tls::Tls::from_pem_files(&cert, &key).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (cert2, key2, _) = certificate(other.path());
    assert!(tls.reload(&cert2, &key2).is_ok());
    let error = tls.reload(&cert2, &key).unwrap_err();
    assert!(
        error.contains(&cert2),
        "a key that does not match the certificate: {error}"
    );
    let error = tls.reload("/nonexistent.pem", &key).unwrap_err();
    assert!(error.contains("/nonexistent.pem"), "{error}");
    assert!(
        platform::tls::Tls::from_pem_files(&key, &key).is_err(),
        "a key is no certificate"
    );
}
