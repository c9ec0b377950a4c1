// Type-level usage in a browser project.
import { Connection, connectFromMeta, type WebSocketConstructor } from 'myxi';

const ctor: WebSocketConstructor = WebSocket;
const a = new Connection('wss://example.test/ws', { WebSocket });
const b = connectFromMeta({ WebSocket: ctor }, document);
const c = connectFromMeta();
export { a, b, c };
