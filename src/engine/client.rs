//! A minimal worker-protocol client: connect to an engine's worker port, call one function,
//! wait for its answer. What `iii trigger` uses; blocking, one connection per call.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::ids;
use super::wire::{self, ErrorBody, Invocation, Json, Message};
use crate::{err, Error, Result};

/// How a call ended, when it reached the engine.
pub enum Outcome {
    /// The function's result (`None` when it returned nothing).
    Result(Option<Json>),
    /// The function (or the engine) answered with an error.
    Failed(ErrorBody),
}

/// Call `function_id` with `data` on the engine at `host:port`, waiting at most `timeout`.
pub fn call(
    host: &str,
    port: u16,
    function_id: &str,
    data: Option<Json>,
    timeout: Duration,
) -> Result<Outcome> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| err!("engine address {host}:{port}: {e}"))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, Duration::from_secs(2).min(timeout)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = stream.ok_or_else(|| {
        let why = last
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into());
        err!("no iii engine is listening on {host}:{port} ({why}); start one with `iii`")
    })?;
    let _ = stream.set_nodelay(true);
    let remaining = |d: Instant| {
        d.checked_duration_since(Instant::now())
            .filter(|r| !r.is_zero())
            .ok_or_else(|| {
                err!(
                    "no answer from {function_id} within {} ms",
                    timeout.as_millis()
                )
            })
    };
    stream
        .set_read_timeout(Some(remaining(deadline)?))
        .map_err(|e| err!("engine connection: {e}"))?;
    let url = format!("ws://{host}:{port}/");
    let (mut ws, _) = tungstenite::client(url.as_str(), stream)
        .map_err(|e| err!("engine at {host}:{port}: the WebSocket upgrade failed: {e}"))?;
    let id = ids::uuid();
    let call = Message::InvokeFunction(Invocation::call(id.clone(), function_id, data));
    ws.send(tungstenite::Message::Text(wire::encode(&call).into()))
        .map_err(|e| err!("engine at {host}:{port}: sending the call: {e}"))?;
    loop {
        ws.get_ref()
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| err!("engine connection: {e}"))?;
        let frame = match ws.read() {
            Ok(f) => f,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(err!(
                    "no answer from {function_id} within {} ms",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(err!("engine at {host}:{port}: the connection ended: {e}")),
        };
        let text = match &frame {
            tungstenite::Message::Text(t) => t.as_str(),
            tungstenite::Message::Close(_) => {
                return Err(Error::new(format!(
                    "engine at {host}:{port} closed the connection before {function_id} answered"
                )))
            }
            _ => continue,
        };
        match wire::decode(text) {
            Ok(Message::InvocationResult(r)) if r.invocation_id == id => {
                let _ = ws.close(None);
                return Ok(match r.error {
                    Some(e) => Outcome::Failed(ErrorBody::from_json(&e)),
                    None => Outcome::Result(r.result),
                });
            }
            Ok(Message::Ping) => {
                let _ = ws.send(tungstenite::Message::Text(
                    wire::encode(&Message::Pong).into(),
                ));
            }
            _ => {}
        }
    }
}
