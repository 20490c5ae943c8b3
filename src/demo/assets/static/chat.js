// The chat room page: one WebSocket to /ws/chat, a message list and a user
// list. Server messages are JSON: {id, type: join|list|chat|left, user, data}.
// Text from the server is only ever inserted with textContent.
//
// A connection that closes (Close 1001 "going away" from a proxy that
// restarts or rebalances, or a connection lost without a Close) is opened
// again after a jittered, growing delay, and the message list says so: many
// clients dropped at once then come back spread out, not all together.
'use strict';

(() => {
  const statusEl = document.getElementById('status');
  const statusAction = document.getElementById('status-action');
  const meEl = document.getElementById('me');
  const messageList = document.getElementById('message-list');
  const userList = document.getElementById('user-list');
  const form = document.getElementById('chat-form');
  const input = document.getElementById('message-input');
  const sendButton = document.getElementById('send-button');

  const AVATAR_COUNT = 10;
  const INVALID_USER = 4001;

  // Reconnect delays: the first around 0.5-1 s, doubling up to 15 s; each
  // drawn at random in [delay / 2, delay].
  const RECONNECT_FIRST_MS = 1000;
  const RECONNECT_MAX_MS = 15000;

  // The open WebSocket, if any, and how many attempts failed in a row.
  let ws = null;
  let attempt = 0;
  let reconnecting = false;

  // Our own user, learned from the `list` message sent right after joining.
  let me = null;

  // Connected users by id. `connections` counts open tabs, so a user with
  // two tabs stays listed until both have left.
  const users = new Map();

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = String(text);
    }
    return node;
  }

  function avatar(user, size) {
    const index = Number(user && user.image);
    const safe = Number.isInteger(index) && index >= 0 && index < AVATAR_COUNT ? index : 0;
    const img = element('img', 'avatar ' + size);
    img.src = '/static/images/' + safe + '.svg';
    img.alt = '';
    return img;
  }

  function isMe(user) {
    return me !== null && user && user.id === me.id;
  }

  // ---- connection state ----

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function setCanSend(canSend) {
    input.disabled = !canSend;
    sendButton.disabled = !canSend;
    if (canSend) {
      input.focus();
    }
  }

  function describeClose(event) {
    let text = 'code ' + event.code;
    if (event.reason) {
      text += ': ' + event.reason;
    }
    return text;
  }

  function showSignedOut(event) {
    setStatus('disconnected', 'disconnected (' + describeClose(event) + ')');
    setCanSend(false);
    input.placeholder = 'Disconnected.';
    statusAction.textContent = 'Sign in';
    statusAction.href = '/signin';
    statusAction.hidden = false;
  }

  // The next delay before reconnecting, jittered.
  function reconnectDelay() {
    const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** attempt);
    attempt += 1;
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  }

  function scheduleReconnect(event) {
    const delay = reconnectDelay();
    const why =
      event.code === 1001
        ? 'The server is going away (' + describeClose(event) + ')'
        : event.code === 1006
          ? 'Connection lost'
          : 'Connection closed (' + describeClose(event) + ')';
    const seconds = (delay / 1000).toFixed(1);
    addNotice('reconnecting', why + '; reconnecting in ' + seconds + ' s…');
    setStatus('reconnecting', 'reconnecting in ' + seconds + ' s…');
    setCanSend(false);
    input.placeholder = 'Reconnecting…';
    reconnecting = true;
    setTimeout(connect, delay);
  }

  // ---- user list ----

  function addUser(user) {
    const entry = users.get(user.id);
    if (entry) {
      entry.connections += 1;
    } else {
      users.set(user.id, { user, connections: 1 });
    }
  }

  function removeUser(user) {
    const entry = users.get(user.id);
    if (entry) {
      entry.connections -= 1;
      if (entry.connections <= 0) {
        users.delete(user.id);
      }
    }
  }

  function renderUsers() {
    const items = [];
    for (const { user } of users.values()) {
      const item = element('li', isMe(user) ? 'user is-me' : 'user');
      item.dataset.userId = String(user.id);
      item.append(
        avatar(user, 'small'),
        element('span', 'name', user.name),
        element('span', 'user-id', '#' + user.id),
      );
      items.push(item);
    }
    userList.replaceChildren(...items);
  }

  // ---- message list ----

  function clockTime() {
    return new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function addMessage(msg) {
    const atBottom =
      messageList.scrollHeight - messageList.scrollTop - messageList.clientHeight < 40;
    const item = element('li', 'message');
    item.dataset.messageId = String(msg.id);
    item.dataset.type = msg.type;
    if (msg.type === 'chat') {
      item.classList.add('chat');
      if (isMe(msg.user)) {
        item.classList.add('mine');
      }
      const meta = element('div', 'meta');
      meta.append(element('span', 'author', msg.user.name), element('time', '', clockTime()));
      const bubble = element('div', 'bubble');
      bubble.append(meta, element('div', 'text', msg.data));
      item.append(avatar(msg.user, 'medium'), bubble);
    } else {
      item.classList.add('event');
      item.append(avatar(msg.user, 'tiny'), element('span', 'text', msg.data));
    }
    messageList.append(item);
    if (atBottom || isMe(msg.user)) {
      messageList.scrollTop = messageList.scrollHeight;
    }
  }

  // A line of the page's own in the message list (not from the server).
  function addNotice(type, text) {
    const item = element('li', 'message event notice');
    item.dataset.type = type;
    item.append(element('span', 'text', text));
    messageList.append(item);
    messageList.scrollTop = messageList.scrollHeight;
  }

  // ---- server messages ----

  function handle(msg) {
    if (!msg || typeof msg !== 'object' || !msg.user) {
      return;
    }
    switch (msg.type) {
      case 'list':
        me = msg.user;
        meEl.textContent = 'Signed in as ' + me.name;
        users.clear();
        for (const user of Array.isArray(msg.data) ? msg.data : []) {
          addUser(user);
        }
        renderUsers();
        break;
      case 'join':
        addUser(msg.user);
        renderUsers();
        addMessage(msg);
        break;
      case 'left':
        removeUser(msg.user);
        renderUsers();
        addMessage(msg);
        break;
      case 'chat':
        addMessage(msg);
        break;
      default:
        break;
    }
  }

  // ---- wiring ----

  function connect() {
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/chat';
    if (!reconnecting) {
      setStatus('connecting', 'connecting…');
    }
    const socket = new WebSocket(url);
    ws = socket;

    socket.addEventListener('open', () => {
      setStatus('connected', 'connected');
      setCanSend(true);
      input.placeholder = '';
      if (reconnecting) {
        addNotice('reconnected', 'Reconnected.');
      }
      reconnecting = false;
      attempt = 0;
    });

    socket.addEventListener('message', (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        console.warn('ignoring a message that is not JSON', err);
        return;
      }
      handle(msg);
    });

    socket.addEventListener('close', (event) => {
      if (ws !== socket) {
        return;
      }
      ws = null;
      if (event.code === INVALID_USER) {
        showSignedOut(event);
      } else {
        scheduleReconnect(event);
      }
    });
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (text === '' || ws === null || ws.readyState !== WebSocket.OPEN) {
      return;
    }
    ws.send(text);
    input.value = '';
    input.focus();
  });

  connect();
})();
