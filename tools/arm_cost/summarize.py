"""Turn the instruction profiles written by tools/arm_cost/run.sh into a table.

usage: summarize.py WORKDIR

WORKDIR/manifest.tsv has one line per measurement, tab-separated:
    est  LABEL  PROF_1  PROF_3  ARM_JSON  X86_JSON  X86_1  X86_3
    fft  LABEL  PROF_0  PROF_K  K
PROF_* are insn_profile.c outputs (REPS = 1 and 3, or COUNT = 0 and K); ARM_JSON and
X86_JSON are the `eval_delay time` outputs of the ARM and the host build; X86_1/X86_3
are valgrind instruction totals for REPS = 1 and 3 ("-" when not measured).

One steady-state estimate = (count at REPS=3 - count at REPS=1) / 2, as in
docs/delay-estimation.md for x86; one FFT = (count at K - count at 0) / K.
"""
import json
import re
import subprocess
import sys
from collections import defaultdict

V0_CRATE = re.compile(r"C(?:s[0-9A-Za-z]*_)?(\d+)")


def crate_of(sym):
    """The crate that defines a symbol: the first path component of its mangled name."""
    if sym.startswith("?"):
        return "(shared libraries)" if sym.startswith("?ext") else "(unnamed main code)"
    if sym.startswith("_R"):
        m = V0_CRATE.search(sym)
        if m:
            start = m.end()
            if start < len(sym) and sym[start] == "_":  # v0 escapes idents starting with a digit or '_'
                start += 1
            return sym[start:start + int(m.group(1))]
    if sym.startswith("_ZN"):
        m = re.match(r"_ZN(\d+)", sym)
        if m:
            return sym[m.end():m.end() + int(m.group(1))]
    return "(C and runtime helpers)"


def load(path):
    counts, total = {}, 0
    with open(path) as f:
        for line in f:
            n, name = line.rstrip("\n").split("\t", 1)
            if n == "total":
                total = int(name)
            else:
                counts[name] = counts.get(name, 0) + int(n)
    return total, counts


def diff(p_lo, p_hi, div):
    t_lo, c_lo = load(p_lo)
    t_hi, c_hi = load(p_hi)
    per = {k: (c_hi.get(k, 0) - c_lo.get(k, 0)) / div for k in set(c_lo) | set(c_hi)}
    return (t_hi - t_lo) / div, per


def demangle(names):
    try:
        out = subprocess.run(["arm-linux-gnueabihf-c++filt"], input="\n".join(names),
                             capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names
    return [re.sub(r"\[[0-9a-f]{16}\]", "", s) for s in out]


def delay(e):
    return "no estimate" if e["delay_ms"] is None else f"{e['delay_ms']:.6f}"


def m(x):
    return f"{x / 1e6:.2f} M"


def main():
    work = sys.argv[1]
    rows, fft_rows, tops = [], [], []
    with open(f"{work}/manifest.tsv") as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    for kind, label, *rest in lines:
        if kind == "fft":
            p0, pk, k = rest
            total, per = diff(f"{work}/{p0}", f"{work}/{pk}", int(k))
            fft_rows.append((label, total))
            continue
        p1, p3, arm_json, x86_json, x1, x3 = rest
        total, per = diff(f"{work}/{p1}", f"{work}/{p3}", 2)
        by_crate = defaultdict(float)
        for name, n in per.items():
            by_crate[crate_of(name)] += n
        arm = json.load(open(f"{work}/{arm_json}"))["estimate"]
        x86 = json.load(open(f"{work}/{x86_json}"))["estimate"]
        x86_n = (int(x3) - int(x1)) / 2 if x1 != "-" else None
        rows.append((label, total, by_crate, arm, x86, x86_n))
        if "[" not in label:  # no function list for the cross-check variants
            top = sorted(per.items(), key=lambda kv: -kv[1])[:12]
            tops.append((label, total, top))

    print("## ARMv6 (arm1176jzf-s) instructions per steady-state estimate\n")
    print("| setting | ARMv6 total | rustfft | realfft | syncstream_dsp | core/std/alloc "
          "| shared libs (libc, libm) | other | x86-64 (valgrind) | delay_ms ARM | delay_ms x86 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, total, bc, arm, x86, x86_n in rows:
        fixed = {"rustfft", "realfft", "syncstream_dsp", "(shared libraries)"}
        rt = sum(v for k, v in bc.items() if k in ("core", "std", "alloc"))
        other = total - sum(bc[k] for k in fixed) - rt
        pct = lambda v: f"{m(v)} ({100 * v / total:.0f} %)"
        print(f"| {label} | {m(total)} | {pct(bc['rustfft'])} | {pct(bc['realfft'])} "
              f"| {pct(bc['syncstream_dsp'])} | {pct(rt)} | {pct(bc['(shared libraries)'])} "
              f"| {pct(other)} | {m(x86_n) if x86_n is not None else '-'} "
              f"| {delay(arm)} | {delay(x86)} |")
    if fft_rows:
        print("\n## ARMv6 instructions per FFT (fft_scalar_cost, rustfft scalar planner)\n")
        for label, total in fft_rows:
            print(f"- {label}: {m(total)}")
    for label, total, top in tops:
        print(f"\n### Top functions, {label} (ARMv6 instructions per estimate)\n")
        for (name, n), pretty in zip(top, demangle([k for k, _ in top])):
            print(f"- {m(n)} ({100 * n / total:.1f} %) {pretty[:150]}")
    print("\n(?ext:ADDR = code in shared libraries without symbols: libc, libm, ld.so)")


main()
