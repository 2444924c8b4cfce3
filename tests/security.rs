//! Secure by default (issue 14), as a user runs it: `syncstream transmitter` creates
//! the pairing key in its state folder (mode 0600); a receiver given that key plays;
//! a receiver with another key is refused on the stream port and by the embedded
//! broker, and says why; MQTT clients without the key's password are refused; the HTTP
//! API wants the token for changes and reads (unless `--open-read`), and the source
//! windows always; `syncstream key` prints the credentials a user needs.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use syncstream_protocol::auth::PairingKey;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_syncstream");

/// A transmitter process (test tone) keeping its state in `state`; its ports.
struct Tx {
    _proc: Killed,
    stream: u16,
    http: u16,
    mqtt: u16,
}

fn transmitter(state: &Path, extra: &[&str]) -> Tx {
    let (stream, http, mqtt) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let proc = Killed(
        Command::new(BIN)
            .args(["transmitter", "--source", "tone:440"])
            .args(["--stream-listen", &format!("127.0.0.1:{stream}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--broker-listen", &format!("127.0.0.1:{mqtt}")])
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(common::wait_for_port(mqtt, Duration::from_secs(20)));
    assert!(common::wait_for_port(http, Duration::from_secs(20)));
    Tx {
        _proc: proc,
        stream,
        http,
        mqtt,
    }
}

/// A receiver process (null output and microphone) of `tx` as `name` with `key_args`,
/// logging into `log`.
fn receiver(tx: &Tx, name: &str, key_args: &[&str], log: &Path) -> Killed {
    let mqtt = format!("mqtt://127.0.0.1:{}", tx.mqtt);
    receiver_at((tx.stream, tx.http), &mqtt, name, key_args, log)
}

/// A receiver process (null output and microphone) of the transmitter on 127.0.0.1
/// at `(stream, http)` ports, on the broker `mqtt`, as `name` with `extra` arguments,
/// logging into `log`.
fn receiver_at(ports: (u16, u16), mqtt: &str, name: &str, extra: &[&str], log: &Path) -> Killed {
    let out = std::fs::File::create(log).unwrap();
    Killed(
        Command::new(BIN)
            .args(["receiver", "--name", name, "--transmitter", "127.0.0.1"])
            .args(["--stream-port", &ports.0.to_string()])
            .args(["--http-port", &ports.1.to_string()])
            .args(["--mqtt", mqtt])
            .args(["--output", "null", "--mic", "null"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    )
}

/// The CONNACK a client logging in as `login` (user, password) gets, or the error.
fn connack(port: u16, login: Option<(&str, &str)>) -> Result<(), String> {
    let mut o = MqttOptions::new(format!("probe-{}", common::free_port()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (_client, mut conn) = Client::new(o, 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => {
                return if a.code == ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(format!("{:?}", a.code))
                }
            }
            Ok(Err(ConnectionError::ConnectionRefused(code))) => return Err(format!("{code:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            _ => {}
        }
    }
    Err("no answer".into())
}

/// Waits (bounded) until the retained status of `device` says `state`.
fn wait_for_status(port: u16, key: &PairingKey, device: &str, state: &str) -> bool {
    let (client, mut conn) = Client::new(common::mqtt_options("watch", port, key), 10);
    client
        .subscribe(format!("syncstream/status/{device}"), QoS::AtLeastOnce)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            conn.recv_timeout(Duration::from_millis(500))
        {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
            if v["state"] == state {
                return true;
            }
        }
    }
    false
}

/// One HTTP request (with the bearer `token`, if any): status and body.
fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = reqwest::Client::new().request(method.parse().unwrap(), url);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    })
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Polls `f` (bounded) until it is true.
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn paired_receivers_play_and_strangers_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tx");
    let tx = transmitter(&state, &[]);
    let key_file = state.join("pairing.key");
    // The key: created on the first start, private.
    let key = PairingKey::load(&key_file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A paired receiver plays.
    let good_log = dir.path().join("good.log");
    let _good = receiver(
        &tx,
        "kitchen",
        &["--key-file", key_file.to_str().unwrap()],
        &good_log,
    );
    assert!(
        wait_for_status(tx.mqtt, &key, "kitchen", "playing"),
        "the paired receiver does not play:\n{}",
        std::fs::read_to_string(&good_log).unwrap_or_default()
    );

    // A receiver with another key: the stream handshake fails (it finds the
    // transmitter does not hold its key) and the broker refuses its login.
    let stranger = PairingKey::generate().unwrap();
    let bad_log = dir.path().join("bad.log");
    let _bad = receiver(&tx, "intruder", &["--key", &stranger.to_text()], &bad_log);
    eventually(
        "the stranger's log says why",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(&bad_log).unwrap_or_default();
            log.contains("pairing key") && log.contains("MQTT")
        },
    );
    let token = key.api_token();
    let url = format!("http://127.0.0.1:{}/api/v1/status", tx.http);
    let (code, text) = http("GET", &url, Some(&token), None);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("kitchen"), "{text}");
    assert!(!text.contains("intruder"), "{text}");

    // MQTT: no login, a wrong password, another key's password: refused; the key's
    // password for any user name: accepted.
    assert!(connack(tx.mqtt, None).is_err());
    assert!(connack(
        tx.mqtt,
        Some(("kitchen", "0123456789abcdef0123456789abcdef"))
    )
    .is_err());
    assert!(connack(
        tx.mqtt,
        Some(("kitchen", &stranger.mqtt_password("kitchen")))
    )
    .is_err());
    assert_eq!(
        connack(tx.mqtt, Some(("kitchen", &key.mqtt_password("kitchen")))),
        Ok(())
    );
    // What `syncstream key` prints works: the password with mosquitto_pub, the token
    // with the API.
    let kf = key_file.to_str().unwrap();
    let out = run(&["key", "mqtt-password", "--user", "hall", "--key-file", kf]);
    assert!(out.status.success());
    let password = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let publish = |password: &str| {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &tx.mqtt.to_string()])
            .args([
                "-u",
                "hall",
                "-P",
                password,
                "-t",
                "syncstream/probe",
                "-m",
                "x",
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(publish(&password));
    assert!(!publish("wrong"));
    let out = run(&["key", "token", "--key-file", kf]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), token);
}

#[test]
fn the_api_wants_the_token_unless_reads_are_opened() {
    let dir = tempfile::tempdir().unwrap();
    for open_read in [false, true] {
        let state = dir.path().join(format!("tx-{open_read}"));
        let extra: &[&str] = if open_read { &["--open-read"] } else { &[] };
        let tx = transmitter(&state, extra);
        let token = PairingKey::load(&state.join("pairing.key"))
            .unwrap()
            .api_token();
        let base = format!("http://127.0.0.1:{}", tx.http);
        let status = |method: &str, path: &str, token: Option<&str>| {
            let body = (method == "PUT").then_some("{\"volume\":0.5}");
            http(method, &format!("{base}{path}"), token, body).0
        };
        // Changes: never without the token (401 names what is missing).
        let (code, text) = http(
            "PUT",
            &format!("{base}/api/v1/devices/tv/volume"),
            None,
            Some("{\"volume\":0.5}"),
        );
        assert_eq!(code, 401);
        assert!(text.contains("API token"), "{text}");
        assert_eq!(status("PUT", "/api/v1/devices/tv/volume", Some("00")), 401);
        assert_ne!(
            status("PUT", "/api/v1/devices/tv/volume", Some(&token)),
            401
        );
        // Reads: open only with --open-read; the audio never.
        let read = status("GET", "/api/v1/status", None);
        assert_eq!(read, if open_read { 200 } else { 401 });
        assert_eq!(status("GET", "/api/v1/status", Some(&token)), 200);
        assert_eq!(
            status("GET", "/api/v1/window?start_us=0&duration_ms=100", None),
            401
        );
        // The dashboard's page itself (no data) is served to anyone.
        assert_eq!(status("GET", "/", None), 200);
    }
}

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1 (EC
/// P-256), made with the `openssl` command: (ca.pem, server.pem, server.key).
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=test-ca",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// `mosquitto_sub` over TLS: the first message on `topic` within 20 s.
fn tls_sub(port: u16, ca: &Path, user: &str, password: &str, topic: &str) -> Option<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &port.to_string()])
        .arg("--cafile")
        .arg(ca)
        .args([
            "-u", user, "-P", password, "-t", topic, "-C", "1", "-W", "20",
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn mqtt_over_tls_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, server_key) = certificates(dir.path());
    let tls_port = common::free_port();
    let state = dir.path().join("tx");
    let tx = transmitter(
        &state,
        &[
            "--broker-tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--broker-tls-cert",
            cert.to_str().unwrap(),
            "--broker-tls-key",
            server_key.to_str().unwrap(),
        ],
    );
    assert!(common::wait_for_port(tls_port, Duration::from_secs(20)));
    let key_file = state.join("pairing.key");
    let key = PairingKey::load(&key_file).unwrap();
    let kf = key_file.to_str().unwrap();
    // A receiver on mqtts:// trusting the test CA: it logs in and plays.
    let log = dir.path().join("rx.log");
    let mqtts = format!("mqtts://127.0.0.1:{tls_port}");
    let ca_arg = ca.to_str().unwrap();
    let ports = (tx.stream, tx.http);
    let trusting = ["--mqtt-ca", ca_arg, "--key-file", kf];
    let _rx = receiver_at(ports, &mqtts, "den", &trusting, &log);
    assert!(
        wait_for_status(tx.mqtt, &key, "den", "playing"),
        "no status over TLS:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Another TLS client (mosquitto's) reads it there too.
    let status = tls_sub(
        tls_port,
        &ca,
        "observer",
        &key.mqtt_password("observer"),
        "syncstream/status/den",
    )
    .expect("mosquitto_sub over TLS");
    assert!(status.contains("\"den\""), "{status}");
    // Without the CA (the system's roots do not trust it), no login: the log says why.
    let log2 = dir.path().join("rx2.log");
    let _untrusting = receiver_at(ports, &mqtts, "attic", &["--key-file", kf], &log2);
    eventually(
        "a certificate error in the log",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log2)
                .unwrap_or_default()
                .contains("certificate")
        },
    );
    // A CA file that is not one is refused at start, naming it.
    let out = run(&[
        "receiver",
        "--name",
        "x",
        "--transmitter",
        "127.0.0.1",
        "--mqtt",
        "mqtts://localhost",
        "--mqtt-ca",
        server_key.to_str().unwrap(),
        "--key-file",
        kf,
        "--output",
        "null",
        "--mic",
        "null",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("server.key") && err.contains("no PEM certificate"),
        "{err}"
    );
}

/// The recipe of docs/security.md, literally: mosquitto over TLS with a password file
/// made by `syncstream key mqtt-password` and the ACL printed there. The transmitter
/// and a receiver log in over `mqtts://`; the receiver may write its own topics and
/// not another's.
#[test]
fn mosquitto_with_tls_passwords_and_the_documented_acl() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, server_key) = certificates(dir.path());
    let key_file = dir.path().join("pairing.key");
    let (key, _) = PairingKey::load_or_create(&key_file).unwrap();
    let kf = key_file.to_str().unwrap();
    // The password file, as the docs make it.
    let passwd = dir.path().join("syncstream.passwd");
    for user in ["syncstream-transmitter", "kitchen"] {
        let out = run(&["key", "mqtt-password", "--user", user, "--key-file", kf]);
        let password = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut cmd = Command::new("mosquitto_passwd");
        if !passwd.exists() {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&passwd)
            .args([user, &password])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    // The ACL, copied from docs/security.md.
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/security.md"))
            .unwrap();
    let acl_text = doc
        .split("`/etc/mosquitto/syncstream.acl`:")
        .nth(1)
        .and_then(|r| r.split("```").nth(1))
        .expect("the ACL block in docs/security.md");
    let acl = dir.path().join("syncstream.acl");
    std::fs::write(&acl, acl_text.trim_start_matches('\n')).unwrap();
    let broker = common::Mosquitto::start_with(|port| {
        format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n\
             password_file {}\nacl_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
            passwd.display(),
            acl.display(),
            ca.display(),
            cert.display(),
            server_key.display()
        )
    });
    let url = format!("mqtts://localhost:{}", broker.port);
    let (stream, http) = (common::free_port(), common::free_port());
    let _tx = Killed(
        Command::new(BIN)
            .args(["transmitter", "--source", "tone:440"])
            .args(["--stream-listen", &format!("127.0.0.1:{stream}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--mqtt", &url, "--key-file", kf])
            .arg("--mqtt-ca")
            .arg(&ca)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(common::wait_for_port(stream, Duration::from_secs(20)));
    let log = dir.path().join("rx.log");
    let extra = ["--key-file", kf, "--mqtt-ca", ca.to_str().unwrap()];
    let _rx = receiver_at((stream, http), &url, "kitchen", &extra, &log);
    // The transmitter's user reads everything: the receiver's status arrives.
    let tx_password = key.mqtt_password("syncstream-transmitter");
    let status = tls_sub(
        broker.port,
        &ca,
        "syncstream-transmitter",
        &tx_password,
        "syncstream/status/kitchen",
    );
    assert!(
        status.as_deref().is_some_and(|s| s.contains("kitchen")),
        "{status:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eventually("the receiver plays", Duration::from_secs(30), || {
        tls_sub(
            broker.port,
            &ca,
            "syncstream-transmitter",
            &tx_password,
            "syncstream/status/kitchen",
        )
        .is_some_and(|s| s.contains("\"playing\""))
    });
    // The ACL: kitchen may not write hall's offset, and may write its own drift. Both
    // published in that order by one client; once the allowed one has arrived, the
    // refused one would have too.
    let kitchen_password = key.mqtt_password("kitchen");
    let watcher = std::thread::spawn({
        let ca = ca.clone();
        let port = broker.port;
        let p = tx_password.clone();
        move || {
            Command::new("mosquitto_sub")
                .args(["-h", "localhost", "-p", &port.to_string()])
                .arg("--cafile")
                .arg(&ca)
                .args(["-u", "syncstream-transmitter", "-P", &p, "-v"])
                .args([
                    "-t",
                    "syncstream/buffer_offset/hall",
                    "-t",
                    "syncstream/drift/kitchen",
                ])
                .args(["-C", "1", "-W", "20"])
                .output()
                .unwrap()
        }
    });
    // Until the watcher is subscribed: the allowed message is re-sent until it arrives.
    let publish = |topic: &str| {
        Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &broker.port.to_string()])
            .arg("--cafile")
            .arg(&ca)
            .args([
                "-u",
                "kitchen",
                "-P",
                &kitchen_password,
                "-t",
                topic,
                "-m",
                "{}",
            ])
            .status()
            .unwrap()
    };
    while !watcher.is_finished() {
        publish("syncstream/buffer_offset/hall");
        publish("syncstream/drift/kitchen");
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = String::from_utf8(watcher.join().unwrap().stdout).unwrap();
    assert!(got.starts_with("syncstream/drift/kitchen"), "{got}");
}

/// The API and dashboard over HTTPS (`--https-listen`), checked with curl trusting the
/// test CA: the token is still required, and the page is served.
#[test]
fn the_api_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, server_key) = certificates(dir.path());
    let https_port = common::free_port();
    let state = dir.path().join("tx");
    let _tx = transmitter(
        &state,
        &[
            "--https-listen",
            &format!("127.0.0.1:{https_port}"),
            "--https-cert",
            cert.to_str().unwrap(),
            "--https-key",
            server_key.to_str().unwrap(),
        ],
    );
    assert!(common::wait_for_port(https_port, Duration::from_secs(20)));
    let token = PairingKey::load(&state.join("pairing.key"))
        .unwrap()
        .api_token();
    let curl = |path: &str, token: Option<&str>| -> String {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .arg(format!("https://localhost:{https_port}{path}"));
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = c
            .output()
            .expect("curl must be installed (scripts/setup.sh)");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(curl("/api/v1/status", Some(&token)), "200");
    assert_eq!(curl("/api/v1/status", None), "401");
    assert_eq!(curl("/", None), "200");
    // A client that does not trust the certificate gets no answer.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://localhost:{https_port}/"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}
