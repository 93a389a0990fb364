//! A command run on a real terminal: a private tmux server (its own socket)
//! runs it in a detached window of a known size, and the test reads the
//! screen as a person would see it, colours included.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Printed after the command ends, with its exit status: `EXIT=<code>`.
const EXIT_MARKER: &str = "EXIT=";

/// One tmux server for one test, killed on drop.
#[derive(Debug)]
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn new() -> Self {
        Self {
            socket: crate::unique("presence-tmux"),
        }
    }

    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null");
        command
    }

    /// Runs the shell command `script` in `cwd` on a 160×40 terminal, with
    /// colour allowed (`NO_COLOR` unset, `TERM` a colour terminal).
    pub fn start(&self, cwd: &Path, script: &str) -> Result<()> {
        let status = self
            .tmux()
            .args(["new-session", "-d", "-x", "160", "-y", "40", "-c"])
            .arg(cwd)
            .arg(format!(
                "unset NO_COLOR; export TERM=xterm-256color; {script}; echo {EXIT_MARKER}$?; sleep 600"
            ))
            .env_remove("NO_COLOR")
            .status()
            .context("running tmux (install it: apt-get install tmux)")?;
        if !status.success() {
            bail!("tmux new-session failed: {status}");
        }
        Ok(())
    }

    /// The screen now: its text, with colours as escape sequences when `escapes`.
    pub fn screen(&self, escapes: bool) -> Result<String> {
        let mut command = self.tmux();
        command.args(["capture-pane", "-p", "-J"]);
        if escapes {
            command.arg("-e");
        }
        let output = command.output().context("tmux capture-pane")?;
        if !output.status.success() {
            bail!(
                "tmux capture-pane: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits until `found` recognises something on the screen (plain text).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        found: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen(false)?;
            if found(&screen) {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                bail!("the screen never showed what the test waits for:\n{screen}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the command to end; its exit status and the final screen
    /// (plain text, and with escapes).
    pub async fn finished(&self, timeout: Duration) -> Result<(i32, String, String)> {
        let screen = self
            .wait_for(timeout, |screen| screen.contains(EXIT_MARKER))
            .await?;
        let code = screen
            .lines()
            .find_map(|line| line.trim().strip_prefix(EXIT_MARKER))
            .and_then(|code| code.trim().parse().ok())
            .with_context(|| format!("no exit status on the screen:\n{screen}"))?;
        Ok((code, screen, self.screen(true)?))
    }
}

impl Default for Tmux {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Best effort: the server also ends with the test's machine.
        let _ = self.tmux().arg("kill-server").status();
    }
}
