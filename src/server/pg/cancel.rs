//! Cancelling: a statement's cancellation token, the protocol's cancel
//! request (pid and secret key) and `pg_cancel_backend(pid)`, which find a
//! connection by its backend pid.

use super::*;

impl Login {
    /// A fresh cancellation token for the statement starting now.
    pub(super) fn start(&self) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut r) = self.running.lock() {
            *r = token.clone();
        }
        token
    }

    pub(super) fn cancel(&self) {
        if let Ok(r) = self.running.lock() {
            r.cancel();
        }
    }
}

/// Removes a connection from the cancel map when it ends.
pub(super) struct Registered {
    pub(super) shared: Weak<Shared>,
    pub(super) pid: i32,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(s) = self.shared.upgrade()
            && let Ok(mut m) = s.cancels.lock()
        {
            m.remove(&self.pid);
        }
    }
}

/// Cancel requests: the statement running on the connection with that
/// backend pid and secret key stops, whether it is still planning or
/// already sending rows.
pub(super) struct Cancels {
    pub(super) shared: Arc<Shared>,
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = request.secret_key.to_bytes();
        if let Some((login, key)) = self
            .shared
            .logged_in(request.pid)
            .filter(|(_, k)| *k == key)
        {
            login.cancel();
            self.shared
                .conns
                .cancel(request.pid, &SecretKey::Bytes(key))
                .await;
        }
    }
}

impl Shared {
    /// The login of the connection with backend pid `pid`, and its secret key.
    pub(super) fn logged_in(&self, pid: i32) -> Option<(Arc<Login>, Bytes)> {
        let m = self.cancels.lock().ok()?;
        let (key, login) = m.get(&pid)?;
        Some((login.upgrade()?, key.clone()))
    }
}

/// `pg_cancel_backend(pid)`: stops the statement running on connection
/// `pid`, as the protocol's cancel request does; true when there was such
/// a connection. A principal cancels on their own connections (the same
/// user, role and agent); a role with the `jobs` action (the operators',
/// admin as shipped) on anyone's. Another principal's connection is
/// refused (42501) as in PostgreSQL, with no word on what it runs.
pub(super) fn cancel_backend_udf(
    shared: Weak<Shared>,
    principal: &Principal,
    anyones: bool,
) -> ScalarUDF {
    let me = principal.clone();
    create_udf(
        "pg_cancel_backend",
        vec![DataType::Int64],
        DataType::Boolean,
        // Run when the statement runs, once per row, never folded at planning.
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let pids = ColumnarValue::values_to_arrays(args)?;
            let pids = datafusion::common::cast::as_int64_array(&pids[0])?;
            let shared = shared.upgrade();
            let mut out = BooleanBuilder::with_capacity(pids.len());
            for pid in pids.iter() {
                let found = pid
                    .and_then(|p| i32::try_from(p).ok())
                    .and_then(|p| Some((p, shared.as_ref()?.logged_in(p)?)));
                let Some((pid, (login, key))) = found else {
                    out.append_option(pid.map(|_| false));
                    continue;
                };
                let p = &login.principal;
                let mine = p.user == me.user && p.role == me.role && p.agent_id == me.agent_id;
                if !mine && !anyones {
                    return Err(crate::error::Kinded::datafusion_of(
                        ErrorKind::Forbidden,
                        format!(
                            "permission denied to cancel the statement of backend {pid}: \
                             it is not {}'s connection",
                            me.user
                        ),
                    ));
                }
                login.cancel();
                // Also stops a result being sent, as a cancel request does
                // (the function cannot wait for it: it runs in the plan).
                if let Some(shared) = shared.clone() {
                    tokio::spawn(async move {
                        shared.conns.cancel(pid, &SecretKey::Bytes(key)).await;
                    });
                }
                out.append_value(true);
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }),
    )
}
