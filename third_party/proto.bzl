"""C++ code generation for .proto files with Debian's protoc and grpc_cpp_plugin.

Bazel 4.2's own proto rules want to fetch and build protobuf from source; these macros run
the system compiler instead, so the build stays offline and links the same protobuf
version the system gRPC was built against. Import paths are relative to the package that
calls the macro (//proto: `import "ppn/types/v1/types.proto";`).
"""

def _stem(src):
    return src[:-len(".proto")]

def ppn_proto_library(name, srcs, deps = [], proto_deps = []):
    """Generates `<name>_cc_proto` (messages) and `<name>_cc_grpc` (messages and services).

    Args:
      name: base name of the targets.
      srcs: .proto files, relative to the package (e.g. "ppn/ledger/v1/ledger_service.proto").
      deps: other `ppn_proto_library` names in this package whose messages `srcs` import.
      proto_deps: the .proto files of `deps` (protoc must see every imported file).
    """
    root = native.package_name()
    hdrs = [_stem(s) + ".pb.h" for s in srcs]
    ccs = [_stem(s) + ".pb.cc" for s in srcs]
    grpc_hdrs = [_stem(s) + ".grpc.pb.h" for s in srcs]
    grpc_ccs = [_stem(s) + ".grpc.pb.cc" for s in srcs]

    native.genrule(
        name = name + "_gen",
        srcs = srcs + proto_deps,
        outs = hdrs + ccs + grpc_hdrs + grpc_ccs,
        cmd = " ".join([
            "protoc",
            "-I" + root,
            "--cpp_out=$(RULEDIR)",
            "--grpc_out=$(RULEDIR)",
            "--plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin)",
        ] + [root + "/" + s for s in srcs]),
        message = "protoc " + name,
    )
    native.cc_library(
        name = name + "_cc_proto",
        srcs = ccs,
        hdrs = hdrs,
        includes = ["."],
        deps = [":" + d + "_cc_proto" for d in deps] + ["//third_party:protobuf"],
        visibility = ["//visibility:public"],
    )
    native.cc_library(
        name = name + "_cc_grpc",
        srcs = grpc_ccs,
        hdrs = grpc_hdrs,
        includes = ["."],
        deps = [":" + name + "_cc_proto"] + [":" + d + "_cc_proto" for d in deps] +
               ["//third_party:grpc"],
        visibility = ["//visibility:public"],
    )

def ppn_descriptor_set(name, srcs):
    """`<name>.pb`: a FileDescriptorSet of `srcs` and their imports, with comments."""
    native.genrule(
        name = name,
        srcs = srcs,
        outs = [name + ".pb"],
        cmd = "protoc -I" + native.package_name() +
              " --include_imports --include_source_info --descriptor_set_out=$@ " +
              " ".join([native.package_name() + "/" + s for s in srcs]),
        visibility = ["//visibility:public"],
    )
