//! Plain-`http://` requests on hyper's HTTP/1 connections polled by the task that sends on
//! them, for endpoints reached without TLS or a proxy (local inference servers).
//!
//! reqwest (kept for everything else: https, HTTP/2, proxies, the batch API) always spawns
//! hyper's connection task, so every request and every body chunk is a hand-over and a wake-up
//! between two tasks. Here a connection's state machine is polled by the request that holds it
//! and parked in an idle list between requests: measured at 67 µs of CPU per streamed request
//! against 113 µs for bare reqwest (docs/performance.md, issue 25 round 5). Hand-written
//! because no maintained client offers connections driven by their caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use reqwest::header::{ACCEPT, HOST, HeaderMap, HeaderValue, USER_AGENT};
use tokio::net::TcpStream;

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// A connection at rest: its sender and its state machine, and since when it rests.
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    conn: Conn,
    since: std::time::Instant,
}

/// An idle connection older than this is closed instead of used (as reqwest's pool did).
const IDLE_MAX: Duration = Duration::from_secs(90);
/// Idle connections kept at most.
const IDLE_KEPT: usize = 1024;

/// One endpoint's caller-polled connections.
pub(super) struct Inline {
    /// `host:port`, to connect to.
    authority: String,
    headers: HeaderMap,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

/// Why an inline exchange failed.
#[derive(Debug)]
pub(crate) enum InlineError {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect(std::io::Error),
    /// The connection failed after it was made.
    Hyper(hyper::Error),
}

impl std::fmt::Display for InlineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "error trying to connect: {e}"),
            Self::Hyper(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for InlineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) => std::error::Error::source(e),
            Self::Hyper(e) => std::error::Error::source(e),
        }
    }
}

/// True when the environment names a proxy reqwest would use for plain http.
fn proxy_configured() -> bool {
    ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

impl Inline {
    /// For `url` when it is plain `http://` with a host and no proxy is configured; `headers`
    /// go with every request (plus `Host`, and reqwest's `User-Agent` and `Accept` defaults).
    pub(super) fn for_url(
        url: &Url,
        headers: &HeaderMap,
        user_agent: &'static str,
        connect_timeout: Duration,
    ) -> Option<Self> {
        if url.scheme() != "http" || proxy_configured() {
            return None;
        }
        // An IPv6 host comes with its brackets, as `connect` and `Host` take it.
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let authority = format!("{host}:{port}");
        let mut headers = headers.clone();
        let host_value = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        headers.insert(HOST, HeaderValue::from_str(&host_value).ok()?);
        headers.insert(USER_AGENT, HeaderValue::from_static(user_agent));
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        Some(Self {
            authority,
            headers,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs `body` to `path` (with its query). The response's body holds the connection and
    /// parks it again once read to its end.
    pub(super) async fn post(
        self: &Arc<Self>,
        path: &str,
        body: Bytes,
    ) -> Result<http::Response<InlineBody>, InlineError> {
        loop {
            let (pooled, mut sender, mut conn) = match self.checkout() {
                Some(idle) => (true, idle.sender, idle.conn),
                None => {
                    let (sender, conn) = self.connect().await?;
                    (false, sender, conn)
                }
            };
            let mut request = http::Request::new(Full::new(body.clone()));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = path
                .parse()
                .map_err(|_| InlineError::Connect(std::io::Error::other("bad request path")))?;
            *request.headers_mut() = self.headers.clone();
            let sent = {
                let send = sender.try_send_request(request);
                tokio::pin!(send);
                let mut conn_done = false;
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = send.as_mut().poll(cx) {
                        return Poll::Ready(r);
                    }
                    if !conn_done && Pin::new(&mut conn).poll(cx).is_ready() {
                        // The connection ended: the request's answer says why (polled again).
                        conn_done = true;
                        cx.waker().wake_by_ref();
                    }
                    Poll::Pending
                })
                .await
            };
            match sent {
                Ok(response) => {
                    let (head, incoming) = response.into_parts();
                    let body = InlineBody {
                        incoming,
                        conn: Some((sender, conn)),
                        owner: self.clone(),
                    };
                    return Ok(http::Response::from_parts(head, body));
                }
                // A parked connection the server had closed, before this request was written
                // on it: try again on another (nothing reached the server).
                Err(e) if pooled && e.message().is_some() => {
                    continue;
                }
                Err(e) => return Err(InlineError::Hyper(e.into_error())),
            }
        }
    }

    /// A parked connection still open and not too old.
    fn checkout(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut c) = idle.pop() {
            if c.since.elapsed() > IDLE_MAX || c.sender.is_closed() {
                continue;
            }
            // Notice a close the server sent while it rested (reads the EOF, if any).
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if Pin::new(&mut c.conn).poll(&mut cx).is_ready() || c.sender.is_closed() {
                continue;
            }
            return Some(c);
        }
        None
    }

    async fn connect(&self) -> Result<(SendRequest<Full<Bytes>>, Conn), InlineError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| {
                InlineError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timeout",
                ))
            })?
            .map_err(InlineError::Connect)?;
        tcp.set_nodelay(true).map_err(InlineError::Connect)?;
        hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(InlineError::Hyper)
    }

    fn park(&self, sender: SendRequest<Full<Bytes>>, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_KEPT {
            idle.push(Idle {
                sender,
                conn,
                since: std::time::Instant::now(),
            });
        }
    }
}

/// A response body on an inline connection: polling it drives the connection; read to its end
/// it parks the connection for the next request, dropped early it closes it.
pub(crate) struct InlineBody {
    incoming: Incoming,
    conn: Option<(SendRequest<Full<Bytes>>, Conn)>,
    owner: Arc<Inline>,
}

impl futures_util::Stream for InlineBody {
    type Item = Result<Bytes, InlineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some((_, conn)) = &mut this.conn
                && Pin::new(conn).poll(cx).is_ready()
            {
                // Closed or failed: what is left of the body (or its error) is in `incoming`.
                this.conn = None;
            }
            match Pin::new(&mut this.incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(InlineError::Hyper(e))));
                }
                Poll::Ready(None) => {
                    if let Some((sender, mut conn)) = this.conn.take() {
                        // Let the connection take in the end of the exchange, then park it.
                        if Pin::new(&mut conn).poll(cx).is_pending() && !sender.is_closed() {
                            this.owner.park(sender, conn);
                        }
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl InlineBody {
    /// The whole body (an error reply's).
    pub(super) async fn bytes(mut self) -> Result<Bytes, InlineError> {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that answers every request `ok`; it closes each connection after one answer
    /// when `close` is set (and says so on the channel), else keeps it. Returns its URL, its
    /// count of connections and the closes.
    async fn server(
        close: bool,
    ) -> (
        Url,
        Arc<AtomicUsize>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/v1/x", listener.local_addr().unwrap())).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: its head, then `content-length` bytes of body.
                        let mut chunk = [0u8; 4096];
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + length {
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + length);
                        let reply: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if socket.write_all(reply).await.is_err() {
                            return;
                        }
                        if close {
                            drop(socket);
                            let _ = closed_tx.send(());
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted, closed)
    }

    async fn post(inline: &Arc<Inline>) -> String {
        let response = inline
            .post("/v1/x", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(text).unwrap()
    }

    fn inline_for(url: &Url) -> Arc<Inline> {
        Arc::new(
            Inline::for_url(url, &HeaderMap::new(), "t", Duration::from_secs(5))
                .expect("plain http"),
        )
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_is_used_again() {
        if proxy_configured() {
            return; // reqwest's path then, tested by the engine's tests
        }
        let (url, accepted, _) = server(false).await;
        let inline = inline_for(&url);
        for _ in 0..5 {
            assert_eq!(post(&inline).await, "ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for five"
        );
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_parked_is_not_used() {
        if proxy_configured() {
            return;
        }
        let (url, accepted, mut closed) = server(true).await;
        let inline = inline_for(&url);
        for _ in 0..5 {
            assert_eq!(post(&inline).await, "ok", "every request answered");
            // The server has closed the connection this request parked.
            closed.recv().await.expect("closed");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        if proxy_configured() {
            return;
        }
        // Bound, then closed: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let inline = inline_for(&Url::parse(&format!("http://127.0.0.1:{port}/v1")).unwrap());
        let error = inline
            .post("/v1/x", Bytes::new())
            .await
            .err()
            .expect("refused");
        assert!(matches!(error, InlineError::Connect(_)), "{error}");
    }

    #[test]
    fn only_plain_http_goes_inline() {
        let headers = HeaderMap::new();
        let d = Duration::from_secs(1);
        let https = Url::parse("https://api.example.com/v1").unwrap();
        assert!(Inline::for_url(&https, &headers, "t", d).is_none());
        if proxy_configured() {
            return;
        }
        let v6 = Url::parse("http://[::1]:8080/v1").unwrap();
        let inline = Inline::for_url(&v6, &headers, "t", d).expect("plain http");
        assert_eq!(inline.authority, "[::1]:8080");
        assert_eq!(inline.headers[HOST], "[::1]:8080");
    }
}
