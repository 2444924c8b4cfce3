"""Check that the code an ARM run executed in the main binary is plain ARMv6 + VFPv2.

usage: check_armv6.py DISASSEMBLY.txt PROFILE...

DISASSEMBLY.txt is `arm-linux-gnueabihf-objdump -d --no-show-raw-insn BINARY`; the
profiles are insn_profile.c outputs. Every function with a non-zero count in a profile
is scanned for instructions the ARM1176JZF-S (ARMv6KZ, VFPv2, no NEON, no Thumb-2)
does not have: movw/movt, sdiv/udiv, dmb/dsb/isb, bitfield ops, rbit, mls, NEON
(q registers, vld/vst, vdup), VFPv3 (d16-d31, vmov immediate, fixed-point vcvt), and
32-bit Thumb-2 encodings (".w" suffix). Exits 1 and lists them if any is found.

The shared libraries (Debian's armhf glibc, libm, ld.so) are ARMv7 builds and are not
checked: on a Pi Zero W, Raspberry Pi OS supplies ARMv6 builds of them.
"""
import re
import sys

V7_ONLY = re.compile(
    r"\t(movw|movt|sdiv|udiv|dmb|dsb|isb|bfi|bfc|ubfx|sbfx|rbit|mls|vld\d|vst\d|vdup"
    r"|vmov\.f(?:32|64)\s+[sd]\d+, #|vcvt\.[su]32\.f(?:32|64)\s+[sd]\d+, [sd]\d+, #)\b"
    r"|\bq\d+\b|\bd(?:1[6-9]|2\d|3[01])\b|\t\w+\.w\b"
)


def main():
    dis, profiles = sys.argv[1], sys.argv[2:]
    executed = set()
    for p in profiles:
        with open(p) as f:
            for line in f:
                n, name = line.rstrip("\n").split("\t", 1)
                if n != "total" and not name.startswith("?") and int(n) > 0:
                    executed.add(name)
    cur, found, scanned, funcs = None, {}, 0, 0
    with open(dis) as f:
        for line in f:
            m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
            if m:
                cur = m.group(1) if m.group(1) in executed else None
                funcs += cur is not None
                continue
            if cur and "\t" in line:
                scanned += 1
                if V7_ONLY.search(line):
                    found.setdefault(cur, []).append(line.strip())
    print(f"ARMv6 check: {funcs} executed functions of the binary, {scanned} instructions "
          f"scanned, {sum(map(len, found.values()))} not available on ARMv6/VFPv2")
    for name, lines in found.items():
        print(f"  {name}: {lines[:3]}")
    sys.exit(1 if found else 0)


main()
