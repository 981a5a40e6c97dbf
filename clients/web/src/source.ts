/**
 * {@link SsePushSource}: an `EventSource`-shaped stream from the ssepush origin that hands itself
 * to the push proxy while the page sleeps, and takes itself back when the page returns.
 *
 * This file is the imperative shell around the pure state machine (`machine.ts`): it turns
 * `fetch` streams, timers, page-lifecycle events and service-worker messages into the machine's
 * inputs, and the machine's commands into requests and DOM events.
 *
 * Why `fetch` and not the browser's `EventSource`: the handoff needs the exact position, and an
 * `EventSource` does not expose it — its last event ID is visible only on dispatched
 * `MessageEvent`s, so the id-only block the origin opens every stream with (and any block
 * without data) would be invisible, and a handoff right after connecting would lose the events
 * published in between. `fetch` also lets the stream carry headers (credentials), be aborted at
 * an exact point before the handoff, and report HTTP statuses. So the stream is read with
 * `fetch` and interpreted by our own WHATWG parser (`parser.ts`).
 *
 * @module
 */

import { DEFAULT_BACKOFF, parseRetryAfter, type BackoffPolicy } from './backoff.js';
import {
  readyStateOf,
  start,
  step,
  type Command,
  type Delivery,
  type Handoff,
  type Input,
  type Phase,
  type State,
  type Via,
} from './machine.js';
import { DEFAULT_MAX_EVENT_SIZE, EventStreamParser, EventTooLarge, type Block } from './parser.js';
import * as proxyApi from './proxy.js';
import { deleteRecord, putRecord } from './store.js';
import {
  RESET_TYPE,
  type EventId,
  type HandoffRequest,
  type PushTarget,
  type WakeOptions,
  type WakePayload,
} from './wire.js';

/** Where and how to hand off. */
export interface ProxyOptions {
  /** The push proxy's base URL, e.g. `https://push.example.com`. */
  url: string;
  /** Where the wake goes: `webPushTarget(subscription)` in a browser, or an APNs/FCM token
   * from a native shell. May be set later with {@link SsePushSource.setPushTarget}; until
   * then, handoffs fail with a `handofferror` and the stream keeps running. */
  push?: PushTarget | null;
  wake?: WakeOptions;
  /** How long the proxy may watch, in seconds (the proxy caps it). */
  ttlSec?: number;
  /** Headers for `POST /v1/handoffs` only, e.g. the app backend's `Authorization` for the proxy. */
  headers?: Record<string, string>;
}

/** Options of {@link SsePushSource}. */
export interface SsePushSourceInit {
  /** As `EventSource`: send cookies cross-origin. */
  withCredentials?: boolean;
  /** Headers for the origin (e.g. `Authorization`); the proxy gets them too, to watch the
   * stream with the same rights. A cross-origin stream with headers costs a CORS preflight. */
  headers?: Record<string, string>;
  /** Resume from this id (e.g. one the app persisted). Default: from now. */
  lastEventId?: EventId;
  /** Hand off to a push proxy while the page is hidden, frozen or unloaded. Without it the
   * source behaves like `EventSource` and streams whatever the page's visibility. */
  proxy?: ProxyOptions;
  /** Follow the page lifecycle (`visibilitychange`, `pagehide`, `pageshow`, `freeze`,
   * `resume`). Default true. Turn off to drive {@link SsePushSource.handOff} and
   * {@link SsePushSource.resume} yourself (hybrid apps whose native shell knows better). */
  lifecycle?: boolean;
  /** Listen for wakes and buffered events posted by the service-worker module. Default true. */
  serviceWorker?: boolean;
  /** The reconnection time until the stream sends `retry:`. Default 3000 ms. */
  retryMs?: number;
  /** Longest line or event accepted from a stream, in characters. Default 4 Mi. */
  maxEventSize?: number;
  backoff?: BackoffPolicy;
  /** Write handoff records to Cache Storage so the service worker can fetch buffered events.
   * Default true. */
  persist?: boolean;
  /** The `fetch` to use (default: the global one). */
  fetch?: proxyApi.Fetch;
  /** Random numbers in [0, 1) for reconnection jitter (default `Math.random`). */
  random?: () => number;
}

/** A message event of {@link SsePushSource}: `data`, `lastEventId` and `origin` as
 * `EventSource` sets them, plus who delivered it. */
export class SsePushEvent extends MessageEvent<string> {
  /** `stream`: the origin's stream; `proxy`: the page's catch-up from the proxy; `worker`: the
   * service worker's catch-up, posted to the page. */
  readonly via: Via;
  constructor(type: string, init: MessageEventInit<string> & { via: Via }) {
    super(type, init);
    this.via = init.via;
  }
}

/** An `error` or `handofferror` event, with the reason in words. */
export class SsePushErrorEvent extends Event {
  constructor(
    type: string,
    readonly reason: string,
  ) {
    super(type);
  }
}

/** Messages the service-worker module posts to pages. */
export type WorkerMessage =
  | { type: 'ssepush.wake'; wake: WakePayload }
  | { type: 'ssepush.events'; wake: WakePayload; after: EventId; blocks: Block[] };

type Handler<E extends Event> = ((this: SsePushSource, ev: E) => unknown) | null;

/**
 * An `EventSource` over the origin's `GET /v1/sse` that hands off while the page sleeps.
 *
 * Events: `open`, `message` and every named type (as `EventSource`), `ssepush.reset` (the
 * position could not be resumed exactly: resync from a snapshot; `data` is JSON with
 * `requestedId` and `oldestId`), `error` (reconnecting, or `readyState` CLOSED for good),
 * `handofferror` (the proxy refused or could not be reached; the stream keeps running), and
 * `phasechange` (see {@link SsePushSource.phase}).
 */
export class SsePushSource extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 2;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSED = 2;

  /** The stream URL as given (without any position). */
  readonly url: string;
  readonly withCredentials: boolean;

  onopen: Handler<Event> = null;
  onmessage: Handler<SsePushEvent> = null;
  onerror: Handler<SsePushErrorEvent> = null;
  /** `ssepush.reset`: the app should resync. */
  onreset: Handler<SsePushEvent> = null;

  private state: State;
  private readonly headers: Record<string, string>;
  private readonly proxy: ProxyOptions | null;
  private push: PushTarget | null;
  private readonly fetchFn: proxyApi.Fetch;
  private readonly random: () => number;
  private readonly maxEventSize: number;
  private readonly persist: boolean;
  private controller: AbortController | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private applying = false;
  private readonly queue: Input[] = [];
  private closedByApp = false;
  private readonly cleanups: Array<() => void> = [];
  private readonly originOf: { stream: string; proxy: string };

  constructor(url: string | URL, init: SsePushSourceInit = {}) {
    super();
    this.url = stripPosition(String(url));
    this.withCredentials = init.withCredentials ?? false;
    this.headers = { ...(init.headers ?? {}) };
    this.proxy = init.proxy ? { ...init.proxy } : null;
    this.push = init.proxy?.push ?? null;
    const globalFetch = (globalThis as { fetch?: proxyApi.Fetch }).fetch;
    const f = init.fetch ?? (globalFetch ? globalFetch.bind(globalThis) : undefined);
    if (!f) throw new TypeError('SsePushSource needs fetch');
    this.fetchFn = f;
    this.random = init.random ?? Math.random;
    this.maxEventSize = init.maxEventSize ?? DEFAULT_MAX_EVENT_SIZE;
    this.persist = init.persist ?? true;
    this.originOf = { stream: originOf(this.url), proxy: this.proxy ? originOf(this.proxy.url) : '' };

    // IDL-style handlers, called like EventSource's.
    this.addEventListener('open', (e) => this.onopen?.call(this, e));
    this.addEventListener('message', (e) => this.onmessage?.call(this, e as SsePushEvent));
    this.addEventListener('error', (e) => this.onerror?.call(this, e as SsePushErrorEvent));
    this.addEventListener(RESET_TYPE, (e) => this.onreset?.call(this, e as SsePushEvent));

    const doc = (globalThis as { document?: Document }).document;
    const follow = (init.lifecycle ?? true) && this.proxy !== null && doc !== undefined;
    if (follow) this.followLifecycle(doc);
    if ((init.serviceWorker ?? true) && this.proxy !== null) this.listenToWorker();

    const first = start({
      lastEventId: init.lastEventId ?? '',
      visible: follow ? doc.visibilityState !== 'hidden' : true,
      handoffEnabled: this.proxy !== null,
      retryMs: init.retryMs,
      backoff: init.backoff ?? DEFAULT_BACKOFF,
    });
    this.state = first.state;
    this.applying = true;
    try {
      for (const c of first.commands) this.run(c);
    } finally {
      this.applying = false;
    }
    this.drain();
  }

  /** 0 CONNECTING (also while handed off: events still come, from the proxy), 1 OPEN, 2 CLOSED. */
  get readyState(): 0 | 1 | 2 {
    return readyStateOf(this.state.phase);
  }

  /** The position: the id of the last event delivered or of the last id-only block. */
  get lastEventId(): EventId {
    return this.state.lastEventId;
  }

  /** Where the source is in its life (`open`, `handedOff`, …); changes fire `phasechange`. */
  get phase(): Phase {
    return this.state.phase;
  }

  /** The current handoff's id, while there is one. */
  get handoffId(): string | null {
    return this.state.handoff?.id ?? null;
  }

  /** Sets (or replaces) where wakes go, e.g. once the user allowed notifications. */
  setPushTarget(push: PushTarget | null): void {
    this.push = push;
  }

  /** Hands off now, as if the page went hidden (for apps that know before the page does). */
  handOff(): void {
    this.apply({ type: 'hidden' });
  }

  /** Takes the stream back now, as if the page became visible. */
  resume(): void {
    this.apply({ type: 'visible' });
  }

  /** A wake that reached the app some other way (a hybrid app's native push plugin): if it is
   * for the current handoff, the source catches up from the proxy. */
  wake(wake: WakePayload): void {
    this.apply({ type: 'wake', handoff: wake.handoff });
  }

  /** Closes the stream for good; a handoff in place is handed back (`keepalive`). */
  close(): void {
    this.closedByApp = true;
    this.apply({ type: 'close' });
    for (const f of this.cleanups.splice(0)) f();
  }

  // --------------------------------------------------------------------------------------
  // The shell
  // --------------------------------------------------------------------------------------

  /** Feeds one input; inputs raised while commands run are queued, so steps never nest. */
  private apply(input: Input): void {
    this.queue.push(input);
    this.drain();
  }

  private drain(): void {
    if (this.applying) return;
    this.applying = true;
    try {
      let input: Input | undefined;
      while ((input = this.queue.shift()) !== undefined) {
        const before = this.state.phase;
        const next = step(this.state, input);
        this.state = next.state;
        for (const c of next.commands) this.run(c);
        if (this.state.phase !== before) this.dispatchEvent(new Event('phasechange'));
      }
    } finally {
      this.applying = false;
    }
  }

  private run(c: Command): void {
    switch (c.type) {
      case 'connect':
        void this.readStream(c.stream, c.lastEventId);
        return;
      case 'abortStream':
        this.controller?.abort();
        this.controller = null;
        if (this.timer !== null) clearTimeout(this.timer);
        this.timer = null;
        return;
      case 'scheduleReconnect':
        if (this.timer !== null) clearTimeout(this.timer);
        this.timer = setTimeout(() => {
          this.timer = null;
          this.apply({ type: 'reconnectDue', stream: c.stream });
        }, c.delayMs);
        return;
      case 'createHandoff':
        this.createHandoff(c.lastEventId);
        return;
      case 'catchUp':
        void this.catchUp(c.handoff, c.lastEventId);
        return;
      case 'handBack':
        void this.handBack(c.handoff, c.lastEventId, c.detached);
        return;
      case 'remember':
        if (this.persist && this.proxy) {
          void putRecord({ proxy: this.proxy.url, id: c.handoff.id, token: c.handoff.token, lastEventId: c.lastEventId });
        }
        return;
      case 'forget':
        if (this.persist) void deleteRecord(c.handoff.id);
        return;
      case 'deliver':
        this.deliver(c.event);
        return;
      case 'open':
        this.dispatchEvent(new Event('open'));
        return;
      case 'error':
        this.dispatchEvent(new SsePushErrorEvent('error', c.reason));
        return;
      case 'handoffError':
        this.dispatchEvent(new SsePushErrorEvent('handofferror', c.reason));
        return;
    }
  }

  private deliver(d: Delivery): void {
    // EventSource fires nothing after close(), even for events already read.
    if (this.closedByApp) return;
    this.dispatchEvent(
      new SsePushEvent(d.type, {
        data: d.data,
        lastEventId: d.lastEventId,
        origin: d.via === 'stream' ? this.originOf.stream : this.originOf.proxy,
        via: d.via,
      }),
    );
  }

  /** Reads one stream generation until it ends, fails or is aborted. */
  private async readStream(stream: number, lastEventId: EventId): Promise<void> {
    const controller = new AbortController();
    this.controller = controller;
    const stale = () => controller.signal.aborted || this.state.stream !== stream;
    const failed = (reason: string, fatal: boolean, retryAfterMs: number | null = null) => {
      if (stale()) return;
      this.apply({ type: 'streamFailed', stream, fatal, reason, jitter: this.random(), retryAfterMs });
    };
    const headers: Record<string, string> = { ...this.headers, accept: 'text/event-stream' };
    let resp: Response;
    try {
      resp = await this.fetchFn(withPosition(this.url, lastEventId), {
        headers,
        credentials: this.withCredentials ? 'include' : 'same-origin',
        cache: 'no-store',
        signal: controller.signal,
      });
    } catch (e) {
      failed(`cannot reach the origin: ${message(e)}`, false);
      return;
    }
    if (stale()) {
      void resp.body?.cancel();
      return;
    }
    if (resp.status !== 200) {
      // WHATWG fails the connection on any other status; a server that is down or busy
      // (5xx, 429, 408) is worth another try, with backoff and its Retry-After.
      const retryable = resp.status >= 500 || resp.status === 429 || resp.status === 408;
      const retryAfter = parseRetryAfter(resp.headers.get('retry-after'), Date.now());
      void resp.body?.cancel();
      failed(`the origin answered ${resp.status}`, !retryable, retryAfter);
      return;
    }
    const type = (resp.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'text/event-stream' || !resp.body) {
      void resp.body?.cancel();
      failed(`the origin answered ${type || 'no content type'}, not text/event-stream`, true);
      return;
    }
    this.apply({ type: 'streamOpened', stream });
    const parser = new EventStreamParser(lastEventId, this.maxEventSize);
    const decoder = new TextDecoder('utf-8');
    const reader = resp.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (stale()) break;
        const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
        for (const item of parser.push(text)) {
          if (stale()) break;
          if (item.kind === 'retry') this.apply({ type: 'retry', stream, ms: item.ms });
          else this.apply({ type: 'block', stream, block: item.block });
        }
        if (done) {
          parser.end();
          failed('the stream ended', false);
          break;
        }
      }
    } catch (e) {
      if (e instanceof EventTooLarge) {
        controller.abort();
        this.controller = this.controller === controller ? null : this.controller;
        this.apply({ type: 'streamFailed', stream, fatal: true, reason: e.message, jitter: 0 });
      } else {
        failed(`the stream broke: ${message(e)}`, false);
      }
    } finally {
      if (stale()) void reader.cancel().catch(() => undefined);
      if (this.controller === controller && stale()) this.controller = null;
    }
  }

  /** Starts `POST /v1/handoffs` synchronously (a `freeze` or `pagehide` handler may be the
   * last code the page runs before it sleeps); the answer comes back as an input. */
  private createHandoff(lastEventId: EventId): void {
    const proxy = this.proxy;
    const push = this.push;
    if (!proxy || !push) {
      this.apply({ type: 'handoffFailed', reason: 'no push target: call setPushTarget() first' });
      return;
    }
    const request: HandoffRequest = {
      stream: { url: this.url, headers: this.headers, lastEventId: lastEventId === '' ? null : lastEventId },
      push,
    };
    if (proxy.wake) request.wake = proxy.wake;
    if (proxy.ttlSec !== undefined) request.ttlSec = proxy.ttlSec;
    proxyApi.createHandoff(this.fetchFn, proxy.url, request, proxy.headers ?? {}).then(
      (created) => this.apply({ type: 'handoffCreated', handoff: created }),
      (e) => this.apply({ type: 'handoffFailed', reason: message(e) }),
    );
  }

  private async catchUp(h: Handoff, lastEventId: EventId): Promise<void> {
    const proxy = this.proxy;
    if (!proxy) return;
    try {
      const blocks = await proxyApi.catchUp(this.fetchFn, proxy.url, h, lastEventId);
      this.apply({ type: 'caughtUp', blocks });
    } catch (e) {
      const gone = e instanceof proxyApi.ProxyError && e.gone;
      this.apply({ type: 'catchUpFailed', reason: message(e), gone });
    }
  }

  private async handBack(h: Handoff, lastEventId: EventId, detached: boolean): Promise<void> {
    const proxy = this.proxy;
    if (!proxy) return;
    try {
      await proxyApi.handBack(this.fetchFn, proxy.url, h, lastEventId, detached);
      if (!detached) this.apply({ type: 'handedBack' });
    } catch (e) {
      if (!detached) this.apply({ type: 'handBackFailed', reason: message(e) });
    }
  }

  private followLifecycle(doc: Document): void {
    const win = globalThis as unknown as Window;
    const visibility = () => this.apply({ type: doc.visibilityState === 'hidden' ? 'hidden' : 'visible' });
    const hidden = () => this.apply({ type: 'hidden' });
    const back = () => {
      if (doc.visibilityState !== 'hidden') this.apply({ type: 'visible' });
    };
    const on = (target: EventTarget, type: string, f: () => void) => {
      target.addEventListener(type, f);
      this.cleanups.push(() => target.removeEventListener(type, f));
    };
    on(doc, 'visibilitychange', visibility);
    on(doc, 'freeze', hidden);
    on(doc, 'resume', back);
    if (typeof win.addEventListener === 'function') {
      on(win, 'pagehide', hidden);
      on(win, 'pageshow', back);
    }
  }

  private listenToWorker(): void {
    const sw = (globalThis as { navigator?: Navigator }).navigator?.serviceWorker;
    if (!sw) return;
    const onMessage = (e: Event) => {
      const msg = readWorkerMessage((e as MessageEvent).data);
      if (!msg) return;
      if (msg.type === 'ssepush.wake') this.apply({ type: 'wake', handoff: msg.wake.handoff });
      else this.apply({ type: 'bufferedEvents', handoff: msg.wake.handoff, after: msg.after, blocks: msg.blocks });
    };
    sw.addEventListener('message', onMessage);
    sw.startMessages();
    this.cleanups.push(() => sw.removeEventListener('message', onMessage));
  }
}

/** Checks a message from the service worker; anything else (the app's own messages) is null. */
export function readWorkerMessage(v: unknown): WorkerMessage | null {
  if (typeof v !== 'object' || v === null) return null;
  const m = v as Record<string, unknown>;
  const wake = m['wake'] as Record<string, unknown> | undefined;
  if (typeof wake !== 'object' || wake === null || typeof wake['handoff'] !== 'string') return null;
  const payload: WakePayload = {
    handoff: wake['handoff'] as string,
    pending: typeof wake['pending'] === 'number' ? (wake['pending'] as number) : 0,
    latestEventId: typeof wake['latestEventId'] === 'string' ? (wake['latestEventId'] as string) : null,
  };
  if (m['type'] === 'ssepush.wake') return { type: 'ssepush.wake', wake: payload };
  if (m['type'] !== 'ssepush.events' || typeof m['after'] !== 'string' || !Array.isArray(m['blocks'])) return null;
  const blocks: Block[] = [];
  for (const b of m['blocks'] as unknown[]) {
    if (typeof b !== 'object' || b === null) return null;
    const o = b as Record<string, unknown>;
    if (typeof o['id'] !== 'string' || typeof o['type'] !== 'string') return null;
    if (o['data'] !== null && typeof o['data'] !== 'string') return null;
    blocks.push({ id: o['id'] as string, type: o['type'] as string, data: o['data'] as string | null });
  }
  return { type: 'ssepush.events', wake: payload, after: m['after'] as string, blocks };
}

/** The stream URL without a `lastEventId` query parameter (the position travels separately). */
export function stripPosition(url: string): string {
  const u = new URL(url, baseHref());
  u.searchParams.delete('lastEventId');
  return u.href;
}

/** The stream URL resuming from `lastEventId`: the origin's `lastEventId` query parameter,
 * which (unlike a `Last-Event-ID` header) costs no CORS preflight. */
export function withPosition(url: string, lastEventId: EventId): string {
  if (lastEventId === '') return url;
  const u = new URL(url);
  u.searchParams.set('lastEventId', lastEventId);
  return u.href;
}

function originOf(url: string): string {
  try {
    return new URL(url, baseHref()).origin;
  } catch {
    return '';
  }
}

function baseHref(): string | undefined {
  return (globalThis as { location?: { href: string } }).location?.href;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
