//! The connection layer: slow or idle clients are dropped, open connections are capped, oversize
//! request heads are refused, and the metrics can move to a listener of their own.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::{TestApp, assert_error, assert_security_headers};

fn address(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes (Ok(bytes)) or `within` passes (Err).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return Err(()),
            Ok(Ok(0) | Err(_)) => return Ok(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_dropped() {
    let app = TestApp::spawn_with(&[("KORYPHAIOS_HTTP_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut silent = TcpStream::connect(address(&app)).await.unwrap();
    let mut trickle = TcpStream::connect(address(&app)).await.unwrap();
    trickle
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Bytes keep coming, but the head never ends.
        let _ = trickle.write_all(b"X-Slow: 1\r\n").await;
    }
    assert!(
        read_until_closed(&mut trickle, Duration::from_secs(5))
            .await
            .is_ok(),
        "a trickling head is cut off"
    );
    assert!(
        read_until_closed(&mut silent, Duration::from_secs(5))
            .await
            .is_ok(),
        "a connection that never sends is closed"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = TestApp::spawn_with(&[("KORYPHAIOS_HTTP_KEEP_ALIVE_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(6))
        .await
        .expect("closed after the idle timeout");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn open_connections_are_capped_and_a_freed_slot_serves_the_next() {
    let app = TestApp::spawn_with(&[("KORYPHAIOS_HTTP_MAX_CONNECTIONS", "2")]).await;
    let first = TcpStream::connect(address(&app)).await.unwrap();
    let _second = TcpStream::connect(address(&app)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(address(&app)).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut third, Duration::from_millis(700))
            .await
            .is_err(),
        "the third connection waits while two are open"
    );
    drop(first);
    let answer = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("served once a slot is free");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_oversize_request_head_is_refused_with_431() {
    let app = TestApp::spawn_with(&[("KORYPHAIOS_HTTP_MAX_HEADER_BYTES", "8192")]).await;
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-padding", "p".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let fine = app
        .client
        .get(app.url("/health"))
        .header("x-padding", "p".repeat(4_000))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener() {
    let app = TestApp::spawn_with(&[("KORYPHAIOS_METRICS_ADDR", "127.0.0.1:0")]).await;
    assert_error(
        app.client.get(app.url("/metrics")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let metrics = app.metrics_base.clone().expect("a metrics listener");
    let response = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_security_headers(response.headers());
    let text = response.text().await.unwrap();
    assert!(
        text.contains("rate_limit_hits_total{"),
        "known series exist at 0"
    );
    assert!(text.contains("credentials_stored{"));
    assert_error(
        app.client
            .get(format!("{metrics}/api/v1/credentials"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_responses_is_dropped() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_HTTP_MAX_CONNECTIONS", "1"),
        ("KORYPHAIOS_HTTP_KEEP_ALIVE_TIMEOUT_SECS", "1"),
    ])
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket
        .connect(address(&app).parse().unwrap())
        .await
        .unwrap();
    // Far more response bytes than the socket buffers hold, and never a byte read.
    let pipelined = "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(400);
    stalled.write_all(pipelined.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The only connection slot is held by the stalled writer until it is dropped.
    let mut next = TcpStream::connect(address(&app)).await.unwrap();
    next.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut next, Duration::from_secs(8))
        .await
        .expect("the stalled connection is dropped and its slot serves the next client");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    drop(stalled);
}
