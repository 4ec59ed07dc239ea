//! Test certificates made with openssl (a CA and leaves with chosen SANs), so TLS peers
//! in the tests are as real as in a cluster.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

pub struct Pki {
    pub dir: PathBuf,
}

const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

impl Pki {
    /// A fresh CA in `dir` (ca.pem, ca.key).
    pub fn new(dir: &Path) -> Self {
        let pki = Self { dir: dir.to_owned() };
        pki.openssl(&[&["req", "-x509"][..], &EC, &["-days", "1", "-subj", "/CN=sigil-test-ca", "-keyout", "ca.key", "-out", "ca.pem"]].concat());
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let st = Command::new("openssl").args(args).current_dir(&self.dir).stderr(Stdio::null()).stdout(Stdio::null()).status().unwrap();
        assert!(st.success(), "openssl {args:?}");
    }

    /// `<name>.pem` and `<name>.key`, signed by the CA, with `san` (e.g.
    /// "URI:spiffe://sigil.test/sigil/node/a" or "IP:127.0.0.1") for `usage`
    /// (serverAuth, clientAuth).
    pub fn issue(&self, name: &str, san: &str, usage: &str) {
        fs::write(self.dir.join(format!("{name}.ext")), format!("subjectAltName={san}\nextendedKeyUsage={usage}\n")).unwrap();
        self.openssl(&[&["req"][..], &EC, &["-subj", &format!("/CN={name}"), "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr")]].concat());
        self.openssl(&[
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
            "1",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}
