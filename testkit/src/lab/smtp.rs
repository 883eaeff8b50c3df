//! SMTP: smtp-sink servers and swaks clients.

use super::*;

/// An `smtp-sink` listening on one address in a namespace, dumping every message it accepts to a
/// file, so the test can count what arrived and from whom.
pub struct SmtpSink<'a> {
    /// Borrowed so that the namespace outlives the server.
    _ns: &'a Netns,
    child: Option<Child>,
    dump: PathBuf,
}

impl<'a> SmtpSink<'a> {
    /// Starts it on `listen` (`0.0.0.0:25` is every IPv4 address, `[::]:25` every IPv6 one) and
    /// returns once it listens.
    pub fn start(ns: &'a Netns, listen: SocketAddr, work: &WorkDir) -> Self {
        let tag = format!("{}-{}", listen.ip(), listen.port()).replace(':', "_");
        // smtp-sink runs as nobody: its dump directory must be writable by everyone.
        let dir = work.join("sinks");
        fs::create_dir_all(&dir)
            .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)))
            .unwrap_or_else(|err| panic!("cannot prepare {}: {err}", dir.display()));
        let dump = dir.join(format!("{tag}.mbox"));
        let output = work.join(format!("smtp-sink-{tag}.log"));
        let child = start_logged(
            ns.command(tool("smtp-sink"))
                .args(["-u", "nobody", "-c", "-D"])
                .arg(&dump)
                .arg(format!("inet:{listen}"))
                .arg("100"),
            &format!("smtp-sink on {listen}"),
            &output,
            Duration::from_secs(5),
            || listens(ns, listen),
        );
        Self {
            _ns: ns,
            child: Some(child),
            dump,
        }
    }

    /// The client address of every message received so far.
    pub fn messages(&self) -> Vec<IpAddr> {
        let Ok(text) = fs::read_to_string(&self.dump) else {
            return Vec::new(); // no message yet
        };
        text.lines()
            .filter_map(|line| line.strip_prefix("X-Client-Addr: "))
            .filter_map(|addr| addr.trim().trim_start_matches("ipv6:").parse().ok())
            .collect()
    }

    /// How many messages came from `client`.
    pub fn messages_from(&self, client: IpAddr) -> usize {
        self.messages().iter().filter(|&&a| a == client).count()
    }

    /// Waits (up to 5 s) until `expected` messages from `client` have been written out, and returns
    /// how many there are then. smtp-sink writes a message once its transaction ends, which may be a
    /// moment after the client saw "250".
    pub fn wait_for_messages(&self, client: IpAddr, expected: usize) -> usize {
        poll(Duration::from_secs(5), || {
            let got = self.messages_from(client);
            (got >= expected).then_some(got)
        })
        .unwrap_or_else(|| self.messages_from(client))
    }
}

impl Drop for SmtpSink<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGTERM);
        }
    }
}

/// What one swaks run did.
#[derive(Debug)]
pub struct Delivery {
    /// swaks exited 0: the whole SMTP transaction succeeded.
    pub delivered: bool,
    pub elapsed: Duration,
    /// swaks' transcript (stdout and stderr), for failure messages.
    pub transcript: String,
}

/// Sends one message with swaks from `source` (an address of `ns`) to `server:port`. Bounded: swaks
/// gives up on a silent peer after 3 s (`--timeout`), and `timeout` kills it after 15 s whatever
/// happens.
pub fn send_mail(ns: &Netns, source: IpAddr, server: IpAddr, port: u16) -> Delivery {
    swaks(None, ns, source, server, port)
}

/// [`send_mail`] from a process in `cgroup` (it joins before swaks starts): what the egress
/// guard's hooks see.
pub fn send_mail_in(
    cgroup: &Path,
    ns: &Netns,
    source: IpAddr,
    server: IpAddr,
    port: u16,
) -> Delivery {
    swaks(Some(cgroup), ns, source, server, port)
}

fn swaks(cgroup: Option<&Path>, ns: &Netns, source: IpAddr, server: IpAddr, port: u16) -> Delivery {
    let started = Instant::now();
    let mut command = Command::new(tool("timeout"));
    command.args(["--kill-after=2", "15"]);
    if let Some(cgroup) = cgroup {
        // The shell moves itself into the cgroup, then becomes the client: every process of the
        // client starts inside.
        command
            .arg(tool("sh"))
            .args(["-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\""])
            .arg(cgroup);
    }
    let output = command
        .arg(tool("ip"))
        .args(["netns", "exec", ns.name()])
        .arg(tool("swaks"))
        .args(["--server", &server.to_string(), "--port", &port.to_string()])
        .args(["--local-interface", &source.to_string()])
        .args(["--from", "a@example.org", "--to", "b@example.net"])
        .args(["--helo", "client.example.org", "--timeout", "3"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run swaks: {err}"));
    Delivery {
        delivered: output.status.success(),
        elapsed: started.elapsed(),
        transcript: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Whether a TCP socket in `ns` listens on exactly `address`.
pub(super) fn listens(ns: &Netns, address: SocketAddr) -> bool {
    let Ok(out) = run(ns.command(tool("ss")).arg("-Hltn")) else {
        return false;
    };
    out.lines().any(|line| {
        let Some(local) = line.split_whitespace().nth(3) else {
            return false;
        };
        // ss writes a dual-stack wildcard listener ([::] without IPV6_V6ONLY) as "*:PORT".
        match local.strip_prefix("*:") {
            Some(port) => address.ip().is_unspecified() && port.parse() == Ok(address.port()),
            None => local.parse::<SocketAddr>().ok() == Some(address),
        }
    })
}
