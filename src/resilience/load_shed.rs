//! Load shedding: a bounded number of requests in flight, globally and per
//! caller. Beyond either bound a call fails at once with RESOURCE_EXHAUSTED,
//! so that overload shows up as fast refusals, not as latency for everyone.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use axum::{extract::Request, response::Response};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::metrics::{BackendOnly, metrics};

/// Who is calling, for per-caller limits: the authenticated agent when there
/// is one (set by the auth layer), else the peer address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerId(pub String);

/// The peer address of a connection, set on each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Whose share of the per-caller limit a call takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    Agent(String),
    /// An unauthenticated caller, by its address (not formatted: this is
    /// on every call's path).
    Peer(IpAddr),
    InProcess,
}

/// The limits, shared by every request.
#[derive(Clone)]
pub struct LoadShedder {
    global: Arc<Semaphore>,
    per_caller: usize,
    callers: Arc<Mutex<Callers>>,
}

/// Calls in flight by caller (foldhash, randomly seeded: on every call's
/// path, a fraction of SipHash's cost).
type Callers = HashMap<Caller, usize, foldhash::fast::RandomState>;

impl LoadShedder {
    pub fn new(max_in_flight: usize, max_in_flight_per_caller: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(max_in_flight)),
            per_caller: max_in_flight_per_caller,
            callers: Arc::default(),
        }
    }

    /// A slot for one request of `caller`, or `None` when a limit is reached.
    pub fn admit(&self, caller: Caller) -> Option<Admission> {
        let Ok(global) = self.global.clone().try_acquire_owned() else {
            metrics()
                .requests_shed
                .get_or_create(&BackendOnly {
                    backend: "global".into(),
                })
                .inc();
            return None;
        };
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        let count = callers.entry(caller.clone()).or_default();
        if *count >= self.per_caller {
            metrics()
                .requests_shed
                .get_or_create(&BackendOnly {
                    backend: "caller".into(),
                })
                .inc();
            return None;
        }
        *count += 1;
        Some(Admission {
            _global: global,
            caller,
            callers: self.callers.clone(),
        })
    }
}

/// Holds a request's slots; dropping it (when the response has been produced) frees them.
pub struct Admission {
    _global: OwnedSemaphorePermit,
    caller: Caller,
    callers: Arc<Mutex<Callers>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = callers.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                callers.remove(&self.caller);
            }
        }
    }
}

/// Admits the call and runs `next`, or refuses it.
pub async fn enforce<F, Fut>(shedder: &LoadShedder, request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    // Health and reflection must answer even when the broker is saturated.
    if request.uri().path().starts_with("/grpc.") {
        return next(request).await;
    }
    let caller = match (
        request.extensions().get::<CallerId>(),
        request.extensions().get::<PeerAddr>(),
    ) {
        (Some(CallerId(id)), _) => Caller::Agent(id.clone()),
        (None, Some(PeerAddr(peer))) => Caller::Peer(peer.ip()),
        (None, None) => Caller::InProcess,
    };
    let Some(admission) = shedder.admit(caller) else {
        return tonic::Status::resource_exhausted(
            "the broker is at its limit of requests in flight; retry with backoff",
        )
        .into_http();
    };
    // The slot is held until the response body ends (a GetObject stream).
    next(request).await.map(|body| {
        axum::body::Body::new(body.map_frame(move |frame| {
            let _held = &admission;
            frame
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_globally_and_per_caller() {
        let shedder = LoadShedder::new(3, 2);
        let agent = |name: &str| Caller::Agent(name.to_owned());
        let a1 = shedder.admit(agent("a")).unwrap();
        let _a2 = shedder.admit(agent("a")).unwrap();
        assert!(shedder.admit(agent("a")).is_none(), "caller limit");
        let _b1 = shedder.admit(Caller::Peer([127, 0, 0, 1].into())).unwrap();
        assert!(shedder.admit(agent("c")).is_none(), "global limit");
        drop(a1);
        assert!(shedder.admit(agent("a")).is_some(), "slots come back");
    }
}
