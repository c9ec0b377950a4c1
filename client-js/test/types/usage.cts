// Type-level usage of the package from CommonJS (package.json "require").
import myxi = require('myxi');
import WebSocket = require('ws');

const connection: myxi.Connection = new myxi.Connection('ws://localhost:5005/', { WebSocket });
const subscription: myxi.Subscription = connection.subscribe('widgets', 1);
subscription.on('Changed', (payload: myxi.Payload) => console.log(payload));
const error: myxi.MyxiError = new myxi.MyxiError('Timeout', 'no answer');
export = { connection, error };
