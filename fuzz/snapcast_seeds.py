#!/usr/bin/env python3
"""Seeds of the `snapcast` fuzz target, fuzz/corpus/snapcast/: what a real snapserver
(Debian's 0.26) sends a client after its Hello, for each codec (pcm, flac, opus, ogg),
cut at 4, 16 and 60 kB, each after a first byte 0 (the target's split point). Needs
snapserver; run from anywhere: python3 fuzz/snapcast_seeds.py. Files are named by
content (sha1)."""
import socket, struct, json, time, subprocess, os, hashlib, sys, math, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
corpus = os.path.join(ROOT, "fuzz", "corpus", "snapcast")
os.makedirs(corpus, exist_ok=True)
tmp = tempfile.mkdtemp(prefix="snapseeds-")
raw = os.path.join(tmp, "tone.raw")
with open(raw, "wb") as f:
    f.write(b"".join(struct.pack("<hh", v, v) for v in
                     (int(9000 * math.sin(2 * math.pi * 440 * i / 48000)) for i in range(48000 * 2))))
def hello():
    j = json.dumps({"MAC":"00:00:00:00:00:00","HostName":"seed","Version":"0.1","ClientName":"SyncStream","OS":"Linux","Arch":"x86_64","Instance":1,"ID":"seed","SnapStreamProtocolVersion":2}).encode()
    body = struct.pack('<I', len(j)) + j
    hdr = struct.pack('<HHHiiiiI', 5, 1, 0, 0, 0, 0, 0, len(body))
    return hdr + body
for i, codec in enumerate(['pcm','flac','opus','ogg']):
    port = 42704 + i*10
    d = os.path.join(tmp, codec); os.makedirs(d+'/data', exist_ok=True)
    open(d+'/c.conf','w').write(f"""[server]
threads = 1
datadir = {d}/data
[http]
enabled = false
[tcp]
enabled = false
[stream]
bind_to_address = 127.0.0.1
port = {port}
source = file://{raw}?name=default&sampleformat=48000:16:2&codec={codec}
buffer = 1000
chunk_ms = 20
[logging]
sink = null
""")
    p = subprocess.Popen(['snapserver','-c',d+'/c.conf'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.7)
    s = socket.create_connection(('127.0.0.1', port))
    s.sendall(hello())
    buf = b''; t0 = time.time()
    s.settimeout(0.2)
    while time.time() - t0 < 0.6:
        try:
            b = s.recv(65536)
            if not b: break
            buf += b
        except socket.timeout:
            pass
    s.close(); p.kill(); p.wait()
    for cut in (4000, 16000, 60000):
        data = bytes([0]) + buf[:cut]
        open(os.path.join(corpus, hashlib.sha1(data).hexdigest()), 'wb').write(data)
    print(codec, len(buf))
