/**
 * The state machine of {@link SsePushSource}, as a pure function: `step(state, input)` returns
 * the next state and the commands to carry out. No timers, no network, no DOM: the driver
 * (`source.ts`) turns the world into {@link Input}s and {@link Command}s into requests, timers
 * and events, so every rule here is tested on values.
 *
 * ```text
 *            hidden                     created, hidden                wake / SW events
 *  open ─────────────▶ handingOff ──────────────────────▶ handedOff ◀──────────────┐
 *  ▲  │ ended/failed        │ failed: stream again        │   │ visible            │
 *  │  ▼                     ▼                             │   ▼                    │
 *  │ waiting ─▶ connecting ◀──── handingBack ◀─ visible ─ catchingUp ── hidden ────┘
 *  └──────────── opened ─┘
 * ```
 *
 * Exactness rests on one rule: **the client's last event id is the only position**, and it
 * moves only when an event is delivered to the app. A stream is aborted, synchronously, in the
 * same step that hands off from that id; frames of an aborted stream (older generation) are
 * ignored; the proxy's catch-up is asked for events after that id and delivered only while
 * nothing else can deliver; a service worker's batch is taken only if it starts exactly at that
 * id (string equality, ids are never parsed); after the handback the origin resumes from that
 * id. A gap in the proxy's buffer means: deliver nothing from it, resume at the origin, which
 * replays what it holds or says `ssepush.reset` — the origin is the one authority on resets.
 *
 * @module
 */

import { reconnectDelay, type BackoffPolicy, DEFAULT_BACKOFF } from './backoff.js';
import type { Block } from './parser.js';
import { RESET_TYPE, type EventId } from './wire.js';

/** Where the source is. */
export type Phase =
  /** A request for the origin's stream is in flight. */
  | 'connecting'
  /** The origin's stream is open. */
  | 'open'
  /** Waiting to reconnect to the origin. */
  | 'waiting'
  /** `POST /v1/handoffs` is in flight. */
  | 'handingOff'
  /** Asleep: the proxy watches the stream. */
  | 'handedOff'
  /** `GET /v1/handoffs/{id}/events` is in flight. */
  | 'catchingUp'
  /** `DELETE /v1/handoffs/{id}` is in flight. */
  | 'handingBack'
  /** Closed by the app, or failed for good. */
  | 'closed';

/** A handoff the proxy accepted. */
export interface Handoff {
  id: string;
  token: string;
  expiresAt: string;
}

/** Who delivered an event to the app. */
export type Via = 'stream' | 'proxy' | 'worker';

/** The machine's whole state. */
export interface State {
  readonly phase: Phase;
  /** The position: the id of the last event delivered (or of the last id-only block). "" = none. */
  readonly lastEventId: EventId;
  /** Whether the page is visible (and not frozen). */
  readonly visible: boolean;
  /** Whether a proxy is configured: without one, visibility changes nothing. */
  readonly handoffEnabled: boolean;
  /** The reconnection time, from the stream's `retry:`. */
  readonly retryMs: number;
  /** Connection attempts that failed in a row. */
  readonly failures: number;
  /** The generation of the current stream attempt; inputs of older ones are ignored. */
  readonly stream: number;
  readonly handoff: Handoff | null;
  readonly backoff: BackoffPolicy;
}

/** What happened. */
export type Input =
  | { type: 'hidden' }
  | { type: 'visible' }
  | { type: 'streamOpened'; stream: number }
  | { type: 'block'; stream: number; block: Block }
  | { type: 'retry'; stream: number; ms: number }
  /** The stream ended or could not be opened. `fatal`: do not reconnect (WHATWG "fail the
   * connection": a non-retryable status or a wrong content type). `jitter` in [0, 1). */
  | { type: 'streamFailed'; stream: number; fatal: boolean; reason: string; jitter: number; retryAfterMs?: number | null }
  | { type: 'reconnectDue'; stream: number }
  | { type: 'handoffCreated'; handoff: Handoff }
  | { type: 'handoffFailed'; reason: string }
  /** A wake for handoff `handoff` reached the page (from the service worker). */
  | { type: 'wake'; handoff: string }
  /** The service worker fetched the handoff's buffered events after `after`. */
  | { type: 'bufferedEvents'; handoff: string; after: EventId; blocks: readonly Block[] }
  | { type: 'caughtUp'; blocks: readonly Block[] }
  /** `gone`: the proxy no longer knows the handoff (404/401), so there is nothing to hand back. */
  | { type: 'catchUpFailed'; reason: string; gone: boolean }
  | { type: 'handedBack' }
  | { type: 'handBackFailed'; reason: string }
  | { type: 'close' };

/** An event for the app. */
export interface Delivery {
  type: string;
  data: string;
  lastEventId: EventId;
  via: Via;
}

/** What to do. */
export type Command =
  | { type: 'connect'; stream: number; lastEventId: EventId }
  | { type: 'abortStream' }
  | { type: 'scheduleReconnect'; stream: number; delayMs: number }
  | { type: 'createHandoff'; lastEventId: EventId }
  | { type: 'catchUp'; handoff: Handoff; lastEventId: EventId }
  /** `detached`: nobody waits for the answer (closing, or giving up on an unreachable proxy). */
  | { type: 'handBack'; handoff: Handoff; lastEventId: EventId; detached: boolean }
  /** Keep the handoff (and the position it serves) where the service worker can read it. */
  | { type: 'remember'; handoff: Handoff; lastEventId: EventId }
  | { type: 'forget'; handoff: Handoff }
  | { type: 'deliver'; event: Delivery }
  | { type: 'open' }
  | { type: 'error'; reason: string }
  | { type: 'handoffError'; reason: string };

/** The result of one step. */
export interface Step {
  state: State;
  commands: Command[];
}

/** Options of a new machine. */
export interface MachineOptions {
  lastEventId?: EventId;
  visible?: boolean;
  handoffEnabled?: boolean;
  /** The reconnection time until the stream says `retry:`; WHATWG leaves it to the client. */
  retryMs?: number;
  backoff?: BackoffPolicy;
}

/** Browsers' usual reconnection time before a `retry:`. */
export const DEFAULT_RETRY_MS = 3000;

/** A started machine: it connects at once (and hands off right away if the page is hidden). */
export function start(options: MachineOptions = {}): Step {
  const state: State = {
    phase: 'connecting',
    lastEventId: options.lastEventId ?? '',
    visible: true,
    handoffEnabled: options.handoffEnabled ?? false,
    retryMs: options.retryMs ?? DEFAULT_RETRY_MS,
    failures: 0,
    stream: 1,
    handoff: null,
    backoff: options.backoff ?? DEFAULT_BACKOFF,
  };
  const first: Step = { state, commands: [{ type: 'connect', stream: 1, lastEventId: state.lastEventId }] };
  if (options.visible === false) {
    const next = step(state, { type: 'hidden' });
    return { state: next.state, commands: [...first.commands, ...next.commands] };
  }
  return first;
}

/** The transition function. */
export function step(s: State, input: Input): Step {
  if (s.phase === 'closed') return { state: s, commands: [] };
  const out: Command[] = [];
  const done = (state: State): Step => ({ state, commands: out });

  switch (input.type) {
    case 'close': {
      if (isStreaming(s.phase)) out.push({ type: 'abortStream' });
      if (s.handoff) {
        out.push({ type: 'handBack', handoff: s.handoff, lastEventId: s.lastEventId, detached: true });
        out.push({ type: 'forget', handoff: s.handoff });
      }
      return done({ ...s, phase: 'closed', handoff: null, stream: s.stream + 1 });
    }

    case 'hidden': {
      const t = { ...s, visible: false };
      if (!s.handoffEnabled || !isStreaming(s.phase)) return done(t);
      // Abort first, in this very step: nothing is read after the position handed off.
      out.push({ type: 'abortStream' });
      out.push({ type: 'createHandoff', lastEventId: s.lastEventId });
      return done({ ...t, phase: 'handingOff', stream: s.stream + 1 });
    }

    case 'visible': {
      const t = { ...s, visible: true };
      if (s.phase === 'handedOff' && s.handoff) {
        out.push({ type: 'catchUp', handoff: s.handoff, lastEventId: s.lastEventId });
        return done({ ...t, phase: 'catchingUp' });
      }
      // In flight (handingOff, catchingUp, handingBack): the answer looks at `visible`.
      return done(t);
    }

    case 'streamOpened': {
      if (input.stream !== s.stream || s.phase !== 'connecting') return done(s);
      out.push({ type: 'open' });
      return done({ ...s, phase: 'open', failures: 0 });
    }

    case 'block': {
      if (input.stream !== s.stream || s.phase !== 'open') return done(s);
      const b = input.block;
      if (b.data !== null) {
        out.push({ type: 'deliver', event: { type: b.type, data: b.data, lastEventId: b.id, via: 'stream' } });
      }
      return done({ ...s, lastEventId: b.id });
    }

    case 'retry': {
      if (input.stream !== s.stream || !isStreaming(s.phase)) return done(s);
      return done({ ...s, retryMs: input.ms });
    }

    case 'streamFailed': {
      if (input.stream !== s.stream || (s.phase !== 'connecting' && s.phase !== 'open')) return done(s);
      out.push({ type: 'error', reason: input.reason });
      if (input.fatal) return done({ ...s, phase: 'closed', stream: s.stream + 1 });
      const delayMs = reconnectDelay(s.retryMs, s.failures, input.jitter, input.retryAfterMs ?? null, s.backoff);
      out.push({ type: 'scheduleReconnect', stream: s.stream, delayMs });
      return done({ ...s, phase: 'waiting', failures: s.failures + 1 });
    }

    case 'reconnectDue': {
      if (input.stream !== s.stream || s.phase !== 'waiting') return done(s);
      return done(connect(s, out));
    }

    case 'handoffCreated': {
      if (s.phase !== 'handingOff') return done(s);
      const h = input.handoff;
      out.push({ type: 'remember', handoff: h, lastEventId: s.lastEventId });
      if (s.visible) {
        out.push({ type: 'catchUp', handoff: h, lastEventId: s.lastEventId });
        return done({ ...s, phase: 'catchingUp', handoff: h });
      }
      return done({ ...s, phase: 'handedOff', handoff: h });
    }

    case 'handoffFailed': {
      if (s.phase !== 'handingOff') return done(s);
      out.push({ type: 'handoffError', reason: input.reason });
      // Without a proxy watching, keep streaming for as long as the browser lets the page run:
      // the origin resumes exactly from the position either way.
      return done(connect(s, out));
    }

    case 'wake': {
      if (s.phase !== 'handedOff' || !s.handoff || input.handoff !== s.handoff.id) return done(s);
      out.push({ type: 'catchUp', handoff: s.handoff, lastEventId: s.lastEventId });
      return done({ ...s, phase: 'catchingUp' });
    }

    case 'bufferedEvents': {
      if (s.phase !== 'handedOff' || !s.handoff || input.handoff !== s.handoff.id) return done(s);
      if (input.after !== s.lastEventId) {
        // Fetched from another position (an older record, a race): read it ourselves.
        out.push({ type: 'catchUp', handoff: s.handoff, lastEventId: s.lastEventId });
        return done({ ...s, phase: 'catchingUp' });
      }
      const t = deliverCatchUp(s, input.blocks, 'worker', out);
      out.push({ type: 'remember', handoff: s.handoff, lastEventId: t.lastEventId });
      return done(t);
    }

    case 'caughtUp': {
      if (s.phase !== 'catchingUp' || !s.handoff) return done(s);
      const h = s.handoff;
      const t = deliverCatchUp(s, input.blocks, 'proxy', out);
      if (t.visible) {
        out.push({ type: 'handBack', handoff: h, lastEventId: t.lastEventId, detached: false });
        return done({ ...t, phase: 'handingBack' });
      }
      out.push({ type: 'remember', handoff: h, lastEventId: t.lastEventId });
      return done({ ...t, phase: 'handedOff' });
    }

    case 'catchUpFailed': {
      if (s.phase !== 'catchingUp' || !s.handoff) return done(s);
      const h = s.handoff;
      if (input.gone) {
        out.push({ type: 'forget', handoff: h });
        const t = { ...s, handoff: null };
        if (t.visible) return done(connect(t, out));
        out.push({ type: 'createHandoff', lastEventId: s.lastEventId });
        return done({ ...t, phase: 'handingOff' });
      }
      if (!s.visible) return done({ ...s, phase: 'handedOff' });
      // The proxy cannot be reached: stream from the origin, which resumes exactly; tell the
      // proxy if it can hear us, so it stops waking the device.
      out.push({ type: 'handBack', handoff: h, lastEventId: s.lastEventId, detached: true });
      out.push({ type: 'forget', handoff: h });
      return done(connect({ ...s, handoff: null }, out));
    }

    case 'handedBack':
    case 'handBackFailed': {
      if (s.phase !== 'handingBack' || !s.handoff) return done(s);
      out.push({ type: 'forget', handoff: s.handoff });
      const t = { ...s, handoff: null };
      if (t.visible) return done(connect(t, out));
      // Hidden again while handing back: hand off anew from the same position.
      out.push({ type: 'createHandoff', lastEventId: s.lastEventId });
      return done({ ...t, phase: 'handingOff' });
    }
  }
}

/** The phases in which the origin's stream is (or is about to be) read. */
function isStreaming(p: Phase): boolean {
  return p === 'connecting' || p === 'open' || p === 'waiting';
}

/** Opens a new stream generation from the position. */
function connect(s: State, out: Command[]): State {
  const stream = s.stream + 1;
  out.push({ type: 'connect', stream, lastEventId: s.lastEventId });
  return { ...s, phase: 'connecting', stream };
}

/**
 * Delivers a proxy catch-up (its SSE body's blocks, in order). A leading `ssepush.reset` is
 * the proxy's gap marker: then nothing of it is delivered and the position stays, so the origin
 * replays (or resets) from there after the handback.
 */
function deliverCatchUp(s: State, blocks: readonly Block[], via: Via, out: Command[]): State {
  const first = blocks.find((b) => b.data !== null);
  if (first && first.type === RESET_TYPE) return s;
  let last = s.lastEventId;
  for (const b of blocks) {
    if (b.data !== null) {
      out.push({ type: 'deliver', event: { type: b.type, data: b.data, lastEventId: b.id, via } });
    }
    last = b.id;
  }
  return { ...s, lastEventId: last };
}

/** `EventSource.readyState` of a phase: 0 CONNECTING, 1 OPEN, 2 CLOSED. While handed off the
 * source still delivers events (from the proxy), so it counts as connecting, not closed. */
export function readyStateOf(p: Phase): 0 | 1 | 2 {
  if (p === 'open') return 1;
  if (p === 'closed') return 2;
  return 0;
}
