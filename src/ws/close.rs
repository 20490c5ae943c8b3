//! The Close frames the proxy sends itself (RFC 6455 §5.5.1): to the client
//! unmasked, to the upstream masked (the proxy is the client there). Pure.

/// 1001 "going away": the client should reconnect.
pub const GOING_AWAY: u16 = 1001;

/// A Close frame with `code` and `reason` (at most 123 bytes), masked with
/// `mask` when given.
pub fn frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    let mut out = vec![0x88, payload.len() as u8];
    if let Some(mask) = mask {
        out[1] |= 0x80;
        out.extend_from_slice(&mask);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
    }
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    /// What a WebSocket library in `role` reads from `bytes`.
    async fn read_as(role: Role, bytes: Vec<u8>) -> Message {
        let (mut ours, theirs) = tokio::io::duplex(1024);
        ours.write_all(&bytes).await.unwrap();
        let mut ws = WebSocketStream::from_raw_socket(theirs, role, None).await;
        ws.next().await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn clients_and_servers_read_the_close_frames() {
        // Unmasked to a client, masked to a server: each side insists.
        for (role, mask) in [(Role::Client, None), (Role::Server, Some([9, 8, 7, 6]))] {
            match read_as(role, frame(GOING_AWAY, "rebalancing", mask)).await {
                Message::Close(Some(close)) => {
                    assert_eq!(close.code, CloseCode::Away);
                    assert_eq!(close.reason, "rebalancing");
                }
                other => panic!("not a close: {other:?}"),
            }
        }
        assert_eq!(frame(1001, &"x".repeat(200), None).len(), 2 + 125);
    }
}
