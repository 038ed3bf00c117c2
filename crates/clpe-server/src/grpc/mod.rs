//! The gRPC surface: `clpe.v1.Decisions` (`proto/clpe/v1/decisions.proto`), `Decide` for
//! one event and `DecideStream` for hookpoints that send many over one stream.

mod convert;

use std::pin::Pin;
use std::sync::Arc;

use clpe_core::{DecideOptions, Event, EventError};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Status, Streaming};

use crate::daemon::Daemon;

/// The generated messages, client and server.
#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "generated code"
)]
pub mod proto {
    tonic::include_proto!("clpe.v1");
}

pub use proto::decisions_client::DecisionsClient;
pub use proto::decisions_server::DecisionsServer;

/// The largest message accepted: an event is small.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The service over a daemon.
#[derive(Clone, Debug)]
pub struct Decisions {
    daemon: Arc<Daemon>,
}

impl Decisions {
    pub fn new(daemon: Arc<Daemon>) -> Decisions {
        Decisions { daemon }
    }

    /// The server to add to a tonic router, with its message size limit.
    pub fn server(daemon: Arc<Daemon>) -> DecisionsServer<Decisions> {
        DecisionsServer::new(Decisions::new(daemon)).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn decide_one(&self, request: proto::DecideRequest) -> Result<proto::Response, EventError> {
        let event = Event::try_from(request.event.ok_or_else(|| EventError {
            field: "event".to_owned(),
            message: "is missing".to_owned(),
        })?)?;
        let opts = DecideOptions {
            explain: request.explain,
            dry_run: request.dry_run,
        };
        Ok(self.daemon.decide(&event, opts)?.into())
    }
}

fn invalid(e: &EventError) -> Status {
    Status::invalid_argument(e.to_string())
}

type ResultStream =
    Pin<Box<dyn Stream<Item = Result<proto::DecideResult, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl proto::decisions_server::Decisions for Decisions {
    async fn decide(
        &self,
        request: Request<proto::DecideRequest>,
    ) -> Result<tonic::Response<proto::Response>, Status> {
        self.decide_one(request.into_inner())
            .map(tonic::Response::new)
            .map_err(|e| invalid(&e))
    }

    type DecideStreamStream = ResultStream;

    async fn decide_stream(
        &self,
        request: Request<Streaming<proto::DecideRequest>>,
    ) -> Result<tonic::Response<Self::DecideStreamStream>, Status> {
        let service = self.clone();
        let results = request.into_inner().map(move |item| {
            use proto::decide_result::Result as Outcome;
            let result = match service.decide_one(item?) {
                Ok(response) => Outcome::Response(response),
                Err(e) => Outcome::Error(proto::EventError {
                    field: e.field,
                    message: e.message,
                }),
            };
            Ok(proto::DecideResult {
                result: Some(result),
            })
        });
        Ok(tonic::Response::new(Box::pin(results)))
    }
}
