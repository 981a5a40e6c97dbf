//! [`GatewayClient`]: the simulated gateway's control API from the outside — what tests and the
//! device simulator use to get device tokens and Web Push subscriptions, listen for the pushes
//! a device receives, read the push record, and arm faults. Also loads the credentials a
//! gateway wrote, so a test can sign exactly what a proxy would.

use std::path::Path;

use futures::{Stream, StreamExt};
use ssepush_origin::sse::parse::{Parsed, parse_stream};

use super::control::faults::FaultSpec;
use super::control::records::{Delivery, Provider, PushQuery, PushRecord};
use super::control::{
    FaultArmed, RegisterDevice, RegisteredDevice, SubscribeRequest, WebPushEndpoint,
};
use super::credentials::{Credentials, CredentialsError, GATEWAY_FILE, GatewayInfo};

/// Largest `push` event read from a device stream: deliveries carry a push payload (at most
/// 4 KiB at every provider) and its headers.
pub const MAX_DELIVERY_EVENT_BYTES: usize = 256 * 1024;

/// Why a control-API call failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayClientError {
    #[error("cannot reach the gateway: {0}")]
    Http(#[from] reqwest::Error),
    #[error("gateway answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer from the gateway: {0}")]
    Decode(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// The gateway's control API (cheap to clone).
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
}

impl GatewayClient {
    /// A client for the gateway at `base` (`http://host:port`, or `https://` with `--tls`).
    pub fn new(base: &str) -> GatewayClient {
        GatewayClient {
            http: crate::client::http::client(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// A client for the gateway that wrote `dir` (its `gateway.json`), with its credentials.
    pub fn from_credentials_dir(
        dir: &Path,
    ) -> Result<(GatewayClient, Credentials), GatewayClientError> {
        let path = dir.join(GATEWAY_FILE);
        let text = std::fs::read(&path).map_err(|source| CredentialsError::Io {
            path: path.clone(),
            source,
        })?;
        let info: GatewayInfo =
            serde_json::from_slice(&text).map_err(|e| CredentialsError::Format {
                path,
                message: e.to_string(),
            })?;
        Ok((GatewayClient::new(&info.url), Credentials::load(dir)?))
    }

    /// The gateway's base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response, GatewayClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(GatewayClientError::Status {
            status: status.as_u16(),
            body,
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
    ) -> Result<T, GatewayClientError> {
        let bytes = Self::check(resp).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| GatewayClientError::Decode(e.to_string()))
    }

    /// Waits until the gateway answers `/healthz` (it is serving once it does).
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> Result<(), GatewayClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.http.get(format!("{}/healthz", self.base)).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if tokio::time::Instant::now() >= deadline => {
                    return Err(GatewayClientError::Status {
                        status: r.status().as_u16(),
                        body: "not ready".into(),
                    });
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.into()),
                _ => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
            }
        }
    }

    /// A fresh device token for `platform` (`Apns` or `Fcm`).
    pub async fn register_device(&self, platform: Provider) -> Result<String, GatewayClientError> {
        self.register(RegisterDevice {
            platform,
            token: None,
        })
        .await
    }

    /// Registers a device with a token of the caller's choosing (e.g. an APNs token of another
    /// length than today's 64 hex digits); returns it as the gateway stored it.
    pub async fn register_device_token(
        &self,
        platform: Provider,
        token: &str,
    ) -> Result<String, GatewayClientError> {
        self.register(RegisterDevice {
            platform,
            token: Some(token.to_owned()),
        })
        .await
    }

    async fn register(&self, req: RegisterDevice) -> Result<String, GatewayClientError> {
        let resp = self
            .http
            .post(format!("{}/_gateway/devices", self.base))
            .json(&req)
            .send()
            .await?;
        Ok(Self::json::<RegisteredDevice>(resp).await?.token)
    }

    /// The app is uninstalled: from now on APNs answers 410 `Unregistered`, FCM 404
    /// `UNREGISTERED` for this token.
    pub async fn unregister_device(&self, token: &str) -> Result<(), GatewayClientError> {
        let resp = self
            .http
            .delete(format!("{}/_gateway/devices/{token}", self.base))
            .send()
            .await?;
        Self::check(resp).await.map(drop)
    }

    /// A Web Push subscription endpoint; with `application_server_key` (base64url), only
    /// pushes signed with that VAPID key are accepted.
    pub async fn subscribe_webpush(
        &self,
        application_server_key: Option<&str>,
    ) -> Result<WebPushEndpoint, GatewayClientError> {
        let body = SubscribeRequest {
            application_server_key: application_server_key.map(str::to_owned),
        };
        let resp = self
            .http
            .post(format!("{}/_gateway/webpush/subscriptions", self.base))
            .json(&body)
            .send()
            .await?;
        Self::json(resp).await
    }

    /// The phone unsubscribes: pushes to the endpoint get 410 from now on.
    pub async fn unsubscribe_webpush(&self, id: &str) -> Result<(), GatewayClientError> {
        let resp = self
            .http
            .delete(format!("{}/_gateway/webpush/subscriptions/{id}", self.base))
            .send()
            .await?;
        Self::check(resp).await.map(drop)
    }

    /// The pushes the device (token or subscription id) receives, from now on. The stream is
    /// open (the device counts as listening) once this returns.
    pub async fn device_stream(
        &self,
        token: &str,
    ) -> Result<impl Stream<Item = Result<Delivery, GatewayClientError>> + use<>, GatewayClientError>
    {
        let resp = self
            .http
            .get(format!("{}/_gateway/devices/{token}/stream", self.base))
            .header("accept", "text/event-stream")
            .send()
            .await?;
        let resp = Self::check(resp).await?;
        Ok(
            parse_stream(resp.bytes_stream(), MAX_DELIVERY_EVENT_BYTES).filter_map(|r| async move {
                match r {
                    Ok(Parsed::Message(m)) if m.event == "push" => Some(
                        serde_json::from_str::<Delivery>(&m.data)
                            .map_err(|err| GatewayClientError::Decode(err.to_string())),
                    ),
                    Ok(Parsed::Oversized { .. }) => Some(Err(GatewayClientError::Decode(format!(
                        "a delivery larger than {MAX_DELIVERY_EVENT_BYTES} bytes was skipped"
                    )))),
                    Ok(_) => None,
                    Err(e) => Some(Err(GatewayClientError::Http(e))),
                }
            }),
        )
    }

    /// The push record, oldest first, filtered by `query` (token, provider, since, limit).
    pub async fn pushes(&self, query: &PushQuery) -> Result<Vec<PushRecord>, GatewayClientError> {
        let mut qs = form_urlencoded::Serializer::new(String::new());
        if let Some(t) = &query.token {
            qs.append_pair("token", t);
        }
        if let Some(p) = query.provider {
            qs.append_pair("provider", p.as_str());
        }
        if let Some(s) = query.since {
            qs.append_pair("since", &s.to_string());
        }
        if let Some(l) = query.limit {
            qs.append_pair("limit", &l.to_string());
        }
        let qs = qs.finish();
        let resp = self
            .http
            .get(format!("{}/_gateway/pushes?{qs}", self.base))
            .send()
            .await?;
        Self::json(resp).await
    }

    /// Forgets the push record (`seq` numbers go on).
    pub async fn clear_pushes(&self) -> Result<(), GatewayClientError> {
        let resp = self
            .http
            .delete(format!("{}/_gateway/pushes", self.base))
            .send()
            .await?;
        Self::check(resp).await.map(drop)
    }

    /// Arms a fault; returns its id.
    pub async fn set_fault(&self, fault: &FaultSpec) -> Result<u64, GatewayClientError> {
        let resp = self
            .http
            .post(format!("{}/_gateway/faults", self.base))
            .json(fault)
            .send()
            .await?;
        Ok(Self::json::<FaultArmed>(resp).await?.id)
    }

    /// The armed faults (`id`, the spec's fields, `remaining`).
    pub async fn faults(&self) -> Result<Vec<serde_json::Value>, GatewayClientError> {
        let resp = self
            .http
            .get(format!("{}/_gateway/faults", self.base))
            .send()
            .await?;
        Self::json(resp).await
    }

    /// Disarms every fault.
    pub async fn clear_faults(&self) -> Result<(), GatewayClientError> {
        let resp = self
            .http
            .delete(format!("{}/_gateway/faults", self.base))
            .send()
            .await?;
        Self::check(resp).await.map(drop)
    }
}
