//! The daemon starts, answers a Binding request, and stops with status 0 on SIGTERM.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::Daemon;

#[test]
fn binding_over_udp_and_clean_stop() {
    let daemon = Daemon::start();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A minimal RFC 8489 Binding request: type 0x0001, length 0, cookie, transaction id.
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(&[7u8; 12]);
    socket.send_to(&req, daemon.addr()).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).expect("binding response");
    assert_eq!(&buf[0..2], &[0x01, 0x01], "Binding success response");
    assert_eq!(&buf[8..20], &[7u8; 12], "same transaction id");
    assert!(n > 20);
    let status = daemon.stop();
    assert!(status.success(), "exit status {status:?}");
}
