//! The Debian package: files, modes, conffiles, maintainer scripts.

use super::*;

#[test]
fn deb_has_the_files_modes_and_conffiles() {
    let built = built();
    let dpkg_deb = tool("dpkg-deb", "dpkg");
    let name = built
        .deb
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // Control fields: the version is the binary's, Depends comes from dpkg-shlibdeps.
    let field = |f: &str| {
        stdout(&run(Command::new(&dpkg_deb)
            .args(["-f"])
            .arg(&built.deb)
            .arg(f)))
    };
    let version = field("Version");
    let arch = field("Architecture");
    let binary_version = stdout(&run(
        Command::new(built.path("/usr/sbin/port25d")).arg("--version")
    ));
    assert_eq!(binary_version.trim(), format!("port25d {}", version.trim()));
    let dpkg_arch = stdout(&run(
        Command::new(tool("dpkg", "dpkg")).arg("--print-architecture")
    ));
    assert_eq!(arch.trim(), dpkg_arch.trim());
    assert_eq!(
        name,
        format!("port25_{}_{}.deb", version.trim(), arch.trim())
    );
    assert_eq!(field("Package").trim(), "port25");
    let depends = field("Depends");
    assert!(depends.contains("libc6 (>= 2."), "Depends: {depends}");
    assert!(
        depends.contains("procps"),
        "Depends: {depends} (ExecReload= runs /bin/kill)"
    );
    // `port25d audit`'s relay probe makes its link with ip.
    assert!(
        field("Recommends").contains("iproute2"),
        "Recommends: {}",
        field("Recommends")
    );
    let info = stdout(&run(Command::new(&dpkg_deb).arg("-I").arg(&built.deb)));
    assert!(info.contains("Description: XDP filter for SMTP"), "{info}");

    // Contents: path -> (mode, owner).
    let listing = stdout(&run(Command::new(&dpkg_deb).arg("-c").arg(&built.deb)));
    let entries: BTreeMap<String, (String, String)> = listing
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let path = cols[5].trim_start_matches('.').to_owned();
            (path, (cols[0].to_owned(), cols[1].to_owned()))
        })
        .collect();
    for (path, mode) in [
        ("/usr/sbin/port25d", "-rwxr-xr-x"),
        ("/lib/systemd/system/port25d.service", "-rw-r--r--"),
        ("/etc/port25/port25.toml", "-rw-r--r--"),
        ("/etc/fail2ban/action.d/port25.conf", "-rw-r--r--"),
        ("/usr/share/man/man8/port25d.8.gz", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/port25d",
            "-rw-r--r--",
        ),
        ("/usr/share/zsh/vendor-completions/_port25d", "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/port25d.fish",
            "-rw-r--r--",
        ),
        (
            "/usr/share/port25/prometheus/port25.rules.yml",
            "-rw-r--r--",
        ),
        (
            "/usr/share/port25/prometheus/port25.rules.test.yml",
            "-rw-r--r--",
        ),
        ("/usr/share/port25/grafana/port25.json", "-rw-r--r--"),
        ("/usr/share/doc/port25/copyright", "-rw-r--r--"),
        ("/usr/share/doc/port25/README.md", "-rw-r--r--"),
        ("/usr/share/doc/port25/fail2ban.md", "-rw-r--r--"),
    ] {
        let Some((got, owner)) = entries.get(path) else {
            panic!("{path} is not in {name}:\n{listing}")
        };
        assert_eq!(got, mode, "mode of {path}");
        assert_eq!(owner, "root/root", "owner of {path}");
    }
    for (path, (mode, owner)) in &entries {
        assert_eq!(owner, "root/root", "owner of {path}");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "mode of directory {path}");
        }
    }
    // Packaged files are the source tree's, byte for byte.
    for (source, dest) in [
        ("port25d.service", "/lib/systemd/system/port25d.service"),
        ("port25.toml", "/etc/port25/port25.toml"),
        (
            "fail2ban/action.d/port25.conf",
            "/etc/fail2ban/action.d/port25.conf",
        ),
        (
            "grafana/port25.json",
            "/usr/share/port25/grafana/port25.json",
        ),
        (
            "prometheus/port25.rules.yml",
            "/usr/share/port25/prometheus/port25.rules.yml",
        ),
    ] {
        assert_eq!(
            fs::read(packaging().join(source)).unwrap(),
            fs::read(built.path(dest)).unwrap(),
            "{dest} differs from packaging/{source}"
        );
    }

    // Every file under /etc is a conffile, and every conffile is in the package.
    let conffiles = fs::read_to_string(built.path("/DEBIAN/conffiles")).unwrap();
    let conffiles: BTreeSet<&str> = conffiles.lines().collect();
    let etc: BTreeSet<&str> = entries
        .iter()
        .filter(|(p, (m, _))| p.starts_with("/etc/") && m.starts_with('-'))
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(conffiles, etc, "DEBIAN/conffiles");

    // Maintainer scripts: executable, valid sh, and they never start the service.
    for script in ["postinst", "prerm", "postrm"] {
        let path = built.path(&format!("/DEBIAN/{script}"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "mode of DEBIAN/{script}");
        run(Command::new("sh").arg("-n").arg(&path));
        let text = fs::read_to_string(&path).unwrap();
        // The systemctl commands the scripts run (not what they print or say in comments):
        // never start, enable or plainly restart the filter.
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.starts_with("echo") {
                continue;
            }
            for tool in ["systemctl ", "deb-systemd-invoke "] {
                for call in line.split(tool).skip(1) {
                    let verb = call
                        .split_whitespace()
                        .find(|word| !word.starts_with("--"))
                        .unwrap_or_default();
                    assert!(
                        ["daemon-reload", "try-restart", "stop"].contains(&verb),
                        "DEBIAN/{script} runs `{tool}{verb}`: {line}"
                    );
                }
            }
        }
        // systemctl only where systemd runs (not in chroots, containers, image builds).
        if text.contains("systemctl ") {
            assert!(
                text.contains("[ -d /run/systemd/system ]"),
                "DEBIAN/{script}"
            );
        }
    }

    // Generated by the packaged binary: the man pages (a page per subcommand, linked from
    // port25d(8), and port25.toml(5)), each rendered by man without a warning, and completions.
    let man = stdout(&run(Command::new(tool("gzip", "gzip"))
        .args(["-dc"])
        .arg(built.path("/usr/share/man/man8/port25d.8.gz"))));
    assert!(man.contains(".TH port25d 8"), "man page:\n{man}");
    let mut pages = vec!["man5/port25.toml.5".to_owned(), "man8/port25d.8".to_owned()];
    let unzip = |page: &str| {
        stdout(&run(Command::new(tool("gzip", "gzip"))
            .args(["-dc"])
            .arg(built.path(&format!("/usr/share/man/man8/{page}.8.gz")))))
    };
    // (page, the page that names it)
    for (command, parent) in [
        ("run", "port25d"),
        ("check-config", "port25d"),
        ("status", "port25d"),
        ("top", "port25d"),
        ("allow", "port25d"),
        ("deny", "port25d"),
        ("egress", "port25d"),
        ("audit", "port25d"),
        ("detach", "port25d"),
        ("why", "port25d"),
        ("history", "port25d"),
        ("shadow", "port25d"),
        ("shadow-load", "port25d-shadow"),
        ("shadow-promote", "port25d-shadow"),
        ("allow-add", "port25d-allow"),
        ("deny-list", "port25d-deny"),
        ("egress-log", "port25d-egress"),
    ] {
        let link = format!("port25d\\-{}(8)", command.replace('-', "\\-"));
        assert!(
            unzip(parent).contains(&link),
            "{parent}(8) names port25d-{command}(8)"
        );
        pages.push(format!("man8/port25d-{command}.8"));
    }
    for page in &pages {
        let path = built.path(&format!("/usr/share/man/{page}.gz"));
        let rendered = Command::new(tool("man", "man-db"))
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            // As on a host without a UTF-8 locale (CI's): every page must render there too.
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(
            rendered.status.success() && warnings.trim().is_empty(),
            "man --warnings -l {page}: {warnings}"
        );
    }
    for (path, needle) in [
        (
            "/usr/share/bash-completion/completions/port25d",
            "complete -F",
        ),
        (
            "/usr/share/zsh/vendor-completions/_port25d",
            "#compdef port25d",
        ),
        (
            "/usr/share/fish/vendor_completions.d/port25d.fish",
            "complete -c port25d",
        ),
    ] {
        let text = fs::read_to_string(built.path(path)).unwrap();
        assert!(text.contains(needle), "{path} lacks {needle:?}");
        assert!(
            text.contains("check-config"),
            "{path} lacks the subcommands"
        );
    }
    // Stripped: a debug build's debug information does not ship.
    let size = fs::metadata(built.path("/usr/sbin/port25d")).unwrap().len();
    assert!(
        size < 40 << 20,
        "/usr/sbin/port25d is {size} bytes: not stripped?"
    );
}

/// lintian, the Debian archive's own checker, finds no error and no warning in the package
/// (informational tags are printed, not judged).
#[test]
fn lintian_reports_no_error_and_no_warning() {
    let out = run(Command::new(tool("lintian", "lintian"))
        .args(["--info", "--no-tag-display-limit"])
        .arg(&built().deb));
    let report = stdout(&out);
    eprintln!("lintian:\n{report}");
    let faults: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("E: ") || line.starts_with("W: "))
        .collect();
    assert!(faults.is_empty(), "lintian:\n{}", faults.join("\n"));
}

/// The packaged bash completion, as bash runs it on Tab: `port25d <Tab>` offers the subcommands,
/// `port25d allow <Tab>` the list commands.
#[test]
fn bash_completion_offers_the_subcommands() {
    let script = built().path("/usr/share/bash-completion/completions/port25d");
    let complete = |words: &[&str]| -> Vec<String> {
        let line = words.join(" ");
        let program = format!(
            "source \"$0\"; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
             COMP_POINT={point}; _port25d port25d '' '{previous}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words = words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
            point = line.len(),
            previous = words[words.len() - 2],
        );
        let out = run(Command::new(tool("bash", "bash"))
            .args(["-c", &program])
            .arg(&script));
        stdout(&out).lines().map(str::to_owned).collect()
    };
    let offered = complete(&["port25d", ""]);
    for sub in [
        "run",
        "check-config",
        "status",
        "top",
        "allow",
        "deny",
        "egress",
        "audit",
        "detach",
    ] {
        assert!(offered.iter().any(|o| o == sub), "{sub} in {offered:?}");
    }
    for hidden in ["manpage", "completions"] {
        assert!(
            !offered.iter().any(|o| o == hidden),
            "the packaging-only {hidden} in {offered:?}"
        );
    }
    let offered = complete(&["port25d", "allow", ""]);
    for sub in ["add", "del", "list"] {
        assert!(offered.iter().any(|o| o == sub), "{sub} in {offered:?}");
    }
}
