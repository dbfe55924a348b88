//! Finding the `sidekick` binary under test.
//!
//! `cargo test --workspace` compiles the agent's unit tests but not the
//! `sidekick` executable itself (cargo only builds a package's binaries for
//! that package's own integration tests), so unless `SIDEKICK_BIN` names a
//! binary, the harness runs `cargo build -p sidekick` once per test process,
//! into the target directory the tests themselves were built in. That build
//! is a no-op when the binary is fresh, and it keeps the tests from running
//! a stale binary after a change to the agent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `sidekick` executable the tests run: `$SIDEKICK_BIN`, else the one
/// in the target directory of the running test, built on first use.
pub fn sidekick_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_or_build)
}

fn find_or_build() -> PathBuf {
    if let Some(bin) = std::env::var_os("SIDEKICK_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "SIDEKICK_BIN={} is not a file; unset it or run `cargo build -p sidekick`",
            bin.display()
        );
        return bin;
    }
    let (profile_dir, profile) = profile_dir();
    let bin = profile_dir.join("sidekick");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "sidekick", "--bin", "sidekick"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    // `cargo test` gives the test process the variables of the test's own
    // package (CARGO_MANIFEST_DIR, CARGO_PKG_*...). Passed on, they differ
    // from a plain `cargo build` and dirty build scripts that watch them
    // (ring's watches CARGO_MANIFEST_DIR): a minute of rebuilding TLS and
    // everything above it for a binary that was fresh.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key == "OUT_DIR"
            || key == "CARGO_MANIFEST_DIR"
            || key == "CARGO_MANIFEST_PATH"
            || key == "CARGO_MANIFEST_LINKS"
            || key == "CARGO_CRATE_NAME"
            || key == "CARGO_BIN_NAME"
            || key == "CARGO_PRIMARY_PACKAGE"
            || key == "CARGO_TARGET_TMPDIR"
            || key == "CARGO_RUSTC_CURRENT_DIR"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
        {
            cmd.env_remove(key);
        }
    }
    // The target directory the test was built in, whatever set it
    // (CARGO_TARGET_DIR, a config file, the default).
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    // The build's own output (the agent's warnings) is noise in test
    // output unless the build fails.
    let out = cmd.output();
    match out {
        Ok(o) if o.status.success() && bin.is_file() => bin,
        other => panic!(
            "the sidekick binary is missing or stale at {} and `cargo build -p sidekick` \
             failed ({}): run `cargo build -p sidekick` (or set SIDEKICK_BIN) and retry\n{}",
            bin.display(),
            other
                .as_ref()
                .map_or_else(|e| e.to_string(), |o| o.status.to_string()),
            other.as_ref().map_or_else(
                |_| String::new(),
                |o| String::from_utf8_lossy(&o.stderr).into_owned()
            ),
        ),
    }
}

/// The profile directory holding this test executable
/// (`<target>/<profile>/deps/<test>` → `<target>/<profile>`), and its profile
/// name as cargo spells it (`dev` builds into `debug`).
fn profile_dir() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
                PathBuf::from,
            );
            target.join("debug")
        });
    let name = dir
        .file_name()
        .map_or_else(|| "debug".to_owned(), |n| n.to_string_lossy().into_owned());
    (dir, name)
}
