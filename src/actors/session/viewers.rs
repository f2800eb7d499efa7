//! The local room's browser viewers, as the HTTP boundary reaches them: an offer, trickle, a leave.
//! The session routes each to its Room child, which owns the media; with LiveKit configured there
//! is no local room to view (clients join the LiveKit room instead).

use actix::prelude::*;
use avs_rtc::{RtcError, ViewerId};

use super::room::{LeaveViewer, Offer, Trickle};
use super::Session;

/// Why a viewer request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("the session is not live")]
    NotLive,
    #[error("this session's media goes through LiveKit: join its LiveKit room")]
    NotLocal,
    #[error(transparent)]
    Rtc(#[from] RtcError),
}

/// A browser's SDP offer: answers its viewer id and the SDP answer.
#[derive(Message)]
#[rtype(result = "Result<(ViewerId, String), ViewerError>")]
pub struct ViewerOffer(pub String);

#[derive(Message)]
#[rtype(result = "Result<(), ViewerError>")]
pub struct ViewerTrickle {
    pub viewer: ViewerId,
    pub fragment: String,
}

/// A viewer leaves; answers whether it was there.
#[derive(Message)]
#[rtype(result = "Result<bool, ViewerError>")]
pub struct ViewerLeave(pub ViewerId);

impl Session {
    fn local_room(&self) -> Result<Addr<super::room::Room>, ViewerError> {
        if self.deps.rtc.is_none() {
            return Err(ViewerError::NotLocal);
        }
        if self.refuse_unless_live().is_err() {
            return Err(ViewerError::NotLive);
        }
        self.children.room.clone().ok_or(ViewerError::NotLive)
    }
}

impl Handler<ViewerOffer> for Session {
    type Result = ResponseFuture<Result<(ViewerId, String), ViewerError>>;

    fn handle(&mut self, ViewerOffer(sdp): ViewerOffer, _: &mut Self::Context) -> Self::Result {
        let room = self.local_room();
        Box::pin(async move {
            match room?.send(Offer(sdp)).await {
                Ok(answer) => Ok(answer?),
                Err(_) => Err(ViewerError::NotLive),
            }
        })
    }
}

impl Handler<ViewerTrickle> for Session {
    type Result = ResponseFuture<Result<(), ViewerError>>;

    fn handle(&mut self, msg: ViewerTrickle, _: &mut Self::Context) -> Self::Result {
        let room = self.local_room();
        Box::pin(async move {
            let trickle = Trickle {
                viewer: msg.viewer,
                fragment: msg.fragment,
            };
            match room?.send(trickle).await {
                Ok(result) => Ok(result?),
                Err(_) => Err(ViewerError::NotLive),
            }
        })
    }
}

impl Handler<ViewerLeave> for Session {
    type Result = ResponseFuture<Result<bool, ViewerError>>;

    fn handle(&mut self, ViewerLeave(viewer): ViewerLeave, _: &mut Self::Context) -> Self::Result {
        let room = self.local_room();
        Box::pin(async move {
            room?
                .send(LeaveViewer(viewer))
                .await
                .map_err(|_| ViewerError::NotLive)
        })
    }
}
