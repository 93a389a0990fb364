//! Certificates a test makes with the `openssl` command, for the TLS servers it
//! runs (Redis over TLS, the broker behind stunnel): in a directory of its own,
//! `ca.pem`/`ca.key` (the test's CA), `server.pem`/`server.key` (signed by it,
//! for 127.0.0.1 and localhost), `client.pem`/`client.key` (signed by it, for
//! client authentication) and `other-ca.pem`, a CA that signed nothing, for a
//! client that must refuse the server.

use anyhow::{Context, Result, ensure};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tempfile::TempDir;

/// The directory of the certificates; removed when dropped.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// Makes every certificate in a new directory named `prefix…`.
    pub fn make(prefix: &str) -> Result<Self> {
        let pki = Self {
            dir: tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .context("creating the certificates' directory")?,
        };
        let extensions = fs::write(
            pki.path("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .and_then(|()| {
            fs::write(
                pki.path("client.ext"),
                "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
            )
        });
        extensions.context("writing the certificates' extensions")?;
        for ca in ["ca", "other-ca"] {
            pki.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=presence test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ])?;
        }
        for (name, subject) in [("server", "/CN=127.0.0.1"), ("client", "/CN=presence")] {
            pki.openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ])?;
            pki.openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ])?;
        }
        Ok(pki)
    }

    /// A file of the directory, made or to be made.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .context("running openssl (is the openssl package installed?)")?;
        ensure!(
            output.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}
