//! The UDP listener: every datagram from a client goes through the shard's core.
//! Datagrams are received in batches and the answers leave in one batched send at the
//! end of each batch (see [`super::mmsg`]).

use std::io;
use std::rc::Rc;

use super::relay_socket::{Binder, send_now};
use super::shard::{ClientLink, Shard, UdpOut};
use crate::relay::{ClientAction, FiveTuple, Now, Transport};
use crate::stats::DropReason;

/// Batched receives handled before yielding to the shard's other tasks.
const ROUNDS: usize = 4;
/// Largest response the core writes (responses are small; this leaves room for SOFTWARE).
const OUT_LEN: usize = 2048;

/// Serves one UDP listener socket until the shard stops.
pub async fn serve(shard: Rc<Shard>, out: Rc<UdpOut>) {
    let socket = Rc::clone(&out.socket);
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let link = ClientLink::Udp(Rc::clone(&out));
    let mut reply = vec![0u8; OUT_LEN].into_boxed_slice();
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let mut busy = true;
        for _ in 0..ROUNDS {
            let received = match shard.receive(&socket) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    busy = false;
                    break;
                }
                // Not a lasting condition for a bound UDP socket; let others run.
                Err(_) => break,
            };
            out.begin_batch();
            let now = Now::read();
            for i in 0..received.count {
                let mut batch = shard.recv.borrow_mut();
                let Some(datagram) = batch.get(i) else {
                    break;
                };
                let from = datagram.from;
                let input = &datagram.slot[datagram.start..datagram.start + datagram.len];
                let five_tuple = FiveTuple {
                    transport: Transport::Udp,
                    client: from,
                    server: local,
                };
                let mut core = shard.core.borrow_mut();
                let mut io = Binder { shard: &shard };
                match core.handle_client(now, five_tuple, &link, input, &mut reply, &mut io) {
                    ClientAction::None => {}
                    ClientAction::Reply(n) => out.push(&reply[..n], from, &shard.stats),
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
            out.end_batch(&shard.stats);
            if received.drained {
                busy = false;
                break;
            }
        }
        // Readiness is cleared only by a short read. Still busy after ROUNDS full
        // batches (or an error): the socket still counts as readable, so readable()
        // returns at once, after the shard's other tasks had their turn.
        if busy {
            tokio::task::yield_now().await;
        }
    }
}
