// A scripted stand-in for the browser's WebSocket: the test plays the server.
// Each call of fakeWebSocket() makes a class with its own list of sockets.

export function fakeWebSocket() {
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    /** Every socket made, oldest first. */
    static instances = [];

    static get last() {
      return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
    }

    constructor(url) {
      this.url = url;
      this.readyState = FakeWebSocket.CONNECTING;
      /** The actions the client sent, decoded. */
      this.sent = [];
      /** The arguments of close(), once the client called it. */
      this.closedWith = null;
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      FakeWebSocket.instances.push(this);
    }

    send(data) {
      // A browser throws only while connecting; a stricter fake catches more.
      if (this.readyState !== FakeWebSocket.OPEN) throw new Error(`send in readyState ${this.readyState}`);
      if (typeof data !== 'string') throw new Error('the client must send text frames');
      this.sent.push(JSON.parse(data));
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = FakeWebSocket.CLOSING;
    }

    // ---- the server's side ----

    open() {
      this.readyState = FakeWebSocket.OPEN;
      this.onopen?.({ type: 'open' });
    }

    /** Sends one frame holding these events (objects are encoded, strings sent as they are), one per line. */
    receive(...events) {
      const text = events.map((e) => (typeof e === 'string' ? e : JSON.stringify(e))).join('\n');
      this.onmessage?.({ type: 'message', data: text });
    }

    /** Answers the last action called `action` with `event` and its tag. */
    reply(action, event, payload = {}) {
      const sent = this.lastAction(action);
      if (!sent) throw new Error(`no ${action} was sent`);
      this.receive({ event, tag: sent.tag, payload });
      return sent;
    }

    /** The server (or the network) ends the connection. */
    drop(code = 1006, reason = '') {
      this.readyState = FakeWebSocket.CLOSED;
      this.onclose?.({ type: 'close', code, reason, wasClean: code !== 1006 });
    }

    actions(name) {
      return this.sent.filter((a) => a.action === name);
    }

    lastAction(name) {
      const list = this.actions(name);
      return list[list.length - 1];
    }
  }
  return FakeWebSocket;
}

/** A connection on a fake socket that is already open. */
export function openConnection(Myxi, options = {}, url = 'ws://myxi.test/') {
  const WebSocket = fakeWebSocket();
  const connection = new Myxi.Connection(url, { WebSocket, ...options });
  WebSocket.last.open();
  return { connection, WebSocket, socket: () => WebSocket.last };
}
