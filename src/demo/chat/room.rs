//! The chat room: who is connected, the global message counter, and broadcast.
//!
//! Every connected WebSocket is a [`Member`] with a bounded outgoing queue.
//! Message ids are given and queued under one lock, so every client sees ids
//! strictly increasing. Queuing never waits: a member whose queue is full (or
//! whose connection is already gone) is dropped from the room on the spot, and
//! the others are told that it left.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{debug, error, info, warn};

use super::message::Event;
use super::user::User;

/// Where the room puts the text frames for one connection.
pub(crate) type Outbox = mpsc::Sender<Utf8Bytes>;

/// One connection in the room (a user with two tabs open is two members).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MemberId(u64);

struct Member {
    user: User,
    outbox: Outbox,
}

/// The shared room; cheap to lock, never held across an `.await`.
#[derive(Default)]
pub(crate) struct Room {
    state: Mutex<RoomState>,
}

#[derive(Default)]
struct RoomState {
    last_message_id: u64,
    last_member_id: u64,
    /// Ordered by member id, that is by the time they joined.
    members: BTreeMap<MemberId, Member>,
}

impl Room {
    /// Adds a connection: everyone (the newcomer included) gets `join`, then
    /// the newcomer alone gets `list` with every connected user, itself included.
    pub(crate) fn join(&self, user: User, outbox: Outbox) -> MemberId {
        let mut state = self.lock();
        state.last_member_id += 1;
        let member = MemberId(state.last_member_id);
        info!(user.id, user.name = %user.name, "user joined the room");
        state.members.insert(
            member,
            Member {
                user: user.clone(),
                outbox,
            },
        );
        state.broadcast(Event::joined(user.clone()));
        let everyone = state.members.values().map(|m| m.user.clone()).collect();
        state.send_to(member, &Event::list(user, everyone));
        member
    }

    /// Broadcasts a chat line from `from`; text that is blank after trimming
    /// is ignored, and so is a member that is no longer in the room.
    pub(crate) fn say(&self, from: MemberId, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let mut state = self.lock();
        let Some(user) = state.members.get(&from).map(|m| m.user.clone()) else {
            return;
        };
        debug!(user.id, user.name = %user.name, text, "chat message");
        state.broadcast(Event::chat(user, text.to_owned()));
    }

    /// Removes a connection and tells the others it left (unless it had
    /// already been dropped for being too slow).
    pub(crate) fn leave(&self, member: MemberId) {
        let mut state = self.lock();
        if let Some(gone) = state.members.remove(&member) {
            info!(user.id = gone.user.id, user.name = %gone.user.name, "user left the room");
            state.broadcast(Event::left(gone.user));
        }
    }

    /// Number of connections in the room.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().members.len()
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // The state stays consistent even if a holder panicked: every update
        // is a single insert or remove.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RoomState {
    fn next_message_id(&mut self) -> u64 {
        self.last_message_id += 1;
        self.last_message_id
    }

    /// Queues `event` for every member. Members that cannot take it are
    /// dropped, and their `left` is broadcast in turn.
    fn broadcast(&mut self, event: Event) {
        let mut pending = VecDeque::from([event]);
        while let Some(event) = pending.pop_front() {
            let id = self.next_message_id();
            let frame = match event.encode(id) {
                Ok(frame) => frame,
                Err(err) => {
                    error!(%err, "could not encode a chat message");
                    continue;
                }
            };
            let stuck: Vec<MemberId> = self
                .members
                .iter()
                .filter(|(_, member)| member.outbox.try_send(frame.clone()).is_err())
                .map(|(&id, _)| id)
                .collect();
            for id in stuck {
                if let Some(gone) = self.members.remove(&id) {
                    warn!(
                        user.id = gone.user.id,
                        user.name = %gone.user.name,
                        "dropping a client that does not keep up"
                    );
                    pending.push_back(Event::left(gone.user));
                }
            }
        }
    }

    /// Queues `event` for one member only.
    fn send_to(&mut self, member: MemberId, event: &Event) {
        let id = self.next_message_id();
        let sent = match (event.encode(id), self.members.get(&member)) {
            (Ok(frame), Some(target)) => target.outbox.try_send(frame).is_ok(),
            (Err(err), _) => {
                error!(%err, "could not encode a chat message");
                true
            }
            (_, None) => true,
        };
        if !sent && let Some(gone) = self.members.remove(&member) {
            self.broadcast(Event::left(gone.user));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn member(
        room: &Room,
        id: u64,
        name: &str,
        queue: usize,
    ) -> (MemberId, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(queue);
        (room.join(User::sign_in(id, name), tx), rx)
    }

    fn drain(rx: &mut mpsc::Receiver<Utf8Bytes>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            out.push(serde_json::from_str(frame.as_str()).unwrap());
        }
        out
    }

    fn kinds(messages: &[Value]) -> Vec<&str> {
        messages
            .iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn join_then_list_for_the_newcomer_only() {
        let room = Room::default();
        let (_, mut a) = member(&room, 1, "a", 8);
        let (_, mut b) = member(&room, 2, "b", 8);
        let a_saw = drain(&mut a);
        let b_saw = drain(&mut b);
        assert_eq!(kinds(&a_saw), ["join", "list", "join"]);
        assert_eq!(kinds(&b_saw), ["join", "list"]);
        assert_eq!(b_saw[0]["data"], "b joined.");
        let listed: Vec<&str> = b_saw[1]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect();
        assert_eq!(listed, ["a", "b"]);
        assert_eq!(b_saw[1]["user"]["name"], "b");
        let ids: Vec<u64> = a_saw.iter().map(|m| m["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn chat_is_trimmed_and_blank_chat_ignored() {
        let room = Room::default();
        let (a_id, mut a) = member(&room, 1, "a", 8);
        let (_, mut b) = member(&room, 2, "b", 8);
        drain(&mut a);
        drain(&mut b);
        room.say(a_id, "   \n ");
        room.say(a_id, "  hello  ");
        let a_saw = drain(&mut a);
        let b_saw = drain(&mut b);
        assert_eq!(a_saw, b_saw);
        assert_eq!(kinds(&a_saw), ["chat"]);
        assert_eq!(a_saw[0]["data"], "hello");
        assert_eq!(a_saw[0]["user"]["name"], "a");
    }

    #[test]
    fn leaving_is_announced_once_to_the_others() {
        let room = Room::default();
        let (a_id, a) = member(&room, 1, "a", 8);
        let (_, mut b) = member(&room, 2, "b", 8);
        drain(&mut b);
        room.leave(a_id);
        room.leave(a_id);
        room.say(a_id, "ghost");
        let b_saw = drain(&mut b);
        assert_eq!(kinds(&b_saw), ["left"]);
        assert_eq!(b_saw[0]["data"], "a left.");
        assert_eq!(room.len(), 1);
        drop(a);
    }

    #[test]
    fn a_full_queue_drops_the_member_and_the_others_see_it_leave() {
        let room = Room::default();
        // Room for its own join and list, nothing more.
        let (_, slow) = member(&room, 1, "slow", 2);
        let (b_id, mut b) = member(&room, 2, "b", 16);
        assert_eq!(room.len(), 1, "the slow member could not take b's join");
        room.say(b_id, "still here");
        let b_saw = drain(&mut b);
        assert_eq!(kinds(&b_saw), ["join", "left", "list", "chat"]);
        assert_eq!(b_saw[1]["user"]["name"], "slow");
        drop(slow);
    }

    #[test]
    fn a_member_whose_connection_ended_is_dropped() {
        let room = Room::default();
        let (_, gone) = member(&room, 1, "gone", 8);
        drop(gone);
        let (_, mut b) = member(&room, 2, "b", 8);
        assert_eq!(kinds(&drain(&mut b)), ["join", "left", "list"]);
        assert_eq!(room.len(), 1);
    }
}
