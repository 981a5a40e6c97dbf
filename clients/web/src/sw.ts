/**
 * The service-worker half: receives the Web Push wake the proxy sends while the page sleeps.
 *
 * ```js
 * // sw.js, registered with navigator.serviceWorker.register('/sw.js', {type: 'module'})
 * import { installSsePushWorker } from '@ssepush/web/sw';
 * installSsePushWorker(self, { fetchEvents: true, url: '/' });
 * ```
 *
 * On `push` it reads the wake (`{"ssepush": {"handoff", "pending", "latestEventId"},
 * "notification"?}`, RFC 8291-decrypted by the browser), and:
 * - posts it to every open page (`{type: "ssepush.wake", wake}`), whose {@link SsePushSource}
 *   catches up from the proxy if the wake is for its handoff;
 * - with `fetchEvents`, first fetches the buffered events itself (with the handoff record the
 *   page left in Cache Storage) and posts them instead (`{type: "ssepush.events", wake, after,
 *   blocks}`); the page takes them only if they start exactly at its position;
 * - shows a notification when the wake asks for one (alert mode) or no page of the app is
 *   visible: browsers subscribe with `userVisibleOnly: true` and expect one per push.
 *
 * On `notificationclick` it focuses an open page of the app, or opens `url`; the page then
 * becomes visible and takes its stream back.
 *
 * This module never touches the page's position: the page owns it. Apps with their own push
 * handler call {@link handlePush} from it instead of installing the listeners.
 *
 * @module
 */

import { catchUp, type Fetch } from './proxy.js';
import { getRecord } from './store.js';
import type { Block } from './parser.js';
import { parseWebPushMessage, WireError, type WakePayload, type WebPushMessage } from './wire.js';

/** When to show a notification for a wake. `auto`: when the wake is in alert mode or no page of
 * the app is visible (what `userVisibleOnly` subscriptions require); `always`; `never` (only
 * where the browser allows silent pushes). */
export type NotifyPolicy = 'auto' | 'always' | 'never';

/** Options of {@link installSsePushWorker} and {@link handlePush}. */
export interface WorkerOptions {
  notify?: NotifyPolicy;
  /** Title when the wake carries none. Default "New activity" (the proxy's alert title). */
  title?: string;
  /** Body when the wake carries none. Default "N new events". */
  body?: (wake: WakePayload) => string;
  icon?: string;
  badge?: string;
  /** The page a notification click opens when none is open. Default: the worker's scope. */
  url?: string;
  /** Fetch the buffered events from the proxy and post them to the pages. Default false. */
  fetchEvents?: boolean;
  /** Accept `{type: "ssepush.push", data}` messages from pages as if they were pushes (for a
   * page that receives wakes another way, e.g. the demo's simulated push service). Default false. */
  acceptPageMessages?: boolean;
  /** Called with every wake, after the pages were told. */
  onWake?: (message: WebPushMessage) => void | Promise<void>;
  fetch?: Fetch;
}

/** A window client, as much of it as this module uses. */
export interface WindowClientLike {
  url: string;
  visibilityState?: string;
  focused?: boolean;
  postMessage(message: unknown): void;
  focus?(): Promise<unknown>;
}

/** The worker's global scope, as much of it as this module uses. */
export interface WorkerScopeLike {
  addEventListener(type: string, listener: (event: never) => void): void;
  clients: {
    matchAll(options: { type: 'window'; includeUncontrolled: boolean }): Promise<readonly WindowClientLike[]>;
    openWindow?(url: string): Promise<unknown>;
  };
  registration: {
    scope: string;
    showNotification(title: string, options?: NotificationOptions & Record<string, unknown>): Promise<void>;
  };
  fetch?: Fetch;
}

interface ExtendableEventLike {
  waitUntil(p: Promise<unknown>): void;
}
interface PushEventLike extends ExtendableEventLike {
  data: { text(): string } | null;
}
interface NotificationEventLike extends ExtendableEventLike {
  notification: { close(): void; data?: unknown };
}
interface MessageEventLike extends ExtendableEventLike {
  data: unknown;
}

/** What {@link handlePush} did. */
export interface PushOutcome {
  /** The wake, or null when the push was not an ssepush wake (left to the app). */
  wake: WebPushMessage | null;
  /** Pages told. */
  posted: number;
  /** Buffered events fetched and posted (`fetchEvents`), or null when not fetched. */
  events: number | null;
  notified: boolean;
}

/** The notification for a wake, or null for none: a plain function of the wake, whether a page
 * of the app is visible, and the options. */
export function planNotification(
  msg: WebPushMessage,
  pageVisible: boolean,
  options: WorkerOptions = {},
): { title: string; options: NotificationOptions & Record<string, unknown> } | null {
  const policy = options.notify ?? 'auto';
  if (policy === 'never') return null;
  // While the user looks at the app, the page shows the events itself (alert mode too).
  if (policy === 'auto' && pageVisible) return null;
  const wake = msg.ssepush;
  const title = msg.notification?.title ?? options.title ?? 'New activity';
  const body =
    msg.notification?.body ??
    (options.body ? options.body(wake) : wake.pending === 1 ? '1 new event' : `${wake.pending} new events`);
  const n: NotificationOptions & Record<string, unknown> = {
    body,
    // One notification per handoff: a newer wake replaces the older one.
    tag: `ssepush-${wake.handoff}`,
    data: { ssepush: wake, url: options.url ?? null },
  };
  if (options.icon) n['icon'] = options.icon;
  if (options.badge) n['badge'] = options.badge;
  return { title, options: n };
}

/**
 * Handles one push's text: tells the pages, optionally fetches the buffered events, shows a
 * notification when needed. Never throws; a push that is not an ssepush wake is left alone.
 */
export async function handlePush(scope: WorkerScopeLike, text: string, options: WorkerOptions = {}): Promise<PushOutcome> {
  let msg: WebPushMessage;
  try {
    msg = parseWebPushMessage(text);
  } catch (e) {
    if (e instanceof WireError) return { wake: null, posted: 0, events: null, notified: false };
    throw e;
  }
  const pages = await scope.clients.matchAll({ type: 'window', includeUncontrolled: true });
  let events: number | null = null;
  let message: unknown = { type: 'ssepush.wake', wake: msg.ssepush };
  if (options.fetchEvents) {
    const fetched = await fetchBuffered(scope, msg.ssepush, options);
    if (fetched) {
      events = fetched.blocks.filter((b) => b.data !== null).length;
      message = { type: 'ssepush.events', wake: msg.ssepush, after: fetched.after, blocks: fetched.blocks };
    }
  }
  for (const page of pages) page.postMessage(message);
  const visible = pages.some((p) => p.visibilityState === 'visible');
  const plan = planNotification(msg, visible, options);
  let notified = false;
  if (plan) {
    try {
      await scope.registration.showNotification(plan.title, plan.options);
      notified = true;
    } catch {
      // No notification permission: the pages were told all the same.
    }
  }
  if (options.onWake) await options.onWake(msg);
  return { wake: msg, posted: pages.length, events, notified };
}

async function fetchBuffered(
  scope: WorkerScopeLike,
  wake: WakePayload,
  options: WorkerOptions,
): Promise<{ after: string; blocks: Block[] } | null> {
  const record = await getRecord(wake.handoff);
  if (!record) return null;
  const f = options.fetch ?? scope.fetch?.bind(scope);
  if (!f) return null;
  try {
    const blocks = await catchUp(f, record.proxy, record, record.lastEventId);
    return { after: record.lastEventId, blocks };
  } catch {
    // The page reads the proxy itself on the plain wake.
    return null;
  }
}

/** Focuses an open page of the app, or opens `url`. */
export async function openApp(scope: WorkerScopeLike, url: string): Promise<void> {
  const pages = await scope.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const target = new URL(url, scope.registration.scope).href;
  const page = pages.find((p) => p.url === target) ?? pages[0];
  if (page && page.focus) {
    await page.focus();
    return;
  }
  if (scope.clients.openWindow) await scope.clients.openWindow(target);
}

/** Installs the `push`, `notificationclick` (and, if asked, `message`) listeners on the worker. */
export function installSsePushWorker(scope: WorkerScopeLike, options: WorkerOptions = {}): void {
  scope.addEventListener('push', ((event: PushEventLike) => {
    const text = event.data ? event.data.text() : '';
    event.waitUntil(handlePush(scope, text, options));
  }) as (event: never) => void);
  scope.addEventListener('notificationclick', ((event: NotificationEventLike) => {
    const data = event.notification.data as { ssepush?: unknown; url?: string | null } | undefined;
    if (!data || !data.ssepush) return;
    event.notification.close();
    event.waitUntil(openApp(scope, data.url ?? options.url ?? scope.registration.scope));
  }) as (event: never) => void);
  if (options.acceptPageMessages) {
    scope.addEventListener('message', ((event: MessageEventLike) => {
      const m = event.data as { type?: unknown; data?: unknown } | null;
      if (!m || m.type !== 'ssepush.push' || typeof m.data !== 'string') return;
      event.waitUntil(handlePush(scope, m.data, options));
    }) as (event: never) => void);
  }
}
