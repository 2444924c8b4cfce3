"""Cut the test windows for tools/arm_cost/run.sh from a decoded clip.

Like the speed table of tools/eval_delay/eval_delay.py: the reference is the clip
from 5 s on, the recording is the same window rotated by 480 samples (10 ms at
48 kHz) plus white noise of standard deviation 0.1. Standard library only.

usage: make_inputs.py CLIP.f32 OUTDIR   (writes ref_{0.5,2}s.f32 and rec_{0.5,2}s.f32)
"""
import array
import os
import random
import sys

FS = 48_000
clip_path, out_dir = sys.argv[1], sys.argv[2]
clip = array.array("f")
with open(clip_path, "rb") as f:
    clip.frombytes(f.read())
if sys.byteorder != "little":
    clip.byteswap()
rng = random.Random(1)
for win in ("0.5", "2"):
    n = int(float(win) * FS)
    ref = clip[FS * 5:FS * 5 + n]
    assert len(ref) == n, "clip shorter than 5 s + window"
    shift = 480
    rec = array.array("f", (ref[(i - shift) % n] + rng.gauss(0.0, 0.1) for i in range(n)))
    for name, data in (("ref", ref), ("rec", rec)):
        out = array.array("f", data)
        if sys.byteorder != "little":
            out.byteswap()
        with open(os.path.join(out_dir, f"{name}_{win}s.f32"), "wb") as f:
            out.tofile(f)
