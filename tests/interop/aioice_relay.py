"""Relay datagrams through a TURN server with aioice, an independent TURN client.

Allocates over UDP, TCP or TLS, sends COUNT distinct payloads to an echo peer through
the relay and checks that every one comes back intact. Prints one JSON line with the
relayed address and the number of echoes; exits non-zero on any failure. Every wait
is bounded.
"""

import argparse
import asyncio
import json
import ssl
import sys

from aioice import turn


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.queue.put_nowait((data, addr))


def host_port(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


async def run(args: argparse.Namespace) -> dict:
    context = None
    if args.tls:
        context = ssl.create_default_context(cafile=args.cafile)
    transport, protocol = await asyncio.wait_for(
        turn.create_turn_endpoint(
            Collector,
            server_addr=host_port(args.server),
            username=args.username,
            password=args.password,
            ssl=context,
            transport="tcp" if args.transport in ("tcp", "tls") else "udp",
        ),
        timeout=10,
    )
    peer = host_port(args.peer)
    received = 0
    try:
        for i in range(args.count):
            payload = (f"aioice {args.transport} {i} ".encode()) * (1 + i % 5)
            transport.sendto(payload, peer)
            data, addr = await asyncio.wait_for(protocol.queue.get(), timeout=5)
            if data != payload:
                raise SystemExit(f"payload {i} came back altered")
            if (addr[0], addr[1]) != peer:
                raise SystemExit(f"echo {i} came from {addr}, not the peer {peer}")
            received += 1
        relayed = transport.get_extra_info("sockname")
    finally:
        transport.close()
    return {"relayed": list(relayed), "received": received}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--transport", choices=["udp", "tcp", "tls"], required=True)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--cafile")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(asyncio.wait_for(run(args), timeout=120))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
