//! One WebSocket client of the room, from the finished handshake to the
//! closing frame.
//!
//! Its task reads the client's frames and writes what the room queued for
//! it, concurrently, until one side ends. It then leaves the room and, where
//! there is something to say, sends a close frame and waits briefly for the
//! client's answer:
//!
//! | why it ended                         | close code                             |
//! |--------------------------------------|----------------------------------------|
//! | no valid `name` cookie               | 4001 "Invalid user"                    |
//! | the backend is shutting down         | 1001 (going away)                      |
//! | its queue overflowed (too slow)      | 1008 (policy)                          |
//! | a message over [`MAX_MESSAGE_BYTES`] | 1009 (too big)                         |
//! | the client closed or vanished        | none (the protocol layer answers)      |

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::room::{MemberId, Room};
use super::server::Backend;
use super::user::User;

/// Largest message (and frame) accepted from a client.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How many frames may wait for a client before it is dropped as too slow.
pub(crate) const OUTBOX_CAPACITY: usize = 256;

/// How long hyper may take to hand over the upgraded connection.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one frame may take to be written before the client is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Close reason sent with code 1001 when the backend shuts down.
const GOING_AWAY: &str = "Server shutting down";

/// Close code and reason for a client without a valid user cookie, as in the tutorial.
const INVALID_USER: (u16, &str) = (4001, "Invalid user");

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Waits for hyper to finish the upgrade, then chats as `user`,
/// or turns the client away with close code 4001 when there is no valid user.
pub(crate) async fn run(backend: Arc<Backend>, on_upgrade: OnUpgrade, user: Option<User>) {
    let upgraded = match timeout(UPGRADE_TIMEOUT, on_upgrade).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(err)) => {
            debug!(%err, "WebSocket upgrade failed");
            return;
        }
        Err(_) => {
            debug!("WebSocket upgrade timed out");
            return;
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let Some(user) = user else {
        info!("WebSocket without a valid user cookie: closing with 4001");
        let (code, reason) = INVALID_USER;
        return refuse(socket, close_frame(code.into(), reason)).await;
    };
    if backend.shutdown.is_cancelled() {
        // Upgraded while shutting down: say so rather than join for a moment.
        return refuse(socket, close_frame(CloseCode::Away, GOING_AWAY)).await;
    }
    chat(&backend.room, &backend.shutdown, socket, user).await;
}

/// Closes a socket that never joined the room.
async fn refuse(socket: Socket, frame: CloseFrame) {
    let (mut sink, mut stream) = socket.split();
    close(&mut sink, &mut stream, frame).await;
}

/// How a client's connection ended, which decides the close frame it sends.
#[derive(Debug)]
enum Ending {
    Shutdown,
    TooSlow,
    TooBig,
    PeerClosed,
    Broken,
    WriteTimeout,
}

impl Ending {
    fn close_frame(&self) -> Option<CloseFrame> {
        match self {
            Ending::Shutdown => Some(close_frame(CloseCode::Away, GOING_AWAY)),
            Ending::TooSlow => Some(close_frame(CloseCode::Policy, "Too slow")),
            Ending::TooBig => Some(close_frame(CloseCode::Size, "Message too big")),
            Ending::PeerClosed | Ending::Broken | Ending::WriteTimeout => None,
        }
    }
}

async fn chat(room: &Room, shutdown: &CancellationToken, socket: Socket, user: User) {
    let (outbox, mut inbox) = mpsc::channel(OUTBOX_CAPACITY);
    let member = room.join(user.clone(), outbox);
    let (mut sink, mut stream) = socket.split();
    let ending = tokio::select! {
        ending = write_loop(&mut sink, &mut inbox, shutdown) => ending,
        ending = read_loop(&mut stream, room, member) => ending,
    };
    room.leave(member);
    debug!(user.id, user.name = %user.name, ?ending, "WebSocket client ended");
    if let Some(frame) = ending.close_frame() {
        close(&mut sink, &mut stream, frame).await;
    }
}

/// Sends what the room queued until shutdown, eviction or a write failure.
async fn write_loop(
    sink: &mut SplitSink<Socket, Message>,
    inbox: &mut mpsc::Receiver<Utf8Bytes>,
    shutdown: &CancellationToken,
) -> Ending {
    loop {
        let frame = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ending::Shutdown,
            next = inbox.recv() => match next {
                Some(frame) => frame,
                // The room let go of our queue: we were dropped as too slow.
                None => return Ending::TooSlow,
            },
        };
        let written = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ending::Shutdown,
            written = timeout(WRITE_TIMEOUT, sink.send(Message::Text(frame))) => written,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                debug!(%err, "could not write to the client");
                return Ending::Broken;
            }
            Err(_) => return Ending::WriteTimeout,
        }
    }
}

/// Hands the client's text messages to the room until the client is done.
async fn read_loop(stream: &mut SplitStream<Socket>, room: &Room, member: MemberId) -> Ending {
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(Message::Text(text)) => room.say(member, text.as_str()),
            // The protocol layer answers a close frame and then ends the stream;
            // pings are answered for us; binary messages are not part of the chat.
            Ok(
                Message::Close(_)
                | Message::Ping(_)
                | Message::Pong(_)
                | Message::Binary(_)
                | Message::Frame(_),
            ) => {}
            Err(WsError::Capacity(err)) => {
                debug!(%err, "client message too big");
                return Ending::TooBig;
            }
            Err(err) => {
                debug!(%err, "could not read from the client");
                return Ending::Broken;
            }
        }
    }
    Ending::PeerClosed
}

/// Sends `frame` and waits (briefly) for the client to answer it.
async fn close(
    sink: &mut SplitSink<Socket, Message>,
    stream: &mut SplitStream<Socket>,
    frame: CloseFrame,
) {
    let handshake = async {
        if sink.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = stream.next().await {}
    };
    if timeout(CLOSE_TIMEOUT, handshake).await.is_err() {
        debug!("client did not answer the close frame in time");
    }
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}
