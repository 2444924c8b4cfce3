#!/usr/bin/env python3
"""Writes the seed corpus, fuzz/corpus/<target>/, from real inputs: stream frames
(postcard, as protocol/src/wire.rs encodes them), MQTT payloads and API bodies (the
examples of the docs), the shipped profiles and scenarios, tiny audio files cut from
assets/audio with ffmpeg (when installed), and delay-estimator inputs (the layout of
fuzz_targets/delay.rs). Run from anywhere: python3 fuzz/seeds.py. Files are named by
content (sha1), so re-running adds nothing twice."""
import hashlib, json, math, os, shutil, struct, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


# --- postcard, as serde + postcard encode Frame -----------------------------------
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(n):
    return varint((n << 1) ^ (n >> 63) if n < 0 else n << 1)


def string(s):
    b = s.encode()
    return varint(len(b)) + b


OPUS, PCM16 = varint(0), varint(1)
# Variant indices: the order of `enum Frame` in protocol/src/wire.rs.
(CLIENT_HELLO, CLOCK_HELLO, REFUSED, SERVER_HELLO, AUDIO, TIME_REQUEST, TIME_RESPONSE,
 STREAM_SWITCH, PLAYOUT_DELAY_REQUEST) = (varint(i) for i in range(9))


def frames():
    yield CLIENT_HELLO + varint(3) + string("livingroom") + varint(0x1234_5678_9ABC)
    yield CLOCK_HELLO + varint(3) + string("tv") + varint(7)
    yield REFUSED + string("the name 'tv' is in use by another receiver")
    yield (SERVER_HELLO + varint(3) + varint(48_000) + varint(2) + OPUS + varint(312)
           + zigzag(1_733_000_000_000_000) + varint(1000) + string("default"))
    yield (SERVER_HELLO + varint(3) + varint(48_000) + varint(2) + PCM16 + varint(0)
           + zigzag(-5) + varint(2600) + string("radio"))
    # 20 ms of Opus silence (the TOC byte 0xF8: CELT FB 20 ms, one frame).
    yield AUDIO + varint(960) + varint(960) + varint(3) + bytes([0xF8, 0xFF, 0xFE])
    pcm = b"".join(struct.pack("<hh", int(8000 * math.sin(n / 7)), -n) for n in range(96))
    yield AUDIO + varint(96_000) + varint(96) + varint(len(pcm)) + pcm
    yield TIME_REQUEST + zigzag(123_456_789)
    yield TIME_RESPONSE + zigzag(1) + zigzag(2) + zigzag(3)
    yield STREAM_SWITCH + string("radio") + PCM16 + varint(0) + zigzag(7)
    yield PLAYOUT_DELAY_REQUEST + varint(2600)


# --- MQTT payloads -----------------------------------------------------------------
def profiles():
    d = os.path.join(ROOT, "profiles")
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d)) if f.endswith(".json")}


def mqtt():
    yield '{"device":"livingroom","drift_ms":23.4,"confidence":0.91,"signal_strength_db":-54.0,"ts_us":1234,"applied_offset_ms":300.0}'
    yield '{"device":"tv","drift_ms":null,"confidence":0.0,"signal_strength_db":-95.0,"ts_us":5,"reason":"the recording is silent"}'
    yield '{"device":"tv","drift_ms":41.5,"confidence":0.99,"signal_strength_db":-40.0,"ts_us":9,"applied_offset_ms":70.0,"step":true}'
    yield '{"device":"sub","drift_ms":12.0,"confidence":0.8,"signal_strength_db":-30.0,"ts_us":9,"uncertainty_ms":8.5}'
    yield '{"device":"tv","offset_ms":84.25,"seq":3,"rate_ms_per_s":0.0,"ref_us":81234567}'
    yield '{"device":"tv","offset_ms":300.5,"seq":9,"rate_ms_per_s":0.02,"ref_us":1000000000}'
    for c in ['{"cmd":"stop"}', '{"cmd":"start"}', '{"cmd":"resync"}', '{"cmd":"mute"}',
              '{"cmd":"unmute"}', '{"cmd":"volume","value":0.4}', '{"cmd":"check_mic"}',
              '{"cmd":"adjust","manual_adjust_ms":-1.5}',
              '{"cmd":"test_tone","signal":"sweep","duration_ms":200}',
              '{"cmd":"test_tone","signal":"mls","sequence":3,"duration_ms":250,"run_id":"r1","level_dbfs":-12,"max_latency_ms":300,"include_ir":true}']:
        yield c
    yield '{"device":"kitchen","state":"offline"}'
    yield ('{"device":"kitchen","state":"playing","offset_ms":31.5,"drift_ms":0.02,"confidence":0.97,'
           '"playout_delay_ms":1000,"volume":0.8,"muted":false,"underruns":1,"xruns":0,"late_callbacks":2,'
           '"jumps":1,"output":"analog","ts_us":77,"version":"0.1.0","stream":"default","group":"downstairs"}')
    yield '{"devices":{"tv":{"type":"hdmi","target":"LG-OLED","base_latency_ms":70}}}'
    devices = {os.path.splitext(f)[0]: json.loads(t) for f, t in profiles().items()}
    yield json.dumps({"devices": devices})
    yield '{"device":"kitchen","group":"downstairs","stream":"radio","volume":1.0,"muted":false,"group_volume":0.8,"group_muted":false}'
    yield '{"stream":"radio","devices":["kitchen","tv"],"volume":0.8,"muted":false}'
    yield '{"rename":"upstairs"}'
    yield '{"delete":true}'
    yield '{"uri":"pipe:///tmp/radio"}'
    yield ('{"device":"kitchen","run_id":"r1","latency_ms":31.52,"uncertainty_ms":0.002,'
           '"confidence":1.0,"signal":"sweep","ts_us":123,"ir":[0.0,0.5,-0.25],"ir_origin_samples":12.5}')
    yield '{"device":"kitchen","run_id":"r1","error":"no test signal found"}'
    yield "mqtt://127.0.0.1:1883"
    yield "syncstream/drift/tv"


# --- HTTP: window queries and API bodies ---------------------------------------------
def http():
    yield "start_us=2500000&duration_ms=100"
    yield "start_us=2000000&duration_ms=1000&format=wav&stream=radio"
    yield "start_us=-9223372036854775808&duration_ms=10000&format=f32"
    yield "duration_ms=1&start_us=2999999&stream=%E2%9C%93"
    yield '{"manual_adjust_ms":5.0}'
    yield '{"volume":0.5}'
    yield '{"muted":true}'
    yield '{"uri":"pipe:///tmp/radio?name=radio&sampleformat=48000:16:2"}'
    yield '{"uri":"tone:///?freq=440"}'
    yield '{"uri":"file:///music/a.ogg"}'
    yield '{"signal":"mls","sequence":4}'
    yield '{"devices":["kitchen","tv"],"simultaneous":true,"signal":"mls"}'
    yield '{"stream":"radio","devices":["kitchen"],"volume":0.8,"muted":false,"rename":"new"}'
    yield "  "


# --- delay estimator inputs (layout: fuzz_targets/delay.rs) ---------------------------
def delay_input(rate_i, weighting, flags, beta, lo, hi, expected, gate, ref, rec):
    head = struct.pack("<BBBf4dH", rate_i, weighting, flags, beta, lo, hi, expected, gate, len(ref))
    return head + struct.pack(f"<{len(ref)}f", *ref) + struct.pack(f"<{len(rec)}f", *rec)


def delay():
    import random
    r = random.Random(14)
    noise = [r.uniform(-0.5, 0.5) for _ in range(1024)]
    d = 40  # samples of delay
    rec = [0.0] * d + [0.6 * x for x in noise[: 1024 - d]]
    yield delay_input(0, 1, 0, 0.0, -10.0, 10.0, 0.0, 0.0, noise, rec)
    yield delay_input(0, 0, 2 | 4, 0.0, -5.0, 5.0, 0.8, 1.0, noise, rec)
    yield delay_input(1, 2, 1, 0.7, -20.0, 20.0, 0.0, 0.0, noise, rec)
    yield delay_input(2, 3, 0, 0.0, 0.0, 30.0, 0.0, 0.0, noise[:512], rec)
    bass = [math.sin(2 * math.pi * 60 * n / 48000) for n in range(2048)]
    yield delay_input(0, 1, 2, 0.0, -20.0, 20.0, 1.0, 0.0, bass[:1024], bass[30:])
    yield delay_input(0, 1, 0, 0.0, -10.0, 10.0, 0.0, 0.0, [0.0] * 256, [0.0] * 256)
    yield delay_input(0, 1, 0, 0.0, -10.0, 10.0, 0.0, 0.0, [float("nan")] + noise[:63], noise[:64])


# --- audio files: tiny cuts of the shipped music ----------------------------------------
HINTS = [None, "wav", "ogg", "flac", "mp3", "aiff", "caf", "mkv"]


def audio():
    src = os.path.join(ROOT, "assets", "audio", "battle-orchestral-44k1.ogg")
    if not shutil.which("ffmpeg"):
        print("ffmpeg not installed: no audio seeds", file=sys.stderr)
        return
    outs = [("wav", ["-ar", "8000", "-ac", "1", "-c:a", "pcm_s16le"]),
            ("wav", ["-ar", "48000", "-ac", "2", "-c:a", "pcm_f32le", "-t", "0.01"]),
            ("flac", ["-ar", "8000", "-ac", "1"]),
            ("mp3", ["-ar", "8000", "-ac", "1", "-b:a", "8k"]),
            ("ogg", ["-ar", "8000", "-ac", "1", "-c:a", "libvorbis", "-q:a", "0"]),
            ("aiff", ["-ar", "8000", "-ac", "1"]),
            ("caf", ["-ar", "8000", "-ac", "1", "-c:a", "pcm_s16be"]),
            ("mkv", ["-ar", "8000", "-ac", "1", "-c:a", "flac"])]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (ext, args) in enumerate(outs):
            out = os.path.join(tmp, f"{i}.{ext}")
            cmd = ["ffmpeg", "-v", "error", "-y", "-ss", "20", "-t", "0.05", "-i", src, *args, out]
            if subprocess.run(cmd).returncode != 0:
                print(f"ffmpeg could not write {ext}", file=sys.stderr)
                continue
            data = open(out, "rb").read()
            put("decode", bytes([HINTS.index(ext)]) + data)
            put("decode", bytes([0]) + data)  # no hint: the probe alone


def main():
    for f in frames():
        put("frame", f)
    for p in mqtt():
        put("mqtt", p)
    for p in http():
        put("http", p)
    for text in profiles().values():
        put("profile", text)
    put("profile", '{"type":"chromecast","target":"Kitchen speaker","base_latency_ms":300,"mic_distance_m":1.5}')
    sdir = os.path.join(ROOT, "scenarios")
    for f in sorted(os.listdir(sdir)):
        if f.endswith(".json") and os.path.getsize(os.path.join(sdir, f)) <= 16 * 1024:
            put("scenario", open(os.path.join(sdir, f), "rb").read())
    for d in delay():
        put("delay", d)
    audio()


if __name__ == "__main__":
    main()
