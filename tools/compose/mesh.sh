# shellcheck shell=bash disable=SC2153  # STATE, ROOT, BIN, MESH come from tools/ppn
# Sourced by tools/ppn for `tools/ppn compose ...`: the mesh of docker-compose.yml, one container
# per simulated host, driven as tools/ppn drives the local one. Everything an operator does goes
# through the cloud container (`docker-compose exec cloud ppnctl ...`), as it would on the
# founding node of a real mesh: the network is internal, nothing is published on this machine.

PROJECT=${PPN_COMPOSE_PROJECT:-ppn}
SUBNET=${PPN_SUBNET:-10.250.88}
CSTATE=$STATE/compose
IMAGE=ppn-node:dev
LAPTOPS=("laptop-a $SUBNET.11" "laptop-b $SUBNET.12")  # name and address
export PPN_STATE=$STATE PPN_SUBNET=$SUBNET  # docker-compose.yml reads these
# debootstrap and dockerd live in /usr/sbin, which Bazel's test environment leaves off PATH.
export PATH="$PATH:/usr/sbin:/sbin"

dc() { docker-compose --project-directory "$ROOT" -f "$ROOT/docker-compose.yml" -p "$PROJECT" "$@"; }
ctl() { dc exec -T cloud ppnctl "$@"; }
tenant_ctl() { local t=$1; shift; ctl "$@" --token_file="/state/tokens/$t.token"; }
guest_http() { dc exec -T cloud curl -sf --max-time 2 "http://$1:$2$3"; }
mesh_running() { container_running cloud 2>/dev/null; }
up() { compose_up; }

# ppn-debian:bookworm: a minimal Debian 12 from the archive, the image's only base.
base_image() {
  docker image inspect ppn-debian:bookworm >/dev/null 2>&1 && return
  echo "making ppn-debian:bookworm with debootstrap (about half a minute)..."
  local rootfs
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$rootfs" "${PPN_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    > "$CSTATE/debootstrap.log" 2>&1 || { tail -5 "$CSTATE/debootstrap.log" >&2; rm -rf "$rootfs"; exit 1; }
  tar -C "$rootfs" -c . | docker import - ppn-debian:bookworm >/dev/null
  rm -rf "$rootfs"
}

# ppn-node:dev from a staged context: the binaries, the test guest (its catalog rewritten for
# /opt/ppn/guest) and the entry point.
node_image() {
  local ctx=$CSTATE/image b
  rm -rf "$ctx"
  mkdir -p "$ctx/bin" "$ctx/guest"
  for b in ledger/ledger ledger/ledger_verify ledger/ledger_tool pairing/pairing pairing/pairing_admin \
           fleet/fleet relay/relay scheduler/scheduler tenant_proxy/tenant_proxy host_agent/host_agent tools/ppnctl/ppnctl; do
    cp -L "$BIN/$b" "$ctx/bin/"
  done
  cp -L "$STATE/guest/vmlinuz" "$STATE/guest/initramfs.cpio.gz" "$STATE/guest/base.qcow2" "$ctx/guest/"
  sed "s|$STATE/guest|/opt/ppn/guest|g" "$STATE/guest/catalog.json" > "$ctx/guest/catalog.json"
  cp tools/compose/Dockerfile tools/compose/ppn-node tools/ports "$ctx/"
  echo "building $IMAGE..."
  docker build -t "$IMAGE" "$ctx" > "$CSTATE/image-build.log" 2>&1 ||
    { tail -20 "$CSTATE/image-build.log" >&2; echo "image build failed; log in $CSTATE/image-build.log" >&2; exit 1; }
  rm -rf "$ctx"
  docker image prune -f --filter label=org.ppn.image=node >/dev/null  # the previous build's, now untagged
}

# The laptop's joiner prints its code on the container's output; the operator approves it on
# the founding node, which reaches the joiner across the mesh network.
compose_join() {
  local name=$1 ip=$2 code=""
  for _ in $(seq 1 150); do
    code=$(dc logs --no-color "$name" 2>/dev/null | pairing_code || true)
    [ -n "$code" ] && break
    sleep 0.2
  done
  [ -n "$code" ] || { echo "  $name: the joiner showed no code; docker-compose logs $name:" >&2; dc logs --tail=10 "$name" >&2; exit 1; }
  echo "  $name: pairing code $code shown on its console; approving it on the founding node (cloud)"
  ctl node approve "$ip:$(port pairing)" --code "$code" -o yaml | sed 's/^/    /'
  wait_for_file "$CSTATE/$name/run/host-agent.port" "$name's host agent" "$name"
}

# The mesh address the founding node granted `$1` (its node.json).
mesh_address_of() {
  sed -n 's/^  "mesh_address": "\([^"]*\)",\{0,1\}$/\1/p' "$CSTATE/$1/node/node.json" 2>/dev/null | head -1
}

container_running() {
  local id
  id=$(dc ps -q "$1")
  [ -n "$id" ] && [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ]
}

wait_for_file() {  # path, what, container
  for _ in $(seq 1 300); do
    [ -s "$1" ] && return 0
    container_running "$3" || break
    sleep 0.2
  done
  echo "  $2 did not start; docker-compose logs $3:" >&2
  dc logs --tail=20 "$3" >&2
  exit 1
}

compose_up() {
  local why
  why=$(tools/compose/engine) || { echo "no Docker engine: $why" >&2; exit 1; }
  build
  mkdir -p "$CSTATE/cloud" "$CSTATE/laptop-a" "$CSTATE/laptop-b"
  base_image
  node_image
  if [ ! -f "$CSTATE/cloud/pki/ca.pem" ]; then
    # The founding node's services are reached at its mesh address (10.8.0.1) from the other
    # nodes, at its network address by tenants (the tenant proxy and the relay).
    "$BIN/tools/pki/pki" dev --dir="$CSTATE/cloud/pki" --mesh="$MESH" --ip="$SUBNET.10,10.8.0.1" >/dev/null
  elif [ ! -f "$CSTATE/cloud/pki/relay.pem" ]; then  # a state directory from before the relay
    "$BIN/tools/pki/pki" issue --dir="$CSTATE/cloud/pki" --mesh="$MESH" --role=relay --name=relay \
      --ip="$SUBNET.10,10.8.0.1" >/dev/null
  fi
  make_tenants "$CSTATE/cloud"
  echo "starting the containers (project $PROJECT, network $SUBNET.0/24, state $CSTATE):"
  rm -f "$CSTATE"/*/run/*.port
  dc up -d 2>&1 | sed 's/^/  /'
  wait_for_file "$CSTATE/cloud/run/tenant-proxy.port" "the control plane on cloud" cloud
  echo "  cloud: its WireGuard interface (10.8.0.1), ledger, pairing admin, fleet, relay, scheduler, tenant"
  echo "  proxy and its host agent are up"
  local l name ip
  for l in "${LAPTOPS[@]}"; do
    read -r name ip <<<"$l"
    if [ -f "$CSTATE/$name/node/node.pem" ]; then
      wait_for_file "$CSTATE/$name/run/host-agent.port" "$name's host agent" "$name"
    else
      compose_join "$name" "$ip"
    fi
    echo "  $name: host agent up on $(mesh_address_of "$name"):$(port host-agent), inside the mesh"
  done
  cat <<NEXT

Up: three containers on an internal network; cloud ($SUBNET.10, no KVM, 3 GiB) runs the control
plane, laptop-a ($SUBNET.11, 2 GiB) and laptop-b ($SUBNET.12, 1.5 GiB) advertise KVM. Every node
reaches every other through WireGuard (mesh 10.8.0.0/24, UDP 51820 on the network); only
the tenant proxy ($SUBNET.10:$(port tenant-proxy)) is outside it.
Operate it from the founding node:
  docker-compose -p $PROJECT exec cloud ppnctl node list
  docker-compose -p $PROJECT exec cloud ppnctl vm create web --token_file=/state/tokens/acme.token
  docker-compose -p $PROJECT exec cloud curl http://$SUBNET.10:<port shown>/   # through the relay
  docker-compose -p $PROJECT exec cloud ppnctl ledger verify
Metrics: every service serves Prometheus metrics on its port + 1000 (mesh address and loopback);
Prometheus on cloud (127.0.0.1:9090 inside it) scrapes them all every 2 s:
  tools/ppn compose prom 'sum by (grpc_method, grpc_code) (grpc_server_handled_total)'
and:
  tools/ppn compose demo
  tools/ppn compose status
  tools/ppn compose down
Logs: docker-compose -p $PROJECT logs, and $CSTATE/<host>/logs/<service>.log
NEXT
}

compose_status() {
  dc ps
  if mesh_running; then ctl node list; fi
}

# A PromQL query to the founding node's Prometheus; prints its JSON answer.
compose_prom() {
  [ -n "${1:-}" ] || { echo "usage: tools/ppn compose prom 'PROMQL'" >&2; exit 2; }
  dc exec -T cloud curl -sf --get --data-urlencode "query=$1" http://127.0.0.1:9090/api/v1/query ||
    { echo "Prometheus on cloud did not answer (is the mesh up? tools/ppn compose status)" >&2; exit 1; }
  echo
}

compose_down() {
  dc down --remove-orphans --timeout 15 2>&1 | sed 's/^/  /'
}
