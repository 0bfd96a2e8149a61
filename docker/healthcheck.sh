#!/bin/bash
# Container health check for tarn: GET /healthz on the metrics listener, healthy only on
# "200". Uses bash's /dev/tcp, so the runtime image needs no curl or wget.
#
#   TARN_HEALTH_ADDR   host:port of [metrics] listen (default 127.0.0.1:9478;
#                      an IPv6 address goes in brackets: [::1]:9478)
#
# Exit 0: healthy. Exit 1: not answering, or answering anything but 200 (503 "draining"
# after SIGTERM). Docker runs this inside the container's network namespace, so a
# loopback metrics listener is reachable from here and from nowhere else.
set -euo pipefail

addr=${TARN_HEALTH_ADDR:-127.0.0.1:9478}
host=${addr%:*}
port=${addr##*:}
host=${host#[}
host=${host%]}

if ! exec 3<>"/dev/tcp/${host}/${port}"; then
    echo "tarn-healthcheck: cannot connect to ${addr}" >&2
    exit 1
fi
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$addr" >&3
status=
IFS= read -r -t 4 status <&3 || true
exec 3<&-
status=${status%$'\r'}
case $status in
HTTP/1.?\ 200\ *)
    exit 0
    ;;
*)
    echo "tarn-healthcheck: ${addr}/healthz answered '${status:-nothing}'" >&2
    exit 1
    ;;
esac
