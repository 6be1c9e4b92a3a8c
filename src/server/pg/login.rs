//! The login: a user name and its token as the password, checked against
//! the token store; the connection then gets its principal's session.

use super::*;

#[async_trait]
impl StartupHandler for Conn {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.shared.require_tls && !client.is_secure() {
                    return Err(fatal(
                        ErrorKind::Unauthenticated,
                        "this server takes logins over TLS only; connect with sslmode=require",
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                futures::SinkExt::send(
                    client,
                    PgWireBackendMessage::Authentication(Authentication::CleartextPassword),
                )
                .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let token = pwd.into_password()?.password;
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                let principal = match self.authenticate(&user, &token).await {
                    Ok(p) => p,
                    Err(why) => {
                        if self
                            .state()
                            .limiters
                            .check_anonymous(Some(self.peer.ip()))
                            .is_err()
                        {
                            // Refused without a record, as over HTTP: a
                            // flood of bad logins is not a flood of fsyncs.
                            metrics::counter!("custlake_unauthenticated_throttled_total")
                                .increment(1);
                            return Err(fatal(
                                ErrorKind::TooManyRequests,
                                "too many failed logins from this address; retry shortly",
                            ));
                        }
                        let mut r = self.record(None, "pg.login", "denied");
                        r.detail = Some(format!("user {user:?}: {why}"));
                        r.code = Some(i64::from(ErrorKind::Unauthenticated.code()));
                        self.audit(r).await?;
                        let mut info = ErrorInfo::new(
                            "FATAL".into(),
                            "28P01".into(),
                            format!("password authentication failed for user {user:?}"),
                        );
                        info.detail = Some(format!(
                            "custlake error {}: {why}; the password is a custlake token",
                            ErrorKind::Unauthenticated.code()
                        ));
                        return Err(PgWireError::UserError(Box::new(info)));
                    }
                };
                let role = self
                    .state()
                    .security
                    .role(&principal)
                    .map_err(|e| pg_error(&ApiError::from_error("checking the role", &e)))?;
                // A role without free SQL calls its named queries (and
                // nothing else; see `Refuse::all_but_named_calls`); one without any of those
                // has nothing to do here.
                let callable = super::super::query::callable(self.state(), &principal);
                // Rows over PG are an export like CSV: a role that may not
                // export CSV may not log in; nor may one that may neither
                // send SQL nor call a named query.
                let barred = if !role.allows_format("csv") {
                    Some("may not export results as csv, which PG rows are")
                } else if !role.free_sql && callable.is_empty() {
                    Some("may not send its own SQL and may call no named query")
                } else {
                    None
                };
                if let Some(why) = barred {
                    let mut r = self.record(Some(&principal), "pg.login", "denied");
                    r.code = Some(i64::from(ErrorKind::Forbidden.code()));
                    self.audit(r).await?;
                    return Err(fatal(
                        ErrorKind::Forbidden,
                        format!("role {} {why}", principal.role),
                    ));
                }
                match self.shared.slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        if let Ok(mut slot) = self.slot.lock() {
                            *slot = Some(permit);
                        }
                    }
                    Err(_) => {
                        return Err(fatal(
                            ErrorKind::TooManyRequests,
                            format!(
                                "sorry, too many clients already ({} connections, server.pg_max_connections)",
                                self.state().warehouse.config.server.pg_max_connections
                            ),
                        ));
                    }
                }
                if let Ok(mut p) = self.pending.lock() {
                    p.take();
                }
                // The backend pid first: the session's `pg_backend_pid()`
                // names it, and `pg_cancel_backend(pid)` finds connections by it.
                let (pid, key) = self.shared.pids.generate(client);
                let ctx = self.open(&principal, pid).await.map_err(|e| pg_error(&e))?;
                let mut hooks: Vec<Arc<dyn QueryHook>> = vec![Arc::new(Refuse::writes())];
                if !role.free_sql {
                    hooks.push(Arc::new(Refuse::all_but_named_calls(
                        principal.role.clone(),
                        callable,
                    )));
                }
                hooks.extend([
                    Arc::new(CursorStatementHook) as Arc<dyn QueryHook>,
                    Arc::new(SetShowHook),
                    Arc::new(TransactionStatementHook),
                    Arc::new(RedactedExplain(crate::query::plan_path_prefixes(
                        &self.state().warehouse.lake,
                    ))),
                ]);
                let service = DfSessionService::new_with_hooks(Arc::new(ctx), hooks);
                let parser = Arc::new(GuardedParser {
                    login: self.login.clone(),
                    inner: service.query_parser(),
                    shared: self.shared.clone(),
                    peer: self.peer,
                });
                let login = Arc::new(Login {
                    principal: principal.clone(),
                    service,
                    parser,
                    running: Mutex::new(CancellationToken::new()),
                });
                client.set_pid_and_secret_key(pid, key.clone());
                let (handle, guard) = self.shared.conns.register(pid, key.clone());
                client
                    .session_extensions()
                    .insert::<Arc<ConnectionHandle>>(handle);
                client.session_extensions().insert(guard);
                if let Ok(mut m) = self.shared.cancels.lock() {
                    m.insert(pid, (key.to_bytes(), Arc::downgrade(&login)));
                }
                client.session_extensions().insert(Registered {
                    shared: Arc::downgrade(&self.shared),
                    pid,
                });
                // Kept alive by the connection's extensions.
                client.session_extensions().insert(login.clone());
                let _ = self.login.set(login);
                let mut r = self.record(Some(&principal), "pg.login", "ok");
                r.detail = client
                    .metadata()
                    .get(pgwire::api::METADATA_APPLICATION_NAME)
                    .map(|a| format!("application {a}"));
                self.audit(r).await?;
                finish_authentication(client, &self.shared.params).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
