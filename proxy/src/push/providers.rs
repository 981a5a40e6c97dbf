//! The configured providers, one per platform, built from the settings' provider sections;
//! dispatches a wake to its target's platform.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    ApnsProvider, ApnsSettings, EndpointPolicy, FcmProvider, FcmSettings, PushError, PushProvider,
    PushTarget, Wake, WebPushProvider, WebPushSettings,
};

/// The same provider for every platform (tests, the demo).
pub fn providers_all(p: Arc<dyn PushProvider>) -> Providers {
    Providers {
        apns: Some(p.clone()),
        fcm: Some(p.clone()),
        webpush: Some(p),
        vapid_public_key: None,
    }
}

/// The configured providers, one per platform; a platform without settings has none, and its
/// handoffs should be refused up front ([`Providers::supports`]).
#[derive(Clone, Default)]
pub struct Providers {
    pub apns: Option<Arc<dyn PushProvider>>,
    pub fcm: Option<Arc<dyn PushProvider>>,
    pub webpush: Option<Arc<dyn PushProvider>>,
    /// The VAPID application server key (base64url, uncompressed P-256) that browsers must
    /// subscribe with, when Web Push is configured. Public: serve it to apps.
    pub vapid_public_key: Option<String>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("apns", &self.apns.is_some())
            .field("fcm", &self.fcm.is_some())
            .field("webpush", &self.webpush.is_some())
            .finish()
    }
}

impl Providers {
    /// Builds a provider for every platform that has settings. Reads key files (and may create
    /// the VAPID key), so call it once at startup; errors are [`PushError::Config`].
    /// `webpush_policy` is where Web Push wakes may go (`[push]`).
    pub fn from_settings(
        apns: Option<&ApnsSettings>,
        fcm: Option<&FcmSettings>,
        webpush: Option<&WebPushSettings>,
        webpush_policy: &EndpointPolicy,
    ) -> Result<Providers, PushError> {
        let mut providers = Providers::default();
        if let Some(s) = apns {
            providers.apns = Some(Arc::new(ApnsProvider::new(s)?));
        }
        if let Some(s) = fcm {
            providers.fcm = Some(Arc::new(FcmProvider::new(s)?));
        }
        if let Some(s) = webpush {
            let p = WebPushProvider::new(s, webpush_policy.clone())?;
            providers.vapid_public_key = Some(p.public_key().to_owned());
            providers.webpush = Some(Arc::new(p));
        }
        Ok(providers)
    }

    /// The provider for `target`'s platform, if configured.
    pub fn get(&self, target: &PushTarget) -> Option<&Arc<dyn PushProvider>> {
        match target {
            PushTarget::Apns { .. } => self.apns.as_ref(),
            PushTarget::Fcm { .. } => self.fcm.as_ref(),
            PushTarget::Webpush { .. } => self.webpush.as_ref(),
        }
    }

    pub fn supports(&self, target: &PushTarget) -> bool {
        self.get(target).is_some()
    }
}

#[async_trait]
impl PushProvider for Providers {
    async fn send(&self, target: &PushTarget, wake: &Wake) -> Result<(), PushError> {
        match self.get(target) {
            Some(p) => p.send(target, wake).await,
            None => Err(PushError::Config(
                "no push provider is configured for this platform".into(),
            )),
        }
    }
}
