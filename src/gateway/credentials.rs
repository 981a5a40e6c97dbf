//! The credentials a proxy needs to talk to the simulated services, made by the gateway and
//! written to its credentials directory in the real formats:
//!
//! * `AuthKey_<KEYID>.p8` — the APNs signing key (PKCS#8 PEM, P-256), as Apple hands it out;
//!   `apns.json` next to it: `{"keyId", "teamId", "keyFile", "topic", "endpoint"}`.
//! * `fcm-service-account.json` — a Google service-account key file (`type: service_account`,
//!   `project_id`, `private_key_id`, `private_key`, `client_email`, `token_uri`, …) whose
//!   `token_uri` is the gateway's own `/token`.
//! * `gateway.json` — the gateway's base URL and the files above, for tools and tests.
//! * `gateway-cert.pem` — with `--tls` only: the self-signed certificate to trust.
//!
//! Keys already in the directory are reused, so a restarted gateway keeps accepting a running
//! proxy's tokens; the JSON files are rewritten with the current address.

use std::io::Write;
use std::path::{Path, PathBuf};

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand_core_06::RngCore;
use serde::{Deserialize, Serialize};

pub const APNS_FILE: &str = "apns.json";
pub const SERVICE_ACCOUNT_FILE: &str = "fcm-service-account.json";
pub const GATEWAY_FILE: &str = "gateway.json";

/// The bundle id the simulator suggests as `apns-topic` (any topic is accepted).
pub const DEFAULT_TOPIC: &str = "com.example.ssepush";
pub const DEFAULT_PROJECT: &str = "ssepush-sim";

/// `apns.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApnsInfo {
    pub key_id: String,
    pub team_id: String,
    /// File name of the `.p8`, relative to the credentials directory.
    pub key_file: String,
    pub topic: String,
    /// Base URL to send `POST /3/device/{token}` to (instead of api.push.apple.com).
    pub endpoint: String,
}

/// A Google service-account key file (only the fields that matter, plus the usual ones so
/// Google client libraries accept it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAccount {
    #[serde(rename = "type")]
    pub kind: String,
    pub project_id: String,
    pub private_key_id: String,
    pub private_key: String,
    pub client_email: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub auth_uri: String,
    pub token_uri: String,
}

/// `gateway.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayInfo {
    pub url: String,
    pub apns_file: String,
    pub service_account_file: String,
    pub fcm_project_id: String,
    /// With `--tls`: the PEM file of the gateway's self-signed certificate, to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_file: Option<String>,
}

/// Everything the gateway checks signatures against.
#[derive(Clone)]
pub struct Credentials {
    pub apns: ApnsInfo,
    pub apns_key: p256::ecdsa::SigningKey,
    pub service_account: ServiceAccount,
    pub sa_key: rsa::RsaPrivateKey,
}

impl std::fmt::Debug for Credentials {
    // Never print keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("apns.key_id", &self.apns.key_id)
            .field("apns.team_id", &self.apns.team_id)
            .field("client_email", &self.service_account.client_email)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("key generation failed: {0}")]
    Keygen(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CredentialsError + '_ {
    move |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn format_err(path: &Path, message: impl std::fmt::Display) -> CredentialsError {
    CredentialsError::Format {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// `n` random characters from `alphabet`.
fn random_id(alphabet: &[u8], n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand_core_06::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const HEX: &[u8] = b"0123456789abcdef";

impl Credentials {
    /// Fresh keys for a gateway at `base_url`.
    pub fn generate(base_url: &str) -> Result<Credentials, CredentialsError> {
        let apns_key = p256::ecdsa::SigningKey::random(&mut rand_core_06::OsRng);
        let key_id = random_id(UPPER_ALNUM, 10);
        let sa_key = rsa::RsaPrivateKey::new(&mut rand_core_06::OsRng, 2048)
            .map_err(|e| CredentialsError::Keygen(e.to_string()))?;
        let private_key = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&sa_key, LineEnding::LF)
            .map_err(|e| CredentialsError::Keygen(e.to_string()))?
            .to_string();
        Ok(Credentials {
            apns: ApnsInfo {
                key_file: format!("AuthKey_{key_id}.p8"),
                key_id,
                team_id: random_id(UPPER_ALNUM, 10),
                topic: DEFAULT_TOPIC.into(),
                endpoint: base_url.into(),
            },
            apns_key,
            service_account: ServiceAccount {
                kind: "service_account".into(),
                project_id: DEFAULT_PROJECT.into(),
                private_key_id: random_id(HEX, 40),
                private_key,
                client_email: format!(
                    "firebase-adminsdk@{DEFAULT_PROJECT}.iam.gserviceaccount.com"
                ),
                client_id: random_id(b"0123456789", 21),
                auth_uri: format!("{base_url}/o/oauth2/auth"),
                token_uri: format!("{base_url}/token"),
            },
            sa_key,
        })
    }

    /// Reads the credentials of a directory a gateway wrote (what a proxy or test would load).
    pub fn load(dir: &Path) -> Result<Credentials, CredentialsError> {
        let apns_path = dir.join(APNS_FILE);
        let apns: ApnsInfo = read_json(&apns_path)?;
        let key_path = dir.join(&apns.key_file);
        let pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let apns_key =
            p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).map_err(|e| format_err(&key_path, e))?;
        let sa_path = dir.join(SERVICE_ACCOUNT_FILE);
        let service_account: ServiceAccount = read_json(&sa_path)?;
        let sa_key = rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(&service_account.private_key)
            .map_err(|e| format_err(&sa_path, e))?;
        Ok(Credentials {
            apns,
            apns_key,
            service_account,
            sa_key,
        })
    }

    /// The directory's keys if it has a complete set, else fresh ones; addresses are set to
    /// `base_url` either way.
    pub fn load_or_generate(dir: &Path, base_url: &str) -> Result<Credentials, CredentialsError> {
        let mut creds = match Credentials::load(dir) {
            Ok(c) => c,
            Err(CredentialsError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Credentials::generate(base_url)?
            }
            Err(e) => return Err(e),
        };
        creds.apns.endpoint = base_url.into();
        creds.service_account.token_uri = format!("{base_url}/token");
        creds.service_account.auth_uri = format!("{base_url}/o/oauth2/auth");
        Ok(creds)
    }

    /// Writes the files described in the module docs (private keys with mode 0600), and the
    /// TLS certificate `ca_cert_pem` if the gateway serves TLS.
    pub fn write(
        &self,
        dir: &Path,
        base_url: &str,
        ca_cert_pem: Option<&str>,
    ) -> Result<(), CredentialsError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key_pem = self
            .apns_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| CredentialsError::Keygen(e.to_string()))?;
        write_private(&dir.join(&self.apns.key_file), key_pem.as_bytes())?;
        write_private(&dir.join(APNS_FILE), &to_json(&self.apns))?;
        write_private(
            &dir.join(SERVICE_ACCOUNT_FILE),
            &to_json(&self.service_account),
        )?;
        if let Some(pem) = ca_cert_pem {
            write_private(&dir.join(super::tls::CERT_FILE), pem.as_bytes())?;
        }
        let info = GatewayInfo {
            url: base_url.into(),
            apns_file: APNS_FILE.into(),
            service_account_file: SERVICE_ACCOUNT_FILE.into(),
            fcm_project_id: self.service_account.project_id.clone(),
            ca_cert_file: ca_cert_pem.map(|_| super::tls::CERT_FILE.into()),
        };
        // Last, so a reader that sees gateway.json finds every other file complete.
        write_private(&dir.join(GATEWAY_FILE), &to_json(&info))
    }

    pub fn apns_verifying_key(&self) -> p256::ecdsa::VerifyingKey {
        *self.apns_key.verifying_key()
    }

    /// A fresh APNs provider token issued at `iat` (unix seconds): what a proxy sends as
    /// `authorization: bearer …`.
    pub fn apns_provider_token(&self, iat: i64) -> String {
        super::jwt::sign_es256(
            serde_json::json!({"kid": self.apns.key_id}),
            &serde_json::json!({"iss": self.apns.team_id, "iat": iat}),
            &self.apns_key,
        )
    }

    /// A service-account assertion for the FCM scope, issued at `iat`, valid for an hour.
    pub fn service_account_assertion(&self, iat: i64) -> String {
        let sa = &self.service_account;
        super::jwt::sign_rs256(
            serde_json::json!({"typ": "JWT", "kid": sa.private_key_id}),
            &serde_json::json!({
                "iss": sa.client_email,
                "scope": super::jwt::FCM_SCOPE,
                "aud": sa.token_uri,
                "iat": iat,
                "exp": iat + 3600,
            }),
            &self.sa_key,
        )
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("plain structs serialize");
    out.push(b'\n');
    out
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CredentialsError> {
    let text = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&text).map_err(|e| format_err(path, e))
}

/// Writes via a temporary file and a rename, so a reader never sees half a key.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CredentialsError> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_credentials_load_back_and_are_reused() {
        let dir = std::env::temp_dir().join(format!("ssepush-gw-creds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Credentials::load_or_generate(&dir, "http://127.0.0.1:1").unwrap();
        a.write(&dir, "http://127.0.0.1:1", None).unwrap();
        let b = Credentials::load_or_generate(&dir, "http://127.0.0.1:2").unwrap();
        assert_eq!(a.apns.key_id, b.apns.key_id);
        assert_eq!(a.apns_key, b.apns_key);
        assert_eq!(a.service_account.private_key, b.service_account.private_key);
        assert_eq!(b.service_account.token_uri, "http://127.0.0.1:2/token");
        let sa: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(SERVICE_ACCOUNT_FILE)).unwrap())
                .unwrap();
        assert_eq!(sa["type"], "service_account");
        assert!(
            sa["private_key"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let p8 = std::fs::read_to_string(dir.join(&a.apns.key_file)).unwrap();
        assert!(p8.starts_with("-----BEGIN PRIVATE KEY-----"));
        // The tokens the helpers make pass the gateway's own checks.
        let now = 1_800_000_000;
        let auth = format!("bearer {}", b.apns_provider_token(now));
        super::super::jwt::check_apns_provider_token(
            Some(&auth),
            &b.apns.key_id,
            &b.apns.team_id,
            &b.apns_verifying_key(),
            now,
        )
        .unwrap();
        super::super::jwt::check_service_account_assertion(
            &b.service_account_assertion(now),
            &b.service_account.client_email,
            &b.service_account.token_uri,
            &b.sa_key.to_public_key(),
            now,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
