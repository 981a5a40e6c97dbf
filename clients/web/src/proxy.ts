/**
 * The push proxy's device-facing calls (README "The push proxy"), shared by the page and the
 * service worker: hand off, catch up, hand back.
 *
 * The catch-up asks for `text/event-stream` and runs the answer through the same WHATWG parser
 * as the origin's stream, so an event's `data` is byte for byte what the origin's stream would
 * have carried, and the proxy's gap marker arrives as the `ssepush.reset` frame it is.
 *
 * @module
 */

import { EventStreamParser, type Block } from './parser.js';
import { parseApiError, parseHandoffCreated, type EventId, type HandoffCreated, type HandoffRequest } from './wire.js';

/** The `fetch` this module uses (the global one, or a wrapper the app provides). */
export type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

/** A proxy call that did not succeed. `status` is 0 for a network error. */
export class ProxyError extends Error {
  override name = 'ProxyError';
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  /** The proxy does not know the handoff, or not with this token: there is nothing to resume. */
  get gone(): boolean {
    return this.status === 404 || this.status === 401 || this.status === 410;
  }
}

function base(url: string): string {
  return url.replace(/\/+$/, '');
}

async function failure(resp: Response, what: string): Promise<ProxyError> {
  let body: unknown = null;
  try {
    body = await resp.json();
  } catch {
    // Not JSON: the status says enough.
  }
  const e = parseApiError(body);
  const detail = e ? `${e.code}: ${e.message}` : `HTTP ${resp.status}`;
  return new ProxyError(`${what} failed: ${detail}`, resp.status, e ? e.code : null);
}

async function send(fetchFn: Fetch, url: string, init: RequestInit, what: string): Promise<Response> {
  try {
    return await fetchFn(url, init);
  } catch (e) {
    throw new ProxyError(`${what} failed: ${e instanceof Error ? e.message : String(e)}`, 0);
  }
}

/**
 * `POST /v1/handoffs`. The request is sent with `keepalive: true` so it survives the page being
 * frozen or unloaded right after (`pagehide`, `freeze`); it must be started synchronously from
 * that event's handler, which the caller does.
 *
 * @param headers extra request headers, e.g. the app backend's `Authorization` for the proxy
 */
export async function createHandoff(
  fetchFn: Fetch,
  proxy: string,
  request: HandoffRequest,
  headers: Record<string, string> = {},
): Promise<HandoffCreated> {
  const resp = await send(
    fetchFn,
    `${base(proxy)}/v1/handoffs`,
    {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(request),
      keepalive: true,
      cache: 'no-store',
    },
    'handoff',
  );
  if (resp.status !== 201) throw await failure(resp, 'handoff');
  try {
    return parseHandoffCreated(await resp.json());
  } catch (e) {
    throw new ProxyError(`handoff answer: ${e instanceof Error ? e.message : String(e)}`, resp.status);
  }
}

/**
 * `GET /v1/handoffs/{id}/events` after `lastEventId` (which the proxy takes as acknowledged):
 * the buffered events as parsed blocks, in order. A leading `ssepush.reset` block is the gap
 * marker. `Last-Event-ID` is sent only when there is a position.
 */
export async function catchUp(
  fetchFn: Fetch,
  proxy: string,
  handoff: { id: string; token: string },
  lastEventId: EventId,
): Promise<Block[]> {
  const headers: Record<string, string> = {
    accept: 'text/event-stream',
    authorization: `Bearer ${handoff.token}`,
  };
  if (lastEventId !== '') headers['last-event-id'] = lastEventId;
  const resp = await send(
    fetchFn,
    `${base(proxy)}/v1/handoffs/${encodeURIComponent(handoff.id)}/events`,
    { method: 'GET', headers, cache: 'no-store' },
    'catch-up',
  );
  if (resp.status !== 200) throw await failure(resp, 'catch-up');
  const body = await resp.text();
  const parser = new EventStreamParser(lastEventId);
  const blocks: Block[] = [];
  for (const item of parser.push(body)) {
    if (item.kind === 'block') blocks.push(item.block);
  }
  parser.end();
  return blocks;
}

/**
 * `DELETE /v1/handoffs/{id}`: the handback, acknowledging `lastEventId`. With `keepalive` it
 * survives the page going away (a `close()` on `pagehide`).
 */
export async function handBack(
  fetchFn: Fetch,
  proxy: string,
  handoff: { id: string; token: string },
  lastEventId: EventId,
  keepalive = false,
): Promise<void> {
  const headers: Record<string, string> = { authorization: `Bearer ${handoff.token}` };
  if (lastEventId !== '') headers['last-event-id'] = lastEventId;
  const resp = await send(
    fetchFn,
    `${base(proxy)}/v1/handoffs/${encodeURIComponent(handoff.id)}`,
    { method: 'DELETE', headers, keepalive, cache: 'no-store' },
    'handback',
  );
  if (resp.status !== 200) throw await failure(resp, 'handback');
  // The body (the final cursor) is informative: the page's own position is the truth.
  await resp.body?.cancel();
}
