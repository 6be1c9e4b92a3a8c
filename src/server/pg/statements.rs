//! Statements: the simple and extended query protocols, the parser that
//! checks before datafusion-postgres parses, and the hook that checks what
//! its rewrites made.

use super::*;

#[async_trait]
impl SimpleQueryHandler for Conn {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let login = self.login()?;
        let mut record = self.record(Some(&login.principal), "pg.query", "started");
        record.detail = Some(query.to_string());
        record.format = Some("text".into());
        let (checked, kept) = match self.check(query).await {
            Ok(c) => c,
            Err(e) => {
                record.outcome = if e.kind == ErrorKind::NotReadOnly {
                    "denied"
                } else {
                    "error"
                }
                .into();
                record.code = Some(i64::from(e.kind.code()));
                self.audit(record).await?;
                return Err(pg_error(&e));
            }
        };
        let limits = self.limits(client, &login).map_err(|e| pg_error(&e))?;
        let service = &login.service;
        let query = kept.as_deref().unwrap_or(query);
        self.run(&login, record, &checked, limits, || {
            SimpleQueryHandler::do_query(service, client, query)
        })
        .await
    }
}

#[async_trait]
impl ExtendedQueryHandler for Conn {
    type Statement = DfStatement;
    type QueryParser = GuardedParser;

    fn query_parser(&self) -> Arc<GuardedParser> {
        match self.login.get() {
            Some(l) => l.parser.clone(),
            // Before the login: a parser that refuses everything.
            None => Arc::new(GuardedParser {
                login: self.login.clone(),
                inner: Arc::new(DfSessionService::new(Arc::new(SessionContext::new())))
                    .query_parser(),
                shared: self.shared.clone(),
                peer: self.peer,
            }),
        }
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<DfStatement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let login = self.login()?;
        let (sql, parsed) = &portal.statement.statement;
        let mut record = self.record(Some(&login.principal), "pg.execute", "started");
        record.detail = Some(sql.clone());
        record.params = params_text(portal);
        record.format = Some(
            if portal.result_column_format.is_binary(0) {
                "binary"
            } else {
                "text"
            }
            .into(),
        );
        // Checked when it was parsed; what it is decides how it runs.
        let checked = match parsed {
            Some((statement, _)) => {
                let session_only = crate::query::wire_read_only(statement)
                    .map_err(|e| pg_error(&query_error(&e)))?
                    == WireKind::Session;
                let mut names = Vec::new();
                if let Some((_, plan)) = parsed {
                    names = crate::query::tables_read(plan);
                }
                WireChecked {
                    depth: 0,
                    relations: names,
                    session_only,
                }
            }
            None => WireChecked {
                session_only: true,
                ..WireChecked::default()
            },
        };
        let limits = self.limits(client, &login).map_err(|e| pg_error(&e))?;
        let service = &login.service;
        let mut out = self
            .run(&login, record, &checked, limits, || async move {
                ExtendedQueryHandler::do_query(service, client, portal, max_rows)
                    .await
                    .map(|r| vec![r])
            })
            .await?;
        Ok(out.pop().unwrap_or(Response::EmptyQuery))
    }
}

/// A bound portal's parameters, for the audit record: text as it is,
/// binary values as hex.
fn params_text(portal: &Portal<DfStatement>) -> Option<String> {
    if portal.parameters.is_empty() {
        return None;
    }
    let values: Vec<serde_json::Value> = portal
        .parameters
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            None => serde_json::Value::Null,
            Some(b) if !portal.parameter_format.is_binary(i) => {
                serde_json::Value::String(String::from_utf8_lossy(b).into_owned())
            }
            Some(b) => serde_json::Value::String(format!("\\x{}", hex::encode(b))),
        })
        .collect();
    Some(serde_json::Value::Array(values).to_string())
}

/// The extended protocol's parser: custlake's checks first, then
/// datafusion-postgres's parser and planner on the principal's session.
pub(super) struct GuardedParser {
    pub(super) login: Arc<OnceLock<Arc<Login>>>,
    pub(super) inner: Arc<Parser>,
    pub(super) shared: Arc<Shared>,
    pub(super) peer: SocketAddr,
}

#[async_trait]
impl QueryParser for GuardedParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<DfStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let Some(login) = self.login.get().cloned() else {
            return Err(fatal(ErrorKind::Unauthenticated, "log in first"));
        };
        let limits = self.shared.state.warehouse.config.query.clone();
        let text = sql.to_string();
        let checked = tokio::task::spawn_blocking(move || check_pg(&text, &limits))
            .await
            .map_err(|e| pg_error(&ApiError::internal("checking the statement", e)))?;
        let kept = match checked {
            Ok((_, kept)) => kept,
            Err(e) => {
                let e = query_error(&e);
                let mut r = AuditRecord::new(&login.principal, "pg.parse", "error");
                if e.kind == ErrorKind::NotReadOnly {
                    r.outcome = "denied".into();
                }
                r.object = Some("pg".into());
                r.client = Some(self.peer.to_string());
                r.detail = Some(sql.to_string());
                r.code = Some(i64::from(e.kind.code()));
                if let Err(err) = self.shared.state.security.audit(r).await {
                    tracing::error!(error = %err, "the audit record could not be written");
                }
                return Err(pg_error(&e));
            }
        };
        self.inner
            .parse_sql(client, kept.as_deref().unwrap_or(sql), types)
            .await
    }

    fn get_parameter_types(&self, stmt: &DfStatement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &DfStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(stmt, column_format)
    }
}

/// A hook that refuses, before the engine sees it, each statement its
/// check says no to: whatever the compatibility parser's rewrites made of
/// a statement.
pub(super) struct Refuse(Box<Check>);

/// A statement's check: the error that refuses it, if any.
type Check = dyn Fn(&Statement) -> Option<PgWireError> + Send + Sync;

impl Refuse {
    /// The first hook: only reads and session chatter reach the engine.
    pub(super) fn writes() -> Self {
        Self(Box::new(|s| {
            crate::query::wire_read_only(s)
                .err()
                .map(|e| pg_error(&query_error(&e)))
        }))
    }

    /// For a role without free SQL, the second hook: each query must call
    /// the named queries it may run (or read the catalogs), nothing else
    /// (see `query::named_calls_only`). Its session holds nothing else
    /// either.
    pub(super) fn all_but_named_calls(
        role: String,
        callable: std::collections::BTreeSet<String>,
    ) -> Self {
        Self(Box::new(move |s| {
            crate::query::named_calls_only(s, &role, &callable)
                .err()
                .map(|e| pg_error(&query_error(&e)))
        }))
    }
}

#[async_trait]
impl QueryHook for Refuse {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        (self.0)(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _: &SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        (self.0)(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _: &LogicalPlan,
        _: &ParamValues,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        (self.0)(statement).map(Err)
    }
}

/// The last hook: an `EXPLAIN` answered with the lake's paths in its plan
/// replaced by tier names, as HTTP and Flight answer it (see
/// `query::redact_plan_paths`).
pub(super) struct RedactedExplain(pub(super) Vec<(String, String)>);

impl RedactedExplain {
    /// Run an EXPLAIN's plan (as planned, or the error planning met) and
    /// answer its rows redacted.
    async fn answer(
        &self,
        ctx: &SessionContext,
        plan: datafusion::error::Result<LogicalPlan>,
    ) -> PgWireResult<Response> {
        let api = |e: datafusion::error::DataFusionError| PgWireError::ApiError(Box::new(e));
        let batches = ctx
            .execute_logical_plan(plan.map_err(api)?)
            .await
            .map_err(api)?
            .collect()
            .await
            .map_err(api)?
            .iter()
            .map(|b| crate::query::redact_plan_paths(b, &self.0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| api(e.into()))?;
        let df = ctx.read_batches(batches).map_err(api)?;
        datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe(
            df,
            &Format::UnifiedText,
            None,
        )
        .await
        .map(Response::Query)
    }
}

#[async_trait]
impl QueryHook for RedactedExplain {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !matches!(statement, Statement::Explain { .. }) {
            return None;
        }
        let plan = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                statement.clone(),
            )))
            .await;
        Some(self.answer(ctx, plan).await)
    }

    async fn handle_extended_parse_query(
        &self,
        _: &Statement,
        _: &SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !matches!(statement, Statement::Explain { .. }) {
            return None;
        }
        let plan = plan.clone().replace_params_with_values(params);
        Some(self.answer(ctx, plan).await)
    }
}
