"""Two aiortc peers connect through TURN with relay-only ICE and echo COUNT
data-channel messages. The offerer uses --url, the answerer --answer-url (default: the
same server), with the same credentials.

Relay only: aiortc's RTCConfiguration has `iceTransportPolicy` (aiortc 1.16, pinned in requirements-aiortc.txt), which
it hands to aioice as `TransportPolicy.RELAY`: aioice then gathers no host or
server-reflexive candidates (RFC 9429 3.5.3), hides the relay candidates' related
address and ignores mDNS remote candidates. The script also checks that every
candidate in both SDPs is `typ relay` and that the nominated pair joins two relay
candidates, so a change of that behaviour cannot turn the test into a host-to-host
one unnoticed.

For `turns:` aiortc hands aioice `turn_ssl=True`, which makes a default
`ssl.SSLContext` (system CAs and `SSL_CERT_FILE`, hostname checked against the
URL's host): the caller points SSL_CERT_FILE at the test certificate.

Prints one JSON line; exits non-zero on any failure. Every wait is bounded.
"""

import argparse
import asyncio
import json
import sys
import time

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy


class Failure(Exception):
    """The relay test failed; the message says how."""


def sdp_candidates(sdp: str) -> list[str]:
    return [
        line[len("a=") :]
        for line in sdp.splitlines()
        if line.startswith("a=candidate:")
    ]


def candidate_type(line: str) -> str:
    fields = line.split()
    return fields[fields.index("typ") + 1] if "typ" in fields else "?"


def nominated_pair(pc: RTCPeerConnection) -> dict:
    """The nominated candidate pair of the ICE connection under the SCTP transport.

    aiortc's getStats() has no candidate-pair entries, so this reads aioice's
    connection (private attributes; checked, not assumed)."""
    ice = pc.sctp.transport.transport
    connection = getattr(ice.iceGatherer, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    if not nominated:
        raise Failure("no nominated candidate pair (aioice internals changed?)")
    pair = nominated[min(nominated)]

    def describe(c) -> dict:
        return {"type": c.type, "host": c.host, "port": c.port, "transport": c.transport}

    return {
        "local": describe(pair.local_candidate),
        "remote": describe(pair.remote_candidate),
    }


def payload(i: int):
    text = f"aiortc message {i} " + "y" * (i * 53 % 900)
    return text if i % 2 == 0 else text.encode()


async def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()

    def configuration(url: str) -> RTCConfiguration:
        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=[url], username=args.username, credential=args.password)
            ],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )

    offerer = RTCPeerConnection(configuration(args.url))
    answerer = RTCPeerConnection(configuration(args.answer_url or args.url))
    try:

        @answerer.on("datachannel")
        def on_datachannel(channel) -> None:
            @channel.on("message")
            def on_message(message) -> None:
                channel.send(message)

        channel = offerer.createDataChannel("tarn-echo", ordered=True)
        opened = asyncio.get_running_loop().create_future()
        replies: asyncio.Queue = asyncio.Queue()
        channel.on("open", lambda: opened.done() or opened.set_result(True))

        # Fail fast when ICE fails (every pair through the TURN server failed).
        def watch(name: str, pc: RTCPeerConnection) -> None:
            @pc.on("connectionstatechange")
            def on_state() -> None:
                print(f"{name}: connection {pc.connectionState}", file=sys.stderr)
                if pc.connectionState == "failed" and not opened.done():
                    opened.set_exception(
                        Failure(f"{name}: ICE failed through the TURN server")
                    )

        watch("offerer", offerer)
        watch("answerer", answerer)
        channel.on("message", replies.put_nowait)

        # aiortc gathers every candidate inside setLocalDescription (no trickle): the
        # descriptions carry the relay candidates.
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        offer_candidates = sdp_candidates(offerer.localDescription.sdp)
        answer_candidates = sdp_candidates(answerer.localDescription.sdp)
        for side, lines in (("offer", offer_candidates), ("answer", answer_candidates)):
            if not lines:
                raise Failure(f"no candidates in the {side}: TURN allocation failed")
            others = [c for c in lines if candidate_type(c) != "relay"]
            if others:
                raise Failure(f"non-relay candidates in the {side}: {others}")

        try:
            await asyncio.wait_for(opened, timeout=args.timeout)
        except asyncio.TimeoutError:
            raise Failure(f"the data channel did not open within {args.timeout} s")
        connected = time.monotonic() - started

        received = 0
        for i in range(args.count):
            channel.send(payload(i))
            try:
                reply = await asyncio.wait_for(replies.get(), timeout=10)
            except asyncio.TimeoutError:
                raise Failure(f"no echo of message {i} within 10 s")
            if reply != payload(i):
                raise Failure(f"message {i} came back altered: {reply!r:.80}")
            received += 1

        return {
            "received": received,
            "offer_candidates": offer_candidates,
            "answer_candidates": answer_candidates,
            "offerer_pair": nominated_pair(offerer),
            "answerer_pair": nominated_pair(answerer),
            "connected_after_s": round(connected, 2),
            "total_s": round(time.monotonic() - started, 2),
        }
    finally:
        await asyncio.wait_for(
            asyncio.gather(offerer.close(), answerer.close(), return_exceptions=True),
            timeout=10,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="turn: or turns: URL (offerer)")
    parser.add_argument("--answer-url", help="the answerer's server (default: --url)")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=45, help="seconds to connect")
    args = parser.parse_args()
    try:
        result = asyncio.run(asyncio.wait_for(run(args), timeout=args.timeout + 60))
    except (Failure, asyncio.TimeoutError) as e:
        print(f"aiortc_echo: FAILED: {e or 'timed out'}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
