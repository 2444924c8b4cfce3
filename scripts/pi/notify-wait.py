"""Runs a service command the way systemd's Type=notify does and checks its sd_notify
messages, without systemd: a NOTIFY_SOCKET is made, WATCHDOG_USEC/WATCHDOG_PID are set
(through `sh -c 'WATCHDOG_PID=$$ exec ...'`, so the PID is the service's), and the
command must send READY=1 and then WATCHDOG=1 within TIMEOUT seconds. It is then
stopped with SIGTERM and must exit 0.

usage: notify-wait.py TIMEOUT LOG [setpriv ... --] COMMAND...

A prefix up to `--` (e.g. `setpriv --reuid=USER --regid=USER --init-groups --`) must
exec the command in the same process (setpriv does; runuser forks and would take the
SIGTERM itself).
Exit 0 when all of that happened; 1 otherwise (the log's tail is printed).
"""
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

timeout, log, cmd = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
tmp = tempfile.mkdtemp(prefix="ss-notify-")
os.chmod(tmp, 0o755)
path = os.path.join(tmp, "notify")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
os.chmod(path, 0o777)
env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000")
# Split an optional `setpriv ... --` prefix off: the PID must be the service's.
prefix = []
if "--" in cmd:
    i = cmd.index("--")
    prefix, cmd = cmd[: i + 1], cmd[i + 1 :]
inner = "WATCHDOG_PID=$$ exec " + " ".join(shlex.quote(c) for c in cmd)
with open(log, "wb") as out:
    proc = subprocess.Popen(prefix + ["sh", "-c", inner], env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT)
got = []
deadline = time.monotonic() + timeout
while time.monotonic() < deadline and proc.poll() is None:
    if not ("READY=1" in got and "WATCHDOG=1" in got):
        r, _, _ = select.select([sock], [], [], 0.2)
        if r:
            got.extend(sock.recv(4096).decode(errors="replace").split("\n"))
        continue
    break
ok = "READY=1" in got and "WATCHDOG=1" in got and proc.poll() is None
print(f"{' '.join(cmd[:3])}: notifications {sorted(set(m for m in got if m))}")
code = None
if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
else:
    code = proc.returncode
    print(f"it exited early with {code}")
print(f"exit status after SIGTERM: {code}")
if not ok or code != 0:
    print("FAILED; log tail:")
    print(open(log, errors="replace").read()[-3000:])
    sys.exit(1)
