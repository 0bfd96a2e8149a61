//! The UDP listener: every datagram from a client goes through the shard's core.

use std::io;
use std::rc::Rc;

use tokio::net::UdpSocket;

use super::relay_socket::{Binder, send_now};
use super::shard::{ClientLink, Shard};
use crate::relay::{ClientAction, FiveTuple, Now, Transport};
use crate::stats::DropReason;

/// Datagrams handled before yielding to the shard's other tasks.
const BATCH: usize = 32;
/// Largest response the core writes (responses are small; this leaves room for SOFTWARE).
const OUT_LEN: usize = 2048;

/// Serves one UDP listener socket until the shard stops.
pub async fn serve(shard: Rc<Shard>, socket: Rc<UdpSocket>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let link = ClientLink::Udp(Rc::clone(&socket));
    let mut input = vec![0u8; 65536].into_boxed_slice();
    let mut out = vec![0u8; OUT_LEN].into_boxed_slice();
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let mut handled = 0;
        while handled < BATCH {
            handled += 1;
            let (len, from) = match socket.try_recv_from(&mut input) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            let five_tuple = FiveTuple {
                transport: Transport::Udp,
                client: from,
                server: local,
            };
            let mut core = shard.core.borrow_mut();
            let mut io = Binder { shard: &shard };
            match core.handle_client(
                Now::read(),
                five_tuple,
                &link,
                &input[..len],
                &mut out,
                &mut io,
            ) {
                ClientAction::None => {}
                ClientAction::Reply(n) => {
                    if send_now(&socket, &out[..n], from).is_err() {
                        shard.stats.discard(DropReason::SendFailed);
                    }
                }
                ClientAction::Relay {
                    socket: relay,
                    peer,
                    payload,
                } => {
                    if send_now(&relay.socket, payload, peer).is_err() {
                        shard.stats.discard(DropReason::SendFailed);
                    }
                }
            }
        }
        // Yield only after a full batch: the socket may hold more, and the shard's
        // other tasks deserve a turn. Otherwise readable() waits anyway.
        if handled == BATCH {
            tokio::task::yield_now().await;
        }
    }
}
