#!/usr/bin/env bash
# The packaged path, as an operator follows it: tools/package builds the .debs; two fresh
# containers of the project's Debian base image (systemd as PID 1, the packages' run-time
# dependencies already installed, as on a machine with a Debian mirror at hand) get them with
# dpkg -i; `ppn init` on one, `ppn join` on the other, the code approved with ppnctl on the
# founding node, a VM created through the tenant API on the new node. Also: a second
# `ppn init` refuses and changes nothing; `ppn join` against an unreachable address or against
# something that is not a founding node says so and leaves nothing behind; with the VM
# running, a newer ppn-node is installed over the old one and the agent re-adopts its guest; a
# third machine joins; the founding node is backed up, lost and restored onto a new machine,
# after which the laptop reconnects and the tenant's VM answers.
#
#   packaging_test.sh BIN_DIR WORK_DIR      (BIN_DIR: bazel-bin's layout, e.g. a test's runfiles)
#
# PPN_PKG_PROJECT (default ppnpkg) names the containers and network, PPN_PKG_SUBNET (default
# 10.250.95) the network: not those of tools/ppn compose or the compose mesh test. Prints
# "timing: ..." lines; removes its containers and network on exit.
set -euo pipefail
BIN=$(realpath "${1:?usage: packaging_test.sh BIN_DIR WORK_DIR}")
WORK=$(realpath -m "${2:?usage: packaging_test.sh BIN_DIR WORK_DIR}")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
P=${PPN_PKG_PROJECT:-ppnpkg}
SUBNET=${PPN_PKG_SUBNET:-10.250.95}
FOUNDING=$P-founding FOUNDING_IP=$SUBNET.10
NODE=$P-laptop NODE_IP=$SUBNET.11
MESH=pkgtest.local
export PATH="$PATH:/usr/sbin:/sbin"
mkdir -p "$WORK"

step() { printf '\n== %s (%ds)\n' "$*" "$(( $(date +%s) - START ))"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
on() { local c=$1; shift; docker exec "$c" "$@"; }
ctl() { on "$FOUNDING" ppnctl "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    for c in "$FOUNDING" "$NODE"; do
      echo "--- $c: journal of the ppn units" >&2
      docker exec "$c" journalctl --no-pager -n 40 -u 'ppn-*' 2>/dev/null | tail -40 >&2 || true
    done
  fi
  if [ -n "${PPN_PKG_KEEP:-}" ]; then echo "PPN_PKG_KEEP: the containers stay" >&2; exit "$rc"; fi
  docker rm -f "$FOUNDING" "$NODE" "$P-spare" >/dev/null 2>&1 || true
  docker network rm "$P" >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
START=$(date +%s)

why=$("$ROOT/tools/compose/engine") || fail "no Docker engine: $why"
docker rm -f "$FOUNDING" "$NODE" "$P-spare" >/dev/null 2>&1 || true
docker network rm "$P" >/dev/null 2>&1 || true

step "tools/package"
"$ROOT/tools/package" "$WORK/debs" --bin="$BIN" --version=0.3.1 | sed 's/^/  /'
"$ROOT/tools/package" "$WORK/debs-new" --bin="$BIN" --version=0.3.2 | sed 's/^/  /'
ls -l "$WORK/debs" | sed 's/^/  /'

# The project's Debian base image (tools/compose/mesh.sh makes it), with systemd and the
# packages' run-time dependencies: apt resolves them once, then every run reuses the image.
step "the base image"
if ! docker image inspect ppn-debian:bookworm >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$rootfs" "${PPN_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    >"$WORK/debootstrap.log" 2>&1 || { rm -rf "$rootfs"; fail "debootstrap: $(tail -1 "$WORK/debootstrap.log")"; }
  tar -C "$rootfs" -c . | docker import - ppn-debian:bookworm >/dev/null
  rm -rf "$rootfs"
fi
deps=$(for d in "$WORK"/debs/*.deb; do dpkg-deb -f "$d" Depends; done | tr ',' '\n' | sed 's/^ *//; s/ *(.*//' |
  grep -v '^ppn-' | sed 's/ *| */|/' | sort -u | tr '\n' ' ')
image=ppn-pkgtest:$(echo "$deps" | sha256sum | cut -c1-12)
if ! docker image inspect "$image" >/dev/null 2>&1; then
  t=$(date +%s)
  ctx=$WORK/image
  mkdir -p "$ctx"
  # apt's alternatives: the first of each "a|b".
  cat >"$ctx/Dockerfile" <<EOF
FROM ppn-debian:bookworm
LABEL org.ppn.image=pkgtest
RUN printf '%s\n' 'deb http://deb.debian.org/debian bookworm main' > /etc/apt/sources.list \\
 && apt-get -o Acquire::Check-Valid-Until=false update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd dbus python3-minimal \\
      $(for d in $deps; do echo -n "${d%%|*} "; done) \\
 && rm -rf /var/lib/apt/lists/* \\
 && systemctl mask getty.target console-getty.service systemd-logind.service
EOF
  docker build -t "$image" "$ctx" >"$WORK/image-build.log" 2>&1 || fail "image build: $(tail -3 "$WORK/image-build.log")"
  echo "  $image built: the run-time dependencies from the Debian archive in $(( $(date +%s) - t )) s"
fi

step "two fresh containers on $SUBNET.0/24 (systemd as PID 1)"
docker network create --internal --subnet "$SUBNET.0/24" --label "org.ppn.test=$P" "$P" >/dev/null
# A fresh machine: container $1 at address $2 with memory $3, systemd as PID 1, the packages in
# /debs (and the newer ones in /debs-new).
machine() {
  local name=$1 ip=$2 mem=$3 s
  # Docker mounts /proc/sys read-only; the host agent sets forwarding in its network namespace.
  docker run -d --name "$name" --hostname "${name#"$P"-}" --network "$P" --ip "$ip" --memory "$mem" \
    --cap-add NET_ADMIN --cap-add SYS_ADMIN --security-opt apparmor:unconfined --device /dev/net/tun \
    --sysctl net.ipv4.ip_forward=1 --tmpfs /run --tmpfs /run/lock --cgroupns=private --stop-signal SIGRTMIN+3 \
    --entrypoint /bin/bash "$image" \
    -c 'mount --bind /proc/sys/net /proc/sys/net && mount -o remount,bind,rw /proc/sys/net; exec /lib/systemd/systemd' \
    >/dev/null
  docker cp "$WORK/debs" "$name:/debs"
  docker cp "$WORK/debs-new" "$name:/debs-new"
  for _ in $(seq 1 100); do
    s=$(on "$name" systemctl is-system-running 2>/dev/null || true)
    case "$s" in running|degraded) return 0 ;; esac
    sleep 0.2
  done
  fail "$name: systemd is $s"
}
machine "$FOUNDING" "$FOUNDING_IP" 3g
machine "$NODE" "$NODE_IP" 2g
# ---- the operator's part, timed ----
step "founding node: dpkg -i, ppn init"
T0=$(date +%s.%N)
on "$FOUNDING" sh -c 'dpkg -i /debs/*.deb' >"$WORK/dpkg-founding.log" 2>&1 || fail "dpkg -i: $(tail -5 "$WORK/dpkg-founding.log")"
T_INSTALLED=$(date +%s.%N)
# The two questions, answered as the operator types them.
printf '%s\n%s\n' "$MESH" "$FOUNDING_IP" | docker exec -i "$FOUNDING" ppn init --kvm=off >"$WORK/init.log" 2>&1 ||
  fail "ppn init: $(cat "$WORK/init.log")"
T_INIT=$(date +%s.%N)
sed 's/^/  /' "$WORK/init.log"
token=$(grep -A1 'its token' "$WORK/init.log" | tail -1 | tr -d ' ')
[ -n "$token" ] || fail "ppn init printed no token"
grep -q "ppn join $FOUNDING_IP" "$WORK/init.log" || fail "ppn init did not print the command for the next machine"
grep -q "The mesh's name" "$WORK/init.log" && grep -q "The address other machines" "$WORK/init.log" ||
  fail "ppn init did not ask its two questions"
echo "$token" | docker exec -i "$FOUNDING" sh -c 'umask 077; cat > /root/first.token'

step "laptop: dpkg -i ppn-node ppn-test-guest, ppn join $FOUNDING_IP"
T_NODE0=$(date +%s.%N)
on "$NODE" sh -c 'dpkg -i /debs/ppn-node_*.deb /debs/ppn-test-guest_*.deb' >"$WORK/dpkg-node.log" 2>&1 ||
  fail "dpkg -i: $(tail -5 "$WORK/dpkg-node.log")"
docker exec "$NODE" ppn join "$FOUNDING_IP" --kvm=simulate >"$WORK/join.log" 2>&1 &
joiner=$!
code=""
for _ in $(seq 1 100); do
  code=$(grep -o 'Pairing code for [a-z0-9-]*: *[^ ]*' "$WORK/join.log" | awk '{print $NF}' || true)
  [ -n "$code" ] && break
  sleep 0.2
done
[ -n "$code" ] || fail "ppn join showed no code: $(cat "$WORK/join.log")"
approve=$(grep -o 'ppnctl node approve [^ ]* --code [^ ]*' "$WORK/join.log" || true)
[ "$approve" = "ppnctl node approve $NODE_IP:7105 --code $code" ] || fail "ppn join asked for \"$approve\""
echo "  the laptop shows: $(grep 'Pairing code' "$WORK/join.log" | sed 's/^ *//')"
echo "  the operator types on the founding node: $approve"
# shellcheck disable=SC2086  # the command line the joiner printed
ctl ${approve#ppnctl } -o yaml | sed 's/^/    /'
wait "$joiner" || fail "ppn join: $(cat "$WORK/join.log")"
T_JOINED=$(date +%s.%N)
sed 's/^/  /' "$WORK/join.log"

step "the new node in node list, then a VM on it through the tenant API"
for _ in $(seq 1 150); do
  n=$(ctl node list -o json | json "sum(x['state']=='NODE_STATE_ALIVE' for x in d.get('nodes', []))")
  [ "$n" = 2 ] && break
  sleep 0.2
done
ctl node list | sed 's/^/  /'
[ "$n" = 2 ] || fail "the laptop is not ALIVE in node list"
vm=$(ctl vm create web --token_file=/root/first.token -o json | json "d['vm']['vm_id']")
where=$(ctl fleet get-vm --vm_id="$vm" -o json | json "d['vm']['node_id']")
[ "$where" = laptop ] || fail "the VM went to $where, not the new node"
for _ in $(seq 1 300); do
  state=$(ctl vm get "vms/$vm" --token_file=/root/first.token -o json | json "d['vm']['state']")
  [ "$state" = VM_STATE_RUNNING ] && break
  sleep 0.2
done
[ "$state" = VM_STATE_RUNNING ] || fail "VM $vm is $state"
T_VM=$(date +%s.%N)
# The guest answers through the relay, on the founding node's address, as a tenant reaches it.
addr=$(ctl vm get "vms/$vm" --token_file=/root/first.token -o json |
  json "f\"{d['vm']['forwarded_ports'][0]['host_address']}:{d['vm']['forwarded_ports'][0]['host_port']}\"")
for _ in $(seq 1 150); do
  on "$FOUNDING" bash -c "exec 3<>/dev/tcp/${addr%:*}/${addr##*:} && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && timeout 5 cat <&3" \
    >"$WORK/guest.out" 2>/dev/null && grep -q 200 "$WORK/guest.out" && break
  sleep 0.3
done
grep -q 200 "$WORK/guest.out" || fail "the guest did not answer at $addr"
T_HTTP=$(date +%s.%N)
echo "  $vm on laptop: RUNNING, answers at $addr (the relay)"
ms() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
echo "timing: founding dpkg -i $(ms "$T0" "$T_INSTALLED") s, ppn init $(ms "$T_INSTALLED" "$T_INIT") s;" \
  "laptop dpkg -i + ppn join + approve $(ms "$T_NODE0" "$T_JOINED") s; to the VM RUNNING on it $(ms "$T_JOINED" "$T_VM") s," \
  "answering through the relay $(ms "$T_VM" "$T_HTTP") s"
echo "timing: from the first dpkg -i to the new node running a VM: $(ms "$T0" "$T_VM") s"

# ---- bad input ----
step "a second ppn init refuses and changes nothing"
before=$(on "$FOUNDING" sh -c 'ls -l --time-style=+%s.%N /etc/ppn /var/lib/ppn/pki; md5sum /etc/ppn/* /var/lib/ppn/pki/* 2>/dev/null')
if on "$FOUNDING" ppn init --mesh=other.local --address="$FOUNDING_IP" >"$WORK/init2.log" 2>&1; then
  fail "a second ppn init succeeded"
fi
grep -q 'already initialised' "$WORK/init2.log" || fail "second ppn init: $(cat "$WORK/init2.log")"
after=$(on "$FOUNDING" sh -c 'ls -l --time-style=+%s.%N /etc/ppn /var/lib/ppn/pki; md5sum /etc/ppn/* /var/lib/ppn/pki/* 2>/dev/null')
[ "$before" = "$after" ] || fail "the second ppn init changed files"
echo "  $(cat "$WORK/init2.log")"
on "$NODE" ppn join "$FOUNDING_IP" >"$WORK/join2.log" 2>&1 && fail "a second ppn join succeeded"
grep -q 'already part of a mesh' "$WORK/join2.log" || fail "second ppn join: $(cat "$WORK/join2.log")"
echo "  $(cat "$WORK/join2.log")"

step "ppn join against wrong addresses says so and leaves nothing"
machine "$P-spare" "$SUBNET.12" 1g
on "$P-spare" sh -c 'dpkg -i /debs/ppn-node_*.deb /debs/ppn-test-guest_*.deb' >/dev/null 2>&1 || fail "dpkg -i on spare"
empty=$(on "$P-spare" sh -c 'find /etc/ppn /var/lib/ppn | sort')
on "$P-spare" ppn join "$SUBNET.99" >"$WORK/join-unreachable.log" 2>&1 && fail "ppn join to nothing succeeded"
grep -q 'nothing answers' "$WORK/join-unreachable.log" || fail "$(cat "$WORK/join-unreachable.log")"
echo "  $(cat "$WORK/join-unreachable.log")"
# The laptop's agent serves TLS on 7100? No: a TLS server of the mesh that is not a tenant proxy
# is the founding node's ledger; give the spare a founding node whose 7100 is something else.
on "$FOUNDING" sh -c "ppnctl node list >/dev/null" # (the founding node is fine; the laptop is not one)
on "$P-spare" ppn join "$NODE_IP" >"$WORK/join-wrong.log" 2>&1 && fail "ppn join to a laptop succeeded"
grep -q 'nothing answers\|not a PPN founding node' "$WORK/join-wrong.log" || fail "$(cat "$WORK/join-wrong.log")"
echo "  $(cat "$WORK/join-wrong.log")"
# Something that answers TLS on 7100 with a certificate of the mesh, but not the tenant proxy's.
docker exec -d "$NODE" openssl s_server -quiet -accept 7100 -cert /var/lib/ppn/node/node.pem -key /var/lib/ppn/node/node.key
sleep 1
on "$P-spare" ppn join "$NODE_IP" >"$WORK/join-impostor.log" 2>&1 && fail "ppn join to a non-founding TLS server succeeded"
grep -q 'not a PPN founding node' "$WORK/join-impostor.log" || fail "$(cat "$WORK/join-impostor.log")"
echo "  $(cat "$WORK/join-impostor.log")"
on "$NODE" pkill -x openssl || true
[ "$(on "$P-spare" sh -c 'find /etc/ppn /var/lib/ppn | sort')" = "$empty" ] || fail "ppn join left files behind"
on "$P-spare" systemctl is-active ppn-host-agent >/dev/null 2>&1 && fail "a host agent runs after a failed join"
# ... and then it joins for real: the mesh's third machine.
docker exec "$P-spare" ppn join "$FOUNDING_IP" --kvm=simulate >"$WORK/join-spare.log" 2>&1 &
joiner=$!
code=""
for _ in $(seq 1 100); do
  code=$(grep -o 'Pairing code for [a-z0-9-]*: *[^ ]*' "$WORK/join-spare.log" | awk '{print $NF}' || true)
  [ -n "$code" ] && break
  sleep 0.2
done
[ -n "$code" ] || fail "ppn join showed no code: $(cat "$WORK/join-spare.log")"
ctl node approve "$SUBNET.12:7105" --code "$code" >/dev/null
wait "$joiner" || fail "ppn join (spare): $(cat "$WORK/join-spare.log")"
for _ in $(seq 1 150); do
  n=$(ctl node list -o json | json "sum(x['state']=='NODE_STATE_ALIVE' for x in d.get('nodes', []))")
  [ "$n" = 3 ] && break
  sleep 0.2
done
[ "$n" = 3 ] || fail "the spare is not ALIVE in node list"
echo "  then it joins for real: $(tail -2 "$WORK/join-spare.log" | head -1)"
docker rm -f "$P-spare" >/dev/null

# ---- an upgrade with the VM running ----
step "upgrade: ppn-node 0.3.2 over 0.3.1 on the laptop, its VM running"
qemu_before=$(on "$NODE" pgrep -f qemu-system | head -1)
agent_before=$(on "$NODE" systemctl show -p MainPID --value ppn-host-agent)
T_UP0=$(date +%s.%N)
on "$NODE" sh -c 'dpkg -i /debs-new/ppn-node_*.deb /debs-new/ppn-test-guest_*.deb' >"$WORK/dpkg-upgrade.log" 2>&1 ||
  fail "dpkg -i (upgrade): $(tail -5 "$WORK/dpkg-upgrade.log")"
agent_after=$(on "$NODE" systemctl show -p MainPID --value ppn-host-agent)
[ "$agent_after" != "$agent_before" ] && [ "$agent_after" != 0 ] || fail "the agent was not restarted ($agent_before -> $agent_after)"
[ "$(on "$NODE" dpkg-query -W -f '${Version}' ppn-node)" = 0.3.2 ] || fail "ppn-node is not 0.3.2"
[ "$(on "$NODE" pgrep -f qemu-system | head -1)" = "$qemu_before" ] || fail "the guest's QEMU did not survive the upgrade"
for _ in $(seq 1 150); do
  state=$(ctl vm get "vms/$vm" --token_file=/root/first.token -o json | json "d['vm']['state']")
  alive=$(ctl node list -o json | json "sum(x['state']=='NODE_STATE_ALIVE' and x['node_id']=='laptop' for x in d.get('nodes', []))")
  [ "$state" = VM_STATE_RUNNING ] && [ "$alive" = 1 ] &&
    on "$FOUNDING" bash -c "exec 3<>/dev/tcp/${addr%:*}/${addr##*:} && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && timeout 5 cat <&3" 2>/dev/null | grep -q 200 &&
    break
  sleep 0.2
done
[ "$state" = VM_STATE_RUNNING ] && [ "$alive" = 1 ] || fail "after the upgrade: VM $state, the laptop ALIVE: $alive"
T_UP=$(date +%s.%N)
echo "  agent pid $agent_before -> $agent_after, guest QEMU pid $qemu_before unchanged, VM RUNNING and answering"
echo "timing: upgrade, dpkg -i to the VM answering again through the re-adopting agent: $(ms "$T_UP0" "$T_UP") s"

# ---- backup, the founding node lost, restore onto a new machine at its address ----
step "ppn backup on the founding node; the founding node is lost; ppn restore onto a new machine"
# The operator's ppnctl pins the ledger's key and checkpoint; the restored ledger must match them.
ctl ledger verify | head -1 | sed 's/^/  /'
on "$FOUNDING" env PPN_BACKUP_PASSPHRASE=correct-horse-battery ppn backup /root/mesh.backup | sed 's/^/  /'
docker cp "$FOUNDING:/root/mesh.backup" "$WORK/mesh.backup"
docker rm -f "$FOUNDING" >/dev/null
machine "$FOUNDING" "$FOUNDING_IP" 3g
on "$FOUNDING" sh -c 'dpkg -i /debs-new/*.deb' >"$WORK/dpkg-restored.log" 2>&1 || fail "dpkg -i: $(tail -5 "$WORK/dpkg-restored.log")"
python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[len(b)//2]^=0x40; open(sys.argv[2],'wb').write(b)" \
  "$WORK/mesh.backup" "$WORK/mesh.corrupt"
docker cp "$WORK/mesh.backup" "$FOUNDING:/root/mesh.backup"
docker cp "$WORK/mesh.corrupt" "$FOUNDING:/root/mesh.corrupt"
empty=$(on "$FOUNDING" sh -c 'find /etc/ppn /var/lib/ppn | sort')
on "$FOUNDING" env PPN_BACKUP_PASSPHRASE=wrong-passphrase ppn restore /root/mesh.backup >"$WORK/restore-wrong.log" 2>&1 &&
  fail "a restore with the wrong passphrase succeeded"
grep -q 'wrong passphrase' "$WORK/restore-wrong.log" || fail "$(cat "$WORK/restore-wrong.log")"
echo "  $(head -1 "$WORK/restore-wrong.log")"
on "$FOUNDING" env PPN_BACKUP_PASSPHRASE=correct-horse-battery ppn restore /root/mesh.corrupt >"$WORK/restore-corrupt.log" 2>&1 &&
  fail "a restore of a damaged backup succeeded"
grep -q 'damaged' "$WORK/restore-corrupt.log" || fail "$(cat "$WORK/restore-corrupt.log")"
echo "  $(head -1 "$WORK/restore-corrupt.log")"
[ "$(on "$FOUNDING" sh -c 'find /etc/ppn /var/lib/ppn | sort')" = "$empty" ] || fail "a refused restore left files behind"
T_R0=$(date +%s.%N)
on "$FOUNDING" env PPN_BACKUP_PASSPHRASE=correct-horse-battery ppn restore /root/mesh.backup | sed 's/^/  /'
for _ in $(seq 1 300); do
  alive=$(ctl node list -o json 2>/dev/null | json "sum(x['state']=='NODE_STATE_ALIVE' and x['node_id']=='laptop' for x in d.get('nodes', []))" 2>/dev/null || true)
  [ "$alive" = 1 ] && break
  sleep 0.2
done
ctl node list | sed 's/^/  /'
[ "$alive" = 1 ] || fail "the laptop did not reconnect to the restored founding node"
echo "$token" | docker exec -i "$FOUNDING" sh -c 'umask 077; cat > /root/first.token'
state=$(ctl vm get "vms/$vm" --token_file=/root/first.token -o json | json "d['vm']['state']")
[ "$state" = VM_STATE_RUNNING ] || fail "after the restore the tenant's VM is $state"
for _ in $(seq 1 150); do
  on "$FOUNDING" bash -c "exec 3<>/dev/tcp/${addr%:*}/${addr##*:} && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && timeout 5 cat <&3" \
    2>/dev/null | grep -q 200 && break
  sleep 0.3
done
T_R=$(date +%s.%N)
verify=$(ctl ledger verify)
echo "$verify" | head -1 | sed 's/^/  /'
grep -q 'first use' <<<"$verify" && fail "the restored ppnctl did not know the ledger's pinned key"
echo "  the tenant's token still works, its VM still RUNNING on the laptop and answering through the restored relay"
echo "timing: ppn restore to the laptop ALIVE and the VM answering through the new founding node: $(ms "$T_R0" "$T_R") s"
step "the laptop's ledger mirror replaces the founding node's ledger (ppn restore-ledger)"
# The laptop's host agent keeps a verified copy (polled every 5 s); wait until it holds every
# entry the founding ledger has, copy it over, and restore from it.
have=$(on "$FOUNDING" sqlite3 "file:/var/lib/ppn/ledger/ledger.db?mode=ro" "SELECT COUNT(*) FROM entries")
mirrored=0
for _ in $(seq 1 100); do
  docker cp "$NODE:/var/lib/ppn/host-agent/ledger-mirror.db" "$WORK/mirror.db" >/dev/null 2>&1 &&
    mirrored=$(sqlite3 "file:$WORK/mirror.db?mode=ro" "SELECT COUNT(*) FROM entries" 2>/dev/null || echo 0)
  [ "${mirrored:-0}" -ge "$have" ] && break
  sleep 0.3
done
[ "${mirrored:-0}" -ge "$have" ] || fail "the laptop's ledger mirror holds $mirrored entries, the ledger $have"
docker cp "$WORK/mirror.db" "$FOUNDING:/root/mirror.db"
on "$FOUNDING" ppn restore-ledger /root/mirror.db | sed 's/^/  /' || fail "ppn restore-ledger refused the laptop's mirror"
verify=$(ctl ledger verify) || fail "the ledger restored from the mirror does not verify: $verify"
echo "$verify" | head -1 | sed 's/^/  /'
grep -q 'first use' <<<"$verify" && fail "after restore-ledger ppnctl did not know the ledger's pinned key"
printf 'not a ledger' | docker exec -i "$FOUNDING" sh -c 'cat > /root/garbage.db'
on "$FOUNDING" ppn restore-ledger /root/garbage.db >"$WORK/restore-ledger-bad.log" 2>&1 &&
  fail "ppn restore-ledger accepted a file that is not a ledger"
grep -q "nothing changed" "$WORK/restore-ledger-bad.log" || fail "ppn restore-ledger's refusal: $(cat "$WORK/restore-ledger-bad.log")"
step "done"
