use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use port25_testkit::assert_mentions;

use super::*;
use crate::daemon::watch::watched_fingerprint;
use crate::model::ListKind;

/// A fresh scratch directory for one test (pid + name keep parallel runs apart).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("port25-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

const ORIGIN: &str = "/etc/port25/test.toml";

/// What `port25d check-config` prints of `c`.
fn shown(c: &Config) -> String {
    crate::cli::check_config::Summary(c).to_string()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(ORIGIN))
}

/// Asserts that parsing fails at `file:line` with a reason containing `fragment`.
fn assert_error(err: &ConfigError, file: &Path, line: Option<usize>, fragment: &str) {
    assert_eq!(err.location.file, file, "wrong file in: {err}");
    assert_eq!(err.location.line, line, "wrong line in: {err}");
    assert!(
        err.reason.contains(fragment),
        "reason {:?} lacks {fragment:?}",
        err.reason
    );
}

fn parse_error(text: &str, line: usize, fragment: &str) {
    let err = parse(text).expect_err("config should be rejected");
    assert_error(&err, Path::new(ORIGIN), Some(line), fragment);
}

/// Writes `files` (name, text) and `config` as `port25.toml` into a scratch directory, and asserts
/// that loading it fails at `at` (a file of that directory, a line) for `fragment`.
fn load_fails(
    tag: &str,
    config: &str,
    files: &[(&str, &str)],
    at: (&str, usize),
    fragment: &str,
) -> ConfigError {
    let dir = scratch(tag);
    for (name, text) in files {
        write(&dir.join(name), text);
    }
    write(&dir.join("port25.toml"), config);
    let err = Config::load(Some(&dir.join("port25.toml"))).expect_err("config should be rejected");
    assert_error(&err, &dir.join(at.0), Some(at.1), fragment);
    err
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

// ---- Positive cases ----------------------------------------------------------------------------

#[test]
fn embedded_default_parses_to_the_documented_defaults() {
    let c = Config::parse(EMBEDDED_DEFAULT, Path::new("<embedded default>")).unwrap();
    assert_eq!(c.source, "<embedded default>");
    assert_eq!(c.ports, vec![25]);
    assert_eq!(c.policy, Policy::Ratelimit);
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.xdp_mode, XdpModeSetting::Auto);
    assert_eq!(c.xdp_coexist, XdpCoexist::Exclusive);
    assert!(c.interfaces.is_empty());
    assert!(c.allow.is_empty() && c.deny.is_empty());
    assert_eq!(
        c.metrics_listen,
        "127.0.0.1:9725".parse::<SocketAddr>().unwrap()
    );
    // The documented file and the built-in defaults must agree.
    let mut from_empty = parse("").unwrap();
    from_empty.source = c.source.clone();
    assert_eq!(c, from_empty);
}

#[test]
fn empty_file_gets_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.source, ORIGIN);
    assert_eq!(
        c.ratelimit,
        RateLimit {
            syn_rate: 20,
            syn_burst: 40,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            global_syn_rate: 2000,
            global_syn_burst: 4000,
            tracked_sources: 65536,
            verified_ttl: 600,
        }
    );
}

#[test]
fn load_none_falls_back_to_embedded_default_when_default_path_is_missing() {
    if Path::new(DEFAULT_PATH).exists() {
        return; // this host has a real config; nothing to learn here
    }
    let c = Config::load(None).unwrap();
    assert_eq!(c.source, "<embedded default>");
    assert_eq!(c.ports, vec![25]);
}

#[test]
fn full_config_with_files_parses() {
    let dir = scratch("full");
    let config = dir.join("port25.toml");
    write(
        &dir.join("allow.d/partners.txt"),
        "# partner MTAs\n\n198.18.1.0/24   # partner A\n  2001:db8:1::/48\n198.18.0.7\n198.18.1.0/24\n",
    );
    write(&dir.join("deny.txt"), "198.19.0.0/16\n");
    write(
        &config,
        r#"
interfaces = ["eth0", "eth1", "eth0"]
xdp_mode = "native"
xdp_coexist = "libxdp"
ports = [587, 25, 465, 25]
mode = "monitor"
policy = "drop"
[allow]
cidrs = ["198.18.0.0/24", "2001:db8::/48", "2001:db8::1", "198.18.0.0/24"]
files = ["allow.d/partners.txt"]
[deny]
files = ["deny.txt"]
[ratelimit]
syn_rate = 5
syn_burst = 10
ipv4_prefix = 24
ipv6_prefix = 48
global_syn_rate = 100
global_syn_burst = 200
tracked_sources = 1024
verified_ttl = 0
[metrics]
listen = "[::1]:9100"
"#,
    );
    let c = Config::load(Some(&config)).unwrap();
    assert_eq!(c.source, config.display().to_string());
    assert_eq!(c.interfaces, vec!["eth0", "eth1"]);
    assert_eq!(c.xdp_mode, XdpModeSetting::Native);
    assert_eq!(c.xdp_coexist, XdpCoexist::Libxdp);
    assert!(shown(&c).contains("xdp coexist       libxdp (a component of libxdp's dispatcher"));
    assert_eq!(c.ports, vec![25, 465, 587]);
    assert_eq!(c.mode, Mode::Monitor);
    assert_eq!(c.policy, Policy::Drop);
    // Sorted, deduplicated, bare addresses as hosts, files merged with inline entries.
    let v4: Vec<String> = c.allow.v4.iter().map(ToString::to_string).collect();
    assert_eq!(v4, vec!["198.18.0.0/24", "198.18.0.7/32", "198.18.1.0/24"]);
    let v6: Vec<String> = c.allow.v6.iter().map(ToString::to_string).collect();
    assert_eq!(
        v6,
        vec!["2001:db8::/48", "2001:db8::1/128", "2001:db8:1::/48"]
    );
    assert_eq!(c.allow.len(), 6);
    assert!(c.allow.contains_net(&net("2001:db8:1::/48")));
    assert!(
        !c.allow.contains_net(&net("198.18.1.0/25")),
        "exact entries only"
    );
    assert_eq!(c.deny, CidrSet::new([net("198.19.0.0/16")]));
    assert_eq!(
        c.ratelimit,
        RateLimit {
            syn_rate: 5,
            syn_burst: 10,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            global_syn_rate: 100,
            global_syn_burst: 200,
            tracked_sources: 1024,
            verified_ttl: 0,
        }
    );
    assert_eq!(
        c.metrics_listen,
        "[::1]:9100".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn relative_list_files_resolve_against_the_config_directory_not_cwd() {
    let dir = scratch("relative");
    write(&dir.join("conf/lists/allow.txt"), "198.18.5.0/24\n");
    let absolute = dir.join("abs.txt");
    write(&absolute, "198.18.6.0/24\n");
    let config = dir.join("conf/port25.toml");
    write(
        &config,
        &format!(
            "[allow]\nfiles = [\"lists/allow.txt\", {:?}]\n",
            absolute.display().to_string()
        ),
    );
    let c = Config::load(Some(&config)).unwrap();
    assert_eq!(
        c.allow,
        CidrSet::new([net("198.18.5.0/24"), net("198.18.6.0/24")])
    );
}

#[test]
fn list_file_comments_blank_lines_and_whitespace() {
    let nets = cidr::parse_list(
        "# header\n\n   \n\t198.18.0.0/24\t# trailing\r\n#198.18.9.0/24\n2001:db8::/32 #x\n",
    )
    .unwrap();
    assert_eq!(nets, vec![net("198.18.0.0/24"), net("2001:db8::/32")]);
}

#[test]
fn list_files_in_the_forms_blocklists_are_published_in() {
    // Spamhaus DROP (drop.txt), as fetched.
    let drop = "; Spamhaus DROP List 2026/12/07 - (c) 2026 The Spamhaus Project SLU\n\
                ; https://www.spamhaus.org/drop/drop.txt\n\
                ; Last-Modified: Mon, 07 Dec 2026 05:00:00 GMT\n\
                ; Expires: Mon, 07 Dec 2026 06:00:00 GMT\n\
                198.18.16.0/20 ; SBL256894\n\
                198.19.192.0/22 ; SBL459831\n";
    assert_eq!(
        cidr::parse_list(drop).unwrap(),
        vec![net("198.18.16.0/20"), net("198.19.192.0/22")]
    );
    // A CIDR and a note after a blank or a tab.
    assert_eq!(
        cidr::parse_list("198.18.0.0/24 spam source\n2001:db8::1\tseen 2026-12-01\n").unwrap(),
        vec![net("198.18.0.0/24"), net("2001:db8::1/128")]
    );
    // A prefix length split off is an error, not a /32.
    let (line, err) = cidr::parse_list("198.18.0.0/24\n198.18.1.0 /24\n").unwrap_err();
    assert_eq!(line, 2, "{err}");
}

#[test]
fn cidr_set_sorts_and_dedups() {
    let set = CidrSet::new(
        [
            "198.18.2.0/24",
            "2001:db8::/32",
            "198.18.1.0/24",
            "198.18.2.0/24",
        ]
        .map(net),
    );
    assert_eq!(
        *set.v4,
        vec![
            "198.18.1.0/24".parse::<ipnet::Ipv4Net>().unwrap(),
            "198.18.2.0/24".parse().unwrap()
        ]
    );
    assert_eq!(set.v6.len(), 1);
    assert_eq!(set.len(), 3);
    assert!(!set.is_empty());
    assert!(CidrSet::default().is_empty());
}

#[test]
fn overrides_apply() {
    let mut c = parse("interfaces = [\"eth0\"]\nxdp_mode = \"native\"\n").unwrap();
    let before = c.clone();
    c.apply(&Overrides::default());
    assert_eq!(c, before, "empty overrides change nothing");
    c.apply(&Overrides {
        interfaces: vec!["veth1".into(), "veth2".into(), "veth1".into()],
        xdp_mode: Some(XdpModeSetting::Skb),
        monitor: true,
        metrics_listen: Some("0.0.0.0:9999".parse().unwrap()),
    });
    assert_eq!(c.interfaces, vec!["veth1", "veth2"]);
    assert_eq!(c.xdp_mode, XdpModeSetting::Skb);
    assert_eq!(c.mode, Mode::Monitor);
    assert_eq!(
        c.metrics_listen,
        "0.0.0.0:9999".parse::<SocketAddr>().unwrap()
    );
    // monitor = false does not turn a monitoring config into an enforcing one.
    let mut m = parse("mode = \"monitor\"").unwrap();
    m.apply(&Overrides::default());
    assert_eq!(m.mode, Mode::Monitor);
}

#[test]
fn existing_interface_passes_check() {
    let c = parse("interfaces = [\"lo\"]").unwrap();
    c.check_interfaces().unwrap();
}

#[test]
fn display_lists_entries_and_caps_long_lists() {
    let cidrs: Vec<String> = (0..25).map(|i| format!("\"198.18.{i}.0/24\"")).collect();
    let c = parse(&format!(
        "interfaces = [\"eth0\"]\n[allow]\ncidrs = [{}]\n[deny]\ncidrs = [\"2001:db8::/32\"]\n",
        cidrs.join(", ")
    ))
    .unwrap();
    let text = shown(&c);
    assert_mentions(
        &text,
        &[
            ORIGIN,
            "eth0",
            "25 entries (25 IPv4, 0 IPv6)",
            "198.18.19.0/24",
            "… and 5 more",
            "1 entry (0 IPv4, 1 IPv6)",
            "2001:db8::/32",
            "127.0.0.1:9725",
            "20 SYN/s, burst 40",
        ],
    );
    assert!(!text.contains("198.18.20.0/24"), "capped at 20: {text}");
}

// ---- Errors: each names the file, the line and what to do --------------------------------------

#[test]
fn error_toml_syntax() {
    parse_error(
        "ports = [25]\n\npolicy = \"drop\n",
        3,
        "TOML syntax error at column 15",
    );
    parse_error(
        "ports = [25]\n[allow\ncidrs = []\n",
        2,
        "TOML syntax error at column 7: unclosed table",
    );
    parse_error(
        "ports = [25]\nmode = \"monitor\"\nports = [587]\n",
        3,
        "TOML syntax error",
    );
}

#[test]
fn error_unknown_top_level_key() {
    parse_error("ports = [25]\npolcy = \"drop\"\n", 2, "unknown key `polcy`");
}

#[test]
fn error_unknown_key_in_table() {
    parse_error(
        "[allow]\ncidrs = []\n\n[ratelimit]\nsyn_rate = 5\nsyn_brust = 10\n",
        6,
        "unknown key `syn_brust`",
    );
}

#[test]
fn error_unknown_table() {
    parse_error(
        "ports = [25]\n[alow]\ncidrs = []\n",
        2,
        "unknown key `alow`",
    );
}

#[test]
fn error_wrong_type() {
    parse_error("interfaces = []\nports = \"25\"\n", 2, "invalid type");
    parse_error("[ratelimit]\nsyn_rate = \"fast\"\n", 2, "invalid type");
    parse_error("\n[metrics]\nlisten = 9725\n", 3, "invalid type");
    parse_error("ports = [25]\nratelimit = [5, 10]\n", 2, "expected a table");
    parse_error("allow = []\n", 1, "expected a table");
}

#[test]
fn error_bad_enum_value() {
    parse_error("ports = [25]\npolicy = \"reject\"\n", 2, "`reject`");
    parse_error("xdp_mode = \"hw\"\n", 1, "`hw`");
    parse_error("xdp_coexist = \"shared\"\n", 1, "`shared`");
}

#[test]
fn error_bad_cidr_in_config() {
    parse_error(
        "[allow]\ncidrs = [\n  \"198.18.0.0/24\",\n  \"198.18.0.300/24\",\n]\n",
        4,
        "\"198.18.0.300\" is not an IPv4 or IPv6 address",
    );
    parse_error(
        "[deny]\ncidrs = [\"198.18.0.0/33\"]\n",
        2,
        "prefix length must be a number from 0 to 32",
    );
    parse_error(
        "[deny]\ncidrs = [\"2001:db8::/129\"]\n",
        2,
        "from 0 to 128 for IPv6",
    );
    parse_error("[deny]\n\ncidrs = [\"\"]\n", 3, "empty CIDR");
}

#[test]
fn error_host_bits_set() {
    parse_error(
        "[allow]\ncidrs = [\"198.18.0.1/24\"]\n",
        2,
        "host bits set in 198.18.0.1/24; did you mean 198.18.0.0/24?",
    );
    parse_error(
        "[allow]\ncidrs = [\"2001:db8::1/48\"]\n",
        2,
        "did you mean 2001:db8::/48?",
    );
}

#[test]
fn error_bad_cidr_in_list_file() {
    load_fails(
        "badlist",
        "[allow]\nfiles = [\"partners.txt\"]\n",
        &[(
            "partners.txt",
            "# partners\n198.18.0.0/24\n\nnot-an-address  # oops\n",
        )],
        ("partners.txt", 4),
        "\"not-an-address\" is not an IPv4 or IPv6 address",
    );
}

#[test]
fn error_host_bits_in_list_file() {
    load_fails(
        "hostbits-list",
        "[deny]\nfiles = [\"deny.txt\"]\n",
        &[("deny.txt", "198.19.0.0/16\n198.18.0.1/24\n")],
        ("deny.txt", 2),
        "did you mean 198.18.0.0/24?",
    );
}

#[test]
fn error_missing_list_file() {
    let config = "ports = [25]\n[deny]\nfiles = [\n  \"nope.txt\",\n]\n";
    let tried = std::env::temp_dir().join(format!(
        "port25-config-{}-missing-list/nope.txt",
        std::process::id()
    ));
    let reason = format!("list file {} cannot be read", tried.display());
    let err = load_fails("missing-list", config, &[], ("port25.toml", 4), &reason);
    assert!(err.reason.contains("No such file or directory"), "{err}");
}

#[test]
fn error_unreadable_list_file() {
    // A directory is never readable as a list, even as root (unlike a chmod 000 file).
    load_fails(
        "unreadable-list",
        "[allow]\nfiles = [\"lists\"]\n",
        &[("lists/README", "a directory, not a list\n")],
        ("port25.toml", 2),
        "is a directory, not a regular file",
    );
}

#[test]
fn error_port_zero() {
    parse_error(
        "ports = [\n  25,\n  0,\n]\n",
        3,
        "ports: 0 is out of range; use a port from 1 to 65535",
    );
}

#[test]
fn error_port_too_large() {
    parse_error(
        "mode = \"enforce\"\nports = [25, 70000]\n",
        2,
        "ports: 70000 is out of range; use a port from 1 to 65535",
    );
    parse_error("ports = [-25]\n", 1, "-25 is out of range");
}

#[test]
fn error_empty_ports() {
    parse_error("\nports = []\n", 2, "ports is empty");
}

#[test]
fn error_unknown_interface() {
    let c = parse("interfaces = [\"lo\", \"p25nosuch0\"]").unwrap();
    let err = c.check_interfaces().unwrap_err();
    assert_error(
        &err,
        Path::new(ORIGIN),
        None,
        "interface \"p25nosuch0\" does not exist",
    );
    let err = c.check_interfaces().unwrap_err();
    assert!(err.reason.contains("`ip link`"), "{err}");
}

#[test]
fn error_invalid_interface_name() {
    parse_error(
        "interfaces = [\n\"eth0\",\n\"a-name-far-too-long\"]\n",
        3,
        "longer than 15 bytes",
    );
    parse_error("interfaces = [\"eth 0\"]\n", 1, "whitespace");
}

#[test]
fn error_ratelimit_out_of_range() {
    parse_error(
        "[ratelimit]\nsyn_rate = 0\n",
        2,
        "ratelimit.syn_rate = 0 is out of range; use a value from 1 to 1000000",
    );
    parse_error(
        "[ratelimit]\nsyn_burst = 1000001\n",
        2,
        "ratelimit.syn_burst",
    );
    parse_error("[ratelimit]\n\nipv4_prefix = 33\n", 3, "from 1 to 32");
    parse_error("[ratelimit]\nipv6_prefix = 0\n", 2, "from 1 to 128");
    parse_error(
        "[ratelimit]\nglobal_syn_rate = -1\n",
        2,
        "ratelimit.global_syn_rate",
    );
    parse_error(
        "[ratelimit]\nglobal_syn_burst = 0\n",
        2,
        "ratelimit.global_syn_burst",
    );
    parse_error(
        "[ratelimit]\ntracked_sources = 100\n",
        2,
        "from 1024 to 16777216",
    );
    parse_error(
        "[ratelimit]\nverified_ttl = 86401\n",
        2,
        "ratelimit.verified_ttl = 86401 is out of range; use a value from 0 to 86400",
    );
}

#[test]
fn error_bad_metrics_listen() {
    parse_error(
        "[metrics]\nlisten = \"localhost:9725\"\n",
        2,
        "is not a socket address",
    );
    parse_error("[metrics]\n\nlisten = \"127.0.0.1\"\n", 3, "IP:PORT");
}

#[test]
fn error_missing_config_file_names_it() {
    let dir = scratch("missing-config");
    let config = dir.join("nope.toml");
    let err = Config::load(Some(&config)).unwrap_err();
    assert_error(&err, &config, None, "cannot read config file");
}

#[test]
fn error_display_is_file_line_reason() {
    let err = parse("ports = [0]\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{ORIGIN}:1: ports: 0 is out of range; use a port from 1 to 65535")
    );
}

#[test]
fn watched_directories_hold_list_files() {
    let dir = scratch("watched");
    write(&dir.join("feeds/a.txt"), "198.18.9.0/24\n# comment\n");
    write(&dir.join("feeds/b.list"), "2001:db8:9::/48\n");
    write(&dir.join("feeds/.hidden"), "not a cidr\n");
    write(&dir.join("feeds/c.txt~"), "not a cidr either\n");
    write(&dir.join("feeds/d.dpkg-old"), "nor this\n");
    let config = dir.join("port25.toml");
    write(&config, "on_exit = \"keep\"\n[deny]\ndirs = [\"feeds\"]\n");
    let c = Config::load(Some(&config)).unwrap();
    assert_eq!(
        c.deny,
        CidrSet::new([net("198.18.9.0/24"), net("2001:db8:9::/48")])
    );
    assert_eq!(c.watched_dirs, vec![dir.join("feeds")]);
    assert_eq!(c.on_exit, OnExit::Keep);
    let before = watched_fingerprint(&c.watched_dirs);
    assert_eq!(before.len(), 2, "leftovers are not list files");
    write(&dir.join("feeds/e.txt"), "198.18.10.0/24\n");
    assert_ne!(watched_fingerprint(&c.watched_dirs), before);

    // A bad entry in a watched file names that file and line.
    write(&dir.join("feeds/e.txt"), "198.18.10.0/24\n198.18.10.1/24\n");
    let err = Config::load(Some(&config)).unwrap_err();
    assert_error(&err, &dir.join("feeds/e.txt"), Some(2), "host bits set");
    // A missing directory is an error at its line in the config.
    write(&config, "[deny]\ncidrs = []\ndirs = [\"nowhere\"]\n");
    let err = Config::load(Some(&config)).unwrap_err();
    assert_error(&err, &config, Some(3), "cannot read directory");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Makes a FIFO at `path` (no writer ever opens it: reading it would block forever).
fn fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn a_list_file_that_is_none_is_refused_quickly_with_one_clear_line() {
    let dir = scratch("bad-lists");
    let config = dir.join("port25.toml");
    let huge_line = "1".repeat(20 << 20);
    write(&dir.join("one-line"), &huge_line);
    std::fs::write(
        dir.join("binary"),
        [0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00],
    )
    .unwrap();
    write(
        &dir.join("error.html"),
        "<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n",
    );
    fifo(&dir.join("fifo"));
    let cases: [(&str, &str, Option<usize>, &str); 5] = [
        (
            "/dev/zero",
            "port25.toml",
            Some(3),
            "is a character device, not a regular file",
        ),
        (
            "fifo",
            "port25.toml",
            Some(3),
            "is a FIFO, not a regular file",
        ),
        (
            "one-line",
            "one-line",
            Some(1),
            "a line of 20971520 bytes (at most 4096) starting \"1111",
        ),
        (
            "binary",
            "port25.toml",
            Some(3),
            "is not text (byte 1 is not UTF-8)",
        ),
        (
            "error.html",
            "error.html",
            Some(1),
            "this looks like an HTML page",
        ),
    ];
    for (file, at, line, fragment) in cases {
        write(
            &config,
            &format!("[deny]\ncidrs = []\nfiles = [\"{file}\"]\n"),
        );
        let started = std::time::Instant::now();
        let err = Config::load(Some(&config)).unwrap_err();
        let at = if at == "port25.toml" {
            config.clone()
        } else {
            dir.join(at)
        };
        assert_error(&err, &at, line, fragment);
        assert!(
            err.to_string().len() < 400,
            "{file}: one readable line: {err}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{file}: refused without reading it all"
        );
    }

    // Dropped into a watched directory: the whole directory is refused, naming the file.
    write(&dir.join("feeds/good.txt"), "198.18.9.0/24\n");
    write(&config, "[deny]\ndirs = [\"feeds\"]\n");
    assert!(Config::load(Some(&config)).is_ok());
    fifo(&dir.join("feeds/zz-fifo"));
    let err = Config::load(Some(&config)).unwrap_err();
    assert_error(&err, &dir.join("feeds/zz-fifo"), None, "is a FIFO");
    std::fs::remove_file(dir.join("feeds/zz-fifo")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("feeds/zero")).unwrap();
    let err = Config::load(Some(&config)).unwrap_err();
    assert_error(&err, &dir.join("feeds/zero"), None, "a character device");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_feed_of_millions_of_prefixes_loads() {
    let dir = scratch("big-feed");
    let mut text = String::with_capacity(40 << 20);
    for i in 0..2_000_000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        text.push_str(&format!("10.{b}.{c}.{d} # feed entry\n"));
    }
    write(&dir.join("feed.txt"), &text);
    let config = dir.join("port25.toml");
    write(&config, "[deny]\nfiles = [\"feed.txt\"]\n");
    let c = Config::load(Some(&config)).unwrap();
    assert_eq!(c.deny.len(), 2_000_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn egress_is_validated_and_shown() {
    let c = parse(
        "interfaces = []\n[egress]\nmode = \"monitor\"\nports = [25, 2525]\n\
         smart_hosts = [\"198.18.9.0/24\", \"2001:db8::25\", \"localhost\"]\n\
         allow_users = [\"root\", 4242]\nforward_interfaces = [\"lo\", \"lo\"]\nrefresh = 60\n",
    )
    .unwrap();
    let egress = &c.egress;
    assert_eq!(egress.ports, vec![25, 2525]);
    assert_eq!(egress.allow_users, vec![0, 4242]);
    assert_eq!(
        egress.forward_interfaces,
        vec!["lo".to_owned()],
        "deduplicated"
    );
    assert_eq!(egress.smart_host_names[0].name, "localhost");
    let loopback = IpAddr::from([127, 0, 0, 1]);
    assert!(egress.smart_host_names[0].addrs.contains(&loopback));
    assert!(egress.smart_hosts.contains_net(&IpNet::from(loopback)));
    assert_eq!(
        egress.cgroup,
        cgroup2_root().unwrap(),
        "the cgroup2 root by default"
    );
    let text = shown(&c);
    assert_mentions(
        &text,
        &[
            "(none: no XDP filter, the egress guard only)",
            "monitor (count and log, refuse nothing), TCP ports 25, 2525",
            "198.18.9.0/24, 2001:db8::25/128, localhost (127.0.0.1",
            "uid 0, uid 4242",
            "guarded on lo",
            "every 60 s",
        ],
    );
    assert!(shown(&parse("[egress]\nmode = \"off\"\n").unwrap()).contains("egress            off"));
}

#[test]
fn egress_mistakes_name_their_line() {
    let base = "interfaces = []\n[egress]\nmode = \"enforce\"\n";
    parse_error(
        &format!("{base}allow_users = [\"no-such-user-p25\"]\n"),
        4,
        "no user \"no-such-user-p25\" in /etc/passwd",
    );
    parse_error(
        &format!("{base}allow_cgroups = [\"no/such/cgroup\"]\n"),
        4,
        "no cgroup",
    );
    parse_error(
        &format!("{base}smart_hosts = [\"198.18.0.0/33\"]\n"),
        4,
        "egress.smart_hosts",
    );
    let nine: Vec<String> = (0..9).map(|i| format!("\"eth{i}\"")).collect();
    parse_error(
        &format!("{base}forward_interfaces = [\n{}\n]\n", nine.join(",\n")),
        13,
        "at most 8 interfaces",
    );
    parse_error(&format!("{base}refresh = 1\n"), 4, "egress.refresh");
}

#[test]
fn crowdsec_is_validated_shown_and_keeps_its_secrets() {
    let dir = scratch("crowdsec");
    write(&dir.join("bouncer.key"), "0123abcd\n");
    write(&dir.join("machine.pw"), "s3cret\n");
    write(
        &dir.join("port25.toml"),
        "[crowdsec]\nlapi_url = \"http://127.0.0.1:8080/\"\nbouncer_key_file = \"bouncer.key\"\n\
         update_frequency = 5\ndecision_types = [\"Ban\"]\norigins = [\"CAPI\", \"crowdsec\"]\n\
         machine_id = \"gw-a\"\nmachine_password_file = \"machine.pw\"\nreport_after = 500\n\
         report_window = 30\nreport_ban = \"1h30m\"\n",
    );
    let c = Config::load(Some(&dir.join("port25.toml"))).unwrap();
    let cs = c.crowdsec.clone().expect("on");
    assert_eq!(cs.lapi_url, "http://127.0.0.1:8080");
    assert_eq!(cs.bouncer_key.0, "0123abcd");
    assert_eq!(cs.decision_types, ["ban"]);
    assert_eq!(cs.scopes, ["ip", "range"]);
    assert_eq!(cs.origins, ["capi", "crowdsec"]);
    let reporter = cs.reporter.clone().expect("reporter");
    assert_eq!((reporter.report_after, reporter.report_window), (500, 30));
    let shown = format!("{}\n{c:?}", shown(&c));
    assert!(
        !shown.contains("0123abcd") && !shown.contains("s3cret"),
        "{shown}"
    );
    assert_mentions(
        &shown,
        &[
            "bouncer of http://127.0.0.1:8080 every 5 s, 30 s per request",
            "origins capi, crowdsec",
            "as machine gw-a: a prefix that completes 500 handshakes in 30 s while its bucket \
             refuses more gets a 1h30m ban",
            "prefixes from /16 (IPv4) and /32 (IPv6); answers up to 32 MiB; at most 200000",
        ],
    );
    assert_eq!(cs.bounds, crate::config::Bounds::default());
    assert!(
        parse("[crowdsec]\nlapi_url = \"\"\n")
            .unwrap()
            .crowdsec
            .is_none()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn crowdsec_mistakes_name_their_line() {
    let base = "[crowdsec]\nlapi_url = \"http://127.0.0.1:8080\"\n";
    parse_error(
        "[crowdsec]\nlapi_url = \"127.0.0.1:8080\"\n",
        2,
        "is not an http:// or https:// URL",
    );
    let err = parse(base).expect_err("no key");
    assert!(
        err.reason.contains("crowdsec.bouncer_key_file is empty"),
        "{err}"
    );
    parse_error(
        &format!("{base}bouncer_key_file = \"/nonexistent/p25.key\"\n"),
        3,
        "cannot read /nonexistent/p25.key",
    );
    let dir = scratch("crowdsec-errors");
    write(&dir.join("key"), "k\n");
    write(&dir.join("empty"), "\n");
    let with_key = format!("{base}bouncer_key_file = \"key\"\n");
    load_fails(
        "crowdsec-empty",
        &format!(
            "{base}bouncer_key_file = \"{}\"\n",
            dir.join("empty").display()
        ),
        &[],
        ("port25.toml", 3),
        "is empty",
    );
    let cases = [
        (
            "scopes = [\"ip\", \"country\"]\n",
            "cannot become a list of addresses",
        ),
        (
            "update_frequency = 0\n",
            "crowdsec.update_frequency = 0 is out of range",
        ),
        ("machine_password_file = \"key\"\n", "machine_id is not"),
        (
            "machine_id = \"gw\"\nmachine_password_file = \"key\"\nreport_ban = \"4 days\"\n",
            "crowdsec.report_ban",
        ),
        (
            "machine_id = \"gw\"\nmachine_password_file = \"key\"\nreport_after = 0\n",
            "crowdsec.report_after",
        ),
        // The default bucket (40 at once, then 20 a second) admits 40 + 20 x 60 in a minute.
        (
            "machine_id = \"gw\"\nmachine_password_file = \"key\"\nreport_after = 1241\n",
            "crowdsec.report_after = 1241 can never be reached: one prefix's bucket \
             (ratelimit.syn_rate = 20, syn_burst = 40) admits at most 1240",
        ),
        (
            "min_ipv4_prefix = 0\n",
            "crowdsec.min_ipv4_prefix = 0 is out of range",
        ),
        (
            "min_ipv6_prefix = 129\n",
            "crowdsec.min_ipv6_prefix = 129 is out of range",
        ),
        (
            "max_answer_mb = 0\n",
            "crowdsec.max_answer_mb = 0 is out of range",
        ),
        (
            "max_decisions = 0\n",
            "crowdsec.max_decisions = 0 is out of range",
        ),
    ];
    // The line of machine_id, not of verified_ttl: the reporter is what needs it.
    load_fails(
        "crowdsec-reporter-unverified",
        &format!(
            "[ratelimit]\nverified_ttl = 0\n{with_key}machine_id = \"gw\"\n\
             machine_password_file = \"key\"\n"
        ),
        &[("key", "k\n")],
        ("port25.toml", 6),
        "the reporter acts only on completed handshakes",
    );
    for (extra, fragment) in cases {
        let text = format!("{with_key}{extra}");
        let line = text.lines().count();
        load_fails(
            "crowdsec-case",
            &text,
            &[("key", "k\n")],
            ("port25.toml", line),
            fragment,
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cidr_set_overlaps_what_covers_or_lies_inside() {
    let set = CidrSet::new([
        net("198.18.0.0/16"),
        net("203.0.113.64/26"),
        net("2001:db8:1::/48"),
    ]);
    for (query, expected) in [
        ("198.18.7.7/32", true),
        ("198.0.0.0/8", true),
        ("203.0.113.0/24", true),
        ("203.0.113.70/32", true),
        ("203.0.113.0/26", false),
        ("198.19.0.0/16", false),
        ("2001:db8:1:2::/64", true),
        ("2001:db8::/32", true),
        ("2001:db8:2::/48", false),
    ] {
        assert_eq!(set.overlaps(&net(query)), expected, "{query}");
    }
}

#[test]
fn ipv4_mapped_ipv6_is_taken_as_the_ipv4_it_names() {
    for (text, expected) in [
        ("::ffff:198.18.0.2", "198.18.0.2/32"),
        ("::ffff:198.18.0.0/112", "198.18.0.0/16"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        // Wider than the mapped range: IPv6 as written.
        ("::/64", "::/64"),
        ("2001:db8::1", "2001:db8::1/128"),
    ] {
        assert_eq!(parse_cidr(text).unwrap().to_string(), expected, "{text}");
    }
    let set = CidrSet::new([net("198.18.0.0/16")]);
    assert_eq!(
        set.covering(&net("198.18.0.2/32")),
        Some(net("198.18.0.0/16"))
    );
    assert_eq!(set.covering(&net("198.19.0.2/32")), None);
}

#[test]
fn a_deny_entry_of_every_address_is_warned_about() {
    let config =
        parse("[deny]\ncidrs = [\"0.0.0.0/0\", \"::ffff:0:0/96\", \"198.18.0.0/16\"]").unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("[deny] holds 0.0.0.0/0: every IPv4 source"),
        "{warnings:?}"
    );
    assert!(
        parse("[deny]\ncidrs = [\"198.18.0.0/16\"]")
            .unwrap()
            .warnings()
            .is_empty()
    );
}

#[test]
fn a_misspelt_section_key_or_value_gets_a_did_you_mean() {
    for (text, line, fragment) in [
        (
            "[denny]\ncidrs = []\n",
            1,
            "unknown key `denny` (did you mean `deny`?)",
        ),
        (
            "[ratelimit]\nsyn_rat = 5\n",
            2,
            "unknown key `syn_rat` (did you mean `syn_rate`?)",
        ),
        (
            "policy = \"dorp\"\n",
            1,
            "unknown value `dorp` (did you mean `drop`?)",
        ),
    ] {
        let err = parse(text).unwrap_err();
        assert_error(&err, Path::new(ORIGIN), Some(line), fragment);
    }
    // Nothing close: no guess.
    let err = parse("[zzzzzz]\n").unwrap_err();
    assert!(!err.to_string().contains("did you mean"), "{err}");
}

#[test]
fn an_entry_is_traced_to_each_file_and_line_that_gives_it() {
    let dir = scratch("origins");
    write(
        &dir.join("deny.txt"),
        "# feed\n198.18.9.0/24 ; SBL1\n\n198.18.7.0/24\n",
    );
    write(&dir.join("deny.d/b.txt"), "198.18.7.0/24\n");
    let config_path = dir.join("port25.toml");
    write(
        &config_path,
        "[allow]\ncidrs = [\"198.19.0.0/16\"]\n\n[deny]\ncidrs = [\n  \"198.18.1.1\",\n  \"198.18.7.0/24\",\n]\nfiles = [\"deny.txt\"]\ndirs = [\"deny.d\"]\n",
    );
    let config = Config::load(Some(&config_path)).unwrap();
    let net = |text: &str| text.parse::<IpNet>().unwrap();
    let at = |list, text: &str| -> Vec<(PathBuf, usize, String)> {
        config
            .origins(list, &net(text))
            .into_iter()
            .map(|o| (o.file, o.line, o.key))
            .collect()
    };
    assert_eq!(
        at(ListKind::Deny, "198.18.7.0/24"),
        vec![
            (config_path.clone(), 7, "deny.cidrs".to_owned()),
            (dir.join("deny.txt"), 4, "deny.files".to_owned()),
            (dir.join("deny.d/b.txt"), 1, "deny.dirs".to_owned()),
        ]
    );
    assert_eq!(
        at(ListKind::Deny, "198.18.1.1/32"),
        vec![(config_path.clone(), 6, "deny.cidrs".to_owned())]
    );
    assert_eq!(
        at(ListKind::Deny, "198.18.9.0/24"),
        vec![(dir.join("deny.txt"), 2, "deny.files".to_owned())]
    );
    assert_eq!(
        at(ListKind::Allow, "198.19.0.0/16"),
        vec![(config_path.clone(), 2, "allow.cidrs".to_owned())]
    );
    // Not in the list it is asked of.
    assert!(at(ListKind::Allow, "198.18.7.0/24").is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_shadow_config_is_a_path_beside_this_one_never_this_one() {
    let config = parse("[shadow]\nconfig = \"candidate.toml\"\n").unwrap();
    assert_eq!(
        config.shadow,
        Some(PathBuf::from("/etc/port25/candidate.toml"))
    );
    assert_eq!(parse("[shadow]\nconfig = \"\"\n").unwrap().shadow, None);
    assert_eq!(parse("").unwrap().shadow, None);
    parse_error(
        "\n[shadow]\nconfig = \"test.toml\"\n",
        3,
        "names this very file",
    );
    parse_error("[shadow]\nconfg = \"x.toml\"\n", 2, "config");
}
