/**
 * Handoff records the page leaves for its service worker: which proxy, the handoff's id and
 * token, and the position the page is at. The service worker needs them to fetch the buffered
 * events when a wake arrives (`fetchEvents`); the page stays the owner of the position.
 *
 * Kept in Cache Storage, the one store both a page and its service worker can reach without a
 * library (same origin only, like `localStorage`). Every function degrades to a no-op where
 * Cache Storage is missing (an insecure context, Node): the page then simply reads the proxy
 * itself on a wake.
 *
 * @module
 */

import type { EventId } from './wire.js';

/** What the service worker may read about a handoff. The token is a secret of this origin. */
export interface HandoffRecord {
  /** The proxy's base URL. */
  proxy: string;
  id: string;
  token: string;
  /** The page's position when it last wrote the record. */
  lastEventId: EventId;
}

/** The Cache Storage cache the records live in. */
export const CACHE_NAME = 'ssepush-handoffs';

/** A minimal view of `CacheStorage` (window and service worker alike). */
export interface CacheStorageLike {
  open(name: string): Promise<{
    put(request: string, response: Response): Promise<void>;
    match(request: string): Promise<Response | undefined>;
    delete(request: string): Promise<boolean>;
  }>;
}

function key(id: string): string {
  // A same-origin path nothing else uses; Cache Storage keys are URLs.
  return new URL(`/.ssepush/handoffs/${encodeURIComponent(id)}`, baseUrl()).href;
}

function baseUrl(): string {
  const loc = (globalThis as { location?: { href: string } }).location;
  return loc ? loc.href : 'http://localhost/';
}

function caches(): CacheStorageLike | null {
  const c = (globalThis as { caches?: CacheStorageLike }).caches;
  return c ?? null;
}

/** Writes (or replaces) a record. Never throws: a lost record only costs the worker a fetch. */
export async function putRecord(record: HandoffRecord, storage: CacheStorageLike | null = caches()): Promise<void> {
  if (!storage) return;
  try {
    const cache = await storage.open(CACHE_NAME);
    await cache.put(
      key(record.id),
      new Response(JSON.stringify(record), { headers: { 'content-type': 'application/json' } }),
    );
  } catch {
    // Storage full or disabled: the page reads the proxy itself.
  }
}

/** Reads a record, or null. */
export async function getRecord(id: string, storage: CacheStorageLike | null = caches()): Promise<HandoffRecord | null> {
  if (!storage) return null;
  try {
    const cache = await storage.open(CACHE_NAME);
    const resp = await cache.match(key(id));
    if (!resp) return null;
    const v = (await resp.json()) as Partial<HandoffRecord>;
    if (
      typeof v.proxy !== 'string' ||
      typeof v.id !== 'string' ||
      typeof v.token !== 'string' ||
      typeof v.lastEventId !== 'string'
    ) {
      return null;
    }
    return { proxy: v.proxy, id: v.id, token: v.token, lastEventId: v.lastEventId };
  } catch {
    return null;
  }
}

/** Removes a record (after the handback). */
export async function deleteRecord(id: string, storage: CacheStorageLike | null = caches()): Promise<void> {
  if (!storage) return;
  try {
    const cache = await storage.open(CACHE_NAME);
    await cache.delete(key(id));
  } catch {
    // Nothing to do: a stale record only names a handoff the proxy no longer knows.
  }
}
