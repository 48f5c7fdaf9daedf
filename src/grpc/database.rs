//! `broker.v1.Database` over [`Database`].

use tonic::{Request, Response, Status};

use super::{convert, rows::QueryResponse};
use crate::{
    audit, auth,
    database::{Database, Statement},
    proto::{self, database_server},
};

/// The Database gRPC service.
#[derive(Clone)]
pub struct DatabaseService {
    db: Database,
}

impl DatabaseService {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

#[tonic::async_trait]
impl database_server::Database for DatabaseService {
    async fn query(
        &self,
        request: Request<proto::QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        audit::note_target(&request, || audit::sql_fingerprint(&request.get_ref().sql));
        auth::caller(&request)?.check_statement(&request.get_ref().sql)?;
        let request = request.into_inner();
        let statement = Statement {
            sql: request.sql,
            params: convert::params(request.params)?,
        };
        let rows = self.db.query(statement, request.max_rows).await?;
        Ok(Response::new(QueryResponse::new(&rows)?))
    }

    async fn execute(
        &self,
        request: Request<proto::ExecuteRequest>,
    ) -> Result<Response<proto::ExecuteResponse>, Status> {
        audit::note_target(&request, || audit::sql_fingerprint(&request.get_ref().sql));
        auth::caller(&request)?.check_statement(&request.get_ref().sql)?;
        let statement = convert::statement(request.into_inner())?;
        let result = self.db.execute(&statement).await?;
        Ok(Response::new(convert::execute_response(result)?))
    }

    async fn transaction(
        &self,
        request: Request<proto::TransactionRequest>,
    ) -> Result<Response<proto::TransactionResponse>, Status> {
        audit::note_target(&request, || {
            let statements = &request.get_ref().statements;
            statements
                .iter()
                .map(|s| audit::sql_fingerprint(&s.sql))
                .collect::<Vec<_>>()
                .join(", ")
        });
        // Every statement is checked before the first runs.
        let caller = auth::caller(&request)?;
        for statement in &request.get_ref().statements {
            caller.check_statement(&statement.sql)?;
        }
        let statements = request
            .into_inner()
            .statements
            .into_iter()
            .map(convert::statement)
            .collect::<Result<Vec<_>, _>>()?;
        let results = self.db.transaction(&statements).await?;
        Ok(Response::new(proto::TransactionResponse {
            results: results
                .into_iter()
                .map(convert::execute_response)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn init_schema(
        &self,
        _request: Request<proto::InitSchemaRequest>,
    ) -> Result<Response<proto::InitSchemaResponse>, Status> {
        let tables = self.db.init_schema().await?;
        Ok(Response::new(proto::InitSchemaResponse { tables }))
    }
}
