//! RPC and byte streams: what a LiveKit Agents worker says to its avatar besides media. The agent
//! streams its speech as byte streams (read by the dispatcher, delivered as
//! [`RoomEvent::ByteStreamOpened`](crate::RoomEvent) and what follows), calls the avatar's
//! registered methods (`lk.clear_buffer`), and is called back (`lk.playback_finished`).
//!
//! All three go through the library's own high-level calls (`register_rpc_method`,
//! `rpc_method_invocation_response`, `perform_rpc`, `byte_read_incremental`), which handle the
//! data packets of LiveKit's protocol (request, ack, response; stream header, chunk, trailer).

use std::time::Duration;

use crate::proto::{self, ffi_event, ffi_request, ffi_response};
use crate::room::{call, AvatarRoom};
use crate::{LkError, RpcErrorCode};

impl AvatarRoom {
    /// From now on, calls of `method` by remote participants arrive as
    /// [`RoomEvent::RpcInvocation`](crate::RoomEvent::RpcInvocation). Calls of methods not
    /// registered are answered `UNSUPPORTED_METHOD` by the library itself.
    pub fn register_rpc_method(&self, method: &str) -> Result<(), LkError> {
        if method.is_empty() {
            return Err(LkError::InvalidArgument("empty RPC method name".into()));
        }
        let register = proto::RegisterRpcMethodRequest {
            local_participant_handle: self.local_participant.id(),
            method: method.to_string(),
        };
        match self
            .lib
            .request(ffi_request::Message::RegisterRpcMethod(register))?
        {
            ffi_response::Message::RegisterRpcMethod(_) => Ok(()),
            _ => Err(LkError::UnexpectedResponse("register_rpc_method")),
        }
    }

    /// Answers one invocation: `Ok(payload)`, or an error with its code and message.
    pub fn respond_rpc(
        &self,
        invocation_id: u64,
        result: Result<String, (RpcErrorCode, String)>,
    ) -> Result<(), LkError> {
        let (payload, error) = match result {
            Ok(payload) => (Some(payload), None),
            Err((code, message)) => (
                None,
                Some(proto::RpcError {
                    code: code as u32,
                    message,
                    data: None,
                }),
            ),
        };
        let respond = proto::RpcMethodInvocationResponseRequest {
            local_participant_handle: self.local_participant.id(),
            invocation_id,
            payload,
            error,
        };
        match self
            .lib
            .request(ffi_request::Message::RpcMethodInvocationResponse(respond))?
        {
            ffi_response::Message::RpcMethodInvocationResponse(r) => match r.error {
                // The call is no longer waited for (timed out, caller gone): nothing to undo.
                Some(e) => Err(LkError::Rpc {
                    code: 0,
                    message: e,
                }),
                None => Ok(()),
            },
            _ => Err(LkError::UnexpectedResponse(
                "rpc_method_invocation_response",
            )),
        }
    }

    /// Calls `method` of the participant `destination` and returns its answer's payload. An error
    /// answer, or a call that could not be delivered, is [`LkError::Rpc`] with LiveKit's code.
    pub async fn perform_rpc(
        &self,
        destination: &str,
        method: &str,
        payload: &str,
        response_timeout: Duration,
    ) -> Result<String, LkError> {
        if self.is_disconnected() {
            return Err(LkError::Disconnected);
        }
        let timeout_ms = response_timeout.as_millis().min(u32::MAX as u128) as u32;
        let perform = |async_id| {
            ffi_request::Message::PerformRpc(proto::PerformRpcRequest {
                local_participant_handle: self.local_participant.id(),
                destination_identity: destination.to_string(),
                method: method.to_string(),
                payload: payload.to_string(),
                response_timeout_ms: Some(timeout_ms),
                request_async_id: Some(async_id),
            })
        };
        // The library gives up after the response timeout plus its own connection timeout (about
        // 7 s); this wait is only a backstop against an answer that never comes.
        let backstop = response_timeout + Duration::from_secs(10);
        match call(&self.lib, perform, backstop, "an RPC answer").await? {
            ffi_event::Message::PerformRpc(cb) => match (cb.error, cb.payload) {
                (Some(e), _) => Err(LkError::Rpc {
                    code: e.code,
                    message: e.message,
                }),
                (None, payload) => Ok(payload.unwrap_or_default()),
            },
            _ => Err(LkError::UnexpectedResponse("perform_rpc")),
        }
    }
}
