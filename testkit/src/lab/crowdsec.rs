//! A CrowdSec Local API of the test's own (Debian's `crowdsec`, LAPI only: `crowdsec -no-cs`):
//! its config, SQLite database and logs in the test's work directory, no online API, listening in
//! a namespace the test made; `cscli` against it for bouncers, machines and decisions.

use super::*;

/// A running LAPI. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct Lapi<'a> {
    ns: &'a Netns,
    dir: PathBuf,
    listen: SocketAddr,
    child: Option<Child>,
    starts: u32,
}

impl<'a> Lapi<'a> {
    /// Writes its config under `work`/`tag` and starts it on `listen` in `ns`.
    pub fn start(ns: &'a Netns, work: &WorkDir, tag: &str, listen: SocketAddr) -> Self {
        require_tools(&["crowdsec", "cscli"]);
        let dir = work.join(tag);
        fs::create_dir_all(dir.join("data"))
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
        let d = dir.display();
        // The package's profiles (a ban of 4 h per alert) and simulation settings; everything
        // that is written lives in the test's directory.
        let config = format!(
            "common:\n  daemonize: false\n  log_media: file\n  log_level: info\n  log_dir: {d}/\n  working_dir: {d}\n\
             config_paths:\n  config_dir: /etc/crowdsec/\n  data_dir: {d}/data/\n  simulation_path: /etc/crowdsec/simulation.yaml\n  \
             hub_dir: /var/lib/crowdsec/hub/\n  index_path: /var/lib/crowdsec/hub/.index.json\n  notification_dir: {d}/notifications/\n  \
             plugin_dir: /usr/lib/crowdsec/plugins/\n\
             crowdsec_service:\n  acquisition_path: /etc/crowdsec/acquis.yaml\n\
             cscli:\n  output: human\n  color: no\n\
             db_config:\n  log_level: info\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: false\n\
             api:\n  client:\n    credentials_path: {d}/cscli-credentials.yaml\n  server:\n    log_level: info\n    \
             listen_uri: {listen}\n    profiles_path: /etc/crowdsec/profiles.yaml\n    console_path: {d}/console.yaml\n    \
             trusted_ips:\n      - 127.0.0.1\n\
             prometheus:\n  enabled: false\n"
        );
        fs::write(dir.join("config.yaml"), config)
            .unwrap_or_else(|err| panic!("cannot write the LAPI config in {d}: {err}"));
        let mut lapi = Self {
            ns,
            dir,
            listen,
            child: None,
            starts: 0,
        };
        // cscli's own machine, for `decisions add/delete/import`; written to the database.
        let local = SocketAddr::new([127, 0, 0, 1].into(), listen.port());
        let creds = lapi.dir.join("cscli-credentials.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            "cscli",
            "--auto",
            "--force",
            "--url",
            &format!("http://{local}"),
            "-f",
            &creds.display().to_string(),
        ]);
        lapi.resume();
        lapi
    }

    /// `http://ADDRESS:PORT` as the gateways reach it.
    pub fn url(&self, host: IpAddr) -> String {
        format!("http://{}", SocketAddr::new(host, self.listen.port()))
    }

    /// Runs `cscli -c CONFIG ARGS...` in the LAPI's namespace; its stdout, or the test fails.
    pub fn cscli(&self, args: &[&str]) -> String {
        let config = self.dir.join("config.yaml");
        run(self
            .ns
            .command(tool("cscli"))
            .arg("-c")
            .arg(&config)
            .args(args))
        .unwrap_or_else(|err| panic!("cscli: {err}"))
    }

    /// Registers a bouncer; its API key.
    pub fn add_bouncer(&self, name: &str) -> String {
        let out = self.cscli(&["bouncers", "add", name, "-o", "raw"]);
        let key = out.trim().lines().last().unwrap_or("").trim().to_owned();
        assert!(
            key.len() >= 16,
            "cscli bouncers add printed no key: {out:?}"
        );
        key
    }

    /// Registers a watcher machine with this password.
    pub fn add_machine(&self, name: &str, password: &str) {
        let out = self.dir.join(format!("{name}-credentials.yaml"));
        self.cscli(&[
            "machines",
            "add",
            name,
            "--password",
            password,
            "--force",
            "-f",
            &out.display().to_string(),
        ]);
    }

    /// Stops it (SIGTERM): the gateways find it unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGTERM);
        }
    }

    /// Starts it again on the same database and address.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the LAPI already runs");
        self.starts += 1;
        let config = self.dir.join("config.yaml");
        let log = self.dir.join(format!("crowdsec-{}.out", self.starts));
        let (ns, listen) = (self.ns, self.listen);
        self.child = Some(start_logged(
            self.ns
                .command(tool("crowdsec"))
                .arg("-c")
                .arg(&config)
                .arg("-no-cs"),
            "crowdsec (LAPI only)",
            &log,
            Duration::from_secs(20),
            || listens(ns, listen),
        ));
    }

    /// The LAPI's own log, for failure messages.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("crowdsec_api.log"))
    }
}

impl Drop for Lapi<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}
