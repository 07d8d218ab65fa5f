#include "tools/ppnctl/node_table.h"

#include "catch2/catch.hpp"

namespace ppn::ppnctl {
namespace {

constexpr int64_t kNow = 1795000000;

ppn::fleet::v1::ListNodesResponse Pool() {
  ppn::fleet::v1::ListNodesResponse r;
  ppn::fleet::v1::Node* cloud = r.add_nodes();
  cloud->set_node_id("cloud");
  cloud->set_state(ppn::fleet::v1::NODE_STATE_ALIVE);
  cloud->set_agent_address("10.8.0.1:7110");
  cloud->set_kvm(ppn::types::v1::KVM_SUPPORT_NONE);
  cloud->set_cpus(2);
  cloud->set_total_memory_mib(3072);
  cloud->set_available_memory_mib(2560);
  cloud->set_reclaimed_memory_mib(384);
  cloud->mutable_last_heartbeat_time()->set_seconds(kNow - 1);
  ppn::types::v1::MeshStatus* m = cloud->mutable_mesh();
  m->set_mesh_address("10.8.0.1");
  m->set_tunnel_up(true);
  m->set_backend("wireguard-go");
  ppn::types::v1::MeshPeer* a = m->add_peers();
  a->set_node_id("laptop-a");
  a->set_mesh_address("10.8.0.2");
  a->set_endpoint("10.250.88.11:51820");
  a->mutable_last_handshake_time()->set_seconds(kNow - 95);
  a->set_rx_bytes(2048);
  a->set_tx_bytes(5 << 20);
  ppn::types::v1::MeshPeer* b = m->add_peers();
  b->set_node_id("laptop-b");
  b->set_mesh_address("10.8.0.3");
  b->mutable_last_handshake_time()->set_seconds(kNow - 4);
  ppn::fleet::v1::Node* lb = r.add_nodes();
  lb->set_node_id("laptop-b");
  lb->set_state(ppn::fleet::v1::NODE_STATE_UNREACHABLE);
  lb->set_agent_address("10.8.0.3:7110");
  lb->set_kvm(ppn::types::v1::KVM_SUPPORT_SIMULATED);
  lb->mutable_mesh()->set_mesh_address("10.8.0.3");
  lb->mutable_mesh()->add_problems("this node was revoked from the mesh: it has no peers");
  lb->mutable_mesh()->add_peers()->set_node_id("cloud");
  lb->add_warnings("no network isolation (--network=user)");
  ppn::fleet::v1::Node* local = r.add_nodes();
  local->set_node_id("laptop-c");
  local->set_state(ppn::fleet::v1::NODE_STATE_JOINING);
  local->set_agent_address("127.0.0.1:7112");
  return r;
}

TEST_CASE("node list shows each node's mesh address, tunnel state, latest handshake and reclaimed memory",
          "[ppnctl][golden]") {
  CHECK(RenderNodes(Pool(), absl::FromUnixSeconds(kNow), false) ==
        "NAME      STATE        ADDRESS         KVM        CPUS  MEMORY_MIB  RECLAIMED_MIB  VMS  MESH_ADDRESS  TUNNEL  "
        "HANDSHAKE\n"
        "cloud     ALIVE        10.8.0.1:7110   NONE       2     2560/3072   384            0    10.8.0.1      up      "
        "4s ago\n"
        "laptop-b  UNREACHABLE  10.8.0.3:7110   SIMULATED  0     0/0         0              0    10.8.0.3      down    "
        "never\n"
        "laptop-c  JOINING      127.0.0.1:7112  -          0     0/0         0              0    -             none    "
        "-\n"
        "\n"
        "laptop-b: mesh: this node was revoked from the mesh: it has no peers\n"
        "laptop-b: warning: no network isolation (--network=user)\n");
}

TEST_CASE("node list -o wide adds each node's backend and one line per peer", "[ppnctl][golden]") {
  std::string out = RenderNodes(Pool(), absl::FromUnixSeconds(kNow), true);
  INFO(out);
  CHECK(out.find("BACKEND       LAST_HEARTBEAT\n") != std::string::npos);
  CHECK(out.find("wireguard-go  1s ago\n") != std::string::npos);
  CHECK(out.find("NAME      PEER      MESH_ADDRESS  ENDPOINT            HANDSHAKE  RX     TX     ROUTE\n"
                 "cloud     laptop-a  10.8.0.2      10.250.88.11:51820  95s ago    2 KiB  5 MiB  direct\n"
                 "cloud     laptop-b  10.8.0.3      -                   4s ago     0 B    0 B    direct\n"
                 "laptop-b  cloud     -             -                   never      0 B    0 B    direct\n") !=
        std::string::npos);
}

TEST_CASE("node list marks a cordoned node in its state and says why below the table", "[ppnctl][golden]") {
  ppn::fleet::v1::ListNodesResponse nodes;
  ppn::fleet::v1::Node* n = nodes.add_nodes();
  n->set_node_id("laptop-a");
  n->set_state(ppn::fleet::v1::NODE_STATE_ALIVE);
  n->set_agent_address("10.8.0.2:7110");
  n->set_cordoned(true);
  n->set_cordon_reason("drained by spiffe://ppn.test/operator/alice");
  CHECK(RenderNodes(nodes, absl::FromUnixSeconds(kNow), false) ==
        "NAME      STATE           ADDRESS        KVM  CPUS  MEMORY_MIB  RECLAIMED_MIB  VMS  MESH_ADDRESS  TUNNEL  "
        "HANDSHAKE\n"
        "laptop-a  ALIVE,CORDONED  10.8.0.2:7110  -    0     0/0         0              0    -             none    "
        "-\n"
        "\n"
        "laptop-a: cordoned: drained by spiffe://ppn.test/operator/alice\n");
}

TEST_CASE("tunnel states and handshake ages read as words", "[ppnctl]") {
  ppn::fleet::v1::Node n;
  CHECK(TunnelState(n) == "none");
  CHECK(LastHandshake(n, absl::FromUnixSeconds(kNow)) == "-");
  n.mutable_mesh();
  CHECK(TunnelState(n) == "down");
  CHECK(LastHandshake(n, absl::FromUnixSeconds(kNow)) == "-");  // no peers
  n.mutable_mesh()->set_tunnel_up(true);
  ppn::types::v1::MeshPeer* p = n.mutable_mesh()->add_peers();
  CHECK(LastHandshake(n, absl::FromUnixSeconds(kNow)) == "never");
  p->mutable_last_handshake_time()->set_seconds(kNow + 5);  // the node's clock runs ahead
  CHECK(LastHandshake(n, absl::FromUnixSeconds(kNow)) == "0s ago");
  p->mutable_last_handshake_time()->set_seconds(kNow - 3 * 3600);
  CHECK(LastHandshake(n, absl::FromUnixSeconds(kNow)) == "3h ago");
  p->mutable_last_handshake_time()->set_seconds(kNow - 3 * 86400);
  CHECK(LastHandshake(n, absl::FromUnixSeconds(kNow)) == "3d ago");
}

}  // namespace
}  // namespace ppn::ppnctl
