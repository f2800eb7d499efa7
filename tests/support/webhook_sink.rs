//! `WebhookSink`: a customer's webhook endpoint. It records every POST it receives, at any path,
//! and can be told to fail the next few deliveries so retry behaviour can be observed.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How often `wait_for` looks at what has arrived.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path, without the query string.
    pub path: String,
    /// The query string, without the `?` (empty when there was none).
    pub query: String,
    /// Header names lower-cased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The body, exactly as sent (lossily decoded if it was not UTF-8).
    pub body: String,
    /// When the sink received it; compare two of these to measure retry spacing.
    pub at: Instant,
    /// The status the sink answered (500 while `fail_next` was in force, else 200).
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("the webhook body is JSON")
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// How many of the coming requests still get a 500.
    fail_next: usize,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("webhook sink state lock poisoned by a panicking test")
    }
}

pub struct WebhookSink {
    base_url: String,
    shared: Arc<Shared>,
    handle: ServerHandle,
}

impl WebhookSink {
    /// Starts the sink on a free loopback port. Call from inside an actix (or tokio) runtime.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                // Webhook bodies are small; the limit only guards against a runaway test.
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(record))
        })
        .workers(1)
        // The test process owns signals; a fake must not react to Ctrl-C on its own.
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("listen on the bound port")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            base_url: format!("http://127.0.0.1:{port}"),
            shared,
            handle,
        }
    }

    /// The URL of `path` on this sink, e.g. `sink.url("/hooks/a")`.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.base_url)
        } else {
            format!("{}/{path}", self.base_url)
        }
    }

    /// Makes the next `n` requests answer 500 (they are still recorded).
    pub fn fail_next(&self, n: usize) {
        self.shared.lock().fail_next = n;
    }

    /// Everything received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        self.shared.lock().received.clear();
    }

    /// The first received request matching `predicate`, waiting up to `timeout` for it to arrive.
    pub async fn wait_for<F>(&self, predicate: F, timeout: Duration) -> Option<Received>
    where
        F: Fn(&Received) -> bool,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.received().into_iter().find(|r| predicate(r)) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until at least `n` requests have arrived; returns all received (possibly fewer than
    /// `n` if `timeout` passed first).
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= n || Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops the server and waits until it has let go of its port.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        // `stop` sends its command immediately; the returned future only waits for completion,
        // which a synchronous drop cannot do. A second stop after `stop().await` is a no-op.
        drop(self.handle.stop(false));
    }
}

async fn record(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    if req.method() != actix_web::http::Method::POST {
        // Webhooks are POSTs; anything else is a mistake worth seeing as a failure, not a record.
        return HttpResponse::MethodNotAllowed().finish();
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }

    let mut inner = shared.lock();
    let status = if inner.fail_next > 0 {
        inner.fail_next -= 1;
        500
    } else {
        200
    };
    inner.received.push(Received {
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
        status,
    });
    drop(inner);

    if status == 500 {
        HttpResponse::InternalServerError().body("sink told to fail")
    } else {
        HttpResponse::Ok().body("ok")
    }
}

/// Checks an `x-webhook-signature` header of the form `t=<unix>,v1=<hex hmac-sha256(secret,
/// t + "." + body)>`. Several `v1=` entries are allowed (as during a secret rotation); any match
/// passes. Freshness of `t` is the caller's business: see [`signature_timestamp`].
pub fn verify_signature(secret: &str, header: &str, body: &str) -> bool {
    // Sign over `t` exactly as it was written, not as re-formatted after parsing.
    let Some(t) = header
        .split(',')
        .find_map(|part| part.trim().strip_prefix("t="))
        .filter(|t| t.parse::<i64>().is_ok())
    else {
        return false;
    };
    header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|hex_mac| hex::decode(hex_mac).ok())
        .any(|mac_bytes| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(format!("{t}.{body}").as_bytes());
            // Constant-time comparison, as a real receiver should do.
            mac.verify_slice(&mac_bytes).is_ok()
        })
}

/// The `t=` value of an `x-webhook-signature` header.
pub fn signature_timestamp(header: &str) -> Option<i64> {
    header
        .split(',')
        .find_map(|part| part.trim().strip_prefix("t="))
        .and_then(|t| t.parse().ok())
}
