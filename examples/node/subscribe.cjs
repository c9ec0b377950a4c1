// The same as subscribe.mjs, for CommonJS projects: require() gets the
// same API.
//
//   node subscribe.cjs ws://localhost:5005/
const { Connection } = require('myxi');
const WebSocket = require('ws');

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
