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
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Forwards 127.0.0.1:<random> to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(UP));
        let (cut, _) = watch::channel(0u64);
        let (frozen, _) = watch::channel(false);
        let task = {
            let mode = mode.clone();
            let cut = cut.clone();
            let frozen = frozen.clone();
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
                            let mut frozen = frozen.subscribe();
                            tokio::spawn(async move {
                                let Ok(mut outbound) = TcpStream::connect(target).await else {
                                    return;
                                };
                                let freeze = async {
                                    let _ = frozen.wait_for(|frozen| *frozen).await;
                                };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                    _ = cut.changed() => {}
                                    // Both sockets stay open, silent, until cut.
                                    _ = freeze => { let _ = cut.changed().await; }
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
            frozen,
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

    /// Stops forwarding on open connections without closing them, and
    /// accepts new ones without answering: a peer that vanished without a
    /// FIN (a host gone from the network). Only the client's own deadlines
    /// and keep-alives notice.
    pub fn freeze(&self) {
        self.mode.store(HUNG, Ordering::SeqCst);
        self.frozen.send_replace(true);
    }

    /// Forwards again (cutting what was open).
    pub fn up(&self) {
        self.frozen.send_replace(false);
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
