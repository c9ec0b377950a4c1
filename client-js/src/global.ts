// The entry of the script build (myxi.js): defines the global `Myxi`, as the
// myxi 1.x script did. Like 1.x (`window.Myxi ||= {}`), it adds to a `Myxi`
// object that another script may already have made.

import { Connection, MyxiError, Subscription, connectFromMeta } from './index.js';

const scope = globalThis as { Myxi?: object };
scope.Myxi = Object.assign(scope.Myxi || {}, { Connection, Subscription, MyxiError, connectFromMeta });
