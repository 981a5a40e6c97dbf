//! Issue 12 §3: neither server is a way into its own network. The proxy POSTs VAPID-signed
//! requests to client-chosen Web Push endpoints, the origin to client-chosen webhook targets;
//! both hold them to one policy (IANA's special-purpose registries in full,
//! `ssepush_origin::special_purpose`), at creation and again when connecting, and a failed
//! connection never tells an open port from a closed one. Real servers, a real "victim" server
//! counting the connections it gets.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use ssepush::client::webpush::UserAgentKeys;
use ssepush_proxy::push::endpoint::UNREACHABLE;
use ssepush_proxy::push::{
    EndpointPolicy, PushError, PushProvider, PushTarget, Wake, WakeMode, WebPushKeys,
    WebPushProvider, WebPushSubscription,
};

use crate::support::proxy::{TestProxy, fixed_server, proxy_settings};
use crate::support::webhooks::api;
use crate::support::{TestGateway, TestOrigin, eventually, memory_settings};

const API_KEY: &str = "app-backend-key";

fn webpush_body(stream_url: &str, endpoint: &str) -> Value {
    let keys = UserAgentKeys::generate();
    json!({
        "stream": {"url": stream_url},
        "push": {"platform": "webpush", "subscription": {
            "endpoint": endpoint, "expirationTime": null,
            "keys": {"p256dh": keys.p256dh, "auth": keys.auth}}},
    })
}

async fn create(proxy: &TestProxy, body: &Value) -> (u16, Value) {
    let resp = proxy
        .http
        .post(format!("{}/v1/handoffs", proxy.url))
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A proxy listening on a network (0.0.0.0) with the real Web Push provider refuses the
/// issue's three endpoints, and every other non-global one, with a 400
/// `push_endpoint_not_allowed` at creation; the server behind the loopback endpoint gets no
/// connection. The same endpoint on a loopback (development) proxy is still accepted.
#[tokio::test]
async fn a_proxy_on_a_network_refuses_push_endpoints_into_its_own_network() {
    let origin = TestOrigin::start(memory_settings()).await;
    let gw = TestGateway::start().await;
    let victim = fixed_server(200, None).await;
    let port = victim.url.rsplit(':').next().unwrap().to_owned();
    let stream = format!("{}/v1/sse?channel=ssrf.*", origin.url);

    let mut settings = proxy_settings(&[&origin.url]);
    settings.listen = "0.0.0.0:0".parse().unwrap();
    settings.auth.api_keys = vec![API_KEY.into()];
    gw.configure_proxy(&mut settings).unwrap();
    let providers = ssepush_proxy::server::providers_from_settings(&settings).unwrap();
    let proxy = TestProxy::start_with(settings.clone(), providers).await;
    let refused = [
        format!("{}/admin/reset?all=1", victim.url),
        "https://10.0.0.1/".into(),
        "https://169.254.169.254/".into(),
        format!("https://127.0.0.1:{port}/"),
        format!("https://localhost:{port}/wp/x"),
        "https://198.18.0.1/".into(),
        "https://192.0.0.1/".into(),
        "https://[2002:7f00:1::]/".into(),
        "https://[::ffff:127.0.0.1]/".into(),
        "https://[64:ff9b::a9fe:a9fe]/".into(),
    ];
    for endpoint in &refused {
        let (status, err) = create(&proxy, &webpush_body(&stream, endpoint)).await;
        assert_eq!(status, 400, "{endpoint}: {err}");
        assert_eq!(
            err["error"]["code"], "push_endpoint_not_allowed",
            "{endpoint}: {err}"
        );
    }
    // Plain http to a public host was never allowed (a syntax error, as before).
    let (status, err) = create(&proxy, &webpush_body(&stream, "http://93.184.216.34/wp/x")).await;
    assert_eq!(status, 400, "{err}");
    // A public https endpoint passes (creation makes no connection to it).
    let (status, body) = create(&proxy, &webpush_body(&stream, "https://93.184.216.34/wp/x")).await;
    assert_eq!(status, 201, "{body}");
    proxy.stop().await;

    // The optional host allow list: only the named push services.
    settings.push.webpush_hosts = vec!["*.push.example.net".into()];
    let providers = ssepush_proxy::server::providers_from_settings(&settings).unwrap();
    let proxy = TestProxy::start_with(settings.clone(), providers).await;
    let (status, err) = create(&proxy, &webpush_body(&stream, "https://93.184.216.34/wp/x")).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("push.webpush_hosts"),
        "{err}"
    );
    proxy.stop().await;
    assert_eq!(
        victim.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the server behind a refused endpoint was reached"
    );

    // Development: a proxy on loopback still takes the simulated gateway's http endpoints.
    let mut dev = proxy_settings(&[&origin.url]);
    dev.auth.api_keys = vec![API_KEY.into()];
    gw.configure_proxy(&mut dev).unwrap();
    let providers = ssepush_proxy::server::providers_from_settings(&dev).unwrap();
    let proxy = TestProxy::start_with(dev, providers).await;
    let (status, body) = create(&proxy, &webpush_body(&stream, &refused[0])).await;
    assert_eq!(status, 201, "{body}");
    proxy.stop().await;
    gw.stop().await;
    origin.stop().await;
}

fn wake() -> Wake {
    Wake {
        handoff_id: "h-ssrf".into(),
        pending: 1,
        latest_event_id: None,
        mode: WakeMode::Background,
        collapse_id: "h-ssrf".into(),
        ttl: Duration::from_secs(60),
        node: None,
        epoch: None,
    }
}

fn target(endpoint: &str) -> PushTarget {
    let keys = UserAgentKeys::generate();
    PushTarget::Webpush {
        subscription: WebPushSubscription {
            endpoint: endpoint.into(),
            expiration_time: None,
            keys: WebPushKeys {
                p256dh: keys.p256dh,
                auth: keys.auth,
            },
        },
    }
}

/// The connect-time check: a host name that resolves to 127.0.0.1 (`localhost`, which a
/// rebinding name would be by the time the wake is sent) gets no connection from a provider
/// with private endpoints refused — the name is resolved by the policy's resolver when
/// connecting, not only when the handoff was made. What the wake reports is the same
/// generic words for a refused name, an open port and a closed port.
#[tokio::test]
async fn a_name_resolving_to_loopback_gets_no_connection_when_a_wake_is_sent() {
    let gw = TestGateway::start().await;
    let (_, _, webpush) = ssepush::device::stack::provider_settings(&gw.dir).unwrap();
    let victim = fixed_server(200, None).await;
    let port = victim.url.rsplit(':').next().unwrap().to_owned();
    let hits = || victim.hits.load(std::sync::atomic::Ordering::SeqCst);
    let strict = WebPushProvider::new(
        &webpush,
        EndpointPolicy {
            allow_private: false,
            hosts: Vec::new(),
        },
    )
    .unwrap();
    let open = format!("https://localhost:{port}/wp/x");
    let refused = strict.send(&target(&open), &wake()).await;
    assert_eq!(refused, Err(PushError::Transient(UNREACHABLE.into())));
    assert_eq!(hits(), 0, "a name resolving to loopback got a connection");

    // The same send, private endpoints allowed, does reach the server (which speaks no TLS):
    // the resolver is what kept the first one out.
    let dev = WebPushProvider::new(&webpush, EndpointPolicy::permissive()).unwrap();
    let reached = dev.send(&target(&open), &wake()).await;
    assert_eq!(hits(), 1);
    // A closed port reads the same as the open one and as the refused name.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let unreached = dev
        .send(
            &target(&format!("https://localhost:{closed}/wp/x")),
            &wake(),
        )
        .await;
    assert_eq!(reached, Err(PushError::Transient(UNREACHABLE.into())));
    assert_eq!(unreached, reached);
    gw.stop().await;
}

/// Through the whole proxy: a handoff's `lastError` after a wake to an open port and to a
/// closed one says the same thing (issue 12 §3: it used to tell them apart).
#[tokio::test]
async fn last_error_does_not_tell_open_ports_from_closed_ones() {
    let origin = TestOrigin::start(memory_settings()).await;
    let gw = TestGateway::start().await;
    let open = fixed_server(200, None).await;
    let open_port = open.url.rsplit(':').next().unwrap().to_owned();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut settings = proxy_settings(&[&origin.url]);
    settings.auth.api_keys = vec![API_KEY.into()];
    gw.configure_proxy(&mut settings).unwrap();
    let providers = ssepush_proxy::server::providers_from_settings(&settings).unwrap();
    let proxy = TestProxy::start_with(settings, providers).await;
    let last = origin
        .client
        .publish_one("ports.a", None, json!(0))
        .await
        .unwrap();
    let stream = format!("{}/v1/sse?channel=ports.*", origin.url);
    let mut handoffs = Vec::new();
    for port in [open_port, closed_port.to_string()] {
        let mut body = webpush_body(&stream, &format!("https://127.0.0.1:{port}/wp/x"));
        body["stream"]["lastEventId"] = json!(last.to_string());
        let (status, created) = create(&proxy, &body).await;
        assert_eq!(status, 201, "{created}");
        handoffs.push(crate::support::proxy::Handoff {
            id: created["id"].as_str().unwrap().to_owned(),
            token: created["token"].as_str().unwrap().to_owned(),
        });
    }
    origin
        .client
        .publish_one("ports.a", None, json!(1))
        .await
        .unwrap();
    let mut errors = Vec::new();
    for h in &handoffs {
        eventually(Duration::from_secs(15), "lastError after a wake", || {
            let (proxy, h) = (&proxy, h);
            async move { !proxy.status(h).await["lastError"].is_null() }
        })
        .await;
        errors.push(proxy.status(h).await["lastError"].clone());
    }
    assert!(open.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(errors[0], errors[1]);
    assert_eq!(errors[0], json!(format!("transient: {UNREACHABLE}")));
    proxy.stop().await;
    gw.stop().await;
    origin.stop().await;
}

/// The origin's webhook targets are held to the same registries: benchmarking, IETF protocol
/// assignments, 6to4 and NAT64 of loopback were accepted before.
#[tokio::test]
async fn the_origin_refuses_webhook_targets_from_the_whole_registries() {
    let origin = TestOrigin::start(memory_settings()).await;
    let url = format!("{}/v1/webhooks", origin.url);
    for target in [
        "http://198.18.0.1/hook",
        "http://192.0.0.1/hook",
        "http://[2002:7f00:1::]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://203.0.113.5/hook",
        "http://[2001:db8::1]/hook",
    ] {
        let (code, e) = api(
            reqwest::Method::POST,
            url.clone(),
            Some(json!({"url": target, "channels": ["a"]})),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{target}: {e}");
        assert_eq!(e["error"]["code"], "invalid_url", "{target}: {e}");
    }
    let (code, e) = api(
        reqwest::Method::POST,
        url,
        Some(json!({"url": "http://93.184.216.34/hook", "channels": ["a"]})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{e}");
    origin.stop().await;
}
