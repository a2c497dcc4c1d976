//! Running `wharf serve` as a child process and looking at it from outside: what the
//! benchmark programs and the integration tests share. Everything here goes through the real
//! binary, real sockets and /proc, never in-process shortcuts.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A `wharf serve` child with its admin address. Killed (SIGKILL) on drop if still running.
pub struct ServerProcess {
    pub child: Child,
    pub admin: SocketAddr,
    /// The SQS/SNS HTTP listener.
    pub http: SocketAddr,
    /// The AMQP listener.
    pub amqp: SocketAddr,
    /// The start-up block as printed (empty until [`ServerProcess::wait_started`]).
    pub startup_block: String,
    stdout: Option<BufReader<ChildStdout>>,
}

/// A port that was free a moment ago. Racy by nature, but only other processes on this
/// machine can take it in between, and a test that loses the race fails loudly on bind.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ServerProcess {
    /// Start `binary serve` with every listener on a free loopback port, plus `extra_args`;
    /// stderr is inherited.
    pub fn spawn(binary: &Path, extra_args: &[&str]) -> anyhow::Result<ServerProcess> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let amqp: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--http")
            .arg(http.to_string())
            .arg("--amqp")
            .arg(amqp.to_string())
            .args(extra_args)
            .env_remove("WHARF_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(ServerProcess { child, admin, http, amqp, startup_block: String::new(), stdout })
    }

    /// Read the start-up block up to its `ready in` line. Fails if the process exits first.
    pub fn wait_started(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let Some(stdout) = self.stdout.as_mut() else { bail!("stdout already consumed") };
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                let status = self.child.wait()?;
                bail!("wharf exited ({status}) before it was ready; it printed:\n{}", self.startup_block);
            }
            self.startup_block.push_str(&line);
            if line.starts_with("ready in") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("wharf did not print its start-up block within {timeout:?}");
            }
        }
    }

    /// Poll until the admin port accepts a TCP connection.
    pub fn wait_accepting(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if TcpStream::connect(self.admin).is_ok() {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        bail!("admin port {} not accepting within {timeout:?}", self.admin)
    }

    /// Poll `/health` until it answers 200.
    pub fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok((200, _)) = self.get("/health") {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!("/health not ready within {timeout:?}")
    }

    /// GET a path on the admin listener: (status, body).
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut response = agent.get(format!("http://{}{path}", self.admin)).call()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string()?;
        Ok((status, body))
    }

    /// Value of one sample line of `/metrics` (exact name including labels).
    pub fn metric(&self, sample: &str) -> anyhow::Result<Option<f64>> {
        let (_, text) = self.get("/metrics")?;
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok()))
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_of(self.child.id())
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        signal(self.child.id(), libc::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("wharf did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, signal: libc::c_int) -> anyhow::Result<()> {
    signal_pid(libc::pid_t::try_from(pid).context("pid out of range")?, signal)
}

/// kill(2) with a raw pid: negative means a whole process group.
pub fn signal_pid(pid: libc::pid_t, signal: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions; it only sends a signal.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill(2)");
    }
    Ok(())
}

/// Resident set size of a process, from `VmRSS` in /proc/PID/status.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kb * 1024)
}
