//! SNS message signatures. Every notification and confirmation SNS sends carries a signature
//! over AWS's canonical string, made with SHA1withRSA (SignatureVersion 1) or SHA256withRSA
//! (SignatureVersion 2), and a SigningCertURL where the certificate that checks it is served.
//!
//! wharf makes one RSA-2048 key and a self-signed certificate for it on first start and keeps
//! both in `<data dir>/sns/` (`signing-key.pem`, `signing-cert.pem`), so signatures stay
//! checkable across restarts. Without a data directory (`--in-memory`) a key is made at each
//! start. Making a key takes a moment, so it happens on a blocking thread in the background from
//! start-up; the first signature waits for it if it has to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer as _};
use rsa::RsaPrivateKey;
use sha2::Digest as _;
use tokio::sync::OnceCell;

use crate::error::{SnsError, SnsResult};

const KEY_FILE: &str = "signing-key.pem";
const CERT_FILE: &str = "signing-cert.pem";
const KEY_BITS: usize = 2048;

pub struct Keys {
    sha1: SigningKey<sha1::Sha1>,
    sha256: SigningKey<sha2::Sha256>,
    pub cert_pem: String,
    /// `SimpleNotificationService-<digest>.pem`, the path the certificate is served at.
    pub cert_file_name: String,
}

impl Keys {
    fn new(key: RsaPrivateKey, cert_pem: String) -> Keys {
        let digest = sha2::Sha256::digest(cert_pem.as_bytes());
        let cert_file_name = format!("SimpleNotificationService-{}.pem", hex(&digest[..16]));
        Keys { sha1: SigningKey::new(key.clone()), sha256: SigningKey::new(key), cert_pem, cert_file_name }
    }

    /// Base64 of the signature of `text` for `version` ("2" = SHA256withRSA, else SHA1withRSA).
    pub fn sign(&self, version: &str, text: &str) -> String {
        let sig = if version == "2" {
            self.sha256.sign(text.as_bytes()).to_vec()
        } else {
            self.sha1.sign(text.as_bytes()).to_vec()
        };
        base64::engine::general_purpose::STANDARD.encode(sig)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key pair, made or loaded once.
pub struct Signer {
    dir: Option<PathBuf>,
    keys: OnceCell<Arc<Keys>>,
}

impl Signer {
    pub fn new(dir: Option<PathBuf>) -> Arc<Signer> {
        Arc::new(Signer { dir, keys: OnceCell::new() })
    }

    /// Start making or loading the keys now, in the background.
    pub fn warm_up(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.keys().await {
                tracing::warn!("SNS signing key: {}", e.message);
            }
        });
    }

    pub async fn keys(&self) -> SnsResult<Arc<Keys>> {
        self.keys
            .get_or_try_init(|| async {
                let dir = self.dir.clone();
                tokio::task::spawn_blocking(move || load_or_make(dir.as_deref()))
                    .await
                    .map_err(SnsError::internal)?
                    .map(Arc::new)
            })
            .await
            .cloned()
    }
}

fn load_or_make(dir: Option<&Path>) -> SnsResult<Keys> {
    let err =
        |what: &str, e: &dyn std::fmt::Display| SnsError::internal(format!("SNS signing key: {what}: {e}"));
    if let Some(dir) = dir {
        let (key_path, cert_path) = (dir.join(KEY_FILE), dir.join(CERT_FILE));
        if key_path.exists() && cert_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(|e| err("reading the key", &e))?;
            let cert_pem =
                std::fs::read_to_string(&cert_path).map_err(|e| err("reading the certificate", &e))?;
            let key = RsaPrivateKey::from_pkcs8_pem(&key_pem).map_err(|e| err("parsing the key", &e))?;
            return Ok(Keys::new(key, cert_pem));
        }
    }
    let key =
        RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS).map_err(|e| err("making a key", &e))?;
    let key_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| err("encoding the key", &e))?;
    let pair =
        rcgen::KeyPair::from_pem(&key_pem).map_err(|e| err("loading the key for the certificate", &e))?;
    let mut params = rcgen::CertificateParams::new(vec!["sns.wharf.local".to_owned()])
        .map_err(|e| err("certificate parameters", &e))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "wharf SNS message signing");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "wharf");
    let cert = params.self_signed(&pair).map_err(|e| err("making the certificate", &e))?;
    let cert_pem = cert.pem();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| err("creating the directory", &e))?;
        // The key is written before the certificate and each through a rename, so a crash
        // leaves either nothing usable (and a new pair is made) or both files whole.
        write_private(&dir.join(KEY_FILE), key_pem.as_bytes()).map_err(|e| err("writing the key", &e))?;
        write_private(&dir.join(CERT_FILE), cert_pem.as_bytes())
            .map_err(|e| err("writing the certificate", &e))?;
    }
    Ok(Keys::new(key, cert_pem))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// AWS's canonical string: for notifications Message, MessageId, Subject (if any), Timestamp,
/// TopicArn, Type; for (un)subscribe confirmations Message, MessageId, SubscribeURL, Timestamp,
/// Token, TopicArn, Type. Each as `name\nvalue\n`.
pub fn canonical_string(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use rsa::pkcs1v15::VerifyingKey;
    use rsa::signature::Verifier;

    use super::*;

    #[test]
    fn keys_persist_and_sign_both_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = load_or_make(Some(dir.path())).expect("make");
        let again = load_or_make(Some(dir.path())).expect("load");
        assert_eq!(keys.cert_pem, again.cert_pem);
        assert!(keys.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let text = canonical_string(&[("Message", "hi"), ("Type", "Notification")]);
        let key =
            RsaPrivateKey::from_pkcs8_pem(&std::fs::read_to_string(dir.path().join(KEY_FILE)).expect("read"))
                .expect("key");
        let public = key.to_public_key();
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig1 =
            rsa::pkcs1v15::Signature::try_from(b64.decode(again.sign("1", &text)).expect("b64").as_slice())
                .expect("sig");
        VerifyingKey::<sha1::Sha1>::new(public.clone()).verify(text.as_bytes(), &sig1).expect("v1 verifies");
        let sig2 =
            rsa::pkcs1v15::Signature::try_from(b64.decode(again.sign("2", &text)).expect("b64").as_slice())
                .expect("sig");
        VerifyingKey::<sha2::Sha256>::new(public).verify(text.as_bytes(), &sig2).expect("v2 verifies");
        assert!(VerifyingKey::<sha2::Sha256>::new(key.to_public_key()).verify(b"other", &sig2).is_err());
    }
}
