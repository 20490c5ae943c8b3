//! The JSON messages the room sends to browsers:
//! `{"id":…, "type":"join"|"list"|"chat"|"left", "user":{…}, "data":…}`.
//!
//! `data` is a sentence for `join`/`left`, the chat text for `chat` and the
//! array of connected users for `list`.

use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::user::User;

/// What happened, the message's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Join,
    List,
    Chat,
    Left,
}

/// The message's `data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum Data {
    Text(String),
    Users(Vec<User>),
}

/// A message before the room gives it its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) kind: Kind,
    pub(crate) user: User,
    pub(crate) data: Data,
}

impl Event {
    pub(crate) fn joined(user: User) -> Event {
        let data = Data::Text(format!("{} joined.", user.name));
        Event {
            kind: Kind::Join,
            user,
            data,
        }
    }

    pub(crate) fn left(user: User) -> Event {
        let data = Data::Text(format!("{} left.", user.name));
        Event {
            kind: Kind::Left,
            user,
            data,
        }
    }

    pub(crate) fn chat(user: User, text: String) -> Event {
        Event {
            kind: Kind::Chat,
            user,
            data: Data::Text(text),
        }
    }

    /// The user list sent to `user` right after it joined.
    pub(crate) fn list(user: User, everyone: Vec<User>) -> Event {
        Event {
            kind: Kind::List,
            user,
            data: Data::Users(everyone),
        }
    }

    /// The text frame payload for this event carrying message id `id`.
    pub(crate) fn encode(&self, id: u64) -> Result<Utf8Bytes, serde_json::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            id: u64,
            #[serde(rename = "type")]
            kind: Kind,
            user: &'a User,
            data: &'a Data,
        }
        let wire = Wire {
            id,
            kind: self.kind,
            user: &self.user,
            data: &self.data,
        };
        serde_json::to_string(&wire).map(Utf8Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parsed(event: &Event, id: u64) -> Value {
        serde_json::from_str(event.encode(id).unwrap().as_str()).unwrap()
    }

    #[test]
    fn join_message_matches_the_tutorial() {
        let alice = User::sign_in(1, "alice");
        let text = Event::joined(alice).encode(7).unwrap();
        assert_eq!(
            text.as_str(),
            r#"{"id":7,"type":"join","user":{"id":1,"name":"alice","image":1},"data":"alice joined."}"#
        );
    }

    #[test]
    fn left_and_chat_messages() {
        let bob = User::sign_in(2, "bob");
        assert_eq!(
            parsed(&Event::left(bob.clone()), 3),
            json!({"id":3,"type":"left","user":{"id":2,"name":"bob","image":2},"data":"bob left."})
        );
        assert_eq!(
            parsed(&Event::chat(bob, "hi \"there\"".into()), 4)["data"],
            json!("hi \"there\"")
        );
    }

    #[test]
    fn list_message_carries_an_array_of_users() {
        let alice = User::sign_in(1, "alice");
        let bob = User::sign_in(2, "bob");
        let value = parsed(&Event::list(bob.clone(), vec![alice, bob]), 9);
        assert_eq!(value["type"], "list");
        assert_eq!(value["user"]["name"], "bob");
        assert_eq!(
            value["data"],
            json!([
                {"id":1,"name":"alice","image":1},
                {"id":2,"name":"bob","image":2}
            ])
        );
    }
}
