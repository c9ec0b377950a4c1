// The JavaScript client from Node, as an ES module: subscribes to
// widgets/42 and prints every WidgetQtyChanged event.
//
//   npm install ws <the myxi package>   (see examples/README.md)
//   node subscribe.mjs ws://localhost:5005/
//
// Then publish, for instance with the push command:
//   MYXI_URL=http://localhost:5005 MYXI_API_KEY=... go run ./server push widgets 42 WidgetQtyChanged '{"quantity":5}'
import { Connection } from 'myxi';
import WebSocket from 'ws'; // Node 22+ also has a global WebSocket

const url = process.argv[2] ?? 'ws://localhost:5005/';
const connection = new Connection(url, { WebSocket });
const widget = connection.subscribe('widgets', '42');
widget.on('Subscribed', () => console.log('subscribed to widgets/42'));
widget.on('WidgetQtyChanged', (payload) => console.log('WidgetQtyChanged', JSON.stringify(payload)));

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    connection.disconnect();
    process.exit(0);
  });
}
