//! Tidewater against a secured Apache Kafka: the broker of `TW_KAFKA_SECURITY=1
//! scripts/kafka.sh start` (TLS, SASL SCRAM and PLAIN, mutual TLS, ACLs enforced), whose
//! facts (`scripts/kafka.sh env`) `scripts/test.sh` exports. The scheduler runs as
//! `User:tidewater`, which has no rights but the ACLs `tidewater acl` prints for it;
//! topics are made and results read as the super user `User:admin`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::serve::{Serve, block};
use common::{SchedulerProcess, TestEnv, task, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use tidewater::api::redrive::DeadLetterRange;
use tidewater::api::{RedriveAction, RedriveRequest};
use tidewater::client::ClientError;
use tidewater::codec::{self, Encoding, Outcome, TaskStatus};
use tidewater::config::Config;
use tidewater::submit::Submitter;

/// The secured broker's facts, or `None` (the test is skipped, saying so) when no secured
/// broker was started for this run.
struct Secure {
    dir: PathBuf,
    sasl_ssl: String,
    sasl_plaintext: String,
    mtls: String,
}

fn secure() -> Option<Secure> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(dir) = var("TW_SECURE_DIR") else {
        eprintln!(
            "skipped: no secured broker (run scripts/test.sh, or export the output of `TW_KAFKA_SECURITY=1 scripts/kafka.sh env`)"
        );
        return None;
    };
    Some(Secure {
        dir: PathBuf::from(dir),
        sasl_ssl: var("TW_SECURE_SASL_SSL")?,
        sasl_plaintext: var("TW_SECURE_SASL_PLAINTEXT")?,
        mtls: var("TW_SECURE_MTLS")?,
    })
}

/// How a configuration reaches the secured broker.
#[derive(Clone, Copy)]
enum Via {
    ScramSsl,
    PlainSasl,
    MutualTls,
}

impl Secure {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `[kafka]` with `[kafka.security]` for user `tidewater` (or its certificate).
    fn kafka_section(&self, via: Via, password: &str) -> String {
        match via {
            Via::ScramSsl => format!(
                "[kafka]\nbootstrap_servers = \"{}\"\n[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nusername = \"tidewater\"\n{password}\nca_file = \"{}\"\n",
                self.sasl_ssl,
                self.file("ca.pem")
            ),
            Via::PlainSasl => format!(
                "[kafka]\nbootstrap_servers = \"{}\"\n[kafka.security]\nprotocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nusername = \"tidewater\"\n{password}\n",
                self.sasl_plaintext
            ),
            Via::MutualTls => format!(
                "[kafka]\nbootstrap_servers = \"{}\"\n[kafka.security]\nprotocol = \"ssl\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                self.mtls,
                self.file("ca.pem"),
                self.file("client.pem"),
                self.file("client.key")
            ),
        }
    }

    fn user_password(&self) -> String {
        format!("password_file = \"{}\"", self.file("tidewater.password"))
    }

    /// The super user's `[kafka]` section.
    fn admin_section(&self) -> String {
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\n[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nusername = \"admin\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
            self.sasl_ssl,
            self.file("admin.password"),
            self.file("ca.pem")
        )
    }

    fn admin_client(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.sasl_ssl)
            .set("security.protocol", "sasl_ssl")
            .set("sasl.mechanisms", "SCRAM-SHA-512")
            .set("sasl.username", "admin")
            .set(
                "sasl.password",
                std::fs::read_to_string(self.dir.join("admin.password")).unwrap(),
            )
            .set("ssl.ca.location", self.file("ca.pem"));
        cc
    }
}

/// One test's world on the secured broker: the scheduler's configuration (as
/// `User:tidewater`) and the same configuration as the super user.
struct SecureEnv {
    env: TestEnv,
    admin_path: PathBuf,
    admin: Config,
}

impl SecureEnv {
    fn new(s: &Secure, name: &str, kafka: &str, body: &str) -> Self {
        let prefix = unique(name);
        let dir = tempfile::tempdir().unwrap();
        let common = format!(
            "[topics]\nprefix = \"{prefix}\"\npartitions = 2\n[telemetry]\nmetrics_listen = \"127.0.0.1:0\"\n{}\n",
            body.replace("{prefix}", &prefix)
        );
        let text = format!("{kafka}{common}");
        let config_path = dir.path().join("tidewater.toml");
        std::fs::write(&config_path, &text).unwrap();
        let admin_text = format!("{}{common}", s.admin_section());
        let admin_path = dir.path().join("admin.toml");
        std::fs::write(&admin_path, &admin_text).unwrap();
        let admin = Config::from_toml(&admin_text).unwrap();
        // The scheduler's own configuration may name an unset variable (the wrong-password
        // test): parse it without reading secrets.
        let config = Config::from_toml(&text).unwrap_or_else(|_| admin.clone());
        let env = TestEnv {
            prefix,
            bootstrap: config.kafka.bootstrap_servers.clone(),
            dir,
            config_path,
            config,
        };
        Self {
            env,
            admin_path,
            admin,
        }
    }

    fn as_admin(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tidewater"))
            // The secured config names its listener; the suite's TW_BOOTSTRAP_SERVERS
            // (the shared plain broker) must not override it.
            .env_remove("TW_BOOTSTRAP_SERVERS")
            .arg("--config")
            .arg(&self.admin_path)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    fn init_topics(&self) {
        let out = self.as_admin(&["topics", "init"]);
        assert!(
            out.status.success(),
            "topics init as admin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The scheduler role's ACLs for `User:tidewater`, as `tidewater acl` prints them.
    fn scheduler_acls(&self) -> Vec<String> {
        self.acls("scheduler")
    }

    /// A role's ACLs for `User:tidewater`, as `tidewater acl` prints them.
    fn acls(&self, role: &str) -> Vec<String> {
        let out = self.as_admin(&["acl", "--role", role, "--principal", "User:tidewater"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn submit(&self, tenant: &str, tasks: Vec<tidewater::codec::Task>) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let s = Submitter::new(Arc::new(self.admin.clone()), Encoding::Avro)
            .unwrap()
            .allow_unknown(true);
        rt.block_on(common::submit_all(&s, tenant, tasks));
    }

    /// Outcomes on `topic`, read as the super user, until `want` or `timeout`.
    fn outcomes(&self, s: &Secure, topic: &str, want: usize, timeout: Duration) -> Vec<Outcome> {
        let consumer: BaseConsumer = s
            .admin_client()
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push(codec::decode_outcome(m.payload().unwrap_or_default()).unwrap());
            }
        }
        out
    }

    /// Outcomes on `<prefix>.done`, waiting for `want` of them.
    fn done(&self, s: &Secure, want: usize) -> Vec<Outcome> {
        let topic = format!("{}.done", self.env.prefix);
        self.outcomes(s, &topic, want, Duration::from_secs(120))
    }

    fn start(&self) -> SchedulerProcess {
        self.env.start_scheduler(0)
    }
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Adds or removes ACL lines through the secured broker's admin (`scripts/kafka.sh acl`).
fn acl(s: &Secure, mode: &str, lines: &[String]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh");
    let port = s.sasl_ssl.rsplit(':').next().unwrap();
    let mut child = Command::new(script)
        .args(["acl", mode])
        .env("TW_KAFKA_SECURITY", "1")
        .env("TW_KAFKA_PORT", port)
        .env_remove("TW_KAFKA_CONTROLLER_PORT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kafka.sh acl {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const ECHO: &str = r#"
[tenants.acme.functions.echo]
executor = { type = "inprocess", handler = "echo" }
on_success = "{prefix}.done"
"#;

/// A task end to end as `User:tidewater` with exactly its ACLs, exactly-once delivery.
fn end_to_end(via: Via, name: &str) {
    let Some(s) = secure() else { return };
    let started = Instant::now();
    let e = SecureEnv::new(&s, name, &s.kafka_section(via, &s.user_password()), ECHO);
    e.init_topics();
    acl(&s, "add", &e.scheduler_acls());
    let mut run = e.start();
    e.submit("acme", vec![task("t1", "echo", "hello")]);
    let done = e.done(&s, 1);
    assert_eq!(done.len(), 1, "no outcome\n{}", run.log_text());
    assert_eq!(done[0].task_id, "t1");
    assert_eq!(done[0].result.as_deref(), Some(&b"hello"[..]));
    assert!(run.terminate(Duration::from_secs(30)).success());
    eprintln!("{name}: {:?}", started.elapsed());
}

#[test]
fn a_task_runs_over_sasl_ssl_with_scram() {
    end_to_end(Via::ScramSsl, "scram");
}

#[test]
fn a_task_runs_over_sasl_plaintext_with_plain() {
    end_to_end(Via::PlainSasl, "plain");
}

#[test]
fn a_task_runs_over_mutual_tls() {
    end_to_end(Via::MutualTls, "mtls");
}

/// Runs `tidewater run` with `config_path` and `extra_env`; returns (success, stderr,
/// time taken).
fn run_to_exit(config_path: &Path, extra_env: &[(&str, &str)]) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        // The secured config names its listener; the suite's TW_BOOTSTRAP_SERVERS
        // (the shared plain broker) must not override it.
        .env_remove("TW_BOOTSTRAP_SERVERS")
        .arg("--config")
        .arg(config_path)
        .arg("run")
        .envs(extra_env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_wrong_password_ends_the_start_naming_mechanism_and_user() {
    let Some(s) = secure() else { return };
    let e = SecureEnv::new(
        &s,
        "wrongpw",
        &s.kafka_section(Via::ScramSsl, "password_env = \"TW_TEST_KAFKA_PASSWORD\""),
        ECHO,
    );
    e.init_topics();
    let secret = "not-the-password-6f1e";
    let (ok, stderr, took) = run_to_exit(&e.env.config_path, &[("TW_TEST_KAFKA_PASSWORD", secret)]);
    eprintln!("wrong password: exit after {took:?}");
    assert!(!ok, "run succeeded with a wrong password:\n{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(stderr.contains("SCRAM-SHA-512"), "{stderr}");
    assert!(stderr.contains("\"tidewater\""), "{stderr}");
    assert!(
        !stderr.contains(secret),
        "the password was printed:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "{stderr}"
    );
}

#[test]
fn a_ca_that_does_not_match_is_a_clear_tls_error() {
    let Some(s) = secure() else { return };
    let kafka = s
        .kafka_section(Via::ScramSsl, &s.user_password())
        .replace(&s.file("ca.pem"), &s.file("untrusted-ca.pem"));
    let e = SecureEnv::new(&s, "wrongca", &kafka, ECHO);
    e.init_topics();
    let (ok, stderr, took) = run_to_exit(&e.env.config_path, &[]);
    eprintln!("CA mismatch: exit after {took:?}");
    assert!(!ok, "run succeeded with the wrong CA:\n{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{stderr}");
    assert!(stderr.contains("TLS failed"), "{stderr}");
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    assert!(stderr.contains("kafka.security.ca_file"), "{stderr}");
}

#[test]
fn a_missing_acl_is_named_loses_nothing_and_granting_it_resumes() {
    let Some(s) = secure() else { return };
    let body = r#"
[tenants.acme.functions.fail]
executor = { type = "inprocess", handler = "fail" }
max_attempts = 1
[tenants.acme.functions.echo]
executor = { type = "inprocess", handler = "echo" }
on_success = "{prefix}.done"
"#;
    let e = SecureEnv::new(
        &s,
        "noacl",
        &s.kafka_section(Via::ScramSsl, &s.user_password()),
        body,
    );
    e.init_topics();
    let dlq = format!("{}.dlq.acme", e.env.prefix);
    let all = e.scheduler_acls();
    let withheld = format!("User:tidewater WRITE TOPIC LITERAL {dlq}");
    assert!(all.contains(&withheld), "{all:#?}");
    acl(&s, "add", &all);
    let mut run = e.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.log_text().contains("scheduler started") {
        assert!(
            Instant::now() < deadline,
            "not started:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The principal loses one ACL while running: write on the dead-letter topic.
    acl(&s, "remove", std::slice::from_ref(&withheld));
    e.submit("acme", vec![task("doomed", "fail", "x")]);
    // The denial is named: topic and operation.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = run.log_text();
        if log.contains(&format!("denied WRITE on topic {dlq}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no denial named in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        run.is_running(),
        "the scheduler stopped:\n{}",
        run.log_text()
    );
    // It stops taking new work while outcomes cannot be made durable.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.log_text().contains("fetching paused until they can") {
        assert!(
            Instant::now() < deadline,
            "fetching was not paused:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Submitted while fetching is paused: it waits in Kafka and runs after the grant.
    e.submit("acme", vec![task("later", "echo", "y")]);
    assert!(e.outcomes(&s, &dlq, 1, Duration::from_secs(3)).is_empty());
    acl(&s, "add", std::slice::from_ref(&withheld));
    let dead = e.outcomes(&s, &dlq, 1, Duration::from_secs(60));
    assert_eq!(
        dead.len(),
        1,
        "nothing on the DLQ after the grant\n{}",
        run.log_text()
    );
    assert_eq!(dead[0].task_id, "doomed");
    let done = e.done(&s, 1);
    assert_eq!(done.len(), 1, "the later task was lost\n{}", run.log_text());
    assert_eq!(done[0].task_id, "later");
    assert!(
        run.log_text().contains("fetching resumes"),
        "fetching resumed after the grant\n{}",
        run.log_text()
    );
    assert!(run.terminate(Duration::from_secs(30)).success());
}

/// A tiny HTTPS server answering `200 ok` to every request, with the broker's
/// certificate (signed by the throwaway CA, for 127.0.0.1).
fn https_server(s: &Secure, rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = CertificateDer::pem_file_iter(s.dir.join("broker.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(s.dir.join("broker.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[test]
fn https_functions_trust_their_ca_file_and_fail_on_an_unverified_certificate() {
    let Some(s) = secure() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = https_server(&s, &rt);
    let body = format!(
        r#"
[tenants.acme.functions.trusted]
executor = {{ type = "http", url = "https://{addr}/run", ca_file = "{ca}" }}
on_success = "{{prefix}}.done"
[tenants.acme.functions.untrusted]
executor = {{ type = "http", url = "https://{addr}/run" }}
max_attempts = 2
backoff = "1s"
"#,
        ca = s.file("ca.pem")
    );
    let e = SecureEnv::new(
        &s,
        "https",
        &s.kafka_section(Via::ScramSsl, &s.user_password()),
        &body,
    );
    e.init_topics();
    acl(&s, "add", &e.scheduler_acls());
    let mut run = e.start();
    e.submit(
        "acme",
        vec![task("good", "trusted", "a"), task("bad", "untrusted", "b")],
    );
    let done = e.done(&s, 1);
    assert_eq!(done.len(), 1, "{}", run.log_text());
    assert_eq!(done[0].result.as_deref(), Some(&b"ok"[..]));
    let dead = e.outcomes(
        &s,
        &format!("{}.dlq.acme", e.env.prefix),
        1,
        Duration::from_secs(60),
    );
    assert_eq!(dead.len(), 1, "{}", run.log_text());
    let bad = &dead[0];
    assert_eq!(bad.task_id, "bad");
    assert_eq!(bad.attempts.len(), 2, "retried as usual: {bad:?}");
    let error = bad.attempts[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "not a TLS error: {error}"
    );
    assert!(run.terminate(Duration::from_secs(30)).success());
}

#[test]
fn serve_terminates_tls_and_limits_bodies_and_query_strings() {
    let Some(s) = secure() else { return };
    let body = format!(
        r#"
[api]
listen = "127.0.0.1:0"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
max_body_bytes = 1024
max_query_bytes = 256
tokens = [{{ token = "sekrit-token", admin = true }}]
[indexer]
store = "{{dir}}/store.db"
{ECHO}
"#,
        cert = s.file("broker.pem"),
        key = s.file("broker.key"),
    );
    let dir = tempfile::tempdir().unwrap();
    let body = body.replace("{dir}", &dir.path().display().to_string());
    // As the super user: this test is about the API, not ACLs.
    let e = SecureEnv::new(&s, "serve", &s.admin_section(), &body);
    e.init_topics();
    let log = e.env.dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        // The secured config names its listener; the suite's TW_BOOTSTRAP_SERVERS
        // (the shared plain broker) must not override it.
        .env_remove("TW_BOOTSTRAP_SERVERS")
        .arg("--config")
        .arg(&e.env.config_path)
        .arg("serve")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed when the test ends, passed or not.
    let child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(a) = text
            .lines()
            .filter(|l| l.contains("API listening"))
            .flat_map(str::split_whitespace)
            .find_map(|w| w.strip_prefix("address="))
        {
            break a.to_string();
        }
        assert!(Instant::now() < deadline, "serve did not listen:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(s.dir.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let base = format!("https://{addr}");
    let auth = "Bearer sekrit-token";
    rt.block_on(async {
        let r = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // Plain HTTP gets no answer.
        assert!(
            reqwest::get(format!("http://{addr}/healthz"))
                .await
                .is_err()
        );
        let long = "a".repeat(300);
        let r = client
            .get(format!("{base}/v1/tasks?id_prefix={long}"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 414);
        let r = client
            .post(format!("{base}/v1/tasks"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"function\":\"echo\",\"tenant\":\"acme\",\"payload\":\"{}\"}}",
                "x".repeat(4096)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let r = client
            .get(format!("{base}/v1/tasks"))
            .header("authorization", "Bearer wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    });
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("sekrit-token"), "{text}");
}

/// `tidewater serve` holding only the ACLs `tidewater acl --role serve` prints: it indexes,
/// reads a task's record back through `<prefix>.record-readers`, and reads a dead-letter
/// topic for a redrive. The scheduler, holding only its own ACLs, dead-letters the task
/// first and has them taken away before `serve` starts.
#[test]
fn serve_with_its_acls_reads_task_records_and_dead_letters() {
    let Some(s) = secure() else { return };
    let body = r#"
[api]
tokens = [{ token = "tok-admin", admin = true }]
[indexer]
batch_wait = "50ms"
[tenants.acme.functions.broken]
executor = { type = "inprocess", handler = "fail" }
max_attempts = 1
"#;
    let kafka = s.kafka_section(Via::ScramSsl, &s.user_password());
    let e = SecureEnv::new(&s, "serveacl", &kafka, body);
    e.init_topics();
    let scheduler = e.acls("scheduler");
    acl(&s, "add", &scheduler);
    let mut run = e.start();
    e.submit("acme", vec![task("f1", "broken", "payload of f1")]);
    let dlq = e.env.dlq("acme");
    let dead = e.outcomes(&s, &dlq, 1, Duration::from_secs(120));
    assert_eq!(dead.len(), 1, "no dead letter\n{}", run.log_text());
    assert!(run.terminate(Duration::from_secs(30)).success());
    acl(&s, "remove", &scheduler);
    acl(&s, "add", &e.acls("serve"));

    let serve = Serve::start(&e.env, &e.env.dir.path().join("index.db"), 0);
    let admin = serve.client("tok-admin");
    let deadline = Instant::now() + Duration::from_secs(90);
    while block(admin.get("f1", None)).map(|d| d.task.status).ok() != Some(TaskStatus::Failed) {
        assert!(Instant::now() < deadline, "f1 was not indexed as failed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let record = block(admin.record("f1", None)).unwrap();
    assert_eq!(record.payload.text.as_deref(), Some("payload of f1"));
    let from_dlq = RedriveRequest {
        dead_letter: Some(DeadLetterRange {
            topic: dlq.clone(),
            ..DeadLetterRange::default()
        }),
        dry_run: true,
        ..RedriveRequest::default()
    };
    let r = block(admin.redrive(&from_dlq)).unwrap();
    assert_eq!(r.tasks.len(), 1, "{r:?}");
    assert_eq!(
        (r.tasks[0].id.as_str(), r.tasks[0].action),
        ("f1", RedriveAction::WouldSubmit)
    );

    // Without READ on the dead-letter topic, the redrive is refused naming the topic and
    // the ACL, at once, rather than answered "try again".
    let read_dlq: Vec<String> = e
        .acls("serve")
        .into_iter()
        .filter(|l| l.contains(" READ TOPIC ") && l.ends_with(&format!(" {dlq}")))
        .collect();
    assert_eq!(read_dlq.len(), 1, "serve's READ on {dlq}: {read_dlq:?}");
    acl(&s, "remove", &read_dlq);
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match block(admin.redrive(&from_dlq)) {
            Err(ClientError::Api {
                status, message, ..
            }) if status.as_u16() == 403 => break message,
            other => assert!(
                Instant::now() < deadline,
                "still not refused after the ACL went: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(refused.contains(&format!("`{dlq}`")), "{refused}");
    assert!(refused.contains("tidewater acl --role serve"), "{refused}");
    serve.stop();
}
