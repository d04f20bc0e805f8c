#!/usr/bin/env bash
# An OCI image registry for the lab's tests: Debian's docker-registry (the CNCF distribution
# server) with TLS from a CA made for the run and htpasswd (bcrypt) logins. Installs the
# packages when they are missing; started and stopped by the tests, as scripts/postgres.sh does
# for PostgreSQL.
#
#   scripts/oci-registry.sh                       install only; prints the server's path
#   scripts/oci-registry.sh start DIR ADDR PORT USER PASSWORD
#                                                 a registry at https://ADDR:PORT keeping its
#                                                 blobs, CA, key and log under DIR; engines on
#                                                 this machine trust the CA for ADDR:PORT
#                                                 (/etc/docker/certs.d); prints the CA's path
#   scripts/oci-registry.sh stop DIR              stop it, forget the CA, keep DIR's files
set -euo pipefail

install() {
    local missing=()
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v htpasswd >/dev/null || missing+=(apache2-utils)
    command -v openssl >/dev/null || missing+=(openssl)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "oci-registry.sh: installing Debian's ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # The package starts a registry of its own on :5000 where an init system runs; the tests
    # start theirs.
    command -v docker-registry
}

start() {
    local dir=$1 addr=$2 port=$3 user=$4 password=$5
    install >/dev/null
    mkdir -p "$dir/data"
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout ca.key -out ca.crt -subj "/CN=Canary Lab test CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj "/CN=$addr" 2>/dev/null
    printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$addr" > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.crt 2>/dev/null
    htpasswd -Bbn "$user" "$password" > htpasswd
    cat > config.yml <<EOF
version: 0.1
log:
  level: info
  formatter: json
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $addr:$port
  tls:
    certificate: $dir/server.crt
    key: $dir/server.key
auth:
  htpasswd:
    realm: canary-lab
    path: $dir/htpasswd
EOF
    mkdir -p "/etc/docker/certs.d/$addr:$port"
    cp ca.crt "/etc/docker/certs.d/$addr:$port/ca.crt"
    echo "$addr:$port" > certs.d-name
    setsid docker-registry serve config.yml > registry.log 2>&1 < /dev/null &
    echo $! > pid
    for _ in $(seq 1 80); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.crt "https://$addr:$port/v2/" || true)
        if [ "$code" = 401 ]; then
            echo "$dir/ca.crt"
            return
        fi
        sleep 0.25
    done
    echo "oci-registry.sh: the registry did not answer at https://$addr:$port; its log:" >&2
    tail -20 registry.log >&2
    exit 1
}

stop() {
    local dir=$1
    if [ -f "$dir/pid" ]; then
        kill "$(cat "$dir/pid")" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
    if [ -f "$dir/certs.d-name" ]; then
        rm -rf "/etc/docker/certs.d/$(cat "$dir/certs.d-name")"
    fi
}

case "${1:-}" in
    "") install ;;
    start) [ $# -eq 6 ] || { echo "usage: oci-registry.sh start DIR ADDR PORT USER PASSWORD" >&2; exit 2; }; start "$2" "$3" "$4" "$5" "$6" ;;
    stop) [ $# -eq 2 ] || { echo "usage: oci-registry.sh stop DIR" >&2; exit 2; }; stop "$2" ;;
    *) echo "usage: oci-registry.sh [start DIR ADDR PORT USER PASSWORD | stop DIR]" >&2; exit 2 ;;
esac
