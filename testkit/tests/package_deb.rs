//! The Debian package `deploy/package/build-deb` makes, built here from whatever
//! binaries the test run already built (the debug ones, with `--fast` compression:
//! the layout, modes and scripts are the same as a release package's). Checked with
//! dpkg-deb (control fields, conffiles, every path with its mode, owned by root), then
//! extracted: its units pass `systemd-analyze verify` with ExecStart pointing at the
//! extracted binaries, its default configuration files are accepted by those binaries
//! (`--print-config`), and its postinst, run twice against a scratch root
//! (`DPKG_ROOT`), makes the `finwait` user once and the state directories with their
//! modes; postrm purge removes the state. Needs `dpkg-deb` and `systemd-analyze`;
//! `FINWAIT_SKIP_PACKAGE_TESTS=1` skips outside CI.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use finwait_testkit::{TempDir, under_ci, workspace_bin};

const BINS: [&str; 3] = ["finwait-collector", "finwait-agent", "finwait"];
const UNITS: [&str; 2] = ["finwait-collector", "finwait-agent"];

/// Every path the package holds, with its mode.
const CONTENTS: [(&str, &str); 14] = [
    ("./usr/bin/finwait-collector", "-rwxr-xr-x"),
    ("./usr/bin/finwait-agent", "-rwxr-xr-x"),
    ("./usr/bin/finwait", "-rwxr-xr-x"),
    ("./usr/lib/systemd/system/", "drwxr-xr-x"),
    (
        "./usr/lib/systemd/system/finwait-collector.service",
        "-rw-r--r--",
    ),
    (
        "./usr/lib/systemd/system/finwait-agent.service",
        "-rw-r--r--",
    ),
    ("./etc/finwait/", "drwxr-xr-x"),
    ("./etc/finwait/collector.toml", "-rw-r--r--"),
    ("./etc/finwait/agent.toml", "-rw-r--r--"),
    ("./usr/share/doc/finwait/", "drwxr-xr-x"),
    ("./usr/share/doc/finwait/README.md", "-rw-r--r--"),
    ("./usr/share/doc/finwait/deploy.md", "-rw-r--r--"),
    ("./usr/share/doc/finwait/ARCHITECTURE.md", "-rw-r--r--"),
    ("./usr/share/doc/finwait/copyright", "-rw-r--r--"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the checkout")
}

fn tools_available() -> bool {
    let missing: Vec<&str> = ["dpkg-deb", "systemd-analyze"]
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if !under_ci() && std::env::var_os("FINWAIT_SKIP_PACKAGE_TESTS").is_some() {
        eprintln!("SKIPPED: {missing:?} missing and FINWAIT_SKIP_PACKAGE_TESTS opts out");
        return false;
    }
    panic!(
        "{missing:?} missing: apt-get install dpkg systemd (or set \
         FINWAIT_SKIP_PACKAGE_TESTS=1 to skip, not allowed under CI)"
    );
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(cmd: &mut Command, what: &str) -> String {
    ok(cmd.output().unwrap_or_else(|e| panic!("{what}: {e}")), what)
}

/// Builds the package from the binaries of this test run's profile.
fn build(out: &Path) -> PathBuf {
    let built = workspace_bin("finwait-collector").expect("built binaries (cargo build --bins)");
    for b in BINS {
        workspace_bin(b).unwrap_or_else(|e| panic!("{b}: {e:#} (cargo build --workspace --bins)"));
    }
    let profile_dir = built.parent().expect("a profile directory");
    let profile = profile_dir
        .file_name()
        .expect("named")
        .to_str()
        .expect("utf-8");
    let target = profile_dir.parent().expect("a target directory");
    let deb = run(
        Command::new(repo().join("deploy/package/build-deb"))
            .arg("--target-dir")
            .arg(target)
            .args(["--profile", profile, "--fast", "--out"])
            .arg(out),
        "build-deb",
    );
    PathBuf::from(deb.trim())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("exists").permissions().mode() & 0o7777
}

/// `NAME:x:...` lines of a passwd-style file.
fn entries(file: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(file)
        .expect("passwd-style file")
        .lines()
        .filter(|l| l.starts_with(&format!("{name}:")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_deb_holds_units_config_and_binaries_and_its_scripts_work() {
    if !tools_available() {
        return;
    }
    let dir = TempDir::new("deb").expect("temp dir");
    let deb = build(&dir.path().join("out"));

    // Control: fields, conffiles, maintainer scripts.
    let info = run(
        Command::new("dpkg-deb").arg("--info").arg(&deb),
        "dpkg-deb --info",
    );
    for want in [
        "Package: finwait",
        "Version: 0.1.0",
        "Depends: libc6",
        "Description: TCP connection-leak finder",
        "conffiles",
        "postinst",
        "postrm",
        "prerm",
    ] {
        assert!(info.contains(want), "missing {want:?} in:\n{info}");
    }
    let conffiles = run(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"),
        "dpkg-deb --info conffiles",
    );
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/finwait/collector.toml", "/etc/finwait/agent.toml"]
    );

    // Contents: every expected path with its mode, everything owned by root.
    let listing = run(
        Command::new("dpkg-deb").arg("--contents").arg(&deb),
        "dpkg-deb --contents",
    );
    let mut found = BTreeMap::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 6, "odd listing line {line:?}");
        assert_eq!(f[1], "root/root", "not owned by root: {line}");
        found.insert(f[5].to_owned(), f[0].to_owned());
    }
    for (path, want) in CONTENTS {
        assert_eq!(
            found.get(path).map(String::as_str),
            Some(want),
            "{path} in:\n{listing}"
        );
    }

    // Extracted: units verify against the extracted binaries.
    let root = dir.path().join("root");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    );
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).expect("units dir");
    for name in UNITS {
        let text =
            std::fs::read_to_string(root.join(format!("usr/lib/systemd/system/{name}.service")))
                .expect("unit in the package");
        let installed = format!("/usr/bin/{name}");
        assert!(
            text.contains(&format!("ExecStart={installed}")),
            "{name}: ExecStart"
        );
        let extracted = root.join(format!("usr/bin/{name}"));
        let copy = units.join(format!("{name}.service"));
        std::fs::write(
            &copy,
            text.replace(&installed, &extracted.display().to_string()),
        )
        .expect("unit copy");
        if let Err(e) = finwait_testkit::systemd_verify(&copy) {
            panic!("{name}: {e}");
        }
        assert!(
            text.contains(&format!(
                "FINWAIT_CONFIG=/etc/finwait/{}.toml",
                &name["finwait-".len()..]
            )),
            "{name} reads its packaged configuration"
        );
    }

    // The packaged configuration files are what the binaries accept.
    for (bin, sub, file) in [
        ("finwait-collector", None, "collector.toml"),
        ("finwait-agent", Some("run"), "agent.toml"),
    ] {
        let mut cmd = Command::new(root.join("usr/bin").join(bin));
        cmd.env_remove("FINWAIT_CONFIG").args(sub);
        let printed = run(
            cmd.arg("--config")
                .arg(root.join("etc/finwait").join(file))
                .arg("--print-config"),
            &format!("{bin} --config {file} --print-config"),
        );
        assert!(
            printed.contains("  # file"),
            "{bin}: nothing from {file}:\n{printed}"
        );
    }

    // Maintainer scripts: valid sh, and postinst/postrm against a scratch root.
    let control = dir.path().join("control");
    run(
        Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control),
        "dpkg-deb -e",
    );
    for script in ["postinst", "prerm", "postrm"] {
        let p = control.join(script);
        assert_eq!(mode(&p), 0o755, "{script} mode");
        run(
            Command::new("sh").arg("-n").arg(&p),
            &format!("sh -n {script}"),
        );
    }
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(scratch.join("etc")).expect("scratch etc");
    for (file, text) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("group", "root:x:0:\n"),
        ("shadow", "root:*:19000:0:99999:7:::\n"),
        ("gshadow", "root:*::\n"),
    ] {
        std::fs::write(scratch.join("etc").join(file), text).expect("scratch file");
    }
    let host_passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    for round in 0..2 {
        run(
            Command::new("sh")
                .arg(control.join("postinst"))
                .arg("configure")
                .env("DPKG_ROOT", &scratch),
            &format!("postinst configure (round {round})"),
        );
    }
    let users = entries(&scratch.join("etc/passwd"), "finwait");
    assert_eq!(users.len(), 1, "one finwait user after two runs: {users:?}");
    assert!(
        users[0].ends_with(":/var/lib/finwait:/usr/sbin/nologin"),
        "{users:?}"
    );
    assert_eq!(entries(&scratch.join("etc/group"), "finwait").len(), 1);
    let uid: u32 = users[0]
        .split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .expect("uid");
    assert!(uid > 0 && uid < 1000, "a system uid: {uid}");
    let state = scratch.join("var/lib/finwait");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(std::fs::metadata(&state).expect("state").uid(), uid);
    assert_eq!(mode(&scratch.join("etc/finwait")), 0o750);
    assert_eq!(
        std::fs::read_to_string("/etc/passwd").expect("/etc/passwd"),
        host_passwd,
        "postinst under DPKG_ROOT changed the host's /etc/passwd"
    );

    // Purge: state gone; /etc/finwait kept while it holds the admin's files.
    std::fs::write(scratch.join("etc/finwait/tokens"), "ingest:x\n").expect("a secret");
    run(
        Command::new("sh")
            .arg(control.join("postrm"))
            .arg("purge")
            .env("DPKG_ROOT", &scratch),
        "postrm purge",
    );
    assert!(!state.exists(), "purge removes the state directory");
    assert!(
        scratch.join("etc/finwait/tokens").exists(),
        "purge keeps the admin's secrets"
    );
}
