//! Throwaway PostgreSQL servers for the tests of the PostgreSQL store: real servers from the
//! system's binaries (`/usr/lib/postgresql/<version>/bin`, 15 preferred), never mocks.
//!
//! `fresh_database()` gives each test an empty database of its own on one server shared by
//! the test binary (started on first use), or on the server that `NOTES_TEST_POSTGRES_URL`
//! names. `PgServer::start()` starts a private one, for tests that stop it or need TLS.
//!
//! Invariants: a server that cannot start fails the test (never a skip). No server outlives
//! the test process: each is started from one long-lived thread with a parent-death signal
//! (SIGQUIT, PostgreSQL's immediate shutdown), since the kernel sends it when the *thread*
//! that spawned the child ends; a private server is also stopped by `Drop`, the shared one at
//! exit. Data directories left by killed test processes are removed by the next run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

/// How long a server may take to accept connections, or to stop.
const SERVER_DEADLINE: Duration = Duration::from_secs(30);
/// Names the data directories of this harness under the temp dir: `<prefix><pid>-<n>`.
const DIR_PREFIX: &str = "notes-test-pg-";

/// The folder of initdb and postgres: version 15 when installed, else the newest.
pub fn bin_dir() -> PathBuf {
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if preferred.join("initdb").exists() {
        return preferred;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: run tests/run, which installs them")
    })
}

/// The user and group the server runs as: `postgres` when the tests run as root (initdb
/// refuses root), else the tests' own.
fn postgres_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").expect("reading /proc/self");
    if me.uid() != 0 {
        return (me.uid(), me.gid());
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields[..] {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .expect("no `postgres` user: install the postgresql package (tests/run does)")
}

/// A free TCP port on the loopback interface.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// Spawns `cmd` from a thread that lives as long as the process, with SIGQUIT as its
/// parent-death signal (see the module's invariants).
fn spawn_kept(mut cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // Never reached while the process runs: the sender lives in a static.
                std::thread::park();
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    });
    // Runs in the child after it switched to the postgres user (which would clear the
    // setting), just before exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGQUIT)?;
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply))
        .expect("the spawner thread runs for the whole process");
    answer.recv().expect("the spawner thread answers")
}

/// Removes the data directories of test processes that no longer run.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            unmount_below(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Unmounts what is mounted below `dir` (the disks of `PgServer::put_on_small_disk`).
fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for point in mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
    {
        if Path::new(point).starts_with(dir) {
            let _ = Command::new("umount").arg(point).status();
        }
    }
}

/// A unique suffix in this process.
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The one role of a `PgServer` that must log in with a password (see `add_password_user`).
pub const PASSWORD_USER: &str = "notes_pw";

/// A PostgreSQL server in a temp dir, listening on 127.0.0.1 with trust authentication
/// (except for `PASSWORD_USER`).
pub struct PgServer {
    dir: PathBuf,
    pub port: u16,
    tls: bool,
    child: Option<Child>,
    /// The processes `freeze` stopped, for `thaw`.
    frozen: Vec<nix::unistd::Pid>,
}

impl PgServer {
    /// Starts a server of its own.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server that also accepts TLS (`ssl=on`), with a certificate for 127.0.0.1
    /// and localhost signed by a throwaway CA: see `ca_cert`.
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        remove_stale_dirs();
        let (uid, gid) = postgres_ids();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", unique().replace('_', "-")));
        std::fs::create_dir(&dir).expect("creating the server's temp dir");
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown temp dir");
        let out = Command::new(bin_dir().join("initdb"))
            .args([
                "-D",
                "data",
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .args(["--locale=C.UTF-8"])
            .current_dir(&dir)
            .uid(uid)
            .gid(gid)
            .env("HOME", &dir)
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Trust for everyone but `PASSWORD_USER`, whose logins need its password.
        let hba = dir.join("data/pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("reading pg_hba.conf");
        std::fs::write(
            &hba,
            format!("host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n{rules}"),
        )
        .expect("writing pg_hba.conf");
        let mut server = Self {
            dir,
            port: free_port(),
            tls,
            child: None,
            frozen: Vec::new(),
        };
        if tls {
            server.make_certificates(uid, gid);
        }
        server.resume();
        server
    }

    fn make_certificates(&self, uid: u32, gid: u32) {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&self.dir)
                .output()
                .expect("running openssl");
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
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=notes test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
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
            self.dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("writing server.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        use std::os::unix::fs::PermissionsExt;
        for file in ["server.key", "server.crt"] {
            let path = self.dir.join(file);
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown cert");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod cert");
        }
    }

    /// The CA certificate that signed a TLS server's certificate (for `sslrootcert`).
    pub fn ca_cert(&self) -> PathBuf {
        assert!(self.tls, "only a server from start_tls has certificates");
        self.dir.join("ca.crt")
    }

    /// Starts the server process (again, after `stop`) on the same port and data, and waits
    /// until it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let (uid, gid) = postgres_ids();
        let log = std::fs::File::create(self.dir.join("server.log")).expect("creating the log");
        let mut cmd = Command::new(bin_dir().join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir);
        for setting in [
            "listen_addresses=127.0.0.1",
            // A throwaway server: durability costs time and buys nothing here.
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=300",
            "shared_buffers=32MB",
        ] {
            cmd.args(["-c", setting]);
        }
        if self.tls {
            cmd.args(["-c", "ssl=on", "-c"])
                .arg(format!(
                    "ssl_cert_file={}",
                    self.dir.join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    self.dir.join("server.key").display()
                ));
        }
        cmd.uid(uid)
            .gid(gid)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let child = spawn_kept(cmd).expect("starting postgres");
        self.child = Some(child);
        let deadline = Instant::now() + SERVER_DEADLINE;
        loop {
            if self.try_sql("postgres", "SELECT 1").is_ok() {
                return;
            }
            let child = self.child.as_mut().expect("just started");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!("postgres exited ({status}) while starting:\n{}", self.log());
            }
            if Instant::now() >= deadline {
                panic!(
                    "postgres did not accept connections within {SERVER_DEADLINE:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops (SIGSTOP) the server and every backend: a hung server, that accepts TCP
    /// connections (the kernel does) but never answers. `thaw` undoes it.
    pub fn freeze(&mut self) {
        let postmaster = self.child.as_ref().expect("the server is running").id();
        let mut pids = vec![nix::unistd::Pid::from_raw(postmaster as i32)];
        for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The parent pid is the second field after the parenthesised command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid == Some(postmaster.to_string().as_str())
                && let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>()
            {
                pids.push(nix::unistd::Pid::from_raw(pid));
            }
        }
        for pid in &pids {
            let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGSTOP);
        }
        self.frozen = pids;
    }

    /// Resumes what `freeze` stopped.
    pub fn thaw(&mut self) {
        for pid in self.frozen.drain(..) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        }
    }

    /// Stops the server (fast shutdown: connections are closed), killing it if it takes too
    /// long. `resume` starts it again.
    pub fn stop(&mut self) {
        self.thaw();
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        if super::wait_until(&mut child, Instant::now() + SERVER_DEADLINE).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The URL of database `db` as the superuser, without TLS.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let name = format!("t_{}", unique());
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Creates `PASSWORD_USER` with `password`, owning database `db` (so it can create the
    /// schema there).
    pub fn add_password_user(&self, db: &str, password: &str) {
        self.sql(
            "postgres",
            &format!("CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{password}'"),
        );
        self.sql(
            "postgres",
            &format!("ALTER DATABASE {db} OWNER TO {PASSWORD_USER}"),
        );
    }

    /// Moves `table` of database `db` (with its TOAST data, not its indexes) onto a disk of
    /// its own of `size` (tmpfs syntax, such as "1m"), for a test to fill up. Needs root.
    pub fn put_on_small_disk(&self, db: &str, table: &str, size: &str) {
        let point = self.dir.join(format!("disk-{table}"));
        std::fs::create_dir(&point).expect("creating the mount point");
        let (uid, gid) = postgres_ids();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700,uid={uid},gid={gid}"))
            .arg("tmpfs")
            .arg(&point)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs (the test needs root)"
        );
        let space = format!("small_{}", unique());
        self.sql(
            "postgres",
            &format!("CREATE TABLESPACE {space} LOCATION '{}'", point.display()),
        );
        self.sql(db, &format!("ALTER TABLE {table} SET TABLESPACE {space}"));
    }

    /// Runs `sql` in database `db`; returns psql's unaligned output. Panics on failure.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        psql(&self.url(db), sql)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `sql` through psql against `url`; its unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The database name of a URL from `fresh_database` or `create_database`.
pub fn database_of(url: &str) -> String {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = path.split('?').next().unwrap_or_default();
    path.split_once('/')
        .map(|(_, db)| db.to_owned())
        .unwrap_or_default()
}

/// `url` with its database name replaced by `db` (query options kept).
fn with_dbname(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = main.split('/').next().unwrap_or_default();
    format!("{scheme}://{authority}/{db}{query}")
}

/// The server the tests of this binary share: `NOTES_TEST_POSTGRES_URL`'s, or one started on
/// first use and ended with the process.
enum Shared {
    External(String),
    Local(PgServer),
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| match std::env::var("NOTES_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            unsafe { nix::libc::atexit(drop_external_databases) };
            Shared::External(url)
        }
        _ => {
            let server = PgServer::start();
            // Statics are never dropped: at exit, stop it and remove its files here (the
            // parent-death signal alone would leave the files to the next run's sweep).
            unsafe { nix::libc::atexit(stop_shared_server) };
            Shared::Local(server)
        }
    })
}

/// The databases made on `NOTES_TEST_POSTGRES_URL`'s server, dropped at exit.
static EXTERNAL_DATABASES: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn drop_external_databases() {
    let Some(Shared::External(url)) = SHARED.get() else {
        return;
    };
    let names = std::mem::take(&mut *EXTERNAL_DATABASES.lock().unwrap_or_else(|p| p.into_inner()));
    for name in names {
        // FORCE: a test that failed may have left connections open.
        let _ = psql(url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

extern "C" fn stop_shared_server() {
    if let Some(Shared::Local(server)) = SHARED.get()
        && let Some(child) = &server.child
    {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        // Immediate shutdown: nothing of a throwaway server needs saving.
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT).is_ok() {
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        let _ = std::fs::remove_dir_all(&server.dir);
    }
}

/// The URL of a new, empty database for one test.
pub fn fresh_database() -> String {
    match shared() {
        Shared::Local(server) => server.create_database(),
        Shared::External(url) => {
            let name = format!("t_{}", unique());
            psql(url, &format!("CREATE DATABASE {name}"))
                .unwrap_or_else(|e| panic!("creating a database on NOTES_TEST_POSTGRES_URL: {e}"));
            EXTERNAL_DATABASES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(name.clone());
            with_dbname(url, &name)
        }
    }
}

/// Runs `sql` in the database at `url` (from `fresh_database`); panics on failure.
pub fn sql(url: &str, sql: &str) -> String {
    psql(url, sql).unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
}
