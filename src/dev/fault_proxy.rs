//! A TCP proxy on loopback that can be cut, hung and restored, to make a
//! backend "go down", "hang" and "come back" without touching the real
//! server: the fault tests and `broker loadtest` put it in front of
//! PostgreSQL or S3.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

const UP: u8 = 0;
const DOWN: u8 = 1;
const HUNG: u8 = 2;

pub struct Proxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    cut: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Forwards 127.0.0.1:<random> to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(UP));
        let (cut, _) = watch::channel(0u64);
        let task = {
            let mode = mode.clone();
            let cut = cut.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let mut cut = cut.subscribe();
                    match mode.load(Ordering::SeqCst) {
                        DOWN => continue, // dropped at once
                        HUNG => {
                            // Accepted and read, never answered, until the
                            // client hangs up or the proxy cuts it.
                            tokio::spawn(async move {
                                let mut sink = tokio::io::sink();
                                tokio::select! {
                                    _ = tokio::io::copy(&mut inbound, &mut sink) => {}
                                    _ = cut.changed() => {}
                                }
                            });
                        }
                        _ => {
                            tokio::spawn(async move {
                                let Ok(mut outbound) = TcpStream::connect(target).await else {
                                    return;
                                };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                    _ = cut.changed() => {}
                                }
                            });
                        }
                    }
                }
            })
        };
        Ok(Self {
            addr,
            mode,
            cut,
            task,
        })
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        self.set(DOWN);
    }

    /// Cuts every open connection; new ones are accepted and never answered.
    pub fn hang(&self) {
        self.set(HUNG);
    }

    /// Forwards again.
    pub fn up(&self) {
        self.set(UP);
    }

    /// Forwards new connections again, leaving those accepted while hung
    /// hung: only the client's own timeouts free them.
    pub fn resume(&self) {
        self.mode.store(UP, Ordering::SeqCst);
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
