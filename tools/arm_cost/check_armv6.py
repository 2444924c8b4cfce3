"""Check that an ARM binary's code is plain ARMv6 + VFPv2 (Raspberry Pi Zero W / Pi 1).

usage: check_armv6.py DISASSEMBLY.txt PROFILE...   (the functions a run executed)
       check_armv6.py --all DISASSEMBLY.txt         (every function of the binary)

DISASSEMBLY.txt is `arm-linux-gnueabihf-objdump -d --no-show-raw-insn BINARY`; the
profiles are insn_profile.c outputs. Every function with a non-zero count in a profile
is scanned for instructions the ARM1176JZF-S (ARMv6KZ, VFPv2, no NEON, no Thumb-2)
does not have: movw/movt, sdiv/udiv, dmb/dsb/isb, bitfield ops, rbit, mls, NEON
(q registers, vld/vst, vdup), VFPv3 (d16-d31, vmov immediate, fixed-point vcvt), and
32-bit Thumb-2 encodings (".w" suffix) and Thumb-2-only instructions (it, cbz, tbb),
VFPv4/ARMv8 (vfma, vrint, vsel, lda/stl), NEON integer and immediate forms. Exits 1
and lists them if any is found.

--all scans every function of the disassembly (a whole static binary: Rust code, std,
C libraries, musl, libunwind, compiler-rt) except RUNTIME_DISPATCHED below: functions
that contain ARMv7/VFPv3 instructions but are only ever called after a run-time check
of the CPU, each listed with that check. A run under `qemu-arm -cpu arm1176` (which
raises SIGILL on ARMv7 instructions) backs this up for the code paths it runs.

The shared libraries (Debian's armhf glibc, libm, ld.so) are ARMv7 builds and are not
checked: on a Pi Zero W, Raspberry Pi OS supplies ARMv6 builds of them.
"""
import re
import sys

V7_ONLY = re.compile(
    r"\t(movw|movt|sdiv|udiv|dmb|dsb|isb|bfi|bfc|ubfx|sbfx|rbit|mls|vld\d|vst\d|vdup"
    r"|vmov\.f(?:32|64)\s+[sd]\d+, #|vcvt\.[su]32\.f(?:32|64)\s+[sd]\d+, [sd]\d+, #)\b"
    r"|\bq\d+\b|\bd(?:1[6-9]|2\d|3[01])\b|\t\w+\.w\b"
    r"|\t(it[te]*|cbn?z|tbb|tbh|pli|vfm[as]|vfnm[as]|vmaxnm|vminnm|vrint\w*|vsel\w*"
    r"|ldaex\w*|stlex\w*|lda|stl|vcvt[abnmp]\.\w+|v\w+\.[iusp](?:8|16|64)|vmov\.i\d+)\b"
)

# Functions with ARMv7/VFPv3 code that an ARM1176 never runs, and why.
RUNTIME_DISPATCHED = {
    # LLVM libunwind saves/restores d16-d31 only when unwind info names them; VFPv2
    # code (all of this binary) never uses those registers.
    "_ZN9libunwind13Registers_arm12restoreVFPv3EPv": "libunwind: only for frames using d16-d31",
    "_ZN9libunwind13Registers_arm9saveVFPv3EPv": "libunwind: only for frames using d16-d31",
    # musl (arch/arm): the atomics' barrier and compare-and-swap are picked at start-up
    # from AT_HWCAP/AT_PLATFORM; the v7 variants only on an ARMv7 CPU.
    "__a_barrier_v7": "musl: chosen at start-up on ARMv7 CPUs only",
    "__a_cas_v7": "musl: chosen at start-up on ARMv7 CPUs only",
}


def check_all(dis):
    cur, found, scanned, funcs, skipped = None, {}, 0, 0, 0
    with open(dis) as f:
        for line in f:
            m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
            if m:
                cur = m.group(1)
                funcs += 1
                if cur in RUNTIME_DISPATCHED:
                    skipped += 1
                    cur = None
                continue
            if cur and "\t" in line:
                scanned += 1
                if V7_ONLY.search(line):
                    found.setdefault(cur, []).append(line.strip())
    print(f"ARMv6 check (whole binary): {funcs} functions, {scanned} instructions scanned, "
          f"{sum(map(len, found.values()))} not available on ARMv6/VFPv2; {skipped} "
          f"run-time dispatched functions not scanned:")
    for name, why in RUNTIME_DISPATCHED.items():
        print(f"  {name}: {why}")
    for name, lines in found.items():
        print(f"  NOT ARMv6: {name}: {lines[:3]}")
    if funcs == 0:
        print("no function found: is this an objdump -d of an ARM binary with symbols?")
        sys.exit(1)
    sys.exit(1 if found else 0)


def main():
    if sys.argv[1] == "--all":
        check_all(sys.argv[2])
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
