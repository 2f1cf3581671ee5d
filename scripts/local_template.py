"""Writes a deployable copy of template.yaml whose functions point at prebuilt bootstrap
directories (what `sam build` would produce), for deploying to the local emulator."""
import re
import sys

source, build_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
resource = None
lines = []
for line in open(source, encoding="utf-8"):
    match = re.match(r"^  ([A-Za-z0-9]+):\s*$", line)
    if match:
        resource = match.group(1)
    if line.rstrip() == "      CodeUri: .":
        line = f"      CodeUri: {build_dir}/{resource}\n"
    lines.append(line)
open(out, "w", encoding="utf-8").writelines(lines)
