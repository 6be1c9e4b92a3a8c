//! The Flight SQL calls: the handshake, statements, prepared statements
//! and the catalog, each in the caller's session.

use super::*;

#[tonic::async_trait]
impl FlightSqlService for Flight {
    type FlightService = Flight;

    /// Basic auth (user name, token as password) for a bearer credential:
    /// the token, once checked to be that user's.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let client = request.remote_addr();
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim()
            .to_string();
        let token = if let Some(b) = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
        {
            // With or without padding: clients differ.
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b.trim().trim_end_matches('='))
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            let Some((user, token)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                let e = ApiError::new(
                    ErrorKind::Unauthenticated,
                    "the basic credential is not user:token",
                );
                return Err(self.refuse(None, "flight.login", e, client).await);
            };
            match self.authenticate(token).await {
                Ok(p) if p.user == user => token.to_string(),
                Ok(_) => {
                    let e = ApiError::new(
                        ErrorKind::Unauthenticated,
                        format!("the token is not {user:?}'s"),
                    );
                    return Err(self.refuse(None, "flight.login", e, client).await);
                }
                Err(e) => return Err(self.refuse(None, "flight.login", e, client).await),
            }
        } else if let Some(t) = bearer(&request) {
            t
        } else {
            let e = ApiError::new(
                ErrorKind::Unauthenticated,
                "log in with basic auth: your user name and your token as password",
            );
            return Err(self.refuse(None, "flight.login", e, client).await);
        };
        let p = match self.authenticate(&token).await {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(None, "flight.login", e, client).await),
        };
        let p = self.admit(p, client).await?;
        self.audit(self.record(Some(&p), "flight.login", "ok"), client)
            .await?;
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            status(&ApiError::new(
                ErrorKind::Unauthenticated,
                "the token is not a header value",
            ))
        })?;
        let out = futures::stream::once(async move {
            Ok(HandshakeResponse {
                protocol_version: 0,
                payload: Bytes::from(token),
            })
        });
        let mut resp: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(out));
        resp.metadata_mut().insert("authorization", value);
        Ok(resp)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let p = self.principal(&request).await?;
        let handle = Handle {
            sql: query.query,
            params: None,
        };
        let df = self.describe(&p, &handle, request.remote_addr()).await?;
        let schema = df.schema().as_arrow().clone();
        Self::info(&schema, &handle, request.into_inner()).map(Response::new)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let p = self.principal(&request).await?;
        let handle = Handle::decode(&cmd.prepared_statement_handle)?;
        let df = self.describe(&p, &handle, request.remote_addr()).await?;
        let schema = df.schema().as_arrow().clone();
        Self::info(&schema, &handle, request.into_inner()).map(Response::new)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let p = self.principal(&request).await?;
        let handle = Handle::decode(&ticket.statement_handle)?;
        self.rows(&p, &handle, request.remote_addr()).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let p = self.principal(&request).await?;
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        self.rows(&p, &handle, request.remote_addr()).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let p = self.principal(&request).await?;
        let handle = Handle {
            sql: query.query,
            params: None,
        };
        let df = self.describe(&p, &handle, request.remote_addr()).await?;
        let types = df.logical_plan().get_parameter_types().map_err(|e| {
            status(&ApiError::from_error(
                "the query",
                &crate::query::QueryError::from(e),
            ))
        })?;
        let mut names: Vec<(String, Option<DataType>)> = types.into_iter().collect();
        names.sort_by(|a, b| {
            let n = |s: &str| s.trim_start_matches('$').parse::<u64>().ok();
            n(&a.0).cmp(&n(&b.0)).then_with(|| a.0.cmp(&b.0))
        });
        let params = Schema::new(
            names
                .into_iter()
                .map(|(n, t)| Field::new(n, t.unwrap_or(DataType::Utf8), true))
                .collect::<Vec<_>>(),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode(),
            dataset_schema: encode_schema(df.schema().as_arrow())?,
            parameter_schema: encode_schema(&params)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Nothing is kept between calls: the handle carries the statement.
        self.principal(&request).await.map(|_| ())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.principal(&request).await?;
        let mut handle = Handle::decode(&query.prepared_statement_handle)?;
        let mut decoder = FlightDataDecoder::new(
            request
                .into_inner()
                .map_err(|s| FlightError::Tonic(Box::new(s))),
        );
        let mut batches = Vec::new();
        let mut schema = None;
        let mut rows = 0;
        while let Some(msg) = decoder.try_next().await.map_err(|e| {
            status(&ApiError::new(
                ErrorKind::InvalidParameter,
                format!("the parameters: {e}"),
            ))
        })? {
            match msg.payload {
                DecodedPayload::Schema(s) => schema = Some(s),
                DecodedPayload::RecordBatch(b) => {
                    // Refused as soon as a second row arrives, not after
                    // the whole upload.
                    rows += b.num_rows();
                    if rows > 1 {
                        return Err(status(&ApiError::new(
                            ErrorKind::InvalidParameter,
                            "bind one row of parameters at a time",
                        )));
                    }
                    batches.push(b);
                }
                DecodedPayload::None => {}
            }
        }
        let Some(schema) = schema.or_else(|| batches.first().map(|b| b.schema())) else {
            handle.params = None;
            return Ok(DoPutPreparedStatementResult {
                prepared_statement_handle: Some(handle.encode()),
            });
        };
        let mut ipc = Vec::new();
        {
            let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &schema)
                .map_err(|e| status(&ApiError::internal("encoding parameters", e)))?;
            for b in &batches {
                w.write(b)
                    .map_err(|e| status(&ApiError::internal("encoding parameters", e)))?;
            }
            w.finish()
                .map_err(|e| status(&ApiError::internal("encoding parameters", e)))?;
        }
        handle.params = Some(hex::encode(ipc));
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode()),
        })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info()?).schema();
        self.metadata_info(request, &schema, query).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let p = self.principal(&request).await?;
        let ctx = crate::server::query::statement_session_of(&self.state, &p)
            .await
            .map_err(|e| status(&e))?;
        let mut b = query.into_builder();
        for c in ctx.catalog_names() {
            b.append(c);
        }
        Ok(one_batch(b.schema(), b.build()))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let p = self.principal(&request).await?;
        let ctx = crate::server::query::statement_session_of(&self.state, &p)
            .await
            .map_err(|e| status(&e))?;
        let mut b = query.into_builder();
        for c in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&c) {
                for s in catalog.schema_names() {
                    b.append(&c, s);
                }
            }
        }
        Ok(one_batch(b.schema(), b.build()))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let p = self.principal(&request).await?;
        let ctx = crate::server::query::statement_session_of(&self.state, &p)
            .await
            .map_err(|e| status(&e))?;
        let mut b = query.into_builder();
        for c in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&c) else {
                continue;
            };
            for s in catalog.schema_names() {
                let Some(schema) = catalog.schema(&s) else {
                    continue;
                };
                for t in schema.table_names() {
                    let table = schema.table(&t).await.map_err(|e| {
                        status(&ApiError::from_error(
                            "listing tables",
                            &crate::query::QueryError::from(e),
                        ))
                    })?;
                    if let Some(table) = table {
                        let kind = match table.table_type() {
                            datafusion::datasource::TableType::View => "VIEW",
                            _ => "TABLE",
                        };
                        b.append(&c, &s, &t, kind, &table.schema())
                            .map_err(|e| status(&ApiError::internal("listing tables", e)))?;
                    }
                }
            }
        }
        Ok(one_batch(b.schema(), b.build()))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let mut b = query.into_builder();
        b.append("TABLE");
        b.append("VIEW");
        Ok(one_batch(b.schema(), b.build()))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let b = query.into_builder(sql_info()?);
        Ok(one_batch(b.schema(), b.build()))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        Err(status(&ApiError::new(
            ErrorKind::InvalidParameter,
            format!("this server does not answer {}", message.type_url),
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
