#!/usr/bin/python3
"""Writes a C++ source holding a binary file's bytes (the API's FileDescriptorSet)."""
import sys

data = open(sys.argv[1], "rb").read()
with open(sys.argv[2], "w") as out:
    out.write("// Generated from %s; do not edit.\n#include <cstddef>\n" % sys.argv[1])
    out.write("namespace ppn::ppnctl {\nextern const unsigned char kDescriptorSet[] = {\n")
    for i in range(0, len(data), 20):
        out.write(",".join(str(b) for b in data[i:i + 20]) + ",\n")
    out.write("};\nextern const size_t kDescriptorSetSize = %d;\n}  // namespace ppn::ppnctl\n" % len(data))
