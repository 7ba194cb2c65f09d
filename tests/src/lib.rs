//! Helpers for the cross-cutting suites in `tests/tests/`: the repository root, the
//! workspace's built binaries (built once if missing), scratch directories, and
//! running the project's scripts and host tools with their output captured.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

static BUILD: Once = Once::new();

/// The directory holding the workspace's binaries for this build profile (the test
/// executable lives in its `deps/`). The binaries are built once if needed, with the
/// same command as the other process tests so it is a no-op after a workspace build.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .to_owned();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(repo())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the workspace's binaries failed");
    });
    dir
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "viaduct-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    /// A path inside it.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd`, returning its output; panics (with the output) if it fails to start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Asserts `out` succeeded, showing its output otherwise.
pub fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `tool` runs (`tool --version`). When it does not and `require_env` is set
/// to 1 (scripts/test.sh sets it where it installs the tool), panics; otherwise says
/// the check is skipped.
pub fn have_tool(tool: &str, require_env: &str) -> bool {
    if Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var(require_env).as_deref() == Ok("1") {
        panic!("{tool} is required here ({require_env}=1) but does not run");
    }
    eprintln!("SKIPPED: {tool} is not installed (scripts/test.sh installs it)");
    false
}

/// Installs into a staging root with `scripts/install.sh --destdir DIR --no-build`,
/// taking the binaries from this build; extra arguments are appended.
pub fn install_into(destdir: &Path, extra: &[&str]) -> Output {
    let out = run(Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--destdir")
        .arg(destdir)
        .arg("--no-build")
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(extra));
    assert_ok("install.sh", &out);
    out
}
