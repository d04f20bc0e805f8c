#!/usr/bin/env bash
# Extra Docker engines on this machine, each a host of its own: a network namespace with its own
# address, its own dockerd (own config file, data root, exec root and socket) and its own
# containerd. The lab's tests use them as "other machines": a second engine that never built a
# build, engines that cases are spread over, an engine whose daemon is killed mid-run.
#
#   scripts/engines.sh up N     start engines 1..N (one already up is kept); prints per engine:
#                               NAME SOCKET ADDRESS TLS-URL
#   scripts/engines.sh down     stop every engine and remove its namespace, links and data
#   scripts/engines.sh address  the lab host's address as every engine reaches it (a registry
#                               the engines pull from listens there)
#   scripts/engines.sh client   the folder of the lab's client certificate (ca.pem, cert.pem,
#                               key.pem) that every engine's TLS port (2376) asks for
#
# Addresses: the lab host is 10.231.0.1 (on a bridge with no ports: the kernel here has no dummy links); engine I is 10.231.I.2 in namespace
# canary-eI, linked to the host by a veth pair whose host end is 10.231.I.1. Engines reach the
# lab host and nothing else: no default route, so no egress. Needs root, iproute2 and dockerd.
set -euo pipefail

STATE=/run/canary-engines
DATA=/var/lib/canary-engines
LAB_ADDR=10.231.0.1
LAB_LINK=canary-lab0

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "engines.sh: needs root (network namespaces, dockerd)" >&2
        exit 2
    fi
}

lab_address() {
    if ! ip -o addr show dev "$LAB_LINK" 2>/dev/null | grep -q "$LAB_ADDR/"; then
        ip link add "$LAB_LINK" type bridge 2>/dev/null || true
        ip addr add "$LAB_ADDR/32" dev "$LAB_LINK" 2>/dev/null || true
        ip link set "$LAB_LINK" up
    fi
}

# One CA for the engines of this machine; each engine's certificate names its address, and the
# lab's client certificate is the only one they let in.
tls_ca() {
    local d="$STATE/tls"
    [ -f "$d/ca.pem" ] && return
    mkdir -p "$d" "$STATE/client"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout "$d/ca-key.pem" -out "$d/ca.pem" -subj "/CN=Canary Lab engines CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$STATE/client/key.pem" -out "$d/client.csr" -subj "/CN=canary-lab" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > "$d/client.ext"
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
        -days 2 -extfile "$d/client.ext" -out "$STATE/client/cert.pem" 2>/dev/null
    cp "$d/ca.pem" "$STATE/client/ca.pem"
}

tls_server() {
    local i=$1 dir=$2 addr=$3 d="$STATE/tls"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/key.pem" -out "$dir/server.csr" -subj "/CN=$addr" 2>/dev/null
    printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$addr" > "$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
        -days 2 -extfile "$dir/server.ext" -out "$dir/cert.pem" 2>/dev/null
}

storage_driver() {
    docker info --format '{{.Driver}}' 2>/dev/null || echo overlay2
}

up_one() {
    local i=$1 ns="canary-e$1" dir="$STATE/e$1" data="$DATA/e$1"
    local sock="$dir/docker.sock" addr="10.231.$1.2"
    mkdir -p "$dir" "$data"
    if [ -S "$sock" ] && DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; then
        echo "e$i $sock $addr tcp://$addr:2376"
        return
    fi
    tls_server "$i" "$dir" "$addr"
    if ! ip netns list | grep -qw "$ns"; then
        ip netns add "$ns"
        ip link add "clh$i" type veth peer name "cln$i"
        ip link set "cln$i" netns "$ns"
        ip addr add "10.231.$i.1/24" dev "clh$i"
        ip link set "clh$i" up
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip addr add "$addr/24" dev "cln$i"
        ip netns exec "$ns" ip link set "cln$i" up
        ip netns exec "$ns" ip route add "$LAB_ADDR/32" via "10.231.$i.1"
    fi
    cat > "$dir/daemon.json" <<EOF
{
  "data-root": "$data",
  "exec-root": "$dir/exec",
  "pidfile": "$dir/dockerd.pid",
  "hosts": ["unix://$sock", "tcp://$addr:2376"],
  "tlsverify": true,
  "tlscacert": "$STATE/tls/ca.pem",
  "tlscert": "$dir/cert.pem",
  "tlskey": "$dir/key.pem",
  "storage-driver": "$(storage_driver)",
  "mtu": 1400,
  "log-driver": "json-file"
}
EOF
    rm -f "$sock"
    nsenter --net="/run/netns/$ns" setsid dockerd --config-file "$dir/daemon.json" \
        >"$dir/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        if DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; then
            echo "e$i $sock $addr tcp://$addr:2376"
            return
        fi
        sleep 0.25
    done
    echo "engines.sh: engine e$i did not start; its log:" >&2
    tail -20 "$dir/dockerd.log" >&2
    exit 1
}

down_all() {
    local dir i pid
    for dir in "$STATE"/e*; do
        [ -d "$dir" ] || continue
        i=${dir##*/e}
        pid=$(cat "$dir/dockerd.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        # What a killed daemon leaves: its containerd, shims and mounts.
        pkill -9 -f "$dir/exec" 2>/dev/null || true
        pkill -9 -f "$DATA/e$i" 2>/dev/null || true
        ip netns del "canary-e$i" 2>/dev/null || true
        ip link del "clh$i" 2>/dev/null || true
    done
    { grep -oE " ($STATE|$DATA)[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$STATE" "$DATA"
}

case "${1:-}" in
    up)
        need_root
        n=${2:-1}
        case "$n" in ''|*[!0-9]*) echo "engines.sh up N: N is a number from 1 to 9" >&2; exit 2;; esac
        if [ "$n" -lt 1 ] || [ "$n" -gt 9 ]; then echo "engines.sh up N: N is from 1 to 9" >&2; exit 2; fi
        command -v dockerd >/dev/null || { echo "engines.sh: dockerd is not installed" >&2; exit 1; }
        command -v openssl >/dev/null || { echo "engines.sh: openssl is not installed" >&2; exit 1; }
        lab_address
        tls_ca
        for i in $(seq 1 "$n"); do up_one "$i"; done
        ;;
    down)
        need_root
        down_all
        ;;
    client)
        [ -f "$STATE/client/cert.pem" ] || { echo "engines.sh client: no engines are up (scripts/engines.sh up N)" >&2; exit 1; }
        echo "$STATE/client"
        ;;
    address)
        need_root
        lab_address
        echo "$LAB_ADDR"
        ;;
    *)
        echo "usage: scripts/engines.sh up N | down | address | client" >&2
        exit 2
        ;;
esac
