import { Connection } from './connection.js';
import type { ConnectionOptions } from './types.js';
/** The part of `document` that `connectFromMeta` reads. */
export interface DocumentLike {
    querySelector(selectors: string): {
        getAttribute(name: string): string | null;
    } | null;
    readonly location?: {
        readonly href: string;
    } | null;
}
/**
 * Connects to the URL of the page's `<meta name="myxi-host" content="ws://…">`
 * (the tag myxi 1.x pages carry). A relative URL such as `/ws` is taken on the
 * page's own host, with `wss:` on an https page.
 */
export declare function connectFromMeta(options?: ConnectionOptions, doc?: DocumentLike): Connection;
