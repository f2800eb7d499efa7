//! Messages between the nodes of one service, over NATS (`cluster.nats_url`): each node answers
//! requests on its own subjects (`<prefix>.node.<node_id>.<topic>`), asks another node with a
//! typed JSON request and a timeout, advertises itself on `<prefix>.nodes` and hears the others
//! there. What the requests mean is the session service's business; this is the wire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node did not answer within the timeout (it may still act on the request).
    #[error("node {node} did not answer: {why}")]
    NoAnswer { node: String, why: String },
    /// Nothing listens for the node's requests: it is gone, and nothing was done.
    #[error("node {0} is not listening")]
    NotListening(String),
    #[error("bad message: {0}")]
    Malformed(String),
    #[error("cannot reach NATS at {url}: {why}")]
    Connect { url: String, why: String },
}

/// One request another node sent here, to answer with `Cluster::answer` and its `reply`.
pub struct Inbound<Q> {
    pub request: Q,
    pub reply: Option<async_nats::Subject>,
}

/// A subscription that may be dropped outside a runtime (at shutdown): its unsubscribe needs one,
/// and without one the connection's end unsubscribes it anyway.
struct Subscription(Option<async_nats::Subscriber>);

impl futures_util::Stream for Subscription {
    type Item = async_nats::Message;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.0.as_mut() {
            Some(subscriber) => subscriber.poll_next_unpin(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            std::mem::forget(self.0.take());
        }
    }
}

/// What a node tells the others about itself, every `cluster.advertise_interval_ms`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Advert {
    pub node_id: String,
    /// Render slots no session holds (on devices that are alive).
    pub free_slots: usize,
    pub live_sessions: usize,
}

/// The other nodes as their last adverts describe them, with when each was heard.
#[derive(Clone, Default)]
pub struct Peers(Arc<Mutex<HashMap<String, (Advert, Instant)>>>);

impl Peers {
    pub fn heard(&self, advert: Advert) {
        let mut peers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        peers.insert(advert.node_id.clone(), (advert, Instant::now()));
    }

    /// The nodes heard within `max_age`, those with the most free slots first; older ones are
    /// forgotten.
    pub fn alive(&self, max_age: Duration) -> Vec<Advert> {
        let mut peers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|_, (_, heard)| heard.elapsed() <= max_age);
        let mut alive: Vec<Advert> = peers.values().map(|(a, _)| a.clone()).collect();
        alive.sort_by(|a, b| {
            b.free_slots
                .cmp(&a.free_slots)
                .then(a.node_id.cmp(&b.node_id))
        });
        alive
    }
}

#[derive(Clone)]
pub struct Cluster {
    client: async_nats::Client,
    node_id: String,
    /// The first part of every subject: nodes with one prefix are one service.
    prefix: String,
    timeout: Duration,
    peers: Peers,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl Cluster {
    pub async fn connect(
        url: &str,
        prefix: &str,
        node_id: &str,
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("avatar-supervisor {node_id}"))
            .request_timeout(Some(timeout))
            .connection_timeout(timeout.max(Duration::from_secs(2)))
            .connect(url)
            .await
            .map_err(|e| ClusterError::Connect {
                url: url.to_string(),
                why: e.to_string(),
            })?;
        Ok(Self {
            client,
            node_id: node_id.to_string(),
            prefix: prefix.to_string(),
            timeout,
            peers: Peers::default(),
        })
    }

    /// The subject a node answers one kind of request on (`topic`: what they are about).
    fn subject(&self, node_id: &str, topic: &str) -> String {
        format!("{}.node.{node_id}.{topic}", self.prefix)
    }

    /// The subject every node advertises itself on.
    fn adverts_subject(&self) -> String {
        format!("{}.nodes", self.prefix)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The other nodes, as heard from their adverts.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Tells the other nodes about this one.
    pub async fn advertise(&self, advert: &Advert) {
        match serde_json::to_vec(advert) {
            Ok(body) => {
                if let Err(e) = self
                    .client
                    .publish(self.adverts_subject(), body.into())
                    .await
                {
                    tracing::warn!(error = %e, "advert not sent");
                }
            }
            Err(e) => tracing::error!(error = %e, "advert not serializable"),
        }
    }

    /// Records the other nodes' adverts in `peers` until the connection ends.
    pub async fn hear_adverts(self) {
        let mut adverts = match self.subscribe(self.adverts_subject()).await {
            Ok(adverts) => adverts,
            Err(e) => {
                tracing::error!(error = %e, "cannot hear the other nodes");
                return;
            }
        };
        while let Some(message) = adverts.next().await {
            match serde_json::from_slice::<Advert>(&message.payload) {
                Ok(advert) if advert.node_id != self.node_id => self.peers.heard(advert),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "malformed advert"),
            }
        }
    }

    /// A fresh subject for one stream of messages to this node.
    pub fn new_inbox(&self) -> String {
        self.client.new_inbox()
    }

    /// The messages sent to `subject`, in order.
    pub async fn subscribe(
        &self,
        subject: String,
    ) -> Result<
        impl futures_util::Stream<Item = async_nats::Message> + Send + Unpin + 'static,
        ClusterError,
    > {
        let subscriber =
            self.client
                .subscribe(subject)
                .await
                .map_err(|e| ClusterError::Connect {
                    url: "(subscribe)".into(),
                    why: e.to_string(),
                })?;
        Ok(Subscription(Some(subscriber)))
    }

    /// Sends `body` to whoever listens on `subject` (nobody, maybe).
    pub async fn publish(&self, subject: String, body: Vec<u8>) -> bool {
        self.client.publish(subject, body.into()).await.is_ok()
    }

    /// Whether something still listens on `subject` and answers a request there in time.
    pub async fn answers(&self, subject: String) -> bool {
        let request = self.client.request(subject, Vec::new().into());
        matches!(tokio::time::timeout(self.timeout, request).await, Ok(Ok(_)))
    }

    /// Answers a message that asked for one (an empty body).
    pub async fn reply(&self, message: &async_nats::Message) {
        if let Some(reply) = &message.reply {
            let _ = self.client.publish(reply.clone(), Vec::new().into()).await;
        }
    }

    /// Asks `node` and waits for its answer, at most the timeout.
    pub async fn ask<Q: Serialize, A: DeserializeOwned>(
        &self,
        node: &str,
        topic: &str,
        request: &Q,
    ) -> Result<A, ClusterError> {
        self.ask_within(node, topic, request, self.timeout).await
    }

    /// Asks `node` and waits for its answer at most `timeout` (a start waits for a room).
    pub async fn ask_within<Q: Serialize, A: DeserializeOwned>(
        &self,
        node: &str,
        topic: &str,
        request: &Q,
        timeout: Duration,
    ) -> Result<A, ClusterError> {
        let body =
            serde_json::to_vec(request).map_err(|e| ClusterError::Malformed(e.to_string()))?;
        let no_answer = |why: String| ClusterError::NoAnswer {
            node: node.to_string(),
            why,
        };
        let request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(timeout));
        let message = tokio::time::timeout(
            timeout,
            self.client.send_request(self.subject(node, topic), request),
        )
        .await
        .map_err(|_| no_answer("timed out".into()))?
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => {
                ClusterError::NotListening(node.to_string())
            }
            _ => no_answer(e.to_string()),
        })?;
        serde_json::from_slice(&message.payload).map_err(|e| ClusterError::Malformed(e.to_string()))
    }

    /// The requests about `topic` other nodes send this one, in order; a malformed one is logged
    /// and skipped.
    pub async fn requests<Q: DeserializeOwned + Send + 'static>(
        &self,
        topic: &str,
    ) -> Result<impl futures_util::Stream<Item = Inbound<Q>> + Send + 'static, ClusterError> {
        let messages = self.subscribe(self.subject(&self.node_id, topic)).await?;
        Ok(messages.filter_map(|message| async move {
            match serde_json::from_slice::<Q>(&message.payload) {
                Ok(request) => Some(Inbound {
                    request,
                    reply: message.reply,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "malformed cluster request");
                    None
                }
            }
        }))
    }

    /// Sends `answer` to whoever asked (an inbound request's `reply`).
    pub async fn answer<A: Serialize>(&self, reply: Option<async_nats::Subject>, answer: &A) {
        let Some(reply) = reply else { return };
        match serde_json::to_vec(answer) {
            Ok(body) => {
                if let Err(e) = self.client.publish(reply, body.into()).await {
                    tracing::warn!(error = %e, "cluster answer not sent");
                }
            }
            Err(e) => tracing::error!(error = %e, "cluster answer not serializable"),
        }
    }

    /// Answers the requests about `topic` other nodes send this one, each in a task of its own,
    /// until the connection ends.
    pub async fn serve<Q, A, F, Fut>(self, topic: &str, answer: F)
    where
        Q: DeserializeOwned + Send + 'static,
        A: Serialize,
        F: Fn(Q) -> Fut,
        Fut: std::future::Future<Output = A> + 'static,
    {
        let mut requests = match self.requests::<Q>(topic).await {
            Ok(requests) => Box::pin(requests),
            Err(e) => {
                tracing::error!(topic, error = %e, "cannot take requests from other nodes");
                return;
            }
        };
        while let Some(inbound) = requests.next().await {
            let cluster = self.clone();
            let answered = answer(inbound.request);
            tokio::task::spawn_local(async move {
                cluster.answer(inbound.reply, &answered.await).await;
            });
        }
    }
}
