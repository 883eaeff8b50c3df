//! A private Postfix instance: Debian's Postfix with its own main.cf, master.cf, queue, data
//! directory and log file in the test's work directory, started inside a namespace. The machine's
//! own /etc/postfix is only read (postfix-files, by `postfix start`), its mail queue never used.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::{UnixListener, UnixStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::*;

/// How the instance is configured: lines added to main.cf, and whether master.cf runs the
/// submission service on 587 (SASL on; STARTTLS required and, on 465, TLS from the first byte;
/// with `submission_tls` false, 587 only and without TLS).
#[derive(Clone, Debug)]
pub struct PostfixSetup {
    pub main_cf: String,
    pub submission: bool,
    pub submission_tls: bool,
}

/// A running private instance; stopped (and its master killed if it lingers) on drop.
pub struct Postfix<'a> {
    ns: &'a Netns,
    dir: PathBuf,
    _sasl: SaslStub,
}

impl<'a> Postfix<'a> {
    /// Writes the configuration, a self-signed certificate (openssl) and starts a SASL stub and
    /// Postfix in `ns`; returns once it listens on port 25 (and 587 when asked).
    pub fn start(ns: &'a Netns, work: &WorkDir, setup: &PostfixSetup) -> Self {
        let dir = work.join("postfix");
        for sub in ["conf", "queue", "data"] {
            fs::create_dir_all(dir.join(sub))
                .unwrap_or_else(|err| panic!("cannot create {}/{sub}: {err}", dir.display()));
        }
        // Postfix's master locks its data directory as the mail owner.
        run(Command::new(tool("chown"))
            .arg("postfix")
            .arg(dir.join("data")))
        .unwrap_or_else(|err| panic!("chown postfix data: {err}"));
        run(Command::new(tool("openssl"))
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=mx.port25.test", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem")))
        .unwrap_or_else(|err| panic!("openssl: cannot make the test certificate: {err}"));
        let sasl = SaslStub::start(&dir.join("auth"));
        let postfix = Self {
            ns,
            dir,
            _sasl: sasl,
        };
        postfix.write(setup);
        postfix
            .postfix(&["start"])
            .unwrap_or_else(|err| panic!("postfix start: {err}\n{}", postfix.log()));
        postfix.wait_for(setup);
        postfix
    }

    /// Rewrites the configuration and reloads it; returns once the listeners match.
    pub fn reconfigure(&self, setup: &PostfixSetup) {
        self.write(setup);
        self.postfix(&["reload"])
            .unwrap_or_else(|err| panic!("postfix reload: {err}\n{}", self.log()));
        self.wait_for(setup);
    }

    /// `postconf -c` takes this.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// Its log (maillog_file).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Files in its queue: a message exists there from MAIL FROM (incoming) until delivered.
    pub fn queued(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for sub in ["maildrop", "incoming", "active", "deferred", "hold"] {
            let Ok(entries) = fs::read_dir(self.dir.join("queue").join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                files.push(entry.path());
            }
        }
        files
    }

    fn write(&self, setup: &PostfixSetup) {
        let d = self.dir.display();
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             command_directory = /usr/sbin\n\
             daemon_directory = /usr/lib/postfix/sbin\n\
             shlib_directory = /usr/lib/postfix\n\
             meta_directory = /etc/postfix\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             myhostname = mx.port25.test\n\
             mydestination = mx.port25.test\n\
             inet_interfaces = all\n\
             inet_protocols = ipv4\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             maillog_file_prefixes = {d}\n\
             maillog_file = {d}/maillog\n\
             smtpd_peername_lookup = no\n\
             smtpd_tls_cert_file = {d}/cert.pem\n\
             smtpd_tls_key_file = {d}/key.pem\n\
             smtpd_tls_security_level = may\n\
             smtpd_sasl_type = dovecot\n\
             smtpd_sasl_path = {d}/auth\n\
             {}\n",
            setup.main_cf
        );
        let submission = match (setup.submission, setup.submission_tls) {
            (false, _) => "",
            (true, true) => {
                "submission inet n - n - - smtpd\n  -o smtpd_tls_security_level=encrypt\n  \
                 -o smtpd_sasl_auth_enable=yes\n\
                 465 inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n  \
                 -o smtpd_sasl_auth_enable=yes\n"
            }
            (true, false) => {
                "submission inet n - n - - smtpd\n  -o smtpd_tls_security_level=none\n  \
                 -o smtpd_sasl_auth_enable=yes\n"
            }
        };
        let master = format!(
            "smtp inet n - n - - smtpd\n{submission}{}",
            [
                "pickup unix n - n 60 1 pickup",
                "cleanup unix n - n - 0 cleanup",
                "qmgr unix n - n 300 1 qmgr",
                "tlsmgr unix - - n 1000? 1 tlsmgr",
                "rewrite unix - - n - - trivial-rewrite",
                "bounce unix - - n - 0 bounce",
                "defer unix - - n - 0 bounce",
                "trace unix - - n - 0 bounce",
                "verify unix - - n - 1 verify",
                "flush unix n - n 1000? 0 flush",
                "proxymap unix - - n - - proxymap",
                "smtp unix - - n - - smtp",
                "relay unix - - n - - smtp",
                "showq unix n - n - - showq",
                "error unix - - n - - error",
                "retry unix - - n - - error",
                "discard unix - - n - - discard",
                "local unix - n n - - local",
                "anvil unix - - n - 1 anvil",
                "scache unix - - n - 1 scache",
                "postlog unix-dgram n - n - 1 postlogd",
                "",
            ]
            .join("\n")
        );
        for (name, text) in [("main.cf", main), ("master.cf", master)] {
            let path = self.config_dir().join(name);
            fs::write(&path, text)
                .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        }
    }

    fn wait_for(&self, setup: &PostfixSetup) {
        let ready = poll(Duration::from_secs(10), || {
            let smtp = listens(self.ns, "0.0.0.0:25".parse().ok()?);
            let submission = listens(self.ns, "0.0.0.0:587".parse().ok()?);
            let smtps = listens(self.ns, "0.0.0.0:465".parse().ok()?);
            let want_smtps = setup.submission && setup.submission_tls;
            (smtp && submission == setup.submission && smtps == want_smtps).then_some(())
        });
        if ready.is_none() {
            panic!(
                "postfix in {} does not listen as configured after 10 s:\n{}",
                self.ns.name(),
                self.log()
            );
        }
    }

    /// `postfix -c DIR ARGS` in the namespace.
    fn postfix(&self, args: &[&str]) -> Result<String, String> {
        run(self
            .ns
            .command(tool("postfix"))
            .arg("-c")
            .arg(self.config_dir())
            .args(args))
    }
}

impl Drop for Postfix<'_> {
    fn drop(&mut self) {
        let _ = self.postfix(&["stop"]);
        // A master that did not stop (a failed test may leave it mid-start) is killed.
        let pid_file = self.dir.join("queue/pid/master.pid");
        if let Some(pid) = fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            send_signal(pid, libc::SIGKILL);
        }
    }
}

/// A stand-in for Dovecot's authentication service on a Unix socket, enough for Postfix's
/// `smtpd_sasl_type = dovecot` to offer AUTH PLAIN LOGIN: it answers the handshake, asks every
/// AUTH request for the client's response, and never authenticates anyone (the audit never sends
/// credentials). Offline, unlike a real backend's user database.
struct SaslStub {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl SaslStub {
    fn start(path: &Path) -> Self {
        let _ = fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|err| panic!("cannot listen on {}: {err}", path.display()));
        // Postfix's smtpd connects as the mail owner.
        fs::set_permissions(path, fs::Permissions::from_mode(0o666))
            .unwrap_or_else(|err| panic!("cannot chmod {}: {err}", path.display()));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                thread::spawn(move || {
                    let _ = stream.write_all(
                        b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
                          SPID\t1\nCUID\t1\nCOOKIE\t0123456789abcdef0123456789abcdef\nDONE\n",
                    );
                    // An AUTH request is asked for the client's response (CONT), which the
                    // audit cancels: no exchange goes further.
                    let Ok(reader) = stream.try_clone() else {
                        return;
                    };
                    for line in BufReader::new(reader).lines() {
                        let Ok(line) = line else { break };
                        if let Some(rest) = line.strip_prefix("AUTH\t") {
                            let id = rest.split('\t').next().unwrap_or("0");
                            if stream
                                .write_all(format!("CONT\t{id}\t\n").as_bytes())
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                });
            }
        });
        Self {
            path: path.to_owned(),
            stop,
        }
    }
}

impl Drop for SaslStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = UnixStream::connect(&self.path);
    }
}
