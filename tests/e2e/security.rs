//! TLS, secrets, memory limits and file modes, as an operator would check
//! them.
//!
//! The mutual-TLS endpoint is a TLS terminator written here (tokio-rustls)
//! in front of the `FaultProxy` (which records headers) and a real
//! `sidekick receive`: sidekick → TLS on 127.0.0.1 → proxy → receiver. The
//! test CA, the server's certificate and two client certificates (one from
//! the test CA, one from another CA) are made at test time with `rcgen`, so
//! nothing depends on the machine's `openssl` or its trust store.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sidekick_e2e::{sidekick_bin, wait_until, Agent, FaultProxy, LogFile, Receiver, Scratch};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

// ---------------------------------------------------------------------------
// A test PKI.

/// A certificate and its key, as DER (for the server here) and as PEM files
/// (for sidekick's config).
struct Issued {
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// A CA that can issue certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    cert_file: PathBuf,
}

impl TestCa {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("sidekick test {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let cert_file = dir.join(format!("{name}.pem"));
        std::fs::write(&cert_file, cert.pem()).expect("write the CA file");
        TestCa {
            issuer: Issuer::new(params, key),
            der: cert.der().clone(),
            cert_file,
        }
    }

    fn issue(&self, dir: &Path, name: &str, server: bool) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a signed cert");
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write a cert file");
        std::fs::write(&key_file, key.serialize_pem()).expect("write a key file");
        Issued {
            der: cert.der().clone(),
            key_der: key.serialize_der(),
            cert_file,
            key_file,
        }
    }
}

// ---------------------------------------------------------------------------
// The mutual-TLS endpoint.

/// Accepts TLS on 127.0.0.1 with a client certificate from `client_ca`
/// required, and relays the plain bytes to `upstream`. No ALPN is offered,
/// so clients speak HTTP/1.1 through it.
struct MtlsTerminator {
    port: u16,
    /// Why handshakes failed, as the server saw it.
    refused: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl MtlsTerminator {
    fn start(server: &Issued, client_ca: &TestCa, upstream: &str) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.der.clone()).expect("the client CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("a client verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
            )
            .expect("the server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let seen = refused.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, upstream, seen) = (acceptor.clone(), upstream.clone(), seen.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                            }
                        }
                        Err(e) => seen
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(e.to_string()),
                    }
                });
            }
        });
        MtlsTerminator {
            port,
            refused,
            _rt: rt,
        }
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn refused(&self) -> Vec<String> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// Everything one test needs: a scratch dir, a PKI, the chain
/// terminator → proxy → receiver.
struct Setup {
    scratch: Scratch,
    ca: TestCa,
    client: Issued,
    receiver: Receiver,
    proxy: FaultProxy,
    tls: MtlsTerminator,
}

impl Setup {
    fn new() -> Self {
        let scratch = Scratch::new();
        let pki = scratch.path().join("pki");
        std::fs::create_dir_all(&pki).expect("pki dir");
        let ca = TestCa::new(&pki, "ca");
        let server = ca.issue(&pki, "server", true);
        let client = ca.issue(&pki, "client", false);
        let receiver = Receiver::start();
        let proxy = FaultProxy::forwarding(receiver.endpoint(), 100);
        let tls = MtlsTerminator::start(&server, &ca, &proxy.endpoint());
        Setup {
            scratch,
            ca,
            client,
            receiver,
            proxy,
            tls,
        }
    }

    /// A config shipping `logs/*.log` to `endpoint` with `extra` lines
    /// appended under the output (already indented by 4 spaces).
    fn config(&self, endpoint: &str, extra: &str) -> PathBuf {
        let q = |p: &Path| serde_json::Value::String(p.display().to_string()).to_string();
        let text = format!(
            "data_dir: {data}\nshutdown_timeout: 5s\ntelemetry: {{ listen: \"off\" }}\n\
             logs:\n  - include: [{glob}]\n    start_at: beginning\n    scan_interval: 200ms\n\
             batch: {{ max_records: 1000, timeout: 200ms }}\n\
             outputs:\n  - type: otlp_http\n    endpoint: {endpoint}\n    timeout: 5s\n{extra}",
            data = q(&self.scratch.data.join("nested")),
            glob = q(&self.scratch.log_glob()),
        );
        let path = self.scratch.path().join(format!(
            "sidekick-{}.yaml",
            std::fs::read_dir(self.scratch.path()).map_or(0, |d| d.count())
        ));
        std::fs::write(&path, text).expect("write the config");
        path
    }

    fn tls_lines(&self, ca: &Path, client: &Issued) -> String {
        format!(
            "    tls:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
            ca.display(),
            client.cert_file.display(),
            client.key_file.display()
        )
    }
}

/// A child killed (SIGKILL) when dropped, so that a failing test leaks
/// nothing.
struct Killed(std::process::Child);

impl Killed {
    /// SIGTERM, then waits up to `timeout` for a clean exit.
    fn term(&mut self, timeout: Duration) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                assert!(status.success(), "sidekick exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("sidekick did not exit within {timeout:?} of SIGTERM");
    }

    /// Waits up to `timeout` for sidekick to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("sidekick did not exit within {timeout:?} of its target's exit");
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sidekick(args: &[&str]) -> Output {
    Command::new(sidekick_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sidekick")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A secret nobody could find by chance.
fn fresh_secret() -> String {
    format!(
        "tok-{}-{}",
        std::process::id(),
        sidekick_e2e::unix_nanos() % 1_000_000_007
    )
}

// ---------------------------------------------------------------------------
// Tests.

/// Records arrive over mutual TLS with a test CA; the `authorization`
/// header read from a secret file reaches the server but appears nowhere in
/// what sidekick prints (`run` at debug level, `check`, config errors); the
/// data_dir sidekick creates is private to its user.
#[test]
fn mtls_delivery_with_a_file_secret_that_is_never_printed() {
    let _serial = sidekick_e2e::serial();
    let s = Setup::new();
    let secret = fresh_secret();
    let token = s.scratch.path().join("token");
    // A trailing newline, as `echo tok > file` leaves it: trimmed.
    std::fs::write(&token, format!("{secret}\n")).expect("write the token");
    let headers = format!(
        "    headers: {{ authorization: \"Bearer ${{file:{}}}\" }}\n",
        token.display()
    );
    let config = s.config(
        &s.tls.endpoint(),
        &format!("{headers}{}", s.tls_lines(&s.ca.cert_file, &s.client)),
    );

    let check = sidekick(&["check", "-c", config.to_str().unwrap()]);
    assert!(check.status.success(), "check failed: {}", text(&check));
    assert!(!text(&check).contains(&secret), "{}", text(&check));

    let mut log = LogFile::create(&s.scratch.log("app.log"));
    log.append(0..200, 80);
    // At debug level, so that what sidekick's libraries (reqwest, hyper,
    // rustls) log is searched too.
    let stderr_path = s.scratch.path().join("debug.stderr");
    let child = Command::new(sidekick_bin())
        .args(["run", "-c", config.to_str().unwrap()])
        .env("SIDEKICK_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn sidekick run");
    let mut agent = Killed(child);
    let records = s.receiver.wait_for_logs(200, Duration::from_secs(30));
    assert_eq!(records.len(), 200);
    assert!(records.iter().all(|r| r.body.contains("app.log")));

    let saved = s.proxy.saved();
    assert!(!saved.is_empty());
    let expected = format!("Bearer {secret}");
    assert!(
        saved
            .iter()
            .all(|r| r.header("authorization") == Some(expected.as_str())),
        "the receiver side did not get the header: {:?}",
        saved.first().map(|r| &r.headers)
    );
    assert!(s.tls.refused().is_empty(), "{:?}", s.tls.refused());

    agent.term(Duration::from_secs(15));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(stderr.contains("DEBUG"), "not at debug level:\n{stderr}");
    assert!(
        !stderr.contains(&secret),
        "the secret is in sidekick's log:\n{stderr}"
    );

    // data_dir (and the directory above it that sidekick created) is 0700.
    for dir in [&s.scratch.data, &s.scratch.data.join("nested")] {
        let mode = std::fs::metadata(dir)
            .expect("data_dir exists")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "{} has mode {:o}",
            dir.display(),
            mode & 0o777
        );
    }

    // A config error caused by the secret's value shows the reference, not
    // the value.
    let bad = s.config(
        &s.tls.endpoint(),
        &format!("    max_in_flight: ${{file:{}}}\n", token.display()),
    );
    let out = sidekick(&["check", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains(&secret), "{}", text(&out));
    assert!(text(&out).contains("max_in_flight"), "{}", text(&out));

    // A missing secret file: a config error naming the key and the file.
    let missing = s.scratch.path().join("no-such-token");
    let gone = s.config(
        &s.tls.endpoint(),
        &format!(
            "    headers: {{ authorization: \"Bearer ${{file:{}}}\" }}\n",
            missing.display()
        ),
    );
    let out = sidekick(&["check", "-c", gone.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("authorization") && msg.contains(missing.to_str().unwrap()),
        "{msg}"
    );
}

/// A client certificate from another CA is refused by the server, and
/// sidekick says so in words a user can act on; nothing arrives. A server
/// that sidekick cannot verify (its CA not given) is refused by sidekick.
#[test]
fn a_wrong_client_certificate_is_refused_with_a_clear_error() {
    let _serial = sidekick_e2e::serial();
    let s = Setup::new();
    let other_ca = TestCa::new(&s.scratch.path().join("pki"), "other-ca");
    let rogue = other_ca.issue(&s.scratch.path().join("pki"), "rogue-client", false);
    let mut log = LogFile::create(&s.scratch.log("app.log"));
    log.append(0..20, 80);

    let config = s.config(&s.tls.endpoint(), &s.tls_lines(&s.ca.cert_file, &rogue));
    let agent = Agent::start_args(&["run", "-c", config.to_str().unwrap()], s.scratch.path());
    let line = agent.wait_for_stderr_line(
        "a request failure about the client certificate",
        Duration::from_secs(20),
        |l| l.contains("request failed") && l.contains("certificate"),
    );
    assert!(line.contains("cert_file"), "not actionable: {line}");
    wait_until(
        Duration::from_secs(5),
        "the server to record the refused handshake",
        || !s.tls.refused().is_empty(),
        || "none".to_owned(),
    );
    assert!(
        s.tls
            .refused()
            .iter()
            .any(|e| e.contains("UnknownIssuer") || e.contains("certificate")),
        "{:?}",
        s.tls.refused()
    );
    assert_eq!(s.receiver.count(), 0);
    drop(agent);

    // The server's certificate from a CA sidekick was not given: refused on
    // sidekick's side, naming the reason.
    let untrusting = s.config(
        &s.tls.endpoint(),
        &format!(
            "    tls:\n      cert_file: {}\n      key_file: {}\n",
            s.client.cert_file.display(),
            s.client.key_file.display()
        ),
    );
    let agent = Agent::start_args(
        &["run", "-c", untrusting.to_str().unwrap()],
        s.scratch.path(),
    );
    let line = agent.wait_for_stderr_line(
        "a request failure about the server's certificate",
        Duration::from_secs(20),
        |l| l.contains("request failed") && l.contains("certificate"),
    );
    assert!(
        line.contains("UnknownIssuer") || line.contains("ca_file"),
        "{line}"
    );
    assert_eq!(s.receiver.count(), 0);
}

/// Unreadable or malformed TLS files stop `sidekick run` at once, with an
/// error naming the file.
#[test]
fn bad_tls_files_are_named_at_startup() {
    let s = Setup::new();
    let pki = s.scratch.path().join("pki");
    let garbage = pki.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = pki.join("missing.pem");
    let other = s.ca.issue(&pki, "other-client", false);
    let cases = [
        (
            format!("    tls: {{ ca_file: {} }}\n", missing.display()),
            missing.clone(),
        ),
        (
            format!("    tls: {{ ca_file: {} }}\n", garbage.display()),
            garbage.clone(),
        ),
        (
            format!(
                "    tls: {{ cert_file: {}, key_file: {} }}\n",
                s.client.cert_file.display(),
                garbage.display()
            ),
            garbage.clone(),
        ),
        (
            // A key that is not the certificate's.
            format!(
                "    tls: {{ cert_file: {}, key_file: {} }}\n",
                s.client.cert_file.display(),
                other.key_file.display()
            ),
            s.client.cert_file.clone(),
        ),
    ];
    for (tls, named) in cases {
        let config = s.config(&s.tls.endpoint(), &tls);
        let out = sidekick(&["run", "-c", config.to_str().unwrap()]);
        let msg = text(&out);
        assert!(!out.status.success(), "started with {tls}: {msg}");
        assert!(
            msg.lines().any(|l| l.contains(named.to_str().unwrap())),
            "no line names {} for {tls}:\n{msg}",
            named.display()
        );
    }
}

/// `sidekick check` warns (exit 0) about plain http beyond this host, not
/// about loopback.
#[test]
fn check_warns_about_plain_http_beyond_this_host() {
    let s = Setup::new();
    let remote = s.config("http://collector.example.com:4318", "");
    let out = sidekick(&["check", "-c", remote.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("warning")
            && l.contains("plain http://")
            && l.contains("collector.example.com")),
        "{stderr}"
    );
    let local = s.config("http://127.0.0.1:4318", "");
    let out = sidekick(&["check", "-c", local.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("plain http://"),
        "{}",
        text(&out)
    );
}

/// A config whose worst case exceeds `limits.max_memory` is refused by
/// `check` and `run` (exit 2) with the estimate's parts; a smaller one runs.
#[test]
fn max_memory_refuses_a_config_that_may_need_more() {
    let s = Setup::new();
    let big = s.config("http://127.0.0.1:4318", "");
    let text_big = std::fs::read_to_string(&big).unwrap();
    std::fs::write(&big, format!("limits: {{ max_memory: 64MiB }}\n{text_big}")).unwrap();
    for cmd in ["check", "run"] {
        let out = sidekick(&[cmd, "-c", big.to_str().unwrap()]);
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {msg}");
        let line = msg
            .lines()
            .find(|l| l.contains("limits.max_memory"))
            .unwrap_or_else(|| panic!("{cmd}: no line about limits.max_memory:\n{msg}"));
        for part in [
            "64MiB",
            "log files",
            "1024 open files",
            "queue",
            "batches",
            "requests",
        ] {
            assert!(line.contains(part), "{cmd}: {line:?} lacks {part:?}");
        }
        assert!(line.contains(&format!("{}:1:", big.display())), "{line}");
    }
    let small = s.config("http://127.0.0.1:4318", "");
    let text_small = std::fs::read_to_string(&small).unwrap().replace(
        "    scan_interval: 200ms\n",
        "    scan_interval: 200ms\n    max_open_files: 16\n    max_line_bytes: 64KiB\n",
    );
    std::fs::write(
        &small,
        format!("limits: {{ max_memory: 96MiB }}\n{text_small}"),
    )
    .unwrap();
    let out = sidekick(&["check", "-c", small.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Attached to another user's process without the capabilities to see all
/// of it, sidekick goes on with what it can read and says once, per figure,
/// what it could not read and which capability would give it; not once per
/// sample. Needs root (to run sidekick as `nobody` against a root process).
#[test]
fn another_users_process_gives_one_warning_per_unreadable_figure() {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and setpriv to run sidekick as another user");
        return;
    }
    let s = Scratch::new();
    // A directory `nobody` may write its data_dir and read its config in.
    let dir = s.path().join("nobody");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    for d in [s.path(), s.path().parent().unwrap()] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            eprintln!("skipped: {} is not searchable by others", d.display());
            return;
        }
    }
    let config = dir.join("sidekick.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: {}\ntelemetry: {{ listen: \"off\" }}\nmetrics: {{ interval: 100ms, cgroup: false }}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Found (or built) before the target starts, so that a slow build
    // cannot outlast it.
    let bin = sidekick_bin();
    let mut target = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid = target.id().to_string();
    let stderr_path = dir.join("stderr");
    let child = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin)
        .args(["run", "-c", config.to_str().unwrap(), "--pid", &pid])
        .env("SIDEKICK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn sidekick as nobody");
    let mut agent = Killed(child);
    // The first sample warns; the next ones (every 100 ms) must not.
    let io = format!("/proc/{pid}/io");
    wait_until(
        Duration::from_secs(30),
        "the warning about /proc/PID/io",
        || std::fs::read_to_string(&stderr_path).is_ok_and(|t| t.contains(&io)),
        || std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let samples = std::fs::read_to_string(dir.join("stdout"))
        .unwrap_or_default()
        .matches("process.cpu.time")
        .count();
    assert!(samples >= 4, "too few samples to tell: {samples}");
    let _ = target.kill();
    let _ = target.wait();
    agent.wait_exit(Duration::from_secs(15));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let io_lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&io)).collect();
    assert_eq!(io_lines.len(), 1, "one warning about {io}:\n{stderr}");
    assert!(io_lines[0].contains("CAP_SYS_PTRACE"), "{}", io_lines[0]);
    let fd = format!("/proc/{pid}/fd");
    let fd_lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&fd)).collect();
    assert!(
        !fd_lines.is_empty() && fd_lines.len() <= 2,
        "at most one warning each (auto-discovery, fd count) about {fd}:\n{stderr}"
    );
    assert!(fd_lines.iter().all(|l| l.contains("CAP_")), "{fd_lines:?}");
}
