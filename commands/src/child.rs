//! The one way gridmon starts a child process: its own process group, killed with its owner.
//!
//! `clippy.toml` forbids `Command::new` everywhere else, so no call site forgets the process
//! group (needed to signal a whole tree) or `kill_on_drop` (no orphan outlives a dropped handle).

use std::ffi::OsStr;
use std::process::Stdio;

/// A command for `program` in a new process group, with stdin closed and kill-on-drop set.
/// Nothing goes through a shell: `program` is executed directly with the arguments given.
#[allow(clippy::disallowed_methods)]
pub fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.process_group(0).kill_on_drop(true).stdin(Stdio::null());
    cmd
}

/// Whether `program` can be found on `PATH` (or is a path to an executable file).
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return is_exec(std::path::Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| is_exec(&d.join(program))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_without_a_shell_in_its_own_group() {
        let out = command("sh")
            .args(["-c", "ps -o pgid= -p $$; echo $$"])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(nums.len(), 2, "{text}");
        assert_eq!(nums[0], nums[1], "the child leads its own process group");
        assert!(on_path("sh"));
        assert!(!on_path("definitely-not-a-gridmon-binary"));
    }
}
