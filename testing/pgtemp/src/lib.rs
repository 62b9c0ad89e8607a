//! Temporary PostgreSQL clusters for tests and the pod runner.
//!
//! `TempPostgres::builder().start()` runs `initdb` in a fresh directory, starts `postgres` on a
//! free loopback port with password authentication (SCRAM) for TCP clients, and waits until the
//! server reports it is ready. Dropping the handle stops the server and removes the directory.
//! When the process runs as root the server runs as the `postgres` system user (PostgreSQL
//! refuses to run as root), so the directories are handed to that user.

pub mod citus;
pub mod tls;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser that `initdb` creates.
pub const SUPERUSER: &str = "postgres";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no PostgreSQL installation found (looked for initdb on PATH and under /usr/lib/postgresql); set PG_BINDIR")]
    NoInstallation,
    #[error("running as root, but the system user {0:?} that would run the server does not exist")]
    NoServerUser(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed with {status}:\n{output}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("PostgreSQL did not become ready within {timeout:?}; server log:\n{log}")]
    NotReady { timeout: Duration, log: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Where the PostgreSQL programs live and which user runs them.
#[derive(Debug, Clone)]
pub struct Installation {
    pub bindir: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl Installation {
    /// Finds the installation: `PG_BINDIR`, then `initdb` on PATH, then the newest
    /// `/usr/lib/postgresql/<major>/bin`.
    pub fn detect() -> Result<Self, Error> {
        let bindir = find_bindir().ok_or(Error::NoInstallation)?;
        let run_as = if is_root() {
            let user = std::env::var("PGTEMP_USER").unwrap_or_else(|_| "postgres".to_string());
            Some(lookup_user(&user).ok_or(Error::NoServerUser(user))?)
        } else {
            None
        };
        Ok(Self { bindir, run_as })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command.env_remove("PGDATA").env("LC_ALL", "C");
        command
    }

    fn hand_over(&self, path: &Path) -> Result<(), Error> {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("chmod {}", path.display())))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// The directory holding extension control files (`<sharedir>/extension`).
    pub fn extension_dir(&self) -> Option<PathBuf> {
        let output = Command::new(self.bindir.join("pg_config"))
            .arg("--sharedir")
            .output()
            .ok()?;
        let sharedir = String::from_utf8(output.stdout).ok()?;
        Some(Path::new(sharedir.trim()).join("extension"))
    }

    /// Whether an extension is installed into this PostgreSQL (its control file exists). Tests
    /// confirm with `pg_available_extensions` once the server runs.
    pub fn has_extension(&self, name: &str) -> bool {
        self.extension_dir()
            .map(|dir| dir.join(format!("{name}.control")).is_file())
            .unwrap_or(false)
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

const SIGINT: i32 = 2;

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn find_bindir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut majors: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    majors.sort();
    if let Some((_, bin)) = majors.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file()))
}

/// A free TCP port on `host`, found by binding port 0. The port is released before the server
/// binds it, so `start` retries on the rare collision.
fn free_port(host: &str) -> Result<u16, Error> {
    let listener = TcpListener::bind((host, 0)).map_err(io_err(format!("bind {host}:0")))?;
    let port = listener.local_addr().map_err(io_err("local_addr"))?.port();
    Ok(port)
}

fn random_password() -> Result<String, Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 24];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("read /dev/urandom"))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// Options for a temporary cluster.
#[derive(Debug, Clone)]
pub struct Builder {
    host: String,
    port: Option<u16>,
    data_dir: Option<PathBuf>,
    settings: Vec<(String, String)>,
    preload: Vec<String>,
    trust_tcp: bool,
    password: Option<String>,
    tls: Option<(String, String)>,
    tls_only: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_string(),
            port: None,
            data_dir: None,
            // fsync off for speed: it changes what survives a crash of the machine, not the WAL
            // positions a commit waits for. Commits stay synchronous, as in production: an
            // asynchronous commit can be lost by a logical shard move (see sql::commits).
            settings: vec![
                ("fsync".into(), "off".into()),
                ("full_page_writes".into(), "off".into()),
                ("max_connections".into(), "100".into()),
                ("shared_buffers".into(), "32MB".into()),
                ("max_worker_processes".into(), "16".into()),
            ],
            preload: Vec::new(),
            trust_tcp: false,
            password: None,
            tls: None,
            tls_only: false,
        }
    }
}

impl Builder {
    /// The loopback address to listen on (default 127.0.0.1).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// A fixed port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Keep the cluster in this directory (initialised when empty) instead of a temporary one.
    /// The directory is kept on drop, so a restarted server finds its data again.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// A server setting passed as `-c name=value`.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// A library for `shared_preload_libraries` (for example `citus`).
    pub fn preload(mut self, library: impl Into<String>) -> Self {
        self.preload.push(library.into());
        self
    }

    /// Accept TCP clients without a password (for Citus workers, which the coordinator reaches
    /// as whichever role runs a query). The default is SCRAM passwords.
    pub fn trust_tcp(mut self, trust: bool) -> Self {
        self.trust_tcp = trust;
        self
    }

    /// Serve TLS with this certificate chain and key (PEM).
    pub fn tls(mut self, cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        self.tls = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Accept TCP clients only over TLS (`hostssl` rules; needs `tls`).
    pub fn tls_only(mut self, only: bool) -> Self {
        self.tls_only = only;
        self
    }

    /// The superuser's password for a new cluster (default: random). A kept data directory keeps
    /// the password it was created with.
    pub fn superuser_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    pub fn start(self) -> Result<TempPostgres, Error> {
        let installation = Installation::detect()?;
        let root = match &self.data_dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(io_err(format!("mkdir {}", dir.display())))?;
                Root::Kept(dir.clone())
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("pgtemp-")
                    .tempdir()
                    .map_err(io_err("create temporary directory"))?;
                Root::Temp(dir)
            }
        };
        installation.hand_over(root.path())?;
        let data = root.path().join("data");
        let socket_dir = root.path().join("socket");
        let password_file = root.path().join("superuser-password");
        let password = if data.join("PG_VERSION").is_file() {
            fs::read_to_string(&password_file)
                .map_err(io_err("read the kept superuser password"))?
                .trim()
                .to_string()
        } else {
            let password = match &self.password {
                Some(password) => password.clone(),
                None => random_password()?,
            };
            fs::write(&password_file, &password).map_err(io_err("write password file"))?;
            installation.hand_over(&password_file)?;
            init_cluster(&installation, &data, &password_file, self.trust_tcp)?;
            if self.tls_only {
                let hba = data.join("pg_hba.conf");
                let text = fs::read_to_string(&hba).map_err(io_err("read pg_hba.conf"))?;
                let ssl_only: String = text
                    .lines()
                    .map(|l| match l.strip_prefix("host ") {
                        Some(rest) => format!("hostssl {rest}\n"),
                        None => format!("{l}\n"),
                    })
                    .collect();
                fs::write(&hba, ssl_only).map_err(io_err("write pg_hba.conf"))?;
            }
            password
        };
        let mut builder = self;
        if let Some((cert, key)) = builder.tls.take() {
            let cert_file = root.path().join("server.crt");
            let key_file = root.path().join("server.key");
            fs::write(&cert_file, cert).map_err(io_err("write server.crt"))?;
            fs::write(&key_file, key).map_err(io_err("write server.key"))?;
            for file in [&cert_file, &key_file] {
                installation.hand_over(file)?;
            }
            builder.settings.extend([
                ("ssl".to_string(), "on".to_string()),
                ("ssl_cert_file".to_string(), cert_file.display().to_string()),
                ("ssl_key_file".to_string(), key_file.display().to_string()),
            ]);
        }
        let this = builder;
        if !socket_dir.exists() {
            fs::create_dir(&socket_dir).map_err(io_err("mkdir socket dir"))?;
        }
        installation.hand_over(&socket_dir)?;

        let mut last_error = None;
        for _ in 0..3 {
            let port = match this.port {
                Some(port) => port,
                None => free_port(&this.host)?,
            };
            match start_server(&installation, &this, &data, &socket_dir, port) {
                Ok(child) => {
                    return Ok(TempPostgres {
                        installation,
                        root,
                        child: Some(child),
                        host: this.host,
                        port,
                        password,
                        builder_settings: this.settings,
                        preload: this.preload,
                    })
                }
                Err(error) => last_error = Some(error),
            }
            if this.port.is_some() {
                break;
            }
        }
        Err(last_error.unwrap_or(Error::NoInstallation))
    }
}

enum Root {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(dir) => dir.path(),
            Root::Kept(dir) => dir,
        }
    }
}

fn run(mut command: Command) -> Result<(), Error> {
    let description = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(description.clone()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::CommandFailed {
            command: description,
            status: output.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

fn init_cluster(
    installation: &Installation,
    data: &Path,
    password_file: &Path,
    trust_tcp: bool,
) -> Result<(), Error> {
    let host_auth = if trust_tcp { "trust" } else { "scram-sha-256" };
    let mut initdb = installation.command("initdb");
    initdb
        .arg("-D")
        .arg(data)
        .args([
            "-U",
            SUPERUSER,
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .arg("--auth-local=trust")
        .arg(format!("--auth-host={host_auth}"))
        .arg(format!("--pwfile={}", password_file.display()));
    run(initdb)
}

fn start_server(
    installation: &Installation,
    builder: &Builder,
    data: &Path,
    socket_dir: &Path,
    port: u16,
) -> Result<Child, Error> {
    let log_path = data.join("server.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err("open server log"))?;
    if let Some((uid, gid)) = installation.run_as {
        let _ = std::os::unix::fs::chown(&log_path, Some(uid), Some(gid));
    }
    let log_err = log.try_clone().map_err(io_err("clone log handle"))?;
    let mut postgres = installation.command("postgres");
    // libpq inside the server (Citus's node connections) reads ~/.postgresql: keep it ours.
    let home = data.parent().unwrap_or(data);
    postgres
        .env("HOME", home)
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(format!("listen_addresses={}", builder.host))
        .arg("-c")
        .arg(format!("unix_socket_directories={}", socket_dir.display()));
    for (name, value) in &builder.settings {
        postgres.arg("-c").arg(format!("{name}={value}"));
    }
    if !builder.preload.is_empty() {
        postgres.arg("-c").arg(format!(
            "shared_preload_libraries={}",
            builder.preload.join(",")
        ));
    }
    let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    let mut child = postgres
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(io_err("spawn postgres"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let pid_file = data.join("postmaster.pid");
    loop {
        if let Ok(Some(_status)) = child.try_wait() {
            return Err(Error::NotReady {
                timeout: START_TIMEOUT,
                log: read_log_since(&log_path, log_start),
            });
        }
        // The last line of postmaster.pid says "ready" once the server accepts connections.
        if let Ok(pid_text) = fs::read_to_string(&pid_file) {
            if pid_text.lines().nth(7).map(str::trim) == Some("ready") {
                return Ok(child);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::NotReady {
                timeout: START_TIMEOUT,
                log: read_log_since(&log_path, log_start),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_log_since(path: &Path, offset: u64) -> String {
    let text = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// A running temporary PostgreSQL server.
pub struct TempPostgres {
    installation: Installation,
    root: Root,
    child: Option<Child>,
    host: String,
    port: u16,
    password: String,
    builder_settings: Vec<(String, String)>,
    preload: Vec<String>,
}

impl TempPostgres {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A server with the default options.
    pub fn start() -> Result<Self, Error> {
        Builder::default().start()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// The directory of the server's Unix socket (local connections are trusted).
    pub fn socket_dir(&self) -> PathBuf {
        self.root.path().join("socket")
    }

    pub fn installation(&self) -> &Installation {
        &self.installation
    }

    /// A libpq key/value connection string for the superuser on `dbname`.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} password={} dbname={} connect_timeout=10",
            self.host, self.port, SUPERUSER, self.password, dbname
        )
    }

    /// Whether the server process still runs (false once it exited, was killed or stopped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (fast shutdown), keeping its data for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            let pid = i32::try_from(child.id()).unwrap_or(0);
            // SAFETY: plain kill(2) on the child we spawned; errors are ignored because the
            // process may already be gone.
            unsafe {
                libc_kill(pid, SIGINT);
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        let builder = Builder {
            host: self.host.clone(),
            port: Some(self.port),
            data_dir: None,
            settings: self.builder_settings.clone(),
            preload: self.preload.clone(),
            trust_tcp: false,
            password: None,
            tls: None,
            tls_only: false,
        };
        let data = self.root.path().join("data");
        let socket_dir = self.root.path().join("socket");
        self.child = Some(start_server(
            &self.installation,
            &builder,
            &data,
            &socket_dir,
            self.port,
        )?);
        Ok(())
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        read_log_since(&self.root.path().join("data").join("server.log"), 0)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prints the `SKIPPED: <test>: <reason>` line of a test that cannot run here. Straight to
/// stderr: the test harness hides `println!` output of passing tests, and a skip must show in the
/// CI log.
pub fn skipped(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_restarts_and_cleans_up() {
        let mut pg = TempPostgres::start().expect("start");
        let port = pg.port();
        assert!(std::net::TcpStream::connect((pg.host(), port)).is_ok());
        pg.stop();
        assert!(std::net::TcpStream::connect((pg.host(), port)).is_err());
        pg.restart().expect("restart");
        assert!(std::net::TcpStream::connect((pg.host(), port)).is_ok());
        let root = pg.root.path().to_path_buf();
        drop(pg);
        assert!(!root.exists(), "temporary directory removed on drop");
    }

    #[test]
    fn reports_the_log_when_the_server_cannot_start() {
        let error = TempPostgres::builder()
            .setting("no_such_setting", "1")
            .start()
            .err()
            .expect("a bad setting must fail");
        let text = error.to_string();
        assert!(text.contains("no_such_setting"), "{text}");
    }
}
