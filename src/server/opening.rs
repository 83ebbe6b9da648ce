//! Serving before the database server has been reached: an instance that starts during an
//! outage of its PostgreSQL server keeps running and answers every request 503 (and
//! `/healthz` "up, but cannot reach the database", see `web::degraded`) while it tries again;
//! once the store opens, the app takes over, with no restart.
//!
//! Why not exit and let the supervisor restart it: every instance would fail the same way, a
//! crash loop would be declared and the port given up, though nothing is wrong with them.
//! A SQLite file never gets here: its open either works or fails for good.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::{Either, Ready, ready};
use tower_service::Service;

use crate::store::{Store, StoreError};
use crate::web::degraded;

/// The first retry, and the longest wait between two: recovery within a few seconds.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);

/// The app once it exists, and until then why it does not.
pub struct Opening<S> {
    app: Arc<OnceLock<S>>,
    problem: Arc<Mutex<String>>,
}

impl<S> Clone for Opening<S> {
    fn clone(&self) -> Self {
        Self {
            app: Arc::clone(&self.app),
            problem: Arc::clone(&self.problem),
        }
    }
}

/// Serving nothing yet: `open` or `still_unreachable` follows.
impl<S> Default for Opening<S> {
    fn default() -> Self {
        Self {
            app: Arc::new(OnceLock::new()),
            problem: Arc::new(Mutex::new(String::new())),
        }
    }
}

impl<S> Opening<S> {
    /// Requests go to `app` from now on.
    pub fn open(&self, app: S) {
        // Set once: the only caller opens the store once.
        let _ = self.app.set(app);
    }

    /// The latest reason the store could not be opened.
    pub fn still_unreachable(&self, problem: String) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }
}

impl<S> Service<Request> for Opening<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and so is the 503.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.app.get() {
            Some(app) => Either::Left(app.clone().call(request)),
            None => {
                let problem = self.problem.lock().unwrap_or_else(|p| p.into_inner());
                Either::Right(ready(Ok(degraded::respond(request.uri().path(), &problem))))
            }
        }
    }
}

/// Calls `attempt` (open the store and build the app on it) again and again, a little less
/// often each time, while the database cannot be reached; then serves the app through
/// `opening` and returns the store. Any other failure is returned: it will not pass.
pub async fn keep_trying<S, F, Fut>(
    opening: &Opening<S>,
    mut attempt: F,
) -> Result<Store, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(Store, S), StoreError>>,
{
    let mut wait = FIRST_RETRY;
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LAST_RETRY);
        match attempt().await {
            Ok((store, app)) => {
                opening.open(app);
                tracing::info!("reached the database: serving");
                return Ok(store);
            }
            Err(e @ StoreError::Unavailable(_)) => opening.still_unreachable(e.to_string()),
            Err(e) => return Err(e),
        }
    }
}
