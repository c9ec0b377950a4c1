import { Connection } from './connection.js';
import type { ConnectionOptions } from './types.js';

/** The part of `document` that `connectFromMeta` reads. */
export interface DocumentLike {
  querySelector(selectors: string): { getAttribute(name: string): string | null } | null;
  readonly location?: { readonly href: string } | null;
}

/**
 * Connects to the URL of the page's `<meta name="myxi-host" content="ws://…">`
 * (the tag myxi 1.x pages carry). A relative URL such as `/ws` is taken on the
 * page's own host, with `wss:` on an https page.
 */
export function connectFromMeta(options?: ConnectionOptions, doc?: DocumentLike): Connection {
  const page = doc ?? (globalThis as { document?: DocumentLike }).document;
  const url = page?.querySelector('meta[name="myxi-host"]')?.getAttribute('content');
  if (!url) throw new Error('Myxi: no <meta name="myxi-host">');
  return new Connection(socketURL(url, page!.location?.href), options);
}

function socketURL(url: string, base: string | undefined): string {
  if (!base || /^wss?:/i.test(url)) return url;
  const absolute = new URL(url, base);
  absolute.protocol = absolute.protocol === 'https:' ? 'wss:' : 'ws:';
  return absolute.href;
}
