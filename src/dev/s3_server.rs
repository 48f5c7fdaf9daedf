//! A real S3-protocol server over a local directory (s3s-fs), on a loopback
//! port, for `broker dev` and the tests.

use std::path::Path;

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use s3s::{auth::SimpleAuth, service::S3ServiceBuilder};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::config::StaticCredentials;

/// A running s3s-fs server; stops when dropped.
pub struct LocalS3 {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl LocalS3 {
    /// Serves `root` (one sub-directory per bucket) on a free loopback port,
    /// accepting only `credentials`.
    pub async fn start(root: &Path, credentials: &StaticCredentials) -> anyhow::Result<Self> {
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| anyhow::anyhow!("cannot serve {} over S3: {e:?}", root.display()))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(
            credentials.access_key_id.as_str(),
            credentials.secret_access_key.as_str(),
        ));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let http = auto::Builder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                // Without it a response whose head and body go out in two
                // writes waits for the client's delayed ACK (~40 ms).
                let _ = socket.set_nodelay(true);
                let connection = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        Ok(Self { endpoint, task })
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh random secret key.
pub fn random_secret() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}
