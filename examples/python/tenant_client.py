#!/usr/bin/python3
"""A minimal Python client of the PPN tenant API (Debian's python3-grpcio).

Generate the stubs once from proto/ (examples/python/generate.sh does it), then:

    export PPN_TOKEN=...   # never on the command line, where ps would show it
    tenant_client.py --endpoint 127.0.0.1:7100 --ca state/pki/ca.pem create web
    tenant_client.py --endpoint 127.0.0.1:7100 --ca state/pki/ca.pem list
    tenant_client.py --endpoint 127.0.0.1:7100 --ca state/pki/ca.pem destroy vms/vm-...
"""
import argparse
import os
import sys

import grpc

from ppn.tenancy.v1 import tenant_service_pb2 as pb
from ppn.tenancy.v1 import tenant_service_pb2_grpc as pb_grpc
from ppn.types.v1 import types_pb2


def show(vm):
    ports = "".join(f"  guest:{p.guest_port} -> {p.host_address}:{p.host_port}" for p in vm.forwarded_ports)
    print(f"{vm.name}  {vm.spec.display_name}  {types_pb2.VmState.Name(vm.state)}{ports}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", default="127.0.0.1:7100")
    parser.add_argument("--ca", required=True, help="CA certificate that signed the proxy's certificate")
    parser.add_argument("--token-file", help="file holding the bearer token (default: $PPN_TOKEN)")
    parser.add_argument("--image", default="ppn-test-guest")
    parser.add_argument("--memory-mib", type=int, default=128)
    parser.add_argument("command", choices=["create", "list", "get", "destroy"])
    parser.add_argument("name", nargs="?")
    args = parser.parse_args()

    token = open(args.token_file).read().strip() if args.token_file else os.environ.get("PPN_TOKEN", "")
    if not token:
        sys.exit("no token: set PPN_TOKEN or --token-file")
    creds = grpc.ssl_channel_credentials(root_certificates=open(args.ca, "rb").read())
    stub = pb_grpc.TenantServiceStub(grpc.secure_channel(args.endpoint, creds))
    meta = [("authorization", f"Bearer {token}")]
    try:
        if args.command == "create":
            spec = types_pb2.VmSpec(display_name=args.name, vcpus=1, memory_mib=args.memory_mib, image=args.image,
                                    port_forwards=[types_pb2.PortForward(guest_port=80)])
            show(stub.CreateVm(pb.CreateVmRequest(spec=spec), metadata=meta, timeout=120).vm)
        elif args.command == "list":
            for vm in stub.ListVms(pb.ListVmsRequest(), metadata=meta, timeout=30).vms:
                show(vm)
        elif args.command == "get":
            show(stub.GetVm(pb.GetVmRequest(name=args.name), metadata=meta, timeout=30).vm)
        else:
            show(stub.DestroyVm(pb.DestroyVmRequest(name=args.name), metadata=meta, timeout=120).vm)
    except grpc.RpcError as e:
        sys.exit(f"error: {e.code().name} {e.details()}")


if __name__ == "__main__":
    main()
