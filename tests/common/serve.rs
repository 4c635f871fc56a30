//! `tidewater serve` as the tests run it: the real binary on a free port, with its own
//! store file, killed when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tidewater::client::ApiClient;

use super::TestEnv;

const WAIT: Duration = Duration::from_secs(90);

/// A running `tidewater serve`; killed when dropped.
pub struct Serve {
    child: Option<Child>,
    pub url: String,
    log: PathBuf,
}

impl Serve {
    pub fn start(env: &TestEnv, store: &Path, n: usize) -> Self {
        Self::start_with_metrics(env, store, n, "off")
    }

    /// [`Serve::start`] with its metrics served at `metrics_listen` (`host:port`).
    pub fn start_with_metrics(env: &TestEnv, store: &Path, n: usize, metrics_listen: &str) -> Self {
        let log = env.dir.path().join(format!("serve-{n}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
            // The env's config names its cluster; the suite's own TW_BOOTSTRAP_SERVERS
            // (the shared broker) must not override it.
            .env_remove("TW_BOOTSTRAP_SERVERS")
            .arg("--config")
            .arg(&env.config_path)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                metrics_listen,
            ])
            .arg("--store")
            .arg(store)
            .env("RUST_LOG", "info,tidewater=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                panic!(
                    "no address printed: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        let serve = Self {
            child: Some(child),
            url,
            log,
        };
        serve.wait_ready();
        serve
    }

    pub fn client(&self, token: &str) -> ApiClient {
        ApiClient::new(&self.url, Some(token.to_string())).unwrap()
    }

    pub fn wait_ready(&self) {
        let c = ApiClient::new(&self.url, None).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, _) = match block(c.raw(Method::GET, c.url(&["readyz"], &[]), None)) {
                Ok(r) => r,
                Err(e) => panic!(
                    "serve is not answering ({e}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            };
            if status == StatusCode::OK {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit status must be success.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "serve exited {status}:\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("--- serve log ---\n{}", self.log_text());
            }
        }
    }
}

pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

impl Serve {
    /// `GET path` with an optional bearer token, as a bare HTTP/1.0 request: (status code,
    /// body). For probes that must not depend on the API client.
    pub fn get_raw(&self, path: &str, token: Option<&str>) -> (u16, String) {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://").trim_end_matches('/');
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// Waits until `/readyz` answers `want` (200 or 503); returns how long that took.
    pub fn await_readyz(&self, want: u16, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let (code, body) = self.get_raw("/readyz", None);
            if code == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "/readyz still answers {code} ({body}) after {timeout:?}, not {want}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
