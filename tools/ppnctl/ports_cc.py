"""Writes ports.cc: ppnctl's default endpoints from tools/ports (the mesh's one port table)."""
import sys

src, out = sys.argv[1], sys.argv[2]
rows = []
for line in open(src):
    line = line.split("#", 1)[0].split()
    if len(line) >= 3 and line[2] != "-":
        rows.append((line[2], line[1]))
with open(out, "w") as f:
    f.write("// Generated from tools/ports by ports_cc.py. Do not edit.\n")
    f.write('#include "tools/ppnctl/ports.h"\n\nnamespace ppn::ppnctl {\n\n')
    f.write("const std::map<std::string, std::string>& DefaultEndpoints() {\n")
    f.write("  static const auto* endpoints = new std::map<std::string, std::string>{\n")
    for key, port in rows:
        f.write('      {"%s", "127.0.0.1:%s"},\n' % (key, port))
    f.write("  };\n  return *endpoints;\n}\n\n}  // namespace ppn::ppnctl\n")
