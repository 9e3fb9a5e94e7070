//! A real S3 server for the shared-store tests: moto's `moto_server` (installed into the
//! test venv), on a free port of 127.0.0.1, with conditional writes (`If-None-Match`,
//! `If-Match`) as S3 has them.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Test, python_venv};

pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("murphy-moto-")
            .tempdir()
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("no free port")
            .port();
        let mut moto = Moto {
            child: None,
            port,
            log: dir.path().join("moto.log"),
            _dir: dir,
        };
        moto.restart();
        moto
    }

    /// Starts the server (again) on its port, and waits until it answers.
    pub fn restart(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(python_venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot start the test venv's moto_server");
        self.child = Some(child);
        for _ in 0..600 {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("moto_server ended ({status}):\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not listen within 30 s:\n{}", self.log());
    }

    /// Kills the server with SIGKILL: every bucket and object it held is gone with it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals the process group the server leads.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes a bucket with the S3 API (boto3, from the venv) and returns its `s3://` URL.
    pub fn bucket(&self, name: &str) -> String {
        let status = Command::new(python_venv().join("bin/python"))
            .arg("-c")
            .arg(
                "import sys, boto3\n\
                 boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                 aws_access_key_id='testing', aws_secret_access_key='testing')\
                 .create_bucket(Bucket=sys.argv[2])",
            )
            .arg(self.endpoint())
            .arg(name)
            .status()
            .expect("cannot run the test venv's python");
        assert!(
            status.success(),
            "cannot create bucket {name}:\n{}",
            self.log()
        );
        format!("s3://{name}")
    }

    /// The variables murphy reads to reach this server, set on `test`.
    pub fn env(&self, test: Test) -> Test {
        test.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "moto-secret-value-1234")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}
