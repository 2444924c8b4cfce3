//! `GET /api/v1/ws`: a WebSocket that sends a JSON snapshot on connect
//! (`{"type":"snapshot","devices":[..],"groups":[..],"streams":[..],"history":{..},"calibration":{..}}`)
//! and then every change as an event: `device` (at least once a second per device),
//! `drift` (each report), `offset` (each published offset), `group`, `streams` and
//! `calibration`. A client that falls more than [`super::EVENT_BUFFER`] events behind
//! gets a fresh snapshot. Messages from the client are ignored (the API changes
//! things).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;

use super::ControlPlane;

/// The upgrade handler.
pub async fn handler(ws: WebSocketUpgrade, State(plane): State<Arc<ControlPlane>>) -> Response {
    ws.max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve(socket, plane))
}

async fn serve(mut socket: WebSocket, plane: Arc<ControlPlane>) {
    let mut events = plane.subscribe();
    if send(&mut socket, plane.snapshot_json().to_string())
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(text) => {
                    if send(&mut socket, text.to_string()).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    if send(&mut socket, plane.snapshot_json().to_string()).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send(socket: &mut WebSocket, text: String) -> Result<(), axum::Error> {
    socket.send(Message::Text(text.into())).await
}
