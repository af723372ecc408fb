//! A real S3-compatible server for the archive's tests: s3s-fs (the s3s project's file-system
//! store, installed by scripts/install-s3-server), on a free loopback port with a bucket of its
//! own, its objects plain files under its root, killed by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{free_port, missing, wait_for};

pub const ACCESS_KEY: &str = "relay-test-key";
pub const SECRET_KEY: &str = "relay-test-secret";
pub const BUCKET: &str = "archive";

pub struct S3 {
    pub port: u16,
    root: tempfile::TempDir,
    child: Option<Child>,
}

/// s3s-fs: $S3S_FS, or where scripts/install-s3-server puts it.
fn binary() -> Option<PathBuf> {
    let installed = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/replica-relay-tools/s3s/bin/s3s-fs"));
    std::env::var_os("S3S_FS")
        .map(PathBuf::from)
        .or(installed)
        .filter(|p| p.exists())
}

impl S3 {
    /// The server, or `None` (outside CI) where it is not installed.
    pub fn start() -> Option<S3> {
        let Some(bin) = binary() else {
            missing("s3s-fs (scripts/install-s3-server)");
            return None;
        };
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let mut s3 = S3 {
            port: free_port(),
            root,
            child: None,
        };
        s3.spawn(&bin);
        Some(s3)
    }

    fn spawn(&mut self, bin: &Path) {
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        self.child = Some(child);
        let port = self.port;
        wait_for("s3s-fs to accept connections", || {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            (up, up)
        });
    }

    /// Stops the server (kill -9): the object store unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and files.
    pub fn start_again(&mut self) {
        self.spawn(&binary().expect("s3s-fs"));
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The archive URL of `prefix` in the test bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The environment a relay or a restore needs for it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("REPLICA_RELAY_ARCHIVE_ENDPOINT", self.endpoint()),
        ]
    }

    /// The file s3s-fs keeps the object `key` of the bucket in.
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// The archive's manifest under `prefix`, once there is one.
    pub fn manifest(&self, prefix: &str) -> Option<serde_json::Value> {
        let text = std::fs::read(self.object_file(&format!("{prefix}/manifest.json"))).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}
