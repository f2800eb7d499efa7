//! Messages between the nodes of one service, over NATS (`cluster.nats_url`): each node answers
//! requests on its own subject (`avs.node.<node_id>`), and asks another node with a typed JSON
//! request and a timeout. What the requests mean is the session service's business; this is the
//! wire.

use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node did not answer (gone, or no subscriber) within the timeout.
    #[error("node {node} did not answer: {why}")]
    NoAnswer { node: String, why: String },
    #[error("bad message: {0}")]
    Malformed(String),
    #[error("cannot reach NATS at {url}: {why}")]
    Connect { url: String, why: String },
}

/// One request another node sent here, to answer with `Inbound::answer`.
pub struct Inbound<Q> {
    pub request: Q,
    reply: Option<async_nats::Subject>,
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

#[derive(Clone)]
pub struct Cluster {
    client: async_nats::Client,
    node_id: String,
    timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish()
    }
}

fn subject(node_id: &str) -> String {
    format!("avs.node.{node_id}")
}

impl Cluster {
    pub async fn connect(
        url: &str,
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
            timeout,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Asks `node` and waits for its answer, at most the timeout.
    pub async fn ask<Q: Serialize, A: DeserializeOwned>(
        &self,
        node: &str,
        request: &Q,
    ) -> Result<A, ClusterError> {
        let body =
            serde_json::to_vec(request).map_err(|e| ClusterError::Malformed(e.to_string()))?;
        let no_answer = |why: String| ClusterError::NoAnswer {
            node: node.to_string(),
            why,
        };
        let message = tokio::time::timeout(
            self.timeout,
            self.client.request(subject(node), body.into()),
        )
        .await
        .map_err(|_| no_answer("timed out".into()))?
        .map_err(|e| no_answer(e.to_string()))?;
        serde_json::from_slice(&message.payload).map_err(|e| ClusterError::Malformed(e.to_string()))
    }

    /// The requests other nodes send this one, in order; a malformed one is logged and skipped.
    pub async fn requests<Q: DeserializeOwned + Send + 'static>(
        &self,
    ) -> Result<impl futures_util::Stream<Item = Inbound<Q>> + Send + 'static, ClusterError> {
        let subscriber = self
            .client
            .subscribe(subject(&self.node_id))
            .await
            .map_err(|e| ClusterError::Connect {
                url: "(subscribe)".into(),
                why: e.to_string(),
            })?;
        Ok(
            Subscription(Some(subscriber)).filter_map(|message| async move {
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
            }),
        )
    }

    /// Sends `answer` to whoever asked `inbound`.
    pub async fn answer<Q, A: Serialize>(&self, inbound: Inbound<Q>, answer: &A) {
        let Some(reply) = inbound.reply else { return };
        match serde_json::to_vec(answer) {
            Ok(body) => {
                if let Err(e) = self.client.publish(reply, body.into()).await {
                    tracing::warn!(error = %e, "cluster answer not sent");
                }
            }
            Err(e) => tracing::error!(error = %e, "cluster answer not serializable"),
        }
    }
}
