//! A PostgreSQL connection of the broker's own, for Query's hot path.
//!
//! tokio-postgres ends every request with a Sync, and each Sync is a
//! protocol cycle on the server: a transaction, a ReadyForQuery, a flush
//! and a wake-up of the broker. Query's work (BEGIN READ ONLY, the
//! statement, ROLLBACK, releasing advisory locks) fits in one cycle when the
//! messages are written by hand, which is what this module does with
//! postgres-protocol's encoders and parsers. The connection belongs to the
//! task that checked it out: requests are written and their answers read
//! inline, with no connection task or channel in between.

use std::{
    collections::HashMap,
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::{
    authentication::{
        md5_hash,
        sasl::{self, ChannelBinding, ScramSha256},
    },
    message::{
        backend::{self, ErrorFields, Message},
        frontend,
    },
};
use postgres_types::{Kind, Type};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UnixStream},
};
use tokio_postgres::config::{Config, Host};

use super::{
    Column,
    pool::{self, ConnectError, ConnectFailures, StatementCache},
};

/// Statements every connection prepares once, at connect time.
pub const BEGIN_READ: &str = "r_begin";
pub const SET_TIMEOUT: &str = "r_timeout";
pub const ROLLBACK: &str = "r_rollback";
pub const UNLOCK: &str = "r_unlock";
const FIXED_STATEMENTS: [(&str, &str); 4] = [
    (BEGIN_READ, "BEGIN READ ONLY"),
    (
        SET_TIMEOUT,
        "SELECT pg_catalog.set_config('statement_timeout', $1, true)",
    ),
    (ROLLBACK, "ROLLBACK"),
    // Session advisory locks outlive a rollback.
    (UNLOCK, "SELECT pg_catalog.pg_advisory_unlock_all()"),
];

/// Domains over arrays over domains...: how deep a type is looked up.
const TYPE_DEPTH: usize = 8;

/// Why a request on the connection failed.
#[derive(Debug)]
pub enum WireError {
    /// PostgreSQL answered with an error; the connection is still usable
    /// once the cycle's ReadyForQuery has been read.
    Server(ServerError),
    /// One message was larger than the connection accepts; it was not read.
    TooLarge(usize),
    /// The connection failed (I/O, a protocol violation): it is unusable.
    Broken(String),
}

/// An ErrorResponse's fields the broker uses.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

impl ServerError {
    pub fn parse(mut fields: ErrorFields<'_>) -> Self {
        let mut error = ServerError {
            code: String::new(),
            message: String::new(),
            detail: None,
        };
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                _ => {}
            }
        }
        error
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        Self::Broken(e.to_string())
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(e) => write!(f, "{} (SQLSTATE {})", e.message, e.code),
            Self::TooLarge(n) => {
                write!(f, "a {n}-byte message from the database is over the limit")
            }
            Self::Broken(m) => write!(f, "{m}"),
        }
    }
}

type WireResult<T> = Result<T, WireError>;

/// A statement prepared on one connection.
#[derive(Debug)]
pub struct Prepared {
    pub name: String,
    pub params: Vec<Type>,
    /// Shared by every answer of the statement.
    pub columns: Arc<[Column]>,
}

enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(buf).await,
            Self::Unix(s) => s.write_all(buf).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read_buf(buf).await,
            Self::Unix(s) => s.read_buf(buf).await,
        }
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_read_buf(buf),
            Self::Unix(s) => s.try_read_buf(buf),
        }
    }
}

/// Where the server is, for the connection and its cancel requests.
#[derive(Debug, Clone)]
enum Address {
    Tcp(String, u16),
    Unix(std::path::PathBuf),
}

impl Address {
    async fn open(&self, config: &Config) -> io::Result<Socket> {
        match self {
            Self::Tcp(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                let socket = socket2::SockRef::from(&stream);
                if config.get_keepalives() {
                    let mut keepalive =
                        socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
                    if let Some(interval) = config.get_keepalives_interval() {
                        keepalive = keepalive.with_interval(interval);
                    }
                    if let Some(retries) = config.get_keepalives_retries() {
                        keepalive = keepalive.with_retries(retries);
                    }
                    socket.set_tcp_keepalive(&keepalive)?;
                }
                socket.set_tcp_user_timeout(config.get_tcp_user_timeout().copied())?;
                Ok(Socket::Tcp(stream))
            }
            Self::Unix(path) => Ok(Socket::Unix(UnixStream::connect(path).await?)),
        }
    }
}

/// The addresses a configuration names, in order.
fn addresses(config: &Config) -> Vec<Address> {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => Address::Tcp(name.clone(), port),
                Host::Unix(dir) => Address::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            }
        })
        .collect()
}

/// Cancels the statement running on a connection, from outside it.
#[derive(Debug, Clone)]
pub struct CancelKey {
    address: Address,
    process_id: i32,
    secret_key: i32,
}

impl CancelKey {
    pub async fn cancel(&self) -> io::Result<()> {
        let mut socket = match &self.address {
            Address::Tcp(host, port) => {
                Socket::Tcp(TcpStream::connect((host.as_str(), *port)).await?)
            }
            Address::Unix(path) => Socket::Unix(UnixStream::connect(path).await?),
        };
        let mut request = BytesMut::new();
        frontend::cancel_request(self.process_id, self.secret_key, &mut request);
        socket.write_all(&request).await?;
        // The server closes the socket once it has read the request.
        let mut rest = BytesMut::new();
        while socket.read_buf(&mut rest).await? > 0 {}
        Ok(())
    }
}

/// One connection to PostgreSQL.
pub struct WireConnection {
    socket: Socket,
    input: BytesMut,
    pub(super) output: BytesMut,
    /// Longest message accepted (a result row beyond the result cap is
    /// refused before it is buffered).
    max_message: usize,
    cancel: CancelKey,
    poisoned: Arc<AtomicBool>,
    /// The last ReadyForQuery's transaction status (`I`, `T` or `E`);
    /// `None` while a cycle's answers are unread.
    status: Option<u8>,
    statements: StatementCache<Arc<Prepared>>,
    /// Statements evicted from the cache, closed with the next request.
    to_close: Vec<String>,
    types: HashMap<u32, Type>,
    next_statement: u64,
}

impl WireConnection {
    /// Connects, authenticates and prepares the fixed statements.
    pub async fn connect(config: &Config, max_message: usize) -> WireResult<Self> {
        let mut last = WireError::Broken("no database host is configured".into());
        for address in addresses(config) {
            match Self::connect_to(&address, config, max_message).await {
                Ok(conn) => return Ok(conn),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn connect_to(
        address: &Address,
        config: &Config,
        max_message: usize,
    ) -> WireResult<Self> {
        let socket = address.open(config).await?;
        let mut conn = Self {
            socket,
            input: BytesMut::with_capacity(8 * 1024),
            output: BytesMut::with_capacity(1024),
            max_message,
            cancel: CancelKey {
                address: address.clone(),
                process_id: 0,
                secret_key: 0,
            },
            poisoned: Arc::default(),
            status: None,
            statements: StatementCache::default(),
            to_close: Vec::new(),
            types: HashMap::new(),
            next_statement: 0,
        };
        let user = config.get_user().unwrap_or("postgres");
        let mut params = vec![("client_encoding", "UTF8"), ("user", user)];
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        if let Some(name) = config.get_application_name() {
            params.push(("application_name", name));
        }
        frontend::startup_message(params, &mut conn.output)?;
        conn.flush().await?;
        conn.authenticate(user, config.get_password()).await?;
        loop {
            match conn.next().await? {
                Message::BackendKeyData(key) => {
                    conn.cancel.process_id = key.process_id();
                    conn.cancel.secret_key = key.secret_key();
                }
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(e) => {
                    return Err(WireError::Server(ServerError::parse(e.fields())));
                }
                _ => {}
            }
        }
        for (name, sql) in FIXED_STATEMENTS {
            frontend::parse(name, sql, std::iter::empty(), &mut conn.output)?;
        }
        frontend::sync(&mut conn.output);
        conn.flush().await?;
        conn.finish_cycle().await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, user: &str, password: Option<&[u8]>) -> WireResult<()> {
        let password = || {
            password.ok_or_else(|| {
                WireError::Broken("the database asks for a password and none is configured".into())
            })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.next().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?, &mut self.output)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(user.as_bytes(), password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.output)?;
                }
                Message::AuthenticationSasl(body) => {
                    let offered: Vec<&str> = body.mechanisms().collect()?;
                    if !offered.contains(&sasl::SCRAM_SHA_256) {
                        return Err(WireError::Broken(format!(
                            "the database offers no supported SASL mechanism ({offered:?})"
                        )));
                    }
                    let exchange = ScramSha256::new(password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        exchange.message(),
                        &mut self.output,
                    )?;
                    scram = Some(exchange);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let exchange = scram.as_mut().ok_or_else(|| unexpected("SASL continue"))?;
                    exchange.update(body.data())?;
                    frontend::sasl_response(exchange.message(), &mut self.output)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let exchange = scram.as_mut().ok_or_else(|| unexpected("SASL final"))?;
                    exchange.finish(body.data())?;
                    continue;
                }
                Message::ErrorResponse(e) => {
                    return Err(WireError::Server(ServerError::parse(e.fields())));
                }
                _ => {
                    return Err(WireError::Broken(
                        "the database asks for an authentication method the broker does not support"
                            .into(),
                    ));
                }
            }
            self.flush().await?;
        }
    }

    /// Arms server-side cancellation for the work that follows.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop {
            key: Some(self.cancel.clone()),
            poisoned: self.poisoned.clone(),
        }
    }

    /// Cancels the statement the server runs now, if any; the connection
    /// stays usable (its caller reads the answers as usual).
    pub fn cancel_running(&self) {
        spawn_cancel(self.cancel.clone());
    }

    /// Whether the next caller may use it: idle, not marked to be closed.
    pub fn reusable(&self) -> bool {
        !self.poisoned.load(Ordering::SeqCst) && self.is_idle()
    }

    /// Marks the connection to be closed when it goes back to the pool.
    pub fn retire(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
    }

    /// The last cycle ended outside a transaction, all answers read.
    pub fn is_idle(&self) -> bool {
        self.status == Some(b'I')
    }

    /// Marks the start of a cycle, before its first message is queued: until
    /// its ReadyForQuery is read, the connection is not reusable.
    pub fn begin_cycle(&mut self) {
        self.status = None;
    }

    pub fn cached(&self, sql: &str) -> Option<Arc<Prepared>> {
        self.statements.get(sql)
    }

    pub fn remember(&mut self, sql: &str, prepared: Arc<Prepared>) {
        if let Some(evicted) = self.statements.insert(sql, prepared) {
            self.to_close.push(evicted.name.clone());
        }
    }

    pub fn forget(&mut self, sql: &str) {
        if let Some(gone) = self.statements.remove(sql) {
            self.to_close.push(gone.name.clone());
        }
    }

    /// Writes the buffered messages.
    pub async fn flush(&mut self) -> WireResult<()> {
        let result = self.socket.write_all(&self.output).await;
        self.output.clear();
        Ok(result?)
    }

    /// Takes the DataRows already read, one after another, without a wait
    /// or an allocation per row: `take` gets each row's cells (after the
    /// cell count) and may stop the run with an error. Stops at the first
    /// other message or partly read one, left for [`Self::next`].
    pub fn buffered_rows<E>(&mut self, take: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        buffered_rows(&mut self.input, self.max_message, take)
    }

    /// The next message that answers a request (notices, parameter reports
    /// and notifications are skipped).
    pub async fn next(&mut self) -> WireResult<Message> {
        loop {
            if let Some(header) = backend::Header::parse(&self.input)? {
                let len = header.len() as usize + 1;
                if len > self.max_message {
                    return Err(WireError::TooLarge(len));
                }
                self.input.reserve(len.saturating_sub(self.input.len()));
            }
            if let Some(message) = Message::parse(&mut self.input)? {
                match message {
                    Message::NoticeResponse(_)
                    | Message::ParameterStatus(_)
                    | Message::NotificationResponse(_) => continue,
                    Message::ReadyForQuery(ready) => {
                        self.status = Some(ready.status());
                        return Ok(Message::ReadyForQuery(ready));
                    }
                    message => return Ok(message),
                }
            }
            if self.socket.read_buf(&mut self.input).await? == 0 {
                return Err(WireError::Broken(
                    "the database closed the connection".into(),
                ));
            }
        }
    }

    /// Reads a cycle's answers up to its ReadyForQuery, failing with the
    /// first error (after the ReadyForQuery, so the connection stays in step).
    pub async fn finish_cycle(&mut self) -> WireResult<()> {
        self.read_cycle(|_| Ok(())).await
    }

    /// Reads a cycle's answers up to its ReadyForQuery, handing each other
    /// than an error to `answer`; fails with the cycle's first error.
    async fn read_cycle(
        &mut self,
        mut answer: impl FnMut(Message) -> WireResult<()>,
    ) -> WireResult<()> {
        let mut error = None;
        loop {
            match self.next().await? {
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(e) => {
                    error.get_or_insert(WireError::Server(ServerError::parse(e.fields())));
                }
                message => answer(message)?,
            }
        }
        error.map_or(Ok(()), Err)
    }

    /// Queues Close messages for statements evicted from the cache.
    pub fn close_evicted(&mut self) -> WireResult<()> {
        for name in std::mem::take(&mut self.to_close) {
            frontend::close(b'S', &name, &mut self.output)?;
        }
        Ok(())
    }

    /// Prepares `sql` (not cached here: see [`Self::remember`]).
    pub async fn prepare(&mut self, sql: &str) -> WireResult<Arc<Prepared>> {
        self.next_statement += 1;
        let name = format!("q{}", self.next_statement);
        self.begin_cycle();
        self.close_evicted()?;
        frontend::parse(&name, sql, std::iter::empty(), &mut self.output)?;
        frontend::describe(b'S', &name, &mut self.output)?;
        frontend::sync(&mut self.output);
        self.flush().await?;
        let mut param_oids = Vec::new();
        let mut fields = Vec::new();
        self.read_cycle(|message| {
            match message {
                Message::ParameterDescription(body) => param_oids = body.parameters().collect()?,
                Message::RowDescription(body) => {
                    fields = body
                        .fields()
                        .map(|f| Ok((f.name().to_owned(), f.type_oid())))
                        .collect()?;
                }
                _ => {}
            }
            Ok(())
        })
        .await?;
        let mut params = Vec::with_capacity(param_oids.len());
        for oid in param_oids {
            params.push(self.resolve(oid, 0).await?);
        }
        let mut columns = Vec::with_capacity(fields.len());
        for (name, oid) in fields {
            let ty = self.resolve(oid, 0).await?;
            columns.push(Column { name, ty });
        }
        Ok(Arc::new(Prepared {
            name,
            params,
            columns: columns.into(),
        }))
    }

    /// The type of `oid`: built in, or looked up in pg_type once per
    /// connection (enums, domains, arrays of them, extension types).
    async fn resolve(&mut self, oid: u32, depth: usize) -> WireResult<Type> {
        if let Some(ty) = Type::from_oid(oid).or_else(|| self.types.get(&oid).cloned()) {
            return Ok(ty);
        }
        if depth > TYPE_DEPTH {
            return Err(WireError::Broken(format!("type {oid} nests too deeply")));
        }
        const LOOKUP: &str = "SELECT t.typname, t.typtype, t.typbasetype::int8, t.typelem::int8, \
             t.typcategory, n.nspname FROM pg_catalog.pg_type t \
             JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1::int8::oid";
        self.begin_cycle();
        frontend::parse("", LOOKUP, std::iter::empty(), &mut self.output)?;
        let oid_text = oid.to_string();
        frontend::bind(
            "",
            "",
            [0],
            [oid_text.as_bytes()],
            |v, buf| {
                buf.extend_from_slice(v);
                Ok(postgres_protocol::IsNull::No)
            },
            [0],
            &mut self.output,
        )
        .map_err(|_| WireError::Broken("cannot encode a type lookup".into()))?;
        frontend::execute("", 0, &mut self.output)?;
        frontend::sync(&mut self.output);
        self.flush().await?;
        let mut row: Option<Vec<String>> = None;
        self.read_cycle(|message| {
            if let Message::DataRow(body) = message {
                let buffer = body.buffer();
                row = Some(
                    body.ranges()
                        .map(|r| {
                            Ok(r.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned())
                                .unwrap_or_default())
                        })
                        .collect()?,
                );
            }
            Ok(())
        })
        .await?;
        let [name, typtype, base, element, category, schema] = row
            .and_then(|r| <[String; 6]>::try_from(r).ok())
            .ok_or_else(|| WireError::Broken(format!("type {oid} is not in pg_type")))?;
        let parse_oid = |s: &str| s.parse::<u32>().unwrap_or(0);
        let kind = match (typtype.as_str(), category.as_str()) {
            ("e", _) => Kind::Enum(Vec::new()),
            ("d", _) => Kind::Domain(Box::pin(self.resolve(parse_oid(&base), depth + 1)).await?),
            (_, "A") if parse_oid(&element) != 0 => {
                Kind::Array(Box::pin(self.resolve(parse_oid(&element), depth + 1)).await?)
            }
            ("p", _) => Kind::Pseudo,
            _ => Kind::Simple,
        };
        let ty = Type::new(name, oid, kind, schema);
        self.types.insert(oid, ty.clone());
        Ok(ty)
    }

    /// An empty round trip: the server answers.
    pub async fn ping(&mut self) -> WireResult<()> {
        frontend::sync(&mut self.output);
        self.begin_cycle();
        self.flush().await?;
        self.finish_cycle().await
    }

    /// Whether the server closed the connection or sent something
    /// unasked (a FATAL error before it closes): known without I/O waits.
    fn has_closed(&mut self) -> bool {
        !matches!(
            self.socket.try_read_buf(&mut self.input),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }

    fn is_broken(&mut self) -> bool {
        !self.reusable() || self.has_closed()
    }
}

fn unexpected(what: &str) -> WireError {
    WireError::Broken(format!("unexpected {what} from the database"))
}

/// Cancels its connection's statement and poisons the connection when
/// dropped while armed (the call's future was dropped mid-statement).
pub struct CancelOnDrop {
    key: Option<CancelKey>,
    poisoned: Arc<AtomicBool>,
}

impl CancelOnDrop {
    /// The work finished, well or badly: nothing to cancel.
    pub fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        self.poisoned.store(true, Ordering::SeqCst);
        spawn_cancel(key);
    }
}

/// Asks the server, from a task of its own, to cancel what the connection
/// of `key` runs now.
fn spawn_cancel(key: CancelKey) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            // A server that never closes the socket cannot keep this task.
            match tokio::time::timeout(Duration::from_secs(10), key.cancel()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cancelling an abandoned statement failed")
                }
                Err(_) => tracing::warn!("cancelling an abandoned statement timed out"),
            }
        });
    }
}

/// Opens Query's connections for bb8.
pub struct Manager {
    config: Config,
    max_message: usize,
    round_trip_on_checkout: bool,
    failures: ConnectFailures,
}

impl Manager {
    pub fn new(
        config: Config,
        max_message: usize,
        round_trip_on_checkout: bool,
        failures: ConnectFailures,
    ) -> Self {
        Self {
            config,
            max_message,
            round_trip_on_checkout,
            failures,
        }
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = WireConnection;
    type Error = ConnectError;

    async fn connect(&self) -> Result<WireConnection, ConnectError> {
        let connecting = async {
            WireConnection::connect(&self.config, self.max_message)
                .await
                .map_err(|e| ConnectError::Wire(e.to_string()))
        };
        pool::open(&self.config, &self.failures, connecting).await
    }

    async fn is_valid(&self, conn: &mut WireConnection) -> Result<(), ConnectError> {
        if conn.is_broken() {
            return Err(ConnectError::Wire("the connection is closed".into()));
        }
        if self.round_trip_on_checkout {
            conn.ping()
                .await
                .map_err(|e| ConnectError::Wire(e.to_string()))?;
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut WireConnection) -> bool {
        !conn.reusable()
    }
}

/// [`WireConnection::buffered_rows`] on the bytes read so far.
fn buffered_rows<E>(
    input: &mut BytesMut,
    max_message: usize,
    mut take: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    // The tag, the length (itself included) and the cell count.
    const HEAD: usize = 1 + 4 + 2;
    // A malformed header is left for `next`, which reports it.
    while let Ok(Some(header)) = backend::Header::parse(input) {
        // The parser refuses lengths below 4.
        let end = header.len() as usize + 1;
        if header.tag() != b'D' || end < HEAD || end > max_message || end > input.len() {
            break;
        }
        let row = take(&input[HEAD..end]);
        input.advance(end);
        row?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    /// A DataRow of `cells` as PostgreSQL writes it.
    fn data_row(cells: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        body.put_i16(cells.len() as i16);
        for cell in cells {
            body.put_i32(cell.len() as i32);
            body.put_slice(cell);
        }
        let mut message = vec![b'D'];
        message.put_i32(body.len() as i32 + 4);
        message.extend(body);
        message
    }

    fn command_complete() -> Vec<u8> {
        let mut message = vec![b'C'];
        message.put_i32(4 + 9);
        message.put_slice(b"SELECT 2\0");
        message
    }

    fn rows_taken(input: &mut BytesMut, max_message: usize) -> Vec<Vec<u8>> {
        let mut rows = Vec::new();
        buffered_rows::<()>(input, max_message, |row| {
            rows.push(row.to_vec());
            Ok(())
        })
        .unwrap();
        rows
    }

    #[test]
    fn buffered_rows_are_taken_up_to_the_first_other_message() {
        let (one, two) = (data_row(&[b"a", b"bc"]), data_row(&[b""]));
        let mut input = BytesMut::new();
        for message in [&one, &two, &command_complete(), &one] {
            input.extend_from_slice(message);
        }
        let rows = rows_taken(&mut input, 1024);
        assert_eq!(rows, vec![one[7..].to_vec(), two[7..].to_vec()]);
        // What follows is left, whole, for the message parser.
        assert!(matches!(
            Message::parse(&mut input).unwrap(),
            Some(Message::CommandComplete(_))
        ));
        assert_eq!(rows_taken(&mut input, 1024).len(), 1);
        assert!(input.is_empty());
    }

    #[test]
    fn partial_oversized_or_failing_rows_stop_the_run() {
        let row = data_row(&[b"abcdef"]);
        let mut partial = BytesMut::from(&row[..row.len() - 1]);
        assert!(rows_taken(&mut partial, 1024).is_empty());
        assert_eq!(
            partial.len(),
            row.len() - 1,
            "a partial row stays to be read"
        );

        let mut large = BytesMut::from(&row[..]);
        assert!(rows_taken(&mut large, row.len() - 1).is_empty());
        assert_eq!(
            large.len(),
            row.len(),
            "an oversized row is left for next()"
        );

        let mut two = BytesMut::new();
        two.extend_from_slice(&row);
        two.extend_from_slice(&row);
        let mut calls = 0;
        let result = buffered_rows(&mut two, 1024, |_| {
            calls += 1;
            Err("refused")
        });
        assert_eq!((result, calls), (Err("refused"), 1));
        assert_eq!(
            two.len(),
            row.len(),
            "the refused row is consumed, the next is not"
        );
    }
}
